"""What a blocked or waiting subscriber sees when the publisher goes away: a close (drained
first, within DETECT_BOUND) or a SIGKILL (PublisherGone "crashed").
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from typing import Any

import pytest
from children import doomed_publisher, drain_until_gone
from helpers import (
    DETECT_BOUND,
    ArmHook,
    Children,
    check_drained,
    control_entries,
    get_result,
    kill_and_await_death,
    numbered,
    segment_paths,
    take_over_and_remove,
    threads,
    wait_for,
)

from shmpubsub import Publisher, PublisherGone, Subscriber

# --------------------------------------------------------------------------------------------
# 6. Publisher gone
# --------------------------------------------------------------------------------------------


def test_close_wakes_blocked_subscriber_threads(topic: str) -> None:
    """Threads blocked in receive() or in iteration drain what is left after close, then end
    (PublisherGone "closed" / StopIteration) within DETECT_BOUND of the close."""
    k = 20
    modes = ["receive", "iterate", "receive", "iterate"]
    with Publisher(topic) as pub:
        subs = [Subscriber(topic, spin_us=0 if i < 2 else 50) for i in range(len(modes))]
        outcome: list[Any] = [None] * len(modes)

        def run(i: int) -> None:
            sub, got = subs[i], []
            try:
                if modes[i] == "iterate":
                    for msg in sub:
                        got.append(msg.seq)
                    outcome[i] = (time.monotonic(), got, sub.end_reason)
                else:
                    while True:
                        got.append(sub.receive().seq)
            except PublisherGone as e:
                outcome[i] = (time.monotonic(), got, e.reason)
            except BaseException as e:
                outcome[i] = ("error", repr(e))

        try:
            with threads(*(lambda i=i: run(i) for i in range(len(modes)))):
                wait_for(
                    lambda: len(pub.subscribers) == len(modes) and all(e.asleep for e in pub.subscribers),
                    5,
                    "every subscriber to sleep",
                )
                for i in range(k):
                    pub.publish(numbered(i))
                closing = time.monotonic()
                pub.close()
        finally:
            for sub in subs:
                sub.close()
    latencies = []
    for i, result in enumerate(outcome):
        assert result is not None and result[0] != "error", (modes[i], result)
        noticed, _got, reason = result
        assert reason == "closed"
        latencies.append(noticed - closing)
    print(f"\nclose -> end of stream (threads): {[f'{t * 1e3:.2f} ms' for t in latencies]}")
    assert max(latencies) < DETECT_BOUND, latencies
    for result in outcome:
        check_drained(result[1], k)


def test_close_wakes_blocked_subscriber_processes(topic: str) -> None:
    k = 50
    modes = ["receive", "iterate", "receive"]
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    with Children() as children, Publisher(topic) as pub:
        procs = []
        for mode in modes:
            attached = ctx.Event()
            procs.append(children.start(ctx, drain_until_gone, topic, mode, k, attached, results))
            assert attached.wait(30), "a subscriber never attached"
        wait_for(
            lambda: len(pub.subscribers) == len(modes) and all(e.asleep for e in pub.subscribers),
            10,
            "every subscriber to sleep",
        )
        for i in range(k):
            pub.publish(numbered(i))
        closing = time.monotonic()
        pub.close()
        outcomes = [get_result(results, 10, "a subscriber") for _ in modes]
        for proc in procs:
            children.join(proc, 10)
    latencies = []
    for _, noticed, _got, reason, end_reason, lost in outcomes:
        assert lost == 0
        assert reason in ("closed", None)  # None: the iterating one (StopIteration)
        assert end_reason == "closed"
        latencies.append(noticed - closing)
    assert sum(o[3] is None for o in outcomes) == 1
    print(f"\nclose -> end of stream (processes): {[f'{t * 1e3:.2f} ms' for t in latencies]}")
    assert max(latencies) < DETECT_BOUND, latencies
    for outcome in outcomes:
        check_drained(outcome[2], k)


def test_messages_left_at_close_are_drained_first(topic: str) -> None:
    """Messages published before the close, none yet read: receive() and iteration deliver them
    all, then the end (no race here: the close happens before any read)."""
    with Publisher(topic) as pub, Subscriber(topic) as by_receive, Subscriber(topic) as by_iteration:
        for i in range(10):
            pub.publish(numbered(i))
        pub.close()
        assert by_receive.end_reason == by_iteration.end_reason == "closed"
        assert [by_receive.receive().seq for _ in range(10)] == list(range(10))
        with pytest.raises(PublisherGone):
            by_receive.receive()
        assert [msg.seq for msg in by_iteration] == list(range(10))


@pytest.mark.parametrize("spin_us", [0, 50])
def test_last_messages_published_just_before_close_are_received(topic: str, spin_us: float) -> None:
    """Deterministic: the subscriber arms and finds nothing; at that instant the publisher
    publishes its last message and closes. receive() must still deliver that message."""
    with Publisher(topic) as pub, Subscriber(topic, spin_us=spin_us) as sub:

        def publisher_finishes() -> None:
            pub.publish(b"last")
            pub.close()

        sub._waiter._reader = ArmHook(sub._waiter._reader, publisher_finishes)  # type: ignore[assignment]
        try:
            msg = sub.receive(timeout=1)
        except PublisherGone:
            pytest.fail(f"PublisherGone with a message still unread (pending={sub.pending})")
        assert msg.data == b"last"
        with pytest.raises(PublisherGone):
            sub.receive(timeout=1)


def test_publisher_sigkill_ends_blocked_subscriber_process(topic: str) -> None:
    k = 5
    ctx = multiprocessing.get_context("spawn")
    ready, go, published, attached = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
    results = ctx.Queue()
    try:
        with Children() as children:
            publisher = children.start(ctx, doomed_publisher, topic, k, ready, go, published)
            assert ready.wait(30), "the publisher never started"
            subscriber = children.start(ctx, drain_until_gone, topic, "receive", k, attached, results)
            assert attached.wait(30), "the subscriber never attached"
            go.set()
            assert published.wait(10)
            wait_for(
                lambda: any(e.read_pos == k and e.asleep for e in control_entries(topic)),
                10,
                "the subscriber to take every message and sleep",
            )
            time.sleep(0.02)
            died = kill_and_await_death(publisher.pid)
            _, noticed, got, reason, end_reason, lost = get_result(results, 10, "the subscriber")
            children.join(subscriber, 10)
            children.join(publisher, 10, exitcode=-signal.SIGKILL)
            # A crashed publisher removes nothing: its segments are still there.
            assert all(os.path.exists(p) for p in segment_paths(topic))
    finally:
        take_over_and_remove(topic)
    latency = noticed - died
    print(f"\nSIGKILL -> PublisherGone (subscriber process): {latency * 1e3:.2f} ms")
    assert got == list(range(k)) and lost == 0
    assert (reason, end_reason) == ("crashed", "crashed")
    assert latency < DETECT_BOUND, f"{latency * 1e3:.2f} ms"


def test_publisher_sigkill_ends_blocked_subscriber_in_process(topic: str) -> None:
    k = 5
    ctx = multiprocessing.get_context("spawn")
    ready, go, published = ctx.Event(), ctx.Event(), ctx.Event()
    died: list[float] = []
    try:
        with Children() as children:
            publisher = children.start(ctx, doomed_publisher, topic, k, ready, go, published)
            assert ready.wait(30), "the publisher never started"
            with Subscriber(topic) as sub:
                go.set()
                got = [sub.receive(timeout=10).seq for _ in range(k)]

                def kill_when_asleep() -> None:
                    deadline = time.monotonic() + 10
                    while not any(e.asleep for e in control_entries(topic)):
                        if time.monotonic() > deadline:
                            return  # receive() below then times out and the test fails
                        time.sleep(0.002)
                    time.sleep(0.02)
                    died.append(kill_and_await_death(publisher.pid))

                with threads(kill_when_asleep):
                    with pytest.raises(PublisherGone) as info:
                        sub.receive(timeout=15)  # bounded: nothing else could end it here
                    noticed = time.monotonic()
                assert info.value.reason == "crashed" and sub.end_reason == "crashed"
                assert isinstance(info.value, EOFError)
                # the end is permanent
                with pytest.raises(PublisherGone):
                    sub.receive(timeout=0)
                assert sub.try_receive() is None
            children.join(publisher, 10, exitcode=-signal.SIGKILL)
    finally:
        take_over_and_remove(topic)
    assert got == list(range(k))
    latency = noticed - died[0]
    print(f"\nSIGKILL -> PublisherGone (in-process subscriber): {latency * 1e3:.2f} ms")
    assert latency < DETECT_BOUND, f"{latency * 1e3:.2f} ms"


def test_subscriber_attaching_after_publisher_crash(topic: str) -> None:
    """A subscriber that attaches to a dead publisher's topic drains what the ring holds, then
    gets PublisherGone "crashed" at once (no waiting for a wake-up that will never come)."""
    k = 5
    ctx = multiprocessing.get_context("spawn")
    ready, go, published = ctx.Event(), ctx.Event(), ctx.Event()
    try:
        with Children() as children:
            publisher = children.start(ctx, doomed_publisher, topic, k, ready, go, published)
            assert ready.wait(30), "the publisher never started"
            go.set()
            assert published.wait(10)
            children.kill(publisher)
        with Subscriber(topic, start="oldest") as sub:
            assert sub.end_reason == "crashed"
            assert [msg.seq for msg in sub] == list(range(k))
            began = time.monotonic()
            with pytest.raises(PublisherGone) as info:
                sub.receive()
            assert time.monotonic() - began < DETECT_BOUND
            assert info.value.reason == "crashed"
    finally:
        take_over_and_remove(topic)
