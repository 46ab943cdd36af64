"""Publisher.skip: numbers lost upstream count in every subscriber's `lost`, exactly."""

from __future__ import annotations

import pytest

import shmpubsub as sps
from shmpubsub._core.header import MAX_SEQ


def drain(sub: sps.Subscriber) -> list[int]:
    return [m.seq for m in iter(sub.try_receive, None)]


@pytest.mark.parametrize("slots", [1, 2, 4, 8])
@pytest.mark.parametrize("count", [1, 3, 8, 20])
def test_skipped_numbers_count_as_lost(topic: str, slots: int, count: int) -> None:
    with sps.Publisher(topic, slots=slots, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        assert pub.publish(b"before") == 0
        assert drain(sub) == [0]
        pub.skip(count)
        assert pub.published == 1 + count
        assert pub.publish(b"after") == 1 + count
        got = drain(sub)
        after = 1 + count
        assert got[-1] == after
        assert len(got) + sub.lost == count + 1  # everything since the first read adds up
        assert sub.lost == count + 1 - len(got)
        assert all(seq == after for seq in got), "a skip marker was returned as a message"


def test_a_subscriber_that_keeps_up_loses_exactly_the_skipped(topic: str) -> None:
    with sps.Publisher(topic, slots=16, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        received = 0
        for burst in range(20):
            pub.publish(b"m")
            pub.skip(burst % 3)
            pub.publish(b"n")
            received += len(drain(sub))
        assert received == 40
        assert sub.lost == sum(b % 3 for b in range(20))


def test_latest_and_view_step_over_markers(topic: str) -> None:
    with sps.Publisher(topic, slots=8, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"real")
        pub.skip(3)
        latest = sub.latest()
        assert latest is not None and (latest.seq, latest.data) == (0, b"real")
        assert drain(sub) == [0]
        pub.skip(2)
        pub.publish(b"viewed")
        with sub.view(timeout=1) as view:
            assert (view.seq, bytes(view.data)) == (6, b"viewed")
        assert sub.lost == 5


def test_a_blocked_subscriber_wakes_for_a_skip_and_then_gets_the_next_message(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=16) as pub, sps.Subscriber(topic, spin_us=0) as sub:
        sub.fileno()
        assert sub.try_receive() is None  # armed
        pub.skip(2)
        assert pub.wakeups_sent == 1
        pub.publish(b"x")
        msg = sub.receive(timeout=1)
        assert (msg.seq, sub.lost) == (2, 2)


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True])
def test_bad_counts_are_refused(topic: str, bad: object) -> None:
    with sps.Publisher(topic) as pub, pytest.raises(sps.InvalidArgument):
        pub.skip(bad)  # type: ignore[arg-type]


def test_skip_after_close_and_during_a_loan(topic: str) -> None:
    pub = sps.Publisher(topic)
    with pub.loan(4) as buf:
        buf[:] = b"abcd"
        with pytest.raises(sps.LoanError):
            pub.skip(1)
    pub.close()
    with pytest.raises(sps.ClosedError):
        pub.skip(1)


def test_skip_cannot_carry_sequence_numbers_past_the_limit(topic: str) -> None:
    """Skipping 2**62 three times used to carry the numbers past 2**63: the next publish then
    returned a negative number and raised ClosedError, although it had published."""
    with sps.Publisher(topic, slots=4, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        pub.skip(MAX_SEQ - 1)
        with pytest.raises(sps.InvalidArgument, match="2\\*\\*62"):
            pub.skip(2)
        assert pub.published == MAX_SEQ - 1  # the refused skip used up nothing
        pub.skip(1)
        with pytest.raises(sps.InvalidArgument):
            pub.skip(1)
        assert pub.publish(b"after") == MAX_SEQ
        msg = sub.try_receive()
        assert msg is not None and (msg.seq, msg.data) == (MAX_SEQ, b"after")
        assert sub.lost == MAX_SEQ
