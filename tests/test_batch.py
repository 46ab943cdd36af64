"""Batches and large messages: Publisher.publish_many, Subscriber.try_receive_many/receive_many
(Batch), and the one-copy path for messages over 4 KiB; in one process, against a model ring,
with threads and across real processes (fork and spawn) with self-checking payloads.

A batch holds consecutive messages and never spans a loss; it holds at most MAX_BATCH messages
and BATCH_BYTES of payload, except that a single larger message comes alone.
"""

from __future__ import annotations

import array
import multiprocessing
import os
import random
import selectors
import struct
import threading
import time
import traceback
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from helpers import Children, get_result, time_limit
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from test_ring import ModelReader, ModelRing, abort_loan, drain, payload

import shmpubsub as sps
from shmpubsub._core.ring import Reader, lap_margin

BATCH_BYTES = 65536  # payload bytes a batch holds at most (but one larger message comes alone)
MAX_BATCH = 4096  # messages a batch holds at most
SCRATCH_COPY_MAX = 4096  # larger messages are copied straight from the slot

# -- helpers -------------------------------------------------------------------------------------


def take_batches(sub: sps.Subscriber, max_messages: int = 256, limit: int = 100_000) -> list[sps.Batch]:
    """Every batch try_receive_many() returns until it returns an empty one."""
    out: list[sps.Batch] = []
    for _ in range(limit):
        batch = sub.try_receive_many(max_messages)
        if not batch:
            return out
        out.append(batch)
    raise AssertionError(f"try_receive_many() never ran dry after {limit} batches")


def flat(batches: list[sps.Batch]) -> list[tuple[int, bytes]]:
    return [(seq, data) for b in batches for seq, data in zip(b.seqs, b.payloads, strict=True)]


def check_batch_shape(batch: sps.Batch, max_messages: int = 256) -> None:
    """The limits every batch obeys."""
    assert 1 <= len(batch) <= min(max_messages, MAX_BATCH), batch
    total = sum(map(len, batch.payloads))
    assert total <= BATCH_BYTES or len(batch) == 1, (batch, total)
    assert all(type(p) is bytes for p in batch.payloads)


_BLOB = random.Random(0xB10B).randbytes(1 << 21)


def blob(tag: int, size: int) -> bytes:
    """A cheap pseudo-random payload of *size* bytes (up to 1 MiB), different for every tag."""
    offset = (tag * 7919) % (len(_BLOB) - size + 1)
    return _BLOB[offset : offset + size]


def as_uint8(data: bytes) -> Any:
    return np.frombuffer(data, dtype=np.uint8)


def hooked_reader(sub: sps.Subscriber, after_locate: Callable[[], None]) -> None:
    """Runs *after_locate* once, right after the subscriber's reader located a large message for
    its one-copy read and before it copies it: forces the publisher to overwrite it meanwhile."""

    class Hooked(Reader):
        __slots__ = ()
        pending: list[Callable[[], None]] = [after_locate]  # noqa: RUF012

        def view_begin(self) -> tuple[int, int] | None:
            got = super().view_begin()
            if got is not None and self.pending:
                self.pending.pop()()
            return got

    sub._reader.__class__ = Hooked


@contextmanager
def threads(*targets: Callable[[], None]) -> Iterator[None]:
    """Runs daemon threads; on leaving, joins them (bounded) and fails if one is stuck."""
    started = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in started:
        t.start()
    try:
        yield
    finally:
        for t in started:
            t.join(10)
    assert not [t for t in started if t.is_alive()], "a thread is still blocked after 10 s"


# -- publish_many: what it accepts -----------------------------------------------------------------


def test_publish_many_accepts_lists_tuples_generators_and_returns_the_first_seq(topic: str) -> None:
    with sps.Publisher(topic, slots=64, slot_size=64) as pub, sps.Subscriber(topic) as sub:
        assert pub.publish_many([b"a", b"bb", b"ccc"]) == 0
        assert pub.publish_many((b"d", b"")) == 3
        assert pub.publish_many(bytes([65 + i]) * i for i in range(4)) == 5
        assert pub.publish(b"single") == 9
        assert pub.publish_many(iter([bytearray(b"x")])) == 10
        assert pub.published == 11
        got = flat(take_batches(sub))
        assert got == list(
            enumerate([b"a", b"bb", b"ccc", b"d", b"", b"", b"B", b"CC", b"DDD", b"single", b"x"])
        )
        assert sub.lost == 0


