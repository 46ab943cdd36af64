"""No lost wake-ups, and no wake-up sent while nobody sleeps (at most one per sleep).

Every test is bounded in time: a lost wake-up fails it, naming the message, instead of hanging it.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from typing import Any

import pytest
from children import busy_poller, stream_subscriber
from helpers import Children, busy_wait, get_result, numbered, take, threads, wait_for

from shmpubsub import Publisher, Subscriber


class _CountingReader:
    """Wraps a Subscriber's private C reader to count how often it asks for a wake-up (arms)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.arms = 0

    def arm(self) -> bool:
        self.arms += 1
        return bool(self._inner.arm())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


# --------------------------------------------------------------------------------------------
# 1. No lost wake-ups
# --------------------------------------------------------------------------------------------


def _caught_up(received: Any, target: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while received.value < target:
        if time.monotonic() > deadline:
            return False
        time.sleep(20e-6)
    return True


@pytest.mark.parametrize("spin_us", [0, None], ids=["spin0", "spin-default"])
@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_no_lost_wakeups_blocking_receive(topic: str, method: str, spin_us: float | None) -> None:
    """A subscriber process looping receive() with no time-out gets every one of n messages
    published with random gaps (none / a busy-wait of microseconds / a sleep of up to 2 ms).

    Before every sleep gap (about 1800 of them) the publisher waits until the subscriber has
    taken everything published so far: a lost wake-up leaves it asleep with a message waiting,
    which the checkpoint reports (after 5 s) instead of hanging. With spin_us=0 the subscriber
    arms and sleeps whenever it finds nothing, so nearly every gap goes through the sleep path.
    """
    n = 6000
    ctx = multiprocessing.get_context(method)
    received = ctx.Value("q", 0, lock=False)
    topic_ready, attached = ctx.Event(), ctx.Event()
    results = ctx.Queue()
    rng = random.Random(f"{method}-{spin_us}")
    began = time.monotonic()
    checkpoints = 0
    with Children() as children:
        # Started before the publisher exists, so a forked child inherits no Publisher.
        child = children.start(
            ctx, stream_subscriber, topic, n, spin_us, topic_ready, attached, received, results
        )
        with Publisher(topic, slots=8192, slot_size=64) as pub:  # n < slots: never lapped
            topic_ready.set()
            assert attached.wait(30), "the subscriber never attached"
            for i in range(n):
                pub.publish(numbered(i))
                r = rng.random()
                if r < 0.3 or i == n - 1:
                    checkpoints += 1
                    if not _caught_up(received, i + 1, 5.0):
                        pytest.fail(
                            f"lost wake-up: 5 s after message {i} was published (followed by no other) "
                            f"the subscriber had taken only {received.value} of {i + 1} messages"
                        )
                    time.sleep(rng.uniform(0, 0.002))
                elif r < 0.6:
                    busy_wait(rng.uniform(1e-6, 100e-6))
                if time.monotonic() - began > 50:
                    pytest.fail(f"the stream took over 50 s (at message {i})")
            sent, failed, published = pub.wakeups_sent, pub.wakeup_failures, pub.published
        # closing woke the subscriber: it reports and exits
        result = get_result(results, 10, "the subscriber")
        children.join(child, 10)
    elapsed = time.monotonic() - began
    print(
        f"\n[{method}, spin_us={spin_us}] {published} messages, {checkpoints} checkpoints, "
        f"{sent} wake-ups sent, {elapsed:.2f} s"
    )
    _, count, lost, errors, reason, end_reason = result
    assert (count, lost, errors) == (n, 0, [])
    assert (reason, end_reason) == ("closed", "closed")
    assert failed == 0
    assert sent <= n + 1  # at most one per publish (plus one for close)
    if spin_us == 0:
        assert sent > 0, "a subscriber that never spins must have been woken"


# --------------------------------------------------------------------------------------------
# 2. No system call while nobody sleeps; at most one wake-up per sleep
# --------------------------------------------------------------------------------------------


def test_no_wakeups_without_subscribers(topic: str) -> None:
    with Publisher(topic, slots=1024, slot_size=64) as pub:
        for _ in range(100_000):
            pub.publish(b"12345678")
        assert pub.published == 100_000
        assert (pub.wakeups_sent, pub.wakeup_failures) == (0, 0)


def test_no_wakeups_for_attached_subscriber_that_never_waits(topic: str) -> None:
    """A subscriber that only ever polls with try_receive() (not selectable) never asks to be woken."""
    with Publisher(topic, slots=1024, slot_size=64) as pub, Subscriber(topic) as sub:
        assert sub.try_receive() is None
        for i in range(100_000):
            pub.publish(b"12345678")
            if i % 1000 == 0:
                assert sub.try_receive() is not None
        assert (pub.wakeups_sent, pub.wakeup_failures) == (0, 0)
        assert not pub.subscribers[0].asleep


def test_no_wakeups_for_busy_polling_subscriber_process(topic: str) -> None:
    n = 100_000
    ctx = multiprocessing.get_context("spawn")
    attached, results = ctx.Event(), ctx.Queue()
    with Children() as children, Publisher(topic, slots=1024, slot_size=64) as pub:
        child = children.start(ctx, busy_poller, topic, n, attached, results)
        assert attached.wait(30), "the subscriber never attached"
        for _ in range(n):
            pub.publish(b"12345678")
        assert (pub.wakeups_sent, pub.wakeup_failures) == (0, 0)
        _, got, lost, next_seq = get_result(results, 30, "the polling subscriber")
        children.join(child, 10)
        assert next_seq == n and got + lost == n and got > 0
        assert (pub.wakeups_sent, pub.wakeup_failures) == (0, 0)
        assert pub.subscribers == []


def test_burst_to_armed_subscriber_sends_exactly_one_wakeup(topic: str) -> None:
    """Deterministic: a selectable subscriber arms once (try_receive() -> None); a burst of 100
    messages then costs exactly one datagram, because the first publish clears its bit."""
    with Publisher(topic) as pub, Subscriber(topic) as sub:
        sub.fileno()
        assert sub.try_receive() is None  # arms
        assert pub.subscribers[0].asleep
        for i in range(100):
            pub.publish(numbered(i))
        assert pub.wakeups_sent == 1
        assert not pub.subscribers[0].asleep
        got = []
        while (msg := sub.try_receive()) is not None:  # the last, empty call re-arms
            got.append(msg.seq)
        assert got == list(range(100))
        assert pub.subscribers[0].asleep
        for i in range(100, 200):
            pub.publish(numbered(i))
        assert pub.wakeups_sent == 2
        # Taking messages without ever finding the ring empty does not re-arm.
        for i in range(100, 150):
            assert take(sub).seq == i
        for i in range(200, 300):
            pub.publish(numbered(i))
        assert pub.wakeups_sent == 2
        assert pub.wakeup_failures == 0


def test_sleeping_subscriber_gets_at_most_one_wakeup_per_arm(topic: str) -> None:
    """A subscriber thread blocked in receive(); 1000 messages back-to-back. Wake-ups are sent,
    but never more than the number of times the subscriber asked for one."""
    n = 1000
    with Publisher(topic, slots=2048, slot_size=64) as pub, Subscriber(topic) as sub:
        counter = _CountingReader(sub._reader)
        sub._waiter._reader = counter  # type: ignore[assignment]  # count arms
        got: list[int] = []
        failure: list[BaseException] = []

        def consume() -> None:
            try:
                for _ in range(n):
                    got.append(sub.receive(timeout=10).seq)
            except BaseException as e:
                failure.append(e)

        with threads(consume):
            wait_for(lambda: pub.subscribers[0].asleep, 5, "the subscriber to sleep")
            for i in range(n):
                pub.publish(numbered(i))
        assert not failure, failure
        assert got == list(range(n))
        print(f"\n{n} back-to-back messages: {counter.arms} arms, {pub.wakeups_sent} wake-ups")
        assert 1 <= pub.wakeups_sent <= counter.arms
        assert pub.wakeups_sent <= n
        assert pub.wakeup_failures == 0
