"""Throughput 1→1 and fan-out 1→4: one publisher, subscribers in their own processes.

Subscribers run in processes started with multiprocessing 'spawn' and attach before the first
round. Each round (``benchmark.pedantic``: ROUNDS rounds after one untimed warm-up round), the
publisher, in the pytest process, publishes N messages as fast as it can (it never waits: the
ring is lossy), then an 8-byte end-of-round marker, and waits until every subscriber has
acknowledged the marker through its pipe. pytest-benchmark's time per round is thus the
publishing of N messages plus the drain of what the slowest subscriber still had to read (at
most a ring) and one pipe message per subscriber.

Every message carries its 8-byte stream sequence number. Every subscriber touches every message
it takes (``len()`` and that number), checks the order, and counts what it was delivered and what
it lost, both through the subscriber's ``lost`` and through the gaps in the numbers (the two
must agree, and ``delivered + lost`` must be N every round: the test fails otherwise).

Modes:

- ``message``: ``publish`` per message, ``receive`` per message (default ``spin_us=50``: spins
  50 µs, then sleeps on its wake-up socket);
- ``batch``: ``publish_many(records, size=...)`` (256 messages of 64 B, or 8 of 1 MiB, per call)
  and ``receive_many`` (up to 256 per call; one per call at 1 MiB, which exceeds its scratch
  buffer);
- ``view`` (1 MiB only): the publisher as in ``message``; the subscriber reads each message in
  place with ``view()`` (zero-copy; a view overwritten while open counts as lost).

The 64-byte payloads are built before each round (untimed); the 1 MiB ones come from one
reused buffer whose first 8 bytes are rewritten before each publish (a few hundred ns against
a copy of 1 MiB).

``extra_info`` holds: ``publisher_msgs_per_s`` (N over the publishing alone, median round),
``round_msgs_per_s`` (N over pytest-benchmark's median round), ``delivered_per_s_min`` /
``delivered_per_s_max`` (per subscriber: messages delivered over the time from the start of the
round to its taking the marker, summed over the rounds; slowest and fastest subscriber),
``loss_share`` (lost / (delivered + lost), all subscribers and rounds), ``wakeups_per_round``
(datagrams the publisher sent to sleeping subscribers) and, in view mode, ``overwritten``.

Cores: this machine has 2. In 1→1 the publisher and the subscriber have about a core each
(less whatever else runs). In fan-out 1→4, 5 processes share the 2 cores: the publisher gets
at most about one core, the 4 subscribers share the other (and compete with the publisher for
the first whenever they spin), so each subscriber runs well under half the time. Per-subscriber
rates are then what a fraction of a core delivers and are bounded by the scheduler, not by the
ring; losses grow accordingly (a descheduled subscriber is lapped), the publisher's rate drops
below its 1→1 figure, and the min/max spread says how evenly the scheduler shared the cores.
Fan-out figures measure the machine as much as the library: compare them with 1→1 only as
"what 4 readers cost on 2 cores", not as a per-subscriber capability.

Run: ``python -m pytest benchmarks/test_throughput.py`` (well under 2 minutes).
"""

from __future__ import annotations

import multiprocessing as mp
import struct
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from statistics import median
from typing import Any

import pytest

import shmpubsub as sps

ROUNDS = 5
TIMEOUT = 60.0  # longest wait for a subscriber (start-up, a round): a stuck run fails, never hangs
SMALL, LARGE = 64, 1 << 20
_SEQ = struct.Struct("<Q")


@dataclass(frozen=True)
class Case:
    size: int
    mode: str  # "message", "batch" or "view"

    @property
    def count(self) -> int:
        """Messages per round."""
        return 50_000 if self.size == SMALL else 256

    @property
    def slots(self) -> int:
        return 4096 if self.size == SMALL else 64  # 256 KiB and 64 MiB of ring

    @property
    def chunk(self) -> int:
        """Messages per publish_many call in batch mode."""
        return 256 if self.size == SMALL else 8

    def __str__(self) -> str:
        return f"{'64B' if self.size == SMALL else '1MiB'}-{self.mode}"


CASES = [
    Case(SMALL, "message"),
    Case(SMALL, "batch"),
    Case(LARGE, "message"),
    Case(LARGE, "batch"),
    Case(LARGE, "view"),
]

# -- the subscriber processes ------------------------------------------------------------------
#
# A message of `size` bytes is a payload; one of 8 bytes ends a round (it carries the number
# the next round starts at); an empty one ends the run. After each round's marker the
# subscriber sends its report through its pipe.


def _report(
    conn: Connection, delivered: int, lost: int, gaps: int, disorder: int, overwritten: int, t_end: float
) -> None:
    conn.send(
        {
            "delivered": delivered,
            "lost": lost,
            "gaps": gaps,
            "disorder": disorder,
            "overwritten": overwritten,
            "t_end": t_end,
        }
    )