def test_publish_many_counts_bytes_not_items(topic: str) -> None:
    """Lengths are taken in bytes whatever the item's type (len() of an int32 array is not)."""
    ints = np.arange(5, dtype=np.int32)
    grid = np.arange(6, dtype=np.float64).reshape(2, 3)
    source = bytearray(b"0123456789")
    items: list[tuple[object, bytes]] = [
        (b"bytes", b"bytes"),
        (bytearray(b"bytearray"), b"bytearray"),
        (memoryview(b"memoryview"), b"memoryview"),
        (memoryview(source)[2:7], b"23456"),
        (memoryview(source)[:8].cast("I"), bytes(source[:8])),  # len() == 2
        (array.array("d", [1.0, 2.0]), array.array("d", [1.0, 2.0]).tobytes()),
        (ints, ints.tobytes()),  # len() == 5, 20 bytes
        (grid, grid.tobytes()),  # len() == 2, 48 bytes
        (grid[1], grid[1].tobytes()),
        (memoryview(grid), grid.tobytes()),
        (np.float64(2.5), np.float64(2.5).tobytes()),
        (b"", b""),
    ]
    with sps.Publisher(topic, slots=16, slot_size=64) as pub, sps.Subscriber(topic) as sub:
        assert pub.publish_many([obj for obj, _ in items]) == 0
        assert pub.publish_many([ints, b"tail"]) == len(items)  # mixed, the non-bytes first
        batch = sub.try_receive_many()
        assert batch.seq == 0
        assert batch.payloads == [expected for _, expected in items] + [ints.tobytes(), b"tail"]
        assert [len(p) for p in batch] == [len(e) for _, e in items] + [20, 4]


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "numpy-2d", "numpy-records"])
def test_publish_many_with_size_splits_one_buffer_into_records(topic: str, kind: str) -> None:
    raw = bytes(range(48))
    source: Any = {
        "bytes": raw,
        "bytearray": bytearray(raw),
        "memoryview": memoryview(raw),
        "numpy-2d": np.frombuffer(raw, dtype=np.uint16).reshape(4, 6),  # rows of 12 bytes
        "numpy-records": np.frombuffer(raw, dtype=np.dtype([("a", "<u4"), ("b", "<f8")])),
    }[kind]
    with sps.Publisher(topic, slots=16, slot_size=12) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"first")
        assert pub.publish_many(source, size=12) == 1
        assert pub.published == 5
        assert pub.publish_many(source, size=6) == 5  # any size that divides the buffer
        assert pub.published == 13
        got = flat(take_batches(sub))
        records = [raw[i : i + 12] for i in range(0, 48, 12)] + [raw[i : i + 6] for i in range(0, 48, 6)]
        assert got == list(enumerate([b"first", *records]))


def test_publish_many_with_size_on_a_numpy_row_block(topic: str) -> None:
    frames = np.arange(10 * 16, dtype=np.float32).reshape(10, 16)
    with sps.Publisher(topic, slots=16, slot_size=64) as pub, sps.Subscriber(topic) as sub:
        assert pub.publish_many(frames, size=frames.strides[0]) == 0
        assert pub.publish_many(frames[3:5], size=64) == 10  # a contiguous slice of rows
        got = flat(take_batches(sub))
        assert [seq for seq, _ in got] == list(range(12))
        rows = [np.frombuffer(data, dtype=np.float32) for _, data in got]
        for row, expected in zip(rows, [*frames, frames[3], frames[4]], strict=True):
            assert np.array_equal(row, expected)


@pytest.mark.parametrize("how", ["list", "tuple", "generator", "size", "empty-buffer-with-size"])
def test_empty_batch_publishes_nothing_and_returns_the_next_seq(topic: str, how: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"zero")
        pub.publish(b"one")
        first = {
            "list": lambda: pub.publish_many([]),
            "tuple": lambda: pub.publish_many(()),
            "generator": lambda: pub.publish_many(x for x in [b"never"] if False),
            "size": lambda: pub.publish_many(b"", size=4),
            "empty-buffer-with-size": lambda: pub.publish_many(np.empty((0, 99), np.uint8), size=99),
        }[how]()
        assert first == 2
        assert pub.published == 2
        assert flat(take_batches(sub)) == [(0, b"zero"), (1, b"one")]
        assert pub.publish(b"two") == 2
        assert sub.try_receive_many() == sps.Batch([b"two"], 2)


@pytest.mark.parametrize("size", [0, -1, -12, True, False, 1.0, 2.5, "4", None])
def test_bad_record_sizes_are_refused(topic: str, size: object) -> None:
    with sps.Publisher(topic, slots=4, slot_size=16) as pub:
        if size is None:  # without size=, a bytes object is an iterable of ints
            with pytest.raises(sps.InvalidType):
                pub.publish_many(b"abcd", size=size)  # type: ignore[arg-type]
        else:
            with pytest.raises(sps.InvalidArgument) as info:
                pub.publish_many(b"abcd", size=size)  # type: ignore[arg-type]
            assert isinstance(info.value, ValueError)
            assert "size" in str(info.value)
        assert pub.published == 0


