"""Ring semantics in one process: order, lapping and exact lost counts, start modes, latest(),
payload sizes and types, receive_into, loans, and a model-based test against a pure-Python ring."""

from __future__ import annotations

import array

import numpy as np
import pytest
from helpers import (
    LAPPED,
    START,
    Boom,
    ModelReader,
    ModelRing,
    abort_loan,
    drain,
    payload,
    time_limit,
    unique_topic,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import shmpubsub as sps
from shmpubsub._core.ring import lap_margin

# -- order -----------------------------------------------------------------------------------------


def test_messages_arrive_in_order_then_none(topic: str) -> None:
    with sps.Publisher(topic, slots=128, slot_size=64) as pub, sps.Subscriber(topic) as sub:
        assert sub.try_receive() is None
        sent = [payload(i, i % 65) for i in range(100)]
        for i, data in enumerate(sent):
            assert pub.publish(data) == i
        got = drain(sub)
        assert [m.seq for m in got] == list(range(100))
        assert [m.data for m in got] == sent
        assert sub.lost == 0
        assert sub.try_receive() is None
        assert sub.try_receive() is None
        pub.publish(b"more")
        assert sub.try_receive() == sps.Message(b"more", 100)


def test_interleaved_publish_and_receive_keeps_order(topic: str) -> None:
    with sps.Publisher(topic, slots=2, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        for i in range(50):
            pub.publish(payload(i, 9))
            msg = sub.try_receive()
            assert msg is not None and msg.seq == i and msg.data == payload(i, 9)
            assert sub.try_receive() is None
        assert sub.lost == 0


# -- lapping ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("slots", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("before", [0, 3])
@pytest.mark.parametrize("extra", [1, 2, 5, 17])
def test_lapped_oldest_keeps_the_newest_ring_full_but_a_margin(
    topic: str, slots: int, before: int, extra: int
) -> None:
    """A lapped reader resumes a margin (slots // 8) after the oldest message: the oldest is
    the writer's next victim."""
    margin = lap_margin(slots)
    assert margin == slots // 8
    with sps.Publisher(topic, slots=slots, slot_size=32) as pub:
        for i in range(before):
            pub.publish(payload(i, 20))
        with sps.Subscriber(topic, lapped="oldest") as sub:
            assert sub.next_seq == before
            total = before + slots + extra
            for i in range(before, total):
                pub.publish(payload(i, 20))
            got = drain(sub)
            published_since = total - before
            assert len(got) + sub.lost == published_since
            assert sub.lost == extra + margin
            assert [m.seq for m in got] == list(range(total - slots + margin, total))
            assert [m.data for m in got] == [payload(i, 20) for i in range(total - slots + margin, total)]


@pytest.mark.parametrize("slots", [1, 2, 4, 8])
@pytest.mark.parametrize("before", [0, 3])
@pytest.mark.parametrize("extra", [1, 2, 5, 17])
def test_lapped_latest_jumps_to_the_newest(topic: str, slots: int, before: int, extra: int) -> None:
    with sps.Publisher(topic, slots=slots, slot_size=32) as pub:
        for i in range(before):
            pub.publish(payload(i, 20))
        with sps.Subscriber(topic, lapped="latest") as sub:
            total = before + slots + extra
            for i in range(before, total):
                pub.publish(payload(i, 20))
            got = drain(sub)
            assert len(got) + sub.lost == total - before
            assert [(m.seq, m.data) for m in got] == [(total - 1, payload(total - 1, 20))]
            assert sub.lost == total - before - 1


@pytest.mark.parametrize("lapped", ["oldest", "latest"])
@pytest.mark.parametrize("slots", [1, 2, 4])
def test_exactly_a_ring_full_is_not_lapped(topic: str, slots: int, lapped: str) -> None:
    with sps.Publisher(topic, slots=slots, slot_size=8) as pub, sps.Subscriber(topic, lapped=lapped) as sub:
        for i in range(slots):
            pub.publish(payload(i, 8))
        got = drain(sub)
        assert [m.seq for m in got] == list(range(slots))
        assert sub.lost == 0


def test_lost_accumulates_over_several_laps_after_partial_reads(topic: str) -> None:
    slots = 4
    with sps.Publisher(topic, slots=slots, slot_size=8) as pub, sps.Subscriber(topic) as sub:
        seqs: list[int] = []
        published = 0
        for burst, reads in [(10, 2), (3, 1), (9, 0), (4, 10), (30, 3)]:
            for _ in range(burst):
                pub.publish(payload(published, 8))
                published += 1
            for _ in range(reads):
                msg = sub.try_receive()
                if msg is None:
                    break
                assert msg.data == payload(msg.seq, 8)
                seqs.append(msg.seq)
        for msg in drain(sub):
            assert msg.data == payload(msg.seq, 8)
            seqs.append(msg.seq)
        assert seqs == sorted(set(seqs))
        assert len(seqs) + sub.lost == published
        assert seqs[-slots:] == list(range(published - slots, published))


def test_lost_count_worked_example(topic: str) -> None:
    """slots=4: 10 published, reader at 0 -> resumes at 6 (6 lost); reads 6 and 7; 5 more (10..14)
    lap it again while it wants 8 -> resumes at 11 (3 more lost: 8, 9, 10)."""
    with sps.Publisher(topic, slots=4, slot_size=8) as pub, sps.Subscriber(topic) as sub:
        for i in range(10):
            pub.publish(payload(i, 4))
        assert [sub.try_receive().seq for _ in range(2)] == [6, 7]  # type: ignore[union-attr]
        assert sub.lost == 6
        assert sub.next_seq == 8 and sub.last_seq == 7
        for i in range(10, 15):
            pub.publish(payload(i, 4))
        assert [m.seq for m in drain(sub)] == [11, 12, 13, 14]
        assert sub.lost == 9


# -- latest() --------------------------------------------------------------------------------------


def test_latest_before_and_after_publishing(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=16) as pub, sps.Subscriber(topic, start="oldest") as sub:
        assert sub.latest() is None
        pub.publish(b"first")
        assert sub.latest() == sps.Message(b"first", 0)
        for i in range(1, 7):
            pub.publish(payload(i, 16))
        latest = sub.latest()
        assert latest is not None and latest.seq == 6 and latest.data == payload(6, 16)
        assert sub.latest() == latest  # repeatable
        # The stream did not move: the reader still wants message 0 (lapped by now).
        assert sub.next_seq == 0 and sub.lost == 0
        got = drain(sub)
        assert [m.seq for m in got] == [3, 4, 5, 6]
        assert sub.lost == 3
        assert sub.latest() == latest


def test_latest_does_not_consume(topic: str) -> None:
    with sps.Publisher(topic, slots=8, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"a")
        pub.publish(b"b")
        assert sub.latest() == sps.Message(b"b", 1)
        assert sub.try_receive() == sps.Message(b"a", 0)
        assert sub.latest() == sps.Message(b"b", 1)
        assert sub.try_receive() == sps.Message(b"b", 1)
        assert sub.try_receive() is None
        assert sub.latest() == sps.Message(b"b", 1)


def test_latest_with_one_slot_during_and_after_a_loan(topic: str) -> None:
    """With one slot, a loan overwrites the newest message. latest() must then return (None:
    nothing complete is left), not spin. It used to spin for ever (fixed by bounding the BUSY
    retries in Reader)."""
    with sps.Publisher(topic, slots=1, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"gone")
        with pub.loan(4) as buf, time_limit(2.0):
            buf[:] = b"open"
            assert sub.latest() is None  # message 0 is being overwritten, message 1 is not done
            assert sub.try_receive() is None
        assert sub.latest() == sps.Message(b"open", 1)
        abort_loan(pub, 4, b"xx")
        with time_limit(2.0):
            assert sub.latest() is None  # message 1 destroyed, message 2 never written
        assert pub.publish(b"back") == 2
        assert sub.latest() == sps.Message(b"back", 2)


# -- start modes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("already", [0, 3, 11])
@pytest.mark.parametrize("start", ["next", "latest", "oldest"])
def test_start_modes(topic: str, start: str, already: int) -> None:
    slots = 4
    with sps.Publisher(topic, slots=slots, slot_size=16) as pub:
        for i in range(already):
            pub.publish(payload(i, 10))
        with sps.Subscriber(topic, start=start) as sub:
            if start == "next":
                first = already
            elif start == "latest":
                first = max(already - 1, 0)
            else:
                first = max(already - slots, 0)
            assert sub.next_seq == first
            assert sub.pending == already - first
            got = drain(sub)
            assert [m.seq for m in got] == list(range(first, already))
            assert all(m.data == payload(m.seq, 10) for m in got)
            pub.publish(payload(already, 10))
            assert drain(sub) == [sps.Message(payload(already, 10), already)]
            assert sub.lost == 0


# -- payload sizes ---------------------------------------------------------------------------------


def test_empty_message(topic: str) -> None:
    with sps.Publisher(topic, slots=2, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        assert pub.publish(b"") == 0
        msg = sub.try_receive()
        assert msg is not None
        assert msg.data == b"" and msg.seq == 0 and len(msg) == 0
        assert sub.try_receive() is None


@pytest.mark.parametrize("slot_size", [1, 7, 8, 63, 64, 100, 1023, 1024, 1025, 4096])
def test_exactly_slot_size_fits_and_one_more_does_not(topic: str, slot_size: int) -> None:
    with sps.Publisher(topic, slots=2, slot_size=slot_size) as pub, sps.Subscriber(topic) as sub:
        data = payload(5, slot_size)
        assert pub.publish(data) == 0
        with pytest.raises(sps.MessageTooLarge) as info:
            pub.publish(data + b"x")
        assert isinstance(info.value, ValueError)
        assert str(slot_size) in str(info.value)
        assert pub.published == 1
        assert sub.try_receive() == sps.Message(data, 0)
        assert sub.try_receive() is None


def test_zero_slot_size_topic(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=0) as pub, sps.Subscriber(topic) as sub:
        assert pub.publish(b"") == 0
        assert pub.publish(bytearray()) == 1
        with pytest.raises(sps.MessageTooLarge):
            pub.publish(b"x")
        loan = pub.loan(0)
        with loan as buf:
            assert len(buf) == 0
        assert loan.seq == 2
        with pytest.raises(sps.MessageTooLarge):
            pub.loan(1)
        assert [(m.seq, m.data) for m in drain(sub)] == [(0, b""), (1, b""), (2, b"")]
        assert sub.latest() == sps.Message(b"", 2)
        buf0 = bytearray()
        pub.publish(b"")
        assert sub.receive_into(buf0) == 0
        assert sub.last_seq == 3


SIZES = [0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 63, 64, 65, 511, 1015, 1016, 1017, 1022, 1023, 1024, 1025]
SIZES += [1026, 1031, 1032, 1033, 1039, 1999, 2047, 2048]


@pytest.mark.parametrize("size", SIZES)
def test_payload_sizes_byte_exact(topic: str, size: int) -> None:
    """Around the 1024-byte switch from atomic word copies to memcpy, and at every length mod 8."""
    with sps.Publisher(topic, slots=2, slot_size=2048) as pub, sps.Subscriber(topic) as sub:
        data = bytes(np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8))
        pub.publish(data)
        msg = sub.try_receive()
        assert msg is not None and msg.data == data and len(msg) == size
        assert sub.latest() == sps.Message(data, 0)
        # receive_into writes exactly len bytes and nothing beyond them.
        pub.publish(data)
        dst = bytearray(b"\xee" * 2100)
        assert sub.receive_into(dst) == size
        assert bytes(dst[:size]) == data
        assert dst[size:] == b"\xee" * (2100 - size)
        assert sub.last_seq == 1


@pytest.mark.parametrize(("long", "short"), [(1025, 3), (2048, 1024), (1024, 9), (64, 0), (17, 15)])
def test_shorter_message_in_a_reused_slot_has_no_stale_bytes(topic: str, long: int, short: int) -> None:
    with sps.Publisher(topic, slots=1, slot_size=2048) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"\xff" * long)
        assert sub.try_receive() == sps.Message(b"\xff" * long, 0)
        pub.publish(b"\x01" * short)
        assert sub.try_receive() == sps.Message(b"\x01" * short, 1)
        assert sub.latest() == sps.Message(b"\x01" * short, 1)


def test_only_rings_larger_than_the_caches_stream_their_large_payloads(topic: str) -> None:
    with sps.Publisher(topic, slots=16, slot_size=1 << 20) as big:
        assert big._writer.streams_from == 64 << 10
    with sps.Publisher(topic, slots=4, slot_size=1 << 20) as small:
        assert small._writer.streams_from is None


STREAMED_SIZES = [0, 1, 15, 16, 17, 63, 64, 65, 1000, (64 << 10) - 1, 64 << 10, (1 << 20) - 15]


@pytest.mark.parametrize("offset", [0, 1, 8, 15])
@pytest.mark.parametrize("size", STREAMED_SIZES)
def test_streaming_stores_are_byte_exact(topic: str, size: int, offset: int) -> None:
    """The cache-bypassing copy at every alignment of source and length around its 16- and
    64-byte steps, forced on for every length; publish and publish_many both use it."""
    data = bytes(np.random.default_rng(size).integers(0, 256, size + offset, dtype=np.uint8))
    source = memoryview(data)[offset:]
    with sps.Publisher(topic, slots=2, slot_size=1 << 20) as pub, sps.Subscriber(topic) as sub:
        pub._writer._stream_copies_for_test()
        pub.publish(b"\xee" * (1 << 20))  # the slot's old bytes must not show through
        pub.publish(b"\xee" * (1 << 20))
        drain(sub)
        pub.publish(source)
        pub.publish_many([source])
        assert [m.data for m in drain(sub)] == [data[offset:]] * 2


# -- what publish accepts ---------------------------------------------------------------------------


def test_publish_accepts_bytes_like_objects(topic: str) -> None:
    arr = np.arange(6, dtype=np.float64).reshape(2, 3)
    mv_source = bytearray(b"0123456789")
    accepted: list[tuple[object, bytes]] = [
        (b"bytes", b"bytes"),
        (bytearray(b"bytearray"), b"bytearray"),
        (memoryview(b"memoryview"), b"memoryview"),
        (memoryview(mv_source)[2:7], b"23456"),
        (array.array("i", [1, 2, 3]), array.array("i", [1, 2, 3]).tobytes()),
        (np.arange(10, dtype=np.uint8), bytes(range(10))),
        (arr, arr.tobytes()),
        (arr[1], arr[1].tobytes()),  # a contiguous row of a 2-D array
        # a multi-dimensional memoryview whose format is not bytes
        (memoryview(arr), arr.tobytes()),  # type: ignore[arg-type]
    ]
    with sps.Publisher(topic, slots=16, slot_size=64) as pub, sps.Subscriber(topic) as sub:
        for i, (obj, _) in enumerate(accepted):
            assert pub.publish(obj) == i
        got = drain(sub)
        assert [m.data for m in got] == [expected for _, expected in accepted]
        assert all(type(m.data) is bytes for m in got)


@pytest.mark.parametrize("bad", ["text", 5, None, 3.5, ["a"]])
def test_publish_rejects_non_buffers_with_invalid_type(topic: str, bad: object) -> None:
    with sps.Publisher(topic, slots=2, slot_size=64) as pub:
        with pytest.raises(sps.InvalidType) as info:
            pub.publish(bad)
        assert isinstance(info.value, TypeError)
        assert type(bad).__name__ in str(info.value)
        assert pub.published == 0


def test_publish_rejects_non_contiguous_numpy_array(topic: str) -> None:
    with sps.Publisher(topic, slots=2, slot_size=64) as pub:
        with pytest.raises(sps.InvalidArgument) as info:
            pub.publish(np.arange(10, dtype=np.uint8)[::2])
        assert isinstance(info.value, ValueError)
        assert "contiguous" in str(info.value)
        assert pub.published == 0


def test_publish_rejects_non_contiguous_memoryview(topic: str) -> None:
    with sps.Publisher(topic, slots=2, slot_size=64) as pub:
        with pytest.raises(sps.InvalidArgument) as info:
            pub.publish(memoryview(b"abcdef")[::2])
        assert isinstance(info.value, ValueError)
        assert pub.published == 0


# -- receive_into ----------------------------------------------------------------------------------


def test_receive_into_bytearray_and_numpy(topic: str) -> None:
    with sps.Publisher(topic, slots=8, slot_size=256) as pub, sps.Subscriber(topic) as sub:
        assert sub.receive_into(bytearray(10)) is None
        pub.publish(b"hello")
        pub.publish(payload(1, 200))
        pub.publish(np.arange(4, dtype=np.float64))
        ba = bytearray(256)
        assert sub.receive_into(ba) == 5
        assert ba[:5] == b"hello" and sub.last_seq == 0
        arr = np.zeros(256, dtype=np.uint8)
        assert sub.receive_into(arr) == 200
        assert arr[:200].tobytes() == payload(1, 200) and sub.last_seq == 1
        floats = np.zeros(4, dtype=np.float64)
        assert sub.receive_into(floats) == 32
        assert floats.tolist() == [0.0, 1.0, 2.0, 3.0] and sub.last_seq == 2
        assert sub.receive_into(ba) is None
        assert sub.next_seq == 3


def test_receive_into_too_small_leaves_message_unread(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=64) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"0123456789")
        pub.publish(b"next")
        with pytest.raises(sps.MessageTooLarge) as info:
            sub.receive_into(bytearray(9))
        assert isinstance(info.value, ValueError)
        assert "10" in str(info.value)
        with pytest.raises(sps.MessageTooLarge):
            sub.receive_into(np.zeros(3, dtype=np.uint8))
        assert sub.next_seq == 0 and sub.lost == 0 and sub.pending == 2
        buf = bytearray(10)
        assert sub.receive_into(buf) == 10
        assert buf == b"0123456789" and sub.last_seq == 0
        assert sub.try_receive() == sps.Message(b"next", 1)


