"""publish_many against receive_many concurrently: a publisher thread lapping a batch reader,
and subscriber processes (fork and spawn) checking self-checking payloads.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import struct
import threading
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from helpers import (
    BATCH_BYTES,
    MAX_BATCH,
    SCRATCH_COPY_MAX,
    Children,
    blob,
    check_batch_shape,
    get_result,
    threads,
    time_limit,
)

import shmpubsub as sps

# -- a publisher thread against a batch reader -------------------------------------------------------


def test_concurrent_publish_many_and_receive_many_thread(topic: str) -> None:
    """publish_many writes whole batches in C with the GIL released while another thread takes
    batches: laps land in the middle of batches. Every batch must still be consecutive and
    intact, and every loss counted exactly before the batch that follows it."""
    slots, record, per_batch = 64, 1024, 256
    bodies = [blob(i, record) for i in range(per_batch)]  # message seq holds bodies[seq % 256]
    block = b"".join(bodies)
    stats: Counter[str] = Counter()
    with sps.Publisher(topic, slots=slots, slot_size=record) as pub, sps.Subscriber(topic) as sub:
        stop = threading.Event()
        finished = threading.Event()

        def publisher() -> None:
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline and not stop.is_set():
                pub.publish_many(block, size=record)  # four ring-fulls in one C call
                time.sleep(0.0005)  # lets the reader catch up now and then
            finished.set()

        received = 0
        with threads(publisher), time_limit(30):
            try:
                while True:
                    done = finished.is_set()  # looked at BEFORE reading: then an empty batch is final
                    lost_before, want = sub.lost, sub.next_seq
                    batch = sub.try_receive_many(64)
                    if not batch:
                        if done:
                            break
                        continue
                    check_batch_shape(batch, 64)
                    assert sub.lost - lost_before == batch.seq - want, "a loss was miscounted"
                    assert all(p == bodies[s % per_batch] for s, p in zip(batch.seqs, batch, strict=True))
                    received += len(batch)
                    stats["batches"] += 1
                    stats["after_a_loss"] += batch.seq > want
                    stats["short"] += len(batch) < 64
            finally:
                stop.set()
        published = pub.published
        assert received + sub.lost == published
        assert sub.last_seq == published - 1
        print(f"\n{published} published, {received} received in {dict(stats)}, {sub.lost} lost")
        assert stats["after_a_loss"] > 0, "the reader was never lapped: the test tested nothing"


# -- across processes: self-checking payloads ---------------------------------------------------------
#
#   [ seq: u64 LE ][ total length: u32 LE ][ body: a slice of _POOL ][ crc32(body + header): u32 LE ]
#
# The body's offset in the pool depends on seq (modulo a prime), its length on the batch; the
# checker also compares the body byte for byte with what it must be. The CRC covers body then
# header, so the publisher caches the body's CRC and publishes at memcpy speed: a writer that
# spends its time computing CRCs is rarely inside a slot, and torn reads (with validation off)
# would become rare too.

_HDR = struct.Struct("<QI")
_OVERHEAD = _HDR.size + 4
_POOL = random.Random(0x5EED).randbytes(256 * 1024)  # identical in every process
_MAX_SIZE = 131_072
_PERIOD = 31  # a prime: consecutive messages, and messages a ring apart, have different bodies
# (smallest, largest) message size: under 4 KiB (batched through the reader's buffer), over 4 KiB
# and up to 64 KiB (batched too), over 64 KiB (alone, one copy straight from the slot)
_REGIMES = {"small": (_OVERHEAD, SCRATCH_COPY_MAX), "medium": (SCRATCH_COPY_MAX + 1, BATCH_BYTES)}
_REGIMES["huge"] = (BATCH_BYTES + 1, _MAX_SIZE)
# 16 sizes per regime, both ends included: few enough that the body CRCs are cached
_SIZES = {name: [lo + (hi - lo) * k // 15 for k in range(16)] for name, (lo, hi) in _REGIMES.items()}
_body_crcs: dict[tuple[int, int], int] = {}


def _body(seq: int, size: int) -> bytes:
    offset = (seq % _PERIOD) * 3001
    return _POOL[offset : offset + size - _OVERHEAD]


def _make(seq: int, size: int) -> bytes:
    header = _HDR.pack(seq, size)
    body = _body(seq, size)
    key = (seq % _PERIOD, size)
    body_crc = _body_crcs.get(key)
    if body_crc is None:
        body_crc = _body_crcs[key] = zlib.crc32(body)
    return b"".join((header, body, zlib.crc32(header, body_crc).to_bytes(4, "little")))


def _check(data: bytes, seq: int) -> str | None:
    """None if *data* is exactly message *seq*, else why not."""
    if len(data) < _OVERHEAD:
        return "short"
    embedded, size = _HDR.unpack_from(data)
    if size != len(data):
        return "length"
    view = memoryview(data)
    if zlib.crc32(view[: _HDR.size], zlib.crc32(view[_HDR.size : -4])) != int.from_bytes(data[-4:], "little"):
        return "checksum"
    if embedded != seq:
        return "seq"
    if data[_HDR.size : -4] != _body(seq, size):
        return "content"
    return None


def _regime(size: int) -> str:
    return next(name for name, (lo, hi) in _REGIMES.items() if size <= hi)


def test_checker_itself() -> None:
    for seq in (0, 1, 12345):
        for sizes in _SIZES.values():
            for size in sizes[:2] + sizes[-2:]:
                good = _make(seq, size)
                assert len(good) == size and _check(good, seq) is None
                assert _check(good, seq + 1) == "seq"
                other = _make(seq + 1, size)
                for cut in (4, 12, size // 2, size - 4):
                    assert _check(good[:cut] + other[cut:], seq) is not None
                flipped = bytearray(good)
                flipped[size // 2] ^= 1
                assert _check(bytes(flipped), seq) is not None


@contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Runs the block with this process pinned to *cpu* (None: unpinned)."""
    before = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _batch_subscriber_main(
    topic: str, idx: int, results: Any, max_messages: int, cpu: int | None, skip_validation: bool = False
) -> None:
    """Takes batches with receive_many until PublisherGone, checking every payload, every batch's
    limits and the exact accounting after every batch."""
    try:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        with sps.Subscriber(topic) as sub:
            if skip_validation:  # only for the demonstration that the checks can fail
                sub._reader._skip_validation_for_test()
            results.put(("ready", idx))
            counts: Counter[str] = Counter()
            reasons: Counter[str] = Counter()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    batch = sub.receive_many(max_messages, timeout=20)
                except sps.PublisherGone:
                    break
                counts["batches"] += 1
                nbytes = sum(map(len, batch.payloads))
                if not 1 <= len(batch) <= max_messages or (nbytes > BATCH_BYTES and len(batch) > 1):
                    counts["limit_errors"] += 1
                counts["received"] += len(batch)
                if counts["received"] + sub.lost != sub.next_seq or sub.next_seq != batch.seq + len(batch):
                    counts["accounting_errors"] += 1
                for seq, data in zip(batch.seqs, batch.payloads, strict=True):
                    regime = _regime(len(data)) if len(data) <= _MAX_SIZE else "huge"
                    counts[regime] += 1
                    reason = _check(data, seq)
                    if reason is not None:
                        counts["corrupt"] += 1
                        reasons[f"{regime}/{reason}"] += 1
            else:
                counts["timed_out"] += 1
            counts["lost"] = sub.lost
            counts["last_seq"] = sub.last_seq
        results.put(("result", idx, dict(counts), dict(reasons)))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def _publish_stream(pub: sps.Publisher, total: int, regimes: list[str], rng: random.Random) -> None:
    """Publishes messages 0..total-1 in batches of 1-40: lists, tuples, generators and fixed-size
    records, with sizes drawn from *regimes*."""
    seq = 0
    while seq < total:
        count = min(rng.randint(1, 40), total - seq)
        kind = rng.randrange(4)
        if kind == 3:  # records: one size for the whole batch
            size = rng.choice(_SIZES[rng.choice(regimes)])
            first = pub.publish_many(b"".join(_make(s, size) for s in range(seq, seq + count)), size=size)
        else:
            sizes = [rng.choice(_SIZES[rng.choice(regimes)]) for _ in range(count)]
            batch = (_make(s, size) for s, size in zip(range(seq, seq + count), sizes, strict=True))
            first = pub.publish_many([list, tuple, iter][kind](batch))
        assert first == seq
        seq += count