@pytest.mark.parametrize(("length", "size"), [(10, 3), (1, 2), (48, 7), (47, 12)])
def test_size_that_does_not_divide_the_buffer_is_refused(topic: str, length: int, size: int) -> None:
    with sps.Publisher(topic, slots=4, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        with pytest.raises(sps.InvalidArgument) as info:
            pub.publish_many(bytes(length), size=size)
        assert str(length) in str(info.value) and str(size) in str(info.value)
        assert pub.published == 0
        assert sub.try_receive_many() == sps.Batch([], 0)


def test_non_contiguous_buffers_are_refused(topic: str) -> None:
    strided = np.zeros((4, 6), dtype=np.uint8)[:, ::2]
    with sps.Publisher(topic, slots=4, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        with pytest.raises(sps.InvalidArgument):
            pub.publish_many(strided, size=3)
        with pytest.raises(sps.InvalidArgument):
            pub.publish_many([b"ok", strided])
        assert pub.published == 0
        assert not sub.try_receive_many()


@pytest.mark.parametrize(
    "items",
    [
        [b"ok", 5],
        [b"ok", "text"],
        [b"ok", None],
        [b"ok", [b"nested"]],
        [object()],
        "text",  # an iterable of str
        b"abc",  # without size=: an iterable of ints
    ],
    ids=["int", "str", "None", "list", "object", "str-iterable", "bytes-without-size"],
)
def test_non_bytes_items_are_refused(topic: str, items: Any) -> None:
    with sps.Publisher(topic, slots=4, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        with pytest.raises(sps.InvalidType) as info:
            pub.publish_many(items)
        assert isinstance(info.value, TypeError)
        assert pub.published == 0
        assert not sub.try_receive_many()
        with pytest.raises(sps.InvalidType):
            pub.publish_many([1, 2], size=1)  # type: ignore[arg-type]  # one buffer, not a list


@pytest.mark.parametrize("bad", [5, None, 2.5])
def test_non_iterable_batch_raises_invalid_type(topic: str, bad: object) -> None:
    with sps.Publisher(topic, slots=4, slot_size=16) as pub:
        with pytest.raises(sps.InvalidType):
            pub.publish_many(bad)  # type: ignore[arg-type]
        assert pub.published == 0


def test_a_generator_that_raises_publishes_nothing(topic: str) -> None:
    class Boom(Exception):
        pass

    def gen() -> Iterator[bytes]:
        yield b"first"
        yield b"second"
        raise Boom

    with sps.Publisher(topic, slots=4, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        with pytest.raises(Boom):
            pub.publish_many(gen())
        assert pub.published == 0
        assert not sub.try_receive_many()


@pytest.mark.parametrize("where", [0, 3, 6])
def test_one_oversized_message_publishes_nothing_and_is_named(topic: str, where: int) -> None:
    with sps.Publisher(topic, slots=8, slot_size=100) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"before")
        batch: list[Any] = [payload(i, 10 * i) for i in range(7)]
        batch[where] = bytearray(101) if where % 2 else np.zeros(101, np.uint8)
        with pytest.raises(sps.MessageTooLarge) as info:
            pub.publish_many(batch)
        assert isinstance(info.value, ValueError)
        assert f"message {where} of the batch" in str(info.value)
        assert "101 bytes" in str(info.value) and "nothing was published" in str(info.value)
        assert pub.published == 1
        assert sub.pending == 1
        assert sub.try_receive_many() == sps.Batch([b"before"], 0)
        assert not sub.try_receive_many()
        # records too large: nothing either
        with pytest.raises(sps.MessageTooLarge):
            pub.publish_many(bytes(404), size=101)
        assert pub.published == 1 and not sub.try_receive_many()
        assert pub.publish_many([b"after"]) == 1
        assert sub.try_receive_many() == sps.Batch([b"after"], 1)
        assert sub.lost == 0


def test_exactly_slot_size_fits(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=100) as pub, sps.Subscriber(topic) as sub:
        assert pub.publish_many([bytes(100), b"x" * 100]) == 0
        assert pub.publish_many(bytes(200), size=100) == 2
        assert [len(p) for p in sub.try_receive_many()] == [100] * 4


def test_publish_many_when_closed_or_during_a_loan(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        loan = pub.loan(4)
        with loan as buf:
            for call in (
                lambda: pub.publish_many([b"no"]),
                lambda: pub.publish_many([]),
                lambda: pub.publish_many(b"nono", size=2),
            ):
                with pytest.raises(sps.LoanError) as info:
                    call()
                assert isinstance(info.value, RuntimeError)
            buf[:] = b"loan"
        assert loan.seq == 0
        assert pub.publish_many([b"a", b"b"]) == 1
        pub.close()
        for call in (
            lambda: pub.publish_many([b"no"]),
            lambda: pub.publish_many([]),
            lambda: pub.publish_many(b"nono", size=2),
            lambda: pub.publish_many([b"x" * 99]),  # closed wins over too large
        ):
            with pytest.raises(sps.ClosedError):
                call()
        assert flat(take_batches(sub)) == [(0, b"loan"), (1, b"a"), (2, b"b")]


@pytest.mark.parametrize("slots", [1, 2, 4, 16])
@pytest.mark.parametrize("count", [5, 17, 1000])
@pytest.mark.parametrize("records", [False, True])
def test_batch_larger_than_the_ring_counts_exact_losses(
    topic: str, slots: int, count: int, records: bool
) -> None:
    with sps.Publisher(topic, slots=slots, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"seen")
        assert sub.try_receive_many() == sps.Batch([b"seen"], 0)
        sent = [i.to_bytes(8, "little") * 2 for i in range(1, count + 1)]
        first = pub.publish_many(b"".join(sent), size=16) if records else pub.publish_many(sent)
        assert first == 1
        assert pub.published == count + 1
        got = flat(take_batches(sub, max_messages=3))
        assert len(got) + sub.lost == count  # everything since the first read adds up
        assert [seq for seq, _ in got] == list(range(count + 1 - len(got), count + 1))
        assert all(data == sent[seq - 1] for seq, data in got)
        # a lapped reader resumes lap_margin(slots) after the oldest message the ring holds
        assert len(got) == (slots - lap_margin(slots) if count > slots else count)
        assert sub.next_seq == count + 1


# -- receive_many / try_receive_many ----------------------------------------------------------------


def test_batch_object(topic: str) -> None:
    with sps.Publisher(topic, slots=16, slot_size=64) as pub, sps.Subscriber(topic) as sub:
        empty = sub.try_receive_many()
        assert isinstance(empty, sps.Batch)
        assert not empty and len(empty) == 0 and empty.seq == 0 and list(empty.seqs) == []
        assert empty.messages() == [] and "empty" in repr(empty)
        pub.publish_many([b"x", b"yy", b"zzz"])
        batch = sub.try_receive_many()
        assert len(batch) == 3 and batch.seq == 0 and batch.seqs == range(0, 3)
        assert list(batch) == [b"x", b"yy", b"zzz"] == batch.payloads
        assert batch[1] == b"yy" and batch[-1] == b"zzz"
        assert batch.messages() == [sps.Message(b"x", 0), sps.Message(b"yy", 1), sps.Message(b"zzz", 2)]
        assert batch == sps.Batch([b"x", b"yy", b"zzz"], 0)
        assert batch != sps.Batch([b"x", b"yy", b"zzz"], 1)
        assert batch != [b"x", b"yy", b"zzz"]
        with pytest.raises(TypeError):
            hash(batch)
        assert "seq=0..2" in repr(batch) and "3 messages" in repr(batch)
        assert sub.last_seq == 2 and sub.next_seq == 3
        # Payloads are private copies: later reads do not change an earlier batch.
        pub.publish_many([b"X" * 40] * 20)
        take_batches(sub)
        assert batch.payloads == [b"x", b"yy", b"zzz"]
        assert sub.try_receive_many() == sps.Batch([], 23)


def test_batches_are_consecutive_and_honour_max_messages(topic: str) -> None:
    with sps.Publisher(topic, slots=128, slot_size=32) as pub, sps.Subscriber(topic) as sub:
        sent = [payload(i, i % 33) for i in range(100)]
        pub.publish_many(sent)
        batches = take_batches(sub, max_messages=7)
        assert [len(b) for b in batches] == [7] * 14 + [2]
        assert [b.seq for b in batches] == list(range(0, 100, 7))
        assert flat(batches) == list(enumerate(sent))
        pub.publish_many(sent[:5])
        assert sub.try_receive_many(1) == sps.Batch([sent[0]], 100)
        assert sub.try_receive_many(1000) == sps.Batch(sent[1:5], 101)
        assert sub.try_receive_many(1) == sps.Batch([], 105)
        assert sub.lost == 0


def test_at_most_max_batch_messages(topic: str) -> None:
    with sps.Publisher(topic, slots=8192, slot_size=8) as pub, sps.Subscriber(topic) as sub:
        pub.publish_many(bytes(8 * 5000), size=8)
        pub.publish_many([b""] * 3000)
        batches = take_batches(sub, max_messages=100_000)
        assert [len(b) for b in batches] == [MAX_BATCH, 5000 + 3000 - MAX_BATCH]
        assert sub.lost == 0
        pub.publish_many([b""] * 5000)
        batch = sub.receive_many(max_messages=10**9, timeout=1)
        assert len(batch) == MAX_BATCH and batch.seq == 8000


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ([1024] * 70, [64, 6]),
        ([BATCH_BYTES // 2] * 3, [2, 1]),
        ([BATCH_BYTES, 0, 0, 1], [3, 1]),  # empty messages still fit a full batch
        ([1, BATCH_BYTES], [1, 1]),
        ([5000] * 20, [13, 7]),  # over 4 KiB but under 64 KiB: batched too
        ([BATCH_BYTES + 1, 5, 5], [1, 2]),  # a larger message comes alone
        ([3, BATCH_BYTES + 1, 100_000, 7], [1, 1, 1, 1]),
    ],
)
def test_batches_stop_at_64_kib(topic: str, sizes: list[int], expected: list[int]) -> None:
    with sps.Publisher(topic, slots=128, slot_size=100_000) as pub, sps.Subscriber(topic) as sub:
        sent = [blob(i, size) for i, size in enumerate(sizes)]
        pub.publish_many(sent)
        batches = take_batches(sub, max_messages=MAX_BATCH)
        assert [len(b) for b in batches] == expected
        for b in batches:
            check_batch_shape(b, MAX_BATCH)
        assert flat(batches) == list(enumerate(sent))
        # receive_many the same way
        pub.publish_many(sent)
        got = []
        while len(got) < len(sent):
            batch = sub.receive_many(MAX_BATCH, timeout=1)
            check_batch_shape(batch, MAX_BATCH)
            got.extend(batch.payloads)
        assert got == sent and sub.lost == 0


@pytest.mark.parametrize("slots", [1, 2, 4, 16])
@pytest.mark.parametrize("lapped", ["oldest", "latest"])
def test_a_lapped_batch_resumes_after_the_loss_and_counts_it(topic: str, slots: int, lapped: str) -> None:
    with sps.Publisher(topic, slots=slots, slot_size=16) as pub, sps.Subscriber(topic, lapped=lapped) as sub:
        published = 0
        received = 0
        for burst in [1, slots, slots + 1, 3 * slots + 2, 1, 10]:
            lost_before = lost_at_start = sub.lost
            expected_from = sub.next_seq
            pub.publish_many([payload(published + i, 16) for i in range(burst)])
            published += burst
            for batch in take_batches(sub):
                assert all(data == payload(seq, 16) for seq, data in zip(batch.seqs, batch, strict=True))
                received += len(batch)
                # lost grew by exactly the gap before this batch
                assert sub.lost - lost_before == batch.seq - expected_from
                lost_before, expected_from = sub.lost, batch.seq + len(batch)
            assert received + sub.lost == published
            assert sub.next_seq == published and sub.last_seq == published - 1
            # the reader was up to date before the burst: it lost what did not fit the ring
            kept = slots - lap_margin(slots) if lapped == "oldest" else 1
            want_lost = 0 if burst <= slots else burst - kept
            assert sub.lost - lost_at_start == want_lost


def test_skip_markers_stop_a_batch_and_are_counted(topic: str) -> None:
    with sps.Publisher(topic, slots=16, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        pub.publish_many([b"a", b"b", b"c"])
        pub.skip(2)
        pub.publish_many([b"f", b"g"])
        pub.skip(1)
        pub.skip(0)
        pub.publish(b"i")
        assert sub.try_receive_many() == sps.Batch([b"a", b"b", b"c"], 0)
        assert sub.lost == 0
        assert sub.try_receive_many() == sps.Batch([b"f", b"g"], 5)
        assert sub.lost == 2
        assert sub.receive_many(timeout=1) == sps.Batch([b"i"], 8)
        assert sub.lost == 3
        pub.skip(3)
        assert sub.try_receive_many() == sps.Batch([], 12)  # passed the markers, nothing after them
        assert sub.lost == 6 and sub.next_seq == 12
        pub.skip(40)  # more than a ring-full: markers for the last 16, the rest lapped
        pub.publish_many([b"x", b"y"])
        assert sub.try_receive_many() == sps.Batch([b"x", b"y"], 52)
        assert sub.lost == 46
        assert sub.lost + 8 == pub.published


def test_interleaving_with_single_reads(topic: str) -> None:
    with sps.Publisher(topic, slots=64, slot_size=8192) as pub, sps.Subscriber(topic) as sub:
        sent = [blob(i, (i * 977) % 8000) for i in range(40)]
        pub.publish_many(sent)
        got: list[tuple[int, bytes]] = []
        buf = bytearray(8192)
        steps = 0
        while len(got) < len(sent):
            step = steps % 6
            steps += 1
            if step == 0:
                msg = sub.try_receive()
                assert msg is not None
                got.append((msg.seq, msg.data))
            elif step == 1:
                got.extend(flat([sub.try_receive_many(3)]))
            elif step == 2:
                msg = sub.receive(timeout=1)
                got.append((msg.seq, msg.data))
            elif step == 3:
                got.extend(flat([sub.receive_many(2, timeout=1)]))
            elif step == 4:
                n = sub.receive_into(buf)
                assert n is not None
                got.append((sub.last_seq, bytes(buf[:n])))
            else:
                with sub.view(timeout=1) as view:
                    got.append((view.seq, bytes(view.data)))
        assert got == list(enumerate(sent))
        assert sub.try_receive() is None and not sub.try_receive_many() and sub.lost == 0


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, False, None, "3", 2**70 * 0.5])
def test_invalid_max_messages(topic: str, bad: object) -> None:
    with sps.Publisher(topic, slots=4, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"kept")
        for call in (lambda: sub.try_receive_many(bad), lambda: sub.receive_many(bad, timeout=0)):  # type: ignore[arg-type]
            with pytest.raises(sps.InvalidArgument) as info:
                call()
            assert isinstance(info.value, ValueError) and "max_messages" in str(info.value)
        assert sub.try_receive_many(1) == sps.Batch([b"kept"], 0)  # nothing was consumed


@pytest.mark.parametrize("timeout", [-1, -0.5, float("nan"), "1", True])
def test_invalid_timeout_with_a_message_pending(topic: str, timeout: object) -> None:
    with sps.Publisher(topic, slots=4, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"kept")
        with pytest.raises(sps.InvalidArgument):
            sub.receive_many(timeout=timeout)  # type: ignore[arg-type]
        assert sub.receive_many(timeout=0) == sps.Batch([b"kept"], 0)


def test_receive_many_timeout(topic: str) -> None:
    with sps.Publisher(topic) as pub, sps.Subscriber(topic) as sub:
        began = time.monotonic()
        with pytest.raises(sps.ReceiveTimeout):
            sub.receive_many(timeout=0)
        assert time.monotonic() - began < 0.05
        durations = []
        for _ in range(3):
            began = time.monotonic()
            with pytest.raises(sps.ReceiveTimeout) as info:
                sub.receive_many(10, timeout=0.05)
            durations.append(time.monotonic() - began)
            assert isinstance(info.value, TimeoutError)
        assert min(durations) >= 0.05 and min(durations) <= 0.15 and max(durations) < 1.0, durations
        assert not pub.subscribers[0].asleep  # a timed-out wait withdrew its wake-up request
        pub.publish_many([b"a", b"b"])
        assert pub.wakeups_sent == 0
        assert sub.receive_many(timeout=0) == sps.Batch([b"a", b"b"], 0)


def test_receive_many_returns_early_and_a_batch_wakes_once(topic: str) -> None:
    with sps.Publisher(topic, slots=256, slot_size=16) as pub, sps.Subscriber(topic, spin_us=0) as sub:
        sent = [payload(i, 16) for i in range(200)]
        got: list[tuple[int, bytes]] = []
        failure: list[BaseException] = []

        def consume() -> None:
            try:
                got.extend(flat([sub.receive_many(MAX_BATCH, timeout=10)]))
            except BaseException as e:
                failure.append(e)

        with threads(consume):
            deadline = time.monotonic() + 5
            while not (pub.subscribers and pub.subscribers[0].asleep):
                assert time.monotonic() < deadline, "the subscriber never went to sleep"
                time.sleep(0.002)
            began = time.monotonic()
            pub.publish_many(sent)
        assert not failure, failure
        assert time.monotonic() - began < 5
        assert pub.wakeups_sent == 1  # one datagram for the whole batch
        assert got and got[0][0] == 0
        got.extend(flat(take_batches(sub)))
        assert got == list(enumerate(sent))


def test_publisher_gone_after_drain(topic: str) -> None:
    with sps.Publisher(topic, slots=16, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        pub.publish_many([bytes([i]) for i in range(10)])
        pub.close()
        assert sub.end_reason == "closed"
        batches = [sub.receive_many(3, timeout=1) for _ in range(4)]
        assert [len(b) for b in batches] == [3, 3, 3, 1]
        assert flat(batches) == [(i, bytes([i])) for i in range(10)]
        for timeout in (None, 0, 1):
            with pytest.raises(sps.PublisherGone) as info:
                sub.receive_many(timeout=timeout)
            assert info.value.reason == "closed" and isinstance(info.value, EOFError)
        assert sub.try_receive_many() == sps.Batch([], 10)


def test_closed_publisher_wakes_a_blocked_receive_many(topic: str) -> None:
    with sps.Publisher(topic, slots=16, slot_size=16) as pub, sps.Subscriber(topic, spin_us=0) as sub:
        outcome: list[object] = []

        def consume() -> None:
            try:
                outcome.append(sub.receive_many(timeout=10))
            except BaseException as e:
                outcome.append(e)

        with threads(consume):
            time.sleep(0.05)
            pub.close()
        assert len(outcome) == 1 and isinstance(outcome[0], sps.PublisherGone), outcome


def test_closed_subscriber(topic: str) -> None:
    with sps.Publisher(topic, slots=16, slot_size=16) as pub:
        sub = sps.Subscriber(topic)
        pub.publish(b"unread")
        sub.close()
        with pytest.raises(sps.ClosedError):
            sub.try_receive_many()
        with pytest.raises(sps.ClosedError):
            sub.receive_many(timeout=1)
        with pytest.raises(sps.ClosedError):
            sub.receive_many()


def test_close_from_another_thread_ends_a_blocked_receive_many(topic: str) -> None:
    with sps.Publisher(topic, slots=16, slot_size=16), sps.Subscriber(topic, spin_us=0) as sub:
        outcome: list[object] = []

        def consume() -> None:
            try:
                outcome.append(sub.receive_many(timeout=10))
            except BaseException as e:
                outcome.append(e)

        with threads(consume):
            time.sleep(0.05)
            sub.close()
        assert len(outcome) == 1 and isinstance(outcome[0], sps.ClosedError), outcome


def test_selectable_subscriber_arms_on_an_empty_batch(topic: str) -> None:
    with (
        sps.Publisher(topic, slots=256, slot_size=16) as pub,
        sps.Subscriber(topic) as sub,
        selectors.DefaultSelector() as sel,
    ):
        sel.register(sub.fileno(), selectors.EVENT_READ)
        assert not sub.try_receive_many()  # arms
        assert pub.subscribers[0].asleep
        assert sel.select(0) == []
        pub.publish_many([payload(i, 8) for i in range(100)])
        assert pub.wakeups_sent == 1
        assert sel.select(timeout=5)
        batches = take_batches(sub, max_messages=30)  # the last, empty call drains and re-arms
        assert [len(b) for b in batches] == [30, 30, 30, 10]
        assert pub.subscribers[0].asleep
        assert sel.select(0) == []
        pub.publish_many(bytes(80), size=8)
        assert pub.wakeups_sent == 2
        assert sel.select(timeout=5)
        assert len(sub.receive_many(MAX_BATCH, timeout=1)) == 10  # selectable receive_many
        assert not sub.try_receive_many()
        assert sel.select(0) == []
        # taking without ever finding the ring empty does not re-arm
        pub.publish_many([b"m"] * 5)
        assert pub.wakeups_sent == 3
        assert len(sub.try_receive_many(2)) == 2
        pub.publish_many([b"n"] * 5)
        assert pub.wakeups_sent == 3
        pub.close()
        assert len(flat(take_batches(sub))) == 8
        assert sel.select(timeout=5)  # the end makes it readable, for good
        assert sub.end_reason == "closed"
        with pytest.raises(sps.PublisherGone):
            sub.receive_many(timeout=1)
        sel.unregister(sub.fileno())


# -- large messages: one copy straight from the slot ------------------------------------------------

LARGE = [SCRATCH_COPY_MAX - 1, SCRATCH_COPY_MAX, SCRATCH_COPY_MAX + 1, 5000, BATCH_BYTES, BATCH_BYTES + 1]
LARGE += [1 << 20]


@pytest.mark.parametrize("size", LARGE)
@pytest.mark.parametrize(
    "how", ["try_receive", "receive", "try_receive_many", "receive_many", "receive_into", "latest"]
)
def test_large_messages_arrive_exactly(topic: str, size: int, how: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=1 << 20) as pub, sps.Subscriber(topic) as sub:
        sent = [blob(i, size - i) for i in range(3)]  # sizes differ, so stale bytes would show
        short = blob(99, 10)
        pub.publish_many([sent[0], short, sent[1]])
        pub.publish(sent[2])
        expected = [(0, sent[0]), (1, short), (2, sent[1]), (3, sent[2])]
        got: list[tuple[int, bytes]] = []
        buf = bytearray(size + 5)
        for _ in range(4):
            if how == "latest":
                msg = sub.latest()
                assert msg is not None and (msg.seq, msg.data) == (3, sent[2])
                got.append((msg.seq, msg.data))
                assert sub.try_receive() is not None  # move on
                continue
            if how in ("try_receive", "receive"):
                msg = sub.try_receive() if how == "try_receive" else sub.receive(timeout=1)
                assert msg is not None and type(msg.data) is bytes
                got.append((msg.seq, msg.data))
            elif how == "receive_into":
                n = sub.receive_into(buf)
                assert n is not None
                got.append((sub.last_seq, bytes(buf[:n])))
            else:
                batch = sub.try_receive_many() if how == "try_receive_many" else sub.receive_many(timeout=1)
                check_batch_shape(batch)
                got.extend(flat([batch]))
            if len(got) == 4:
                break
        if how != "latest":
            assert got == expected
        assert sub.try_receive() is None and sub.lost == 0


@pytest.mark.parametrize(
    ("size", "how"),
    [(5000, "try_receive"), (5000, "receive")]  # batches copy messages up to 64 KiB in C
    + [(BATCH_BYTES + 1, how) for how in ["try_receive", "receive", "try_receive_many", "receive_many"]],
)
@pytest.mark.parametrize("overwrite", [1, 2, 5])
def test_large_message_overwritten_during_its_copy_is_never_returned(
    topic: str, size: int, how: str, overwrite: int
) -> None:
    """The publisher overwrites the message between locating it and copying it (forced): the torn
    copy is thrown away, the loss counted exactly, and the next intact message returned."""
    slots = 2
    with sps.Publisher(topic, slots=slots, slot_size=BATCH_BYTES + 1) as pub, sps.Subscriber(topic) as sub:
        sent = {i: blob(i, size - i) for i in range(2 + overwrite)}
        pub.publish(sent[0])
        pub.publish(sent[1])

        def overwrite_now() -> None:
            for i in range(2, 2 + overwrite):
                pub.publish(sent[i])

        hooked_reader(sub, overwrite_now)
        with time_limit(5):
            if how == "try_receive":
                msg = sub.try_receive()
            elif how == "receive":
                msg = sub.receive(timeout=1)
            else:
                batch = sub.try_receive_many() if how == "try_receive_many" else sub.receive_many(timeout=1)
                assert len(batch) == 1
                msg = batch.messages()[0]
        assert msg is not None
        published = 2 + overwrite
        first_kept = published - slots  # the oldest message the ring still holds
        assert (msg.seq, msg.data) == (first_kept, sent[first_kept])
        assert sub.lost == first_kept
        rest = [(m.seq, m.data) for m in drain(sub)]
        assert rest == [(i, sent[i]) for i in range(first_kept + 1, published)]
        assert 1 + len(rest) + sub.lost == published


# -- model-based -----------------------------------------------------------------------------------

SKIPPED: Any = object()  # what the model holds in a slot that Publisher.skip marked


class BatchModelRing(ModelRing):
    """test_ring's model ring, plus skip markers and batches."""

    def skip(self, count: int) -> None:
        end = self.write_seq + count
        for n in range(max(self.write_seq, end - self.slots), end):
            self.held[n % self.slots] = (n, SKIPPED)
        self.write_seq = end

    def find(self, r: ModelReader) -> tuple[int, bytes] | None:
        while True:
            held_n, data = self.held.get(r.next % self.slots, (-1, None))
            if held_n == r.next and data is SKIPPED:
                r.lost += 1
                r.next += 1
                continue
            if held_n <= r.next:
                return super().find(r)  # not lapped: the base model decides
            # Lapped: one step as in ModelRing.find, then look again (there may be markers).
            started = max(self.write_seq, held_n + 1)
            if r.lapped == "oldest":
                target = started - self.slots + lap_margin(self.slots) if started > self.slots else 0
            else:
                target = max(self.write_seq - 1, 0)
            target = max(target, r.next + 1)
            r.lost += target - r.next
            r.next = target

    def take_many(self, r: ModelReader, max_messages: int) -> tuple[int, list[bytes]]:
        found = self.find(r)
        if found is None:
            return r.next, []
        first, data = found
        out = [data]
        r.last_seq, r.next = first, first + 1
        if len(data) > BATCH_BYTES:
            return first, out  # comes alone
        used = len(data)
        while len(out) < min(max_messages, MAX_BATCH):
            held_n, data = self.held.get(r.next % self.slots, (-1, None))
            if held_n != r.next or data is None or data is SKIPPED or used + len(data) > BATCH_BYTES:
                break
            out.append(data)
            used += len(data)
            r.last_seq, r.next = r.next, r.next + 1
        return first, out


# sizes around the copy paths' limits, and halves and thirds of a batch's 64 KiB
SIZE = st.one_of(
    st.integers(0, 64),
    st.sampled_from([4095, 4096, 4097, 16_384, 21_845, 21_846, 32_767, 32_768, 32_769]),
    st.sampled_from([BATCH_BYTES - 1, BATCH_BYTES, BATCH_BYTES + 1, 70_000]),
)
START = st.sampled_from(["next", "latest", "oldest"])
LAPPED = st.sampled_from(["oldest", "latest"])


class BatchMachine(RuleBasedStateMachine):
    """Random interleavings of publish_many / skip / loans / batch and single reads, checked
    against the model ring."""

    def __init__(self) -> None:
        super().__init__()
        self.pub: sps.Publisher | None = None
        self.subs: list[tuple[sps.Subscriber, ModelReader]] = []
        self.model = BatchModelRing(1, 0)
        self.sent: dict[int, bytes] = {}
        self.tag = 0

    @initialize(
        slots=st.sampled_from([1, 2, 4, 8, 16]),
        slot_size=st.sampled_from([0, 64, 4096, 5000, 40_000, 70_000, 70_000, 70_000]),
        readers=st.lists(st.tuples(START, LAPPED), min_size=1, max_size=3),
    )
    def setup(self, slots: int, slot_size: int, readers: list[tuple[str, str]]) -> None:
        self.topic = f"test-batch-{uuid.uuid4().hex[:12]}"
        self.pub = sps.Publisher(self.topic, slots=slots, slot_size=slot_size)
        self.model = BatchModelRing(slots, slot_size)
        for start, lapped in readers:
            self._attach(start, lapped)

    def _attach(self, start: str, lapped: str) -> None:
        sub = sps.Subscriber(self.topic, start=start, lapped=lapped, spin_us=0)
        self.subs.append((sub, ModelReader(lapped, self.model.start(start))))

    def _data(self, size: int) -> bytes:
        self.tag += 1
        return blob(self.tag, min(size, self.model.slot_size))

    @rule(start=START, lapped=LAPPED)
    @precondition(lambda self: len(self.subs) < 5)
    def attach(self, start: str, lapped: str) -> None:
        self._attach(start, lapped)

    @rule(sizes=st.lists(SIZE, max_size=8), kind=st.sampled_from(["list", "tuple", "gen", "mixed"]))
    def publish_many(self, sizes: list[int], kind: str) -> None:
        assert self.pub is not None
        batch = [self._data(size) for size in sizes]
        if kind == "list":
            first = self.pub.publish_many(batch)
        elif kind == "tuple":
            first = self.pub.publish_many(tuple(batch))
        elif kind == "gen":
            first = self.pub.publish_many(iter(batch))
        else:
            first = self.pub.publish_many(
                [[bytearray, memoryview, as_uint8][i % 3](d) for i, d in enumerate(batch)]
            )
        assert first == self.model.write_seq
        for data in batch:
            self.sent[self.model.publish(data)] = data

    @rule(size=SIZE, count=st.integers(0, 9))
    def publish_records(self, size: int, count: int) -> None:
        assert self.pub is not None
        size = max(1, min(size, self.model.slot_size))
        if self.model.slot_size == 0:
            return
        records = [self._data(size) for _ in range(count)]
        assert self.pub.publish_many(np.frombuffer(b"".join(records), np.uint8), size=size) == (
            self.model.write_seq
        )
        for data in records:
            self.sent[self.model.publish(data)] = data

    @rule(sizes=st.lists(SIZE, min_size=1, max_size=5), where=st.integers(0, 4))
    def publish_many_too_large(self, sizes: list[int], where: int) -> None:
        assert self.pub is not None
        batch = [self._data(size) for size in sizes]
        batch.insert(where % (len(batch) + 1), bytes(self.model.slot_size + 1))
        with pytest.raises(sps.MessageTooLarge):
            self.pub.publish_many(batch)

    @rule(data=st.binary(max_size=8))
    def publish(self, data: bytes) -> None:
        assert self.pub is not None
        data = data[: self.model.slot_size]
        assert self.pub.publish(data) == self.model.publish(data)
        self.sent[self.model.write_seq - 1] = data

    @rule(count=st.integers(0, 10))
    def skip(self, count: int) -> None:
        assert self.pub is not None
        self.pub.skip(count)
        self.model.skip(count)

    @rule(size=SIZE)
    def loan_abort(self, size: int) -> None:
        assert self.pub is not None
        size = min(size, self.model.slot_size)
        abort_loan(self.pub, size, b"\xab" * min(size, 16))
        self.model.abort()

    @rule(i=st.integers(0, 4), max_messages=st.sampled_from([1, 2, 3, 256, MAX_BATCH, 10**6]))
    def try_receive_many(self, i: int, max_messages: int) -> None:
        sub, reader = self.subs[i % len(self.subs)]
        seq, payloads = self.model.take_many(reader, max_messages)
        batch = sub.try_receive_many(max_messages)
        assert (batch.seq, batch.payloads) == (seq, payloads)
        if batch:
            check_batch_shape(batch, max_messages)
            assert all(self.sent[s] == p for s, p in zip(batch.seqs, batch, strict=True))

    @rule(i=st.integers(0, 4), max_messages=st.sampled_from([1, 5, 256]))
    def receive_many_now(self, i: int, max_messages: int) -> None:
        sub, reader = self.subs[i % len(self.subs)]
        seq, payloads = self.model.take_many(reader, max_messages)
        if not payloads:
            with pytest.raises(sps.ReceiveTimeout):
                sub.receive_many(max_messages, timeout=0)
            return
        batch = sub.receive_many(max_messages, timeout=0)
        assert (batch.seq, batch.payloads) == (seq, payloads)

    @rule(i=st.integers(0, 4))
    def try_receive(self, i: int) -> None:
        sub, reader = self.subs[i % len(self.subs)]
        expected = self.model.take(reader)
        msg = sub.try_receive()
        assert (None if msg is None else (msg.seq, msg.data)) == expected

    @invariant()
    def counters_agree(self) -> None:
        if self.pub is None:
            return
        assert self.pub.published == self.model.write_seq
        for sub, reader in self.subs:
            assert (sub.next_seq, sub.lost, sub.last_seq) == (reader.next, reader.lost, reader.last_seq)
            assert sub.pending == max(0, self.model.write_seq - reader.next)

    def teardown(self) -> None:
        for sub, _ in self.subs:
            sub.close()
        if self.pub is not None:
            self.pub.close()


BatchMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestBatchModel = BatchMachine.TestCase


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