def test_receive_into_too_small_after_being_lapped(topic: str) -> None:
    """The reader resyncs (and counts what it lost) before it finds the buffer too small."""
    with sps.Publisher(topic, slots=2, slot_size=64) as pub, sps.Subscriber(topic) as sub:
        for i in range(5):
            pub.publish(payload(i, 20))
        with pytest.raises(sps.MessageTooLarge):
            sub.receive_into(bytearray(4))
        assert sub.lost == 3 and sub.next_seq == 3
        buf = bytearray(20)
        assert sub.receive_into(buf) == 20 and sub.last_seq == 3 and bytes(buf) == payload(3, 20)


@pytest.mark.parametrize(
    "readonly", [b"\x00" * 16, memoryview(bytearray(16)).toreadonly()], ids=["bytes", "readonly-memoryview"]
)
def test_receive_into_readonly_buffer_is_invalid_type(topic: str, readonly: object) -> None:
    with sps.Publisher(topic, slots=2, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"abc")
        with pytest.raises(sps.InvalidType) as info:
            sub.receive_into(readonly)
        assert isinstance(info.value, TypeError)
        assert sub.try_receive() == sps.Message(b"abc", 0)


def test_receive_into_non_buffer_is_invalid_type(topic: str) -> None:
    with sps.Publisher(topic, slots=2, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"abc")
        for bad in (5, "text", None):
            with pytest.raises(sps.InvalidType):
                sub.receive_into(bad)
        assert sub.try_receive() == sps.Message(b"abc", 0)


