"""Publisher.publish_many: what it accepts and refuses, and batches larger than the ring."""

from __future__ import annotations

import array
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from helpers import flat, payload, take_batches

import shmpubsub as sps
from shmpubsub._core.ring import lap_margin

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