def _take_messages(sub: sps.Subscriber, size: int, conn: Connection) -> None:
    receive, unpack = sub.receive, _SEQ.unpack_from
    expected = 0
    while True:
        lost_before = sub.lost
        delivered = gaps = disorder = 0
        while True:
            data = receive(TIMEOUT).data
            if len(data) != size:
                break
            seq = unpack(data)[0]
            if seq != expected:
                if seq < expected:
                    disorder += 1
                    continue
                gaps += seq - expected
            expected = seq + 1
            delivered += 1
        t_end = time.monotonic()
        if not data:
            return
        end = unpack(data)[0]
        gaps += end - expected
        expected = end
        _report(conn, delivered, sub.lost - lost_before, gaps, disorder, 0, t_end)


def _take_batches(sub: sps.Subscriber, size: int, conn: Connection) -> None:
    receive_many, unpack = sub.receive_many, _SEQ.unpack_from
    expected = 0
    while True:
        lost_before = sub.lost
        delivered = gaps = disorder = 0
        while True:
            for data in receive_many(256, TIMEOUT):
                if len(data) != size:
                    break
                seq = unpack(data)[0]
                if seq != expected:
                    if seq < expected:
                        disorder += 1
                        continue
                    gaps += seq - expected
                expected = seq + 1
                delivered += 1
            else:
                continue
            break
        t_end = time.monotonic()
        if not data:
            return
        end = unpack(data)[0]
        gaps += end - expected
        expected = end
        _report(conn, delivered, sub.lost - lost_before, gaps, disorder, 0, t_end)


def _take_views(sub: sps.Subscriber, size: int, conn: Connection) -> None:
    view, unpack = sub.view, _SEQ.unpack_from
    expected = 0
    while True:
        lost_before = sub.lost
        delivered = gaps = disorder = overwritten = 0
        while True:
            try:
                with view(TIMEOUT) as v:
                    data = v.data
                    n = len(data)
                    seq = unpack(data)[0] if n >= 8 else 0
            except sps.MessageOverwritten:
                overwritten += 1  # what it read is void; the library counts it in `lost`
                continue
            if n != size:
                break
            if seq != expected:
                if seq < expected:
                    disorder += 1
                    continue
                gaps += seq - expected
            expected = seq + 1
            delivered += 1
        t_end = time.monotonic()
        if n == 0:
            return
        gaps += seq - expected
        expected = seq
        _report(conn, delivered, sub.lost - lost_before, gaps, disorder, overwritten, t_end)


_LOOPS: dict[str, Callable[[sps.Subscriber, int, Connection], None]] = {
    "message": _take_messages,
    "batch": _take_batches,
    "view": _take_views,
}


def _subscriber(topic: str, size: int, mode: str, conn: Connection) -> None:
    try:
        with sps.Subscriber(topic) as sub:
            conn.send("ready")
            _LOOPS[mode](sub, size, conn)
    except BaseException:
        with suppress(Exception):
            conn.send(f"subscriber failed:\n{traceback.format_exc()}")
        raise
    finally:
        conn.close()


# -- the publisher's side ----------------------------------------------------------------------


def _expect(conn: Connection, process: Any) -> Any:
    """The subscriber's next message; fails the test if it reports an error, dies or stalls."""
    if not conn.poll(TIMEOUT):
        raise TimeoutError(f"subscriber pid {process.pid} said nothing for {TIMEOUT} s")
    try:
        got = conn.recv()
    except EOFError:
        process.join(5)
        raise RuntimeError(f"subscriber pid {process.pid} died (exit code {process.exitcode})") from None
    if isinstance(got, str) and got != "ready":
        raise RuntimeError(got)
    return got


@contextmanager
def _fan_out(
    topic: str, case: Case, subscribers: int
) -> Iterator[tuple[sps.Publisher, list[tuple[Connection, Any]]]]:
    """A publisher and *subscribers* attached subscriber processes. On the way out, however it
    is left: an empty message stops them, stragglers are killed, and the publisher's close
    removes the topic (and reclaims the entries and sockets of killed subscribers)."""
    ctx = mp.get_context("spawn")
    with sps.Publisher(topic, slots=case.slots, slot_size=case.size) as pub:
        peers: list[tuple[Connection, Any]] = []
        try:
            for _ in range(subscribers):
                receiving, sending = ctx.Pipe(duplex=False)
                process = ctx.Process(
                    target=_subscriber, args=(topic, case.size, case.mode, sending), daemon=True
                )
                try:
                    process.start()
                finally:
                    sending.close()  # the child has its own copy
                peers.append((receiving, process))
            for conn, process in peers:
                assert _expect(conn, process) == "ready"
            yield pub, peers
        finally:
            with suppress(Exception):
                pub.publish(b"")
            for _, process in peers:
                process.join(10)
            for conn, process in peers:
                if process.is_alive():
                    process.kill()
                    process.join(10)
                conn.close()