# -- loans -----------------------------------------------------------------------------------------


def test_loan_publishes_exactly_n_bytes(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=64) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"x" * 64)  # leave old bytes in the slots
        pub.publish(b"y" * 64)
        loan = pub.loan(5)
        assert loan.seq is None
        with loan as buf:
            assert isinstance(buf, memoryview) and len(buf) == 5 and not buf.readonly
            buf[:] = b"hello"
        assert loan.seq == 2
        assert pub.published == 3
        assert [(m.seq, m.data) for m in drain(sub)] == [(0, b"x" * 64), (1, b"y" * 64), (2, b"hello")]


def test_loan_through_numpy_view(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=64) as pub, sps.Subscriber(topic) as sub:
        loan = pub.loan(32)
        with loan as buf:
            arr = np.frombuffer(buf, dtype=np.float64)
            arr[:] = [1.5, 2.5, 3.5, 4.5]
        del arr
        assert loan.seq == 0
        msg = sub.try_receive()
        assert msg is not None
        assert np.frombuffer(msg.data, dtype=np.float64).tolist() == [1.5, 2.5, 3.5, 4.5]


def test_loan_aborted_by_exception_publishes_nothing(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"zero")
        loan = pub.loan(8)
        with pytest.raises(Boom), loan as buf:
            buf[:] = b"SCRIBBLE"
            raise Boom
        assert loan.seq is None
        assert pub.published == 1
        assert sub.pending == 1
        assert sub.try_receive() == sps.Message(b"zero", 0)
        assert sub.try_receive() is None  # waits for message 1, which does not exist yet
        assert pub.publish(b"one") == 1  # the aborted number is reused
        assert sub.try_receive() == sps.Message(b"one", 1)
        assert sub.lost == 0
        assert sub.latest() == sps.Message(b"one", 1)