def run_stream(
    topic: str, method: str, regimes: list[str], total: int, slots: int, skip_validation: bool = False
) -> tuple[int, list[tuple[dict[str, int], dict[str, int]]]]:
    """One publisher (this process, publish_many) and two subscriber processes (receive_many, one
    taking at most 7 messages a batch). Returns what was published and each subscriber's counts.

    The publisher and the subscribers are pinned to different CPUs when there are two: a torn read
    needs the writer to overwrite a slot *while* a reader copies it, and on a busy 2-core machine
    the scheduler otherwise often puts them on one CPU (see test_multiprocess's negative control)."""
    ctx: Any = multiprocessing.get_context(method)
    results = ctx.Queue()
    cpus = sorted(os.sched_getaffinity(0))
    writer_cpu, reader_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    slot_size = max(_REGIMES[r][1] for r in regimes)
    with sps.Publisher(topic, slots=slots, slot_size=slot_size) as pub, Children() as children:
        procs = [
            children.start(
                ctx, _batch_subscriber_main, topic, i, results, max_messages, reader_cpu, skip_validation
            )
            for i, max_messages in enumerate([MAX_BATCH, 7])
        ]
        for _ in procs:
            assert get_result(results, 30, "a subscriber process")[0] == "ready"
        with pinned(writer_cpu):
            _publish_stream(pub, total, regimes, random.Random(total))
        published = pub.published
        pub.close()
        outcomes = {}
        for _ in procs:
            _, idx, counts, reasons = get_result(results, 60, "a subscriber process")
            outcomes[idx] = (counts, reasons)
        for proc in procs:
            children.join(proc, 10)
    return published, [outcomes[i] for i in sorted(outcomes)]


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize(
    ("regimes", "total", "slots"), [(["small"], 50_000, 8), (["small", "medium", "huge"], 8_000, 4)]
)
def test_publish_many_to_receive_many_across_processes(
    topic: str, method: str, regimes: list[str], total: int, slots: int
) -> None:
    """A publisher process writes self-checking messages with publish_many (lists, tuples,
    generators, records) into a small ring; two subscriber processes take them with receive_many.
    No corrupt payload, no batch over its limits, and the losses counted exactly: after every
    batch, and at the end, received + lost == published. With validation turned off this workload
    delivers torn payloads of every size class, which the checks catch (measured: 7-461 a run)."""
    began = time.monotonic()
    published, outcomes = run_stream(topic, method, regimes, total, slots)
    print(f"\n[{method} {'+'.join(regimes)}] {time.monotonic() - began:.2f}s published={published}")
    assert published == total
    for i, (counts, reasons) in enumerate(outcomes):
        print(f"  subscriber {i}: {counts}")
        assert counts.get("timed_out", 0) == 0, f"subscriber {i} ran out of time: {counts}"
        assert counts.get("corrupt", 0) == 0, f"subscriber {i} received corrupt payloads: {reasons}"
        assert counts.get("limit_errors", 0) == 0, f"subscriber {i} got an oversized batch: {counts}"
        assert counts.get("accounting_errors", 0) == 0, f"subscriber {i} miscounted a loss: {counts}"
        assert counts["received"] + counts["lost"] == published, f"subscriber {i}: {counts}"
        assert counts["last_seq"] == published - 1  # the last message is never overwritten
        for regime in regimes:
            assert counts.get(regime, 0) > 0, f"subscriber {i} never received a {regime} message"
