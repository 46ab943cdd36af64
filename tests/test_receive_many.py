"""Subscriber.try_receive_many / receive_many and the Batch they return: its limits
(consecutive, never across a loss, at most MAX_BATCH messages and BATCH_BYTES), time-outs, and the
end of the stream.
"""

from __future__ import annotations

import selectors
import time

import pytest
from helpers import BATCH_BYTES, MAX_BATCH, blob, check_batch_shape, flat, payload, take_batches, threads

import shmpubsub as sps
from shmpubsub._core.ring import lap_margin

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