def test_publish_while_loan_open_raises_loan_error(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        loan = pub.loan(3)
        with loan as buf:
            with pytest.raises(sps.LoanError) as info:
                pub.publish(b"no")
            assert isinstance(info.value, RuntimeError)
            with pytest.raises(sps.LoanError), pub.loan(1):
                pass
            buf[:] = b"yes"
        assert loan.seq == 0
        assert drain(sub) == [sps.Message(b"yes", 0)]
        assert pub.publish(b"after") == 1


def test_loan_too_large_and_bad_sizes(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=16) as pub:
        with pytest.raises(sps.MessageTooLarge) as info:
            pub.loan(17)
        assert isinstance(info.value, ValueError)
        for bad in (-1, 2.5):
            with pytest.raises(sps.InvalidArgument), pub.loan(bad):  # type: ignore[arg-type]
                pass
        loan = pub.loan(16)
        with loan as buf:
            buf[:] = b"s" * 16
        assert loan.seq == 0
        assert pub.published == 1


def test_loan_of_zero_bytes(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"full slot bytes!")
        loan = pub.loan(0)
        with loan as buf:
            assert len(buf) == 0
        assert loan.seq == 1
        assert drain(sub) == [sps.Message(b"full slot bytes!", 0), sps.Message(b"", 1)]


@pytest.mark.parametrize("slots", [1, 2, 4])
def test_aborted_loan_destroys_one_old_message_and_is_counted(topic: str, slots: int) -> None:
    """An aborted loan leaves its slot with an odd sequence: the message that was there is gone
    (counted lost exactly once), readers waiting for the aborted number keep waiting."""
    with sps.Publisher(topic, slots=slots, slot_size=16) as pub:
        for i in range(slots):
            pub.publish(payload(i, 16))
        oldest = sps.Subscriber(topic, start="oldest")  # wants message 0, in the slot the loan takes
        waiting = sps.Subscriber(topic, start="next")  # wants message `slots`, the one aborted
        try:
            abort_loan(pub, 16, b"garbage-garbage!")
            assert pub.published == slots
            late = sps.Subscriber(topic, start="oldest")
            try:
                got_oldest = drain(oldest)
                assert [m.seq for m in got_oldest] == list(range(1, slots))
                assert all(m.data == payload(m.seq, 16) for m in got_oldest)
                assert oldest.lost == 1
                assert oldest.next_seq == slots
                assert waiting.try_receive() is None and waiting.lost == 0
                got_late = drain(late)
                assert [m.seq for m in got_late] == list(range(1, slots))
                assert late.lost == 1
                for i in range(slots, 2 * slots):
                    assert pub.publish(payload(i, 16)) == i
                for sub in (oldest, waiting, late):
                    got = drain(sub)
                    assert [(m.seq, m.data) for m in got] == [
                        (i, payload(i, 16)) for i in range(slots, 2 * slots)
                    ]
                assert (oldest.lost, waiting.lost, late.lost) == (1, 0, 1)
            finally:
                late.close()
        finally:
            oldest.close()
            waiting.close()


def test_aborted_loan_then_lapping_counts_exactly(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=8) as pub, sps.Subscriber(topic) as sub:
        for i in range(4):
            pub.publish(payload(i, 8))
        abort_loan(pub, 8)
        for i in range(4, 10):  # 4 reuses the aborted number
            assert pub.publish(payload(i, 8)) == i
        got = drain(sub)
        assert [m.seq for m in got] == [6, 7, 8, 9]
        assert sub.lost == 6
        assert all(m.data == payload(m.seq, 8) for m in got)


# -- Message ---------------------------------------------------------------------------------------


def test_message_object(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=100) as pub, sps.Subscriber(topic) as sub:
        pub.publish(bytearray(b"abc"))
        pub.publish(b"q" * 40)
        msg = sub.try_receive()
        long = sub.try_receive()
    assert msg is not None and long is not None
    assert type(msg.data) is bytes and msg.data == b"abc"
    assert type(msg.seq) is int and msg.seq == 0
    assert len(msg) == 3
    assert bytes(msg) == b"abc"
    assert msg == sps.Message(b"abc", 0)
    assert msg != sps.Message(b"abc", 1)
    assert msg != sps.Message(b"abd", 0)
    assert msg != b"abc"
    assert hash(msg) == hash(sps.Message(b"abc", 0))
    assert "seq=0" in repr(msg) and "b'abc'" in repr(msg) and "len=3" in repr(msg)
    assert "..." in repr(long) and "len=40" in repr(long) and len(repr(long)) < 100


# -- counters --------------------------------------------------------------------------------------


def test_published_pending_next_and_last_seq(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=8) as pub, sps.Subscriber(topic) as sub:
        assert pub.published == 0
        assert (sub.pending, sub.next_seq, sub.lost) == (0, 0, 0)
        for i in range(3):
            pub.publish(payload(i, 8))
            assert pub.published == i + 1
        assert sub.pending == 3
        msg = sub.try_receive()
        assert msg is not None and msg.seq == 0
        assert (sub.pending, sub.next_seq, sub.last_seq) == (2, 1, 0)
        with pytest.raises(sps.MessageTooLarge):
            pub.publish(b"123456789")
        abort_loan(pub, 1)
        assert pub.published == 3 and sub.pending == 2
        for i in range(3, 9):
            pub.publish(payload(i, 8))
        assert pub.published == 9
        assert sub.pending == 8  # published but not taken; some are lost already
        got = drain(sub)
        assert sub.next_seq == 9 and sub.last_seq == 8 and sub.pending == 0
        assert len(got) + sub.lost == 8


# -- model-based -----------------------------------------------------------------------------------


class RingMachine(RuleBasedStateMachine):
    """Random interleavings of publish / loans / reads, checked against ModelRing."""

    def __init__(self) -> None:
        super().__init__()
        self.pub: sps.Publisher | None = None
        self.subs: list[tuple[sps.Subscriber, ModelReader]] = []
        self.model = ModelRing(1, 0)
        self.sent: dict[int, bytes] = {}

    @initialize(
        slots=st.sampled_from([1, 2, 4, 8]),
        slot_size=st.sampled_from([0, 8, 13, 64, 1100]),
        readers=st.lists(st.tuples(START, LAPPED), min_size=1, max_size=3),
    )
    def setup(self, slots: int, slot_size: int, readers: list[tuple[str, str]]) -> None:
        self.topic = unique_topic("test-model")
        self.pub = sps.Publisher(self.topic, slots=slots, slot_size=slot_size)
        self.model = ModelRing(slots, slot_size)
        for start, lapped in readers:
            self._attach(start, lapped)

    def _attach(self, start: str, lapped: str) -> None:
        sub = sps.Subscriber(self.topic, start=start, lapped=lapped)
        self.subs.append((sub, ModelReader(lapped, self.model.start(start))))

    @rule(start=START, lapped=LAPPED)
    @precondition(lambda self: len(self.subs) < 5)
    def attach(self, start: str, lapped: str) -> None:
        self._attach(start, lapped)

    @rule(data=st.binary(max_size=1100))
    def publish(self, data: bytes) -> None:
        assert self.pub is not None
        data = data[: self.model.slot_size]
        seq = self.pub.publish(data)
        assert seq == self.model.publish(data)
        self.sent[seq] = data

    @rule(size=st.integers(0, 1100), fill=st.integers(0, 255))
    def publish_sized(self, size: int, fill: int) -> None:
        assert self.pub is not None
        data = bytes([fill]) * min(size, self.model.slot_size)
        seq = self.pub.publish(data)
        assert seq == self.model.publish(data)
        self.sent[seq] = data

    @rule(extra=st.integers(1, 100))
    def publish_too_large(self, extra: int) -> None:
        assert self.pub is not None
        with pytest.raises(sps.MessageTooLarge):
            self.pub.publish(b"\x01" * (self.model.slot_size + extra))

    @rule(data=st.binary(max_size=1100))
    def loan_commit(self, data: bytes) -> None:
        assert self.pub is not None
        data = data[: self.model.slot_size]
        loan = self.pub.loan(len(data))
        with loan as buf:
            buf[:] = data
        assert loan.seq == self.model.publish(data)
        self.sent[loan.seq] = data

    @rule(size=st.integers(0, 1100))
    def loan_abort(self, size: int) -> None:
        assert self.pub is not None
        size = min(size, self.model.slot_size)
        abort_loan(self.pub, size, b"\xab" * size)
        self.model.abort()

    @rule(i=st.integers(0, 4))
    def receive(self, i: int) -> None:
        sub, reader = self.subs[i % len(self.subs)]
        expected = self.model.take(reader)
        msg = sub.try_receive()
        assert (None if msg is None else (msg.seq, msg.data)) == expected
        if msg is not None:
            assert msg.data == self.sent[msg.seq]
            assert len(msg.data) <= self.model.slot_size

    @rule(i=st.integers(0, 4), cap=st.integers(0, 1100))
    def receive_into(self, i: int, cap: int) -> None:
        sub, reader = self.subs[i % len(self.subs)]
        found = self.model.find(reader)  # moves over lapped messages, as the C does
        buf = bytearray(b"\xee" * cap)
        if found is not None and len(found[1]) > cap:
            with pytest.raises(sps.MessageTooLarge):
                sub.receive_into(buf)
            assert buf == b"\xee" * cap
            return
        n = sub.receive_into(buf)
        if found is None:
            assert n is None
            return
        seq, data = self.model.take(reader)  # type: ignore[misc]
        assert n == len(data)
        assert bytes(buf[:n]) == data and buf[n:] == b"\xee" * (cap - n)
        assert sub.last_seq == seq

    @rule(i=st.integers(0, 4))
    def latest(self, i: int) -> None:
        sub, _ = self.subs[i % len(self.subs)]
        expected = self.model.latest()
        with time_limit(2.0):
            msg = sub.latest()
        assert (None if msg is None else (msg.seq, msg.data)) == expected

    @invariant()
    def counters_agree(self) -> None:
        if self.pub is None:
            return
        assert self.pub.published == self.model.write_seq
        for sub, reader in self.subs:
            assert sub.next_seq == reader.next
            assert sub.lost == reader.lost
            assert sub.pending == max(0, self.model.write_seq - reader.next)
            assert sub.last_seq == reader.last_seq

    def teardown(self) -> None:
        for sub, _ in self.subs:
            sub.close()
        if self.pub is not None:
            self.pub.close()


RingMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRingModel = RingMachine.TestCase