class _Round:
    """One round's publishing (mode- and size-specific) and the collection of the reports."""

    def __init__(self, pub: sps.Publisher, peers: list[tuple[Connection, Any]], case: Case) -> None:
        self.pub, self.peers, self.case = pub, peers, case
        self.next_seq = 0  # the stream's numbering, continued across rounds
        self.publish_seconds: list[float] = []
        self.reports: list[list[dict[str, Any]]] = []  # per round, per subscriber
        self._payloads: list[bytes] = []
        self._records = bytearray()
        if case.size == LARGE:  # one reused source: for message/view, or a chunk in batch
            self._records = bytearray(case.size * (case.chunk if case.mode == "batch" else 1))

    def setup(self) -> None:
        """Untimed: builds the small payloads of the coming round."""
        case, first = self.case, self.next_seq
        if case.size != SMALL:
            return
        tail = bytes(case.size - 8)
        if case.mode == "batch":
            self._records = bytearray(b"".join(_SEQ.pack(s) + tail for s in range(first, first + case.count)))
        else:
            self._payloads = [_SEQ.pack(s) + tail for s in range(first, first + case.count)]

    def run(self) -> None:
        """Timed: publishes the round, then waits for every subscriber's report."""
        case, pub, first = self.case, self.pub, self.next_seq
        end = first + case.count
        marker = _SEQ.pack(end)
        started = time.monotonic()
        if case.mode == "batch":
            self._publish_batches(first)
        elif case.size == SMALL:
            publish = pub.publish
            for payload in self._payloads:
                publish(payload)
        else:
            publish, pack_into, buf = pub.publish, _SEQ.pack_into, self._records
            for seq in range(first, end):
                pack_into(buf, 0, seq)
                publish(buf)
        pub.publish(marker)
        self.publish_seconds.append(time.monotonic() - started)
        reports = [_expect(conn, process) for conn, process in self.peers]
        for report in reports:
            report["seconds"] = report["t_end"] - started
        self.reports.append(reports)
        self.next_seq = end

    def _publish_batches(self, first: int) -> None:
        case, publish_many, records = self.case, self.pub.publish_many, self._records
        size = case.size
        if case.size == SMALL:
            view = memoryview(records)
            step = case.chunk * size
            for offset in range(0, len(records), step):
                publish_many(view[offset : offset + step], size=size)
            view.release()
            return
        pack_into = _SEQ.pack_into
        for base in range(first, first + case.count, case.chunk):
            for j in range(case.chunk):
                pack_into(records, j * size, base + j)
            publish_many(records, size=size)


def _throughput(benchmark: Any, topic: str, case: Case, subscribers: int) -> None:
    with _fan_out(topic, case, subscribers) as (pub, peers):
        rounds = _Round(pub, peers, case)
        rounds.setup()
        rounds.run()  # warm-up: first-touch of the ring's pages, caches, wake-up paths
        rounds.publish_seconds.clear()
        rounds.reports.clear()
        wakeups_before = pub.wakeups_sent
        benchmark.pedantic(rounds.run, setup=rounds.setup, rounds=ROUNDS)
        wakeups = pub.wakeups_sent - wakeups_before

    count = case.count
    for reports in rounds.reports:
        for i, r in enumerate(reports):
            assert r["disorder"] == 0, f"subscriber {i}: messages out of order: {r}"
            assert r["gaps"] == r["lost"], f"subscriber {i}: gaps in the numbers disagree with `lost`: {r}"
            assert r["delivered"] + r["lost"] == count, f"subscriber {i}: delivered + lost != {count}: {r}"
    per_subscriber = list(zip(*rounds.reports, strict=True))
    rates = [sum(r["delivered"] for r in sub) / sum(r["seconds"] for r in sub) for sub in per_subscriber]
    delivered = sum(r["delivered"] for reports in rounds.reports for r in reports)
    lost = sum(r["lost"] for reports in rounds.reports for r in reports)
    info = benchmark.extra_info
    info.update(
        size=case.size,
        mode=case.mode,
        subscribers=subscribers,
        messages_per_round=count,
        ring_slots=case.slots,
        publisher_msgs_per_s=round(count / median(rounds.publish_seconds)),
        delivered_per_s_min=round(min(rates)),
        delivered_per_s_max=round(max(rates)),
        loss_share=round(lost / (delivered + lost), 4),
        wakeups_per_round=round(wakeups / len(rounds.reports), 1),
    )
    if case.mode == "view":
        info["overwritten"] = sum(r["overwritten"] for reports in rounds.reports for r in reports)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None with --benchmark-disable
        info["round_msgs_per_s"] = round(count / stats.stats.median)


_cases = pytest.mark.parametrize("case", CASES, ids=str)


@_cases
def test_throughput_1to1(benchmark: Any, topic: str, case: Case) -> None:
    _throughput(benchmark, topic, case, subscribers=1)


@_cases
def test_fanout_1to4(benchmark: Any, topic: str, case: Case) -> None:
    _throughput(benchmark, topic, case, subscribers=4)
