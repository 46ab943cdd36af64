"""shmpubsub.aio: awaitable receives on the wake-up layer.

Plain test functions drive their own loop with asyncio.run (no pytest-asyncio). Every await that
could hang is wrapped in asyncio.wait_for, child processes are joined with a time-out and killed if
they overstay, so a lost wake-up fails a test instead of hanging it. Helpers used by child processes
live at module top level (the "spawn" start method pickles them by reference). Latencies are
printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import random
import signal
import threading
import time
import traceback
from typing import Any

import pytest
from children import doomed_publisher
from helpers import (
    ArmHook,
    Children,
    check_drained,
    get_result,
    kill_and_await_death,
    numbered,
    segment_paths,
    take_over_and_remove,
)

import shmpubsub as sps
import shmpubsub.aio as aio
from shmpubsub import Publisher, PublisherGone, ReceiveTimeout

# close of the publisher, or its death as the kernel reports it -> PublisherGone in an awaiting subscriber
DETECT_BOUND = 0.100


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _run(coro: Any, timeout: float = 30) -> Any:
    """Runs *coro* in a fresh loop, failing the test (instead of hanging) after *timeout* s."""

    async def bounded() -> Any:
        try:
            return await asyncio.wait_for(coro, timeout)
        except asyncio.TimeoutError:
            pytest.fail(f"the test's coroutine did not finish within {timeout} s")

    return asyncio.run(bounded())


# --------------------------------------------------------------------------------------------
# Child-process bodies
# --------------------------------------------------------------------------------------------


def _stream_publisher(topic: str, n: int, progress: Any, ready: Any, go: Any, results: Any) -> None:
    """Publishes n messages with random gaps once told to, then closes the topic. At random
    checkpoints (and after the last message) it waits until every subscriber has taken everything
    (*progress* holds each one's count): a lost wake-up is reported there instead of being
    hidden by the next publish or by the close."""
    try:
        rng = random.Random(n)
        with Publisher(topic, slots=4096, slot_size=64) as pub:  # n < slots: never lapped
            ready.set()
            if not go.wait(30):
                results.put(("error", "never told to go"))
                return
            checkpoints = 0
            for i in range(n):
                pub.publish(numbered(i))
                r = rng.random()
                if r < 0.1 or i == n - 1:
                    checkpoints += 1
                    deadline = time.monotonic() + 5
                    while min(progress) < i + 1:
                        if time.monotonic() > deadline:
                            results.put(
                                (
                                    "error",
                                    f"lost wake-up: 5 s after message {i} (followed by no "
                                    f"other) subscribers had taken {list(progress)}",
                                )
                            )
                            return
                        time.sleep(50e-6)
                    time.sleep(rng.uniform(0, 0.001))
                elif r < 0.4:
                    end = time.perf_counter() + rng.uniform(1e-6, 50e-6)
                    while time.perf_counter() < end:
                        pass
            results.put(("done", pub.published, pub.wakeups_sent, pub.wakeup_failures, checkpoints))
    except BaseException:
        results.put(("error", traceback.format_exc()))


# --------------------------------------------------------------------------------------------
# Many subscribers, one loop
# --------------------------------------------------------------------------------------------


def test_many_subscribers_in_one_loop_receive_every_message(topic: str) -> None:
    n, count = 3000, 20
    ctx = multiprocessing.get_context("spawn")
    ready, go, results = ctx.Event(), ctx.Event(), ctx.Queue()
    progress = ctx.Array("q", count, lock=False)

    async def collect(index: int, sub: aio.Subscriber) -> tuple[list[int], int, int, str | None]:
        seqs, bad = [], 0
        async for msg in sub:
            seqs.append(msg.seq)
            bad += msg.data != numbered(msg.seq)
            progress[index] = len(seqs)
        return seqs, bad, sub.lost, sub.end_reason

    async def main() -> list[Any]:
        subs = [aio.Subscriber(topic) for _ in range(count)]
        try:
            go.set()
            return list(await asyncio.gather(*(collect(i, s) for i, s in enumerate(subs))))
        finally:
            for s in subs:
                s.close()

    with Children() as children:
        publisher = children.start(ctx, _stream_publisher, topic, n, progress, ready, go, results)
        assert ready.wait(30), "the publisher never started"
        began = time.monotonic()
        outcomes = _run(main(), timeout=60)
        elapsed = time.monotonic() - began
        _, published, sent, failed, checkpoints = get_result(results, 10, "the publisher")
        children.join(publisher, 10)
    print(
        f"\n{count} aio subscribers x {n} messages: {elapsed:.2f} s, {checkpoints} checkpoints, "
        f"{sent} wake-ups sent"
    )
    assert published == n
    for seqs, bad, lost, end_reason in outcomes:
        assert seqs == list(range(n))
        assert (bad, lost, end_reason) == (0, 0, "closed")
    assert failed == 0
    assert sent > 0


def test_waiting_does_not_block_the_loop_or_burn_cpu(topic: str) -> None:
    async def main() -> tuple[int, float, float]:
        with Publisher(topic):
            async with aio.Subscriber(topic) as sub:
                ticks = 0
                stop = False

                async def ticker() -> None:
                    nonlocal ticks
                    while not stop:
                        ticks += 1
                        await asyncio.sleep(0.005)

                task = asyncio.create_task(ticker())
                cpu, began = time.process_time(), time.monotonic()
                with pytest.raises(ReceiveTimeout):
                    await sub.receive(timeout=0.3)
                cpu, wall = time.process_time() - cpu, time.monotonic() - began
                stop = True
                await task
                return ticks, cpu, wall

    ticks, cpu, wall = _run(main())
    assert ticks >= 20  # the loop kept running (0.3 s / 5 ms = 60 at best)
    assert cpu < 0.5 * wall, f"awaiting receive burnt {cpu:.3f} s of CPU in {wall:.3f} s"


# --------------------------------------------------------------------------------------------
# End of stream
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("closer", ["loop", "thread"])
def test_close_ends_awaiting_subscribers_after_draining(topic: str, closer: str) -> None:
    """Subscribers awaiting receive() (or in ``async for``) drain what was published before the
    close, then end with PublisherGone "closed" within DETECT_BOUND of the close."""
    k = 25
    pub = Publisher(topic)
    closed_at: list[float] = []

    def publish_and_close() -> None:
        for i in range(k):
            pub.publish(numbered(i))
        closed_at.append(time.monotonic())
        pub.close()

    async def by_receive(sub: aio.Subscriber) -> tuple[float, list[int], str]:
        got = []
        try:
            while True:
                got.append((await sub.receive()).seq)
        except PublisherGone as e:
            return time.monotonic(), got, e.reason

    async def by_iteration(sub: aio.Subscriber) -> tuple[float, list[int], str | None]:
        got = [msg.seq async for msg in sub]
        return time.monotonic(), got, sub.end_reason

    async def main() -> list[Any]:
        subs = [aio.Subscriber(topic) for _ in range(4)]
        try:
            tasks = [
                asyncio.create_task(by_receive(s) if i % 2 else by_iteration(s)) for i, s in enumerate(subs)
            ]
            await asyncio.sleep(0.05)
            assert all(e.asleep for e in pub.subscribers)  # all armed, waiting
            if closer == "loop":
                asyncio.get_running_loop().call_soon(publish_and_close)
                return list(await asyncio.gather(*tasks))
            thread = threading.Thread(target=publish_and_close, daemon=True)
            thread.start()
            try:
                return list(await asyncio.gather(*tasks))
            finally:
                thread.join(10)
        finally:
            for s in subs:
                s.close()

    try:
        outcomes = _run(main())
    finally:
        pub.close()
    latencies = []
    for noticed, _got, reason in outcomes:
        assert reason == "closed"
        latencies.append(noticed - closed_at[0])
    print(f"\nclose ({closer}) -> end of stream (aio): {[f'{t * 1e3:.2f} ms' for t in latencies]}")
    assert max(latencies) < DETECT_BOUND, latencies
    for outcome in outcomes:
        check_drained(outcome[1], k)


def test_last_message_published_just_before_close_is_received(topic: str) -> None:
    """Deterministic: the awaiting subscriber arms and finds nothing; at that instant the
    publisher publishes its last message and closes. receive() must still deliver it."""

    async def main() -> None:
        pub = Publisher(topic)
        try:
            async with aio.Subscriber(topic) as sub:

                def publisher_finishes() -> None:
                    pub.publish(b"last")
                    pub.close()

                sub._waiter._reader = ArmHook(sub._waiter._reader, publisher_finishes)  # type: ignore[assignment]
                try:
                    msg = await sub.receive(timeout=1)
                except PublisherGone:
                    pytest.fail("PublisherGone with a message still unread")
                assert msg.data == b"last"
        finally:
            pub.close()

    _run(main())


def test_publisher_sigkill_ends_awaiting_subscribers(topic: str) -> None:
    k = 5
    ctx = multiprocessing.get_context("spawn")
    ready, go, published = ctx.Event(), ctx.Event(), ctx.Event()

    async def main(publisher_pid: int) -> tuple[float, list[Any]]:
        async with aio.Subscriber(topic) as by_receive, aio.Subscriber(topic) as by_iteration:
            go.set()
            got = [(await by_receive.receive(timeout=10)).seq for _ in range(k)]
            got2 = [(await by_iteration.receive(timeout=10)).seq for _ in range(k)]
            assert got == got2 == list(range(k))

            async def wait_receive() -> tuple[float, str, str | None]:
                try:
                    msg = await by_receive.receive()
                except PublisherGone as e:
                    return time.monotonic(), e.reason, by_receive.end_reason
                raise AssertionError(f"unexpected message {msg!r}")

            async def wait_iteration() -> tuple[float, str | None, str | None]:
                async for msg in by_iteration:
                    raise AssertionError(f"unexpected message {msg!r}")
                return time.monotonic(), None, by_iteration.end_reason

            tasks = [asyncio.create_task(wait_receive()), asyncio.create_task(wait_iteration())]
            await asyncio.sleep(0.05)
            assert not any(t.done() for t in tasks)
            # blocks the loop until the kernel reports the death; the tasks then see it at once
            died = kill_and_await_death(publisher_pid)
            return died, list(await asyncio.gather(*tasks))

    try:
        with Children() as children:
            publisher = children.start(ctx, doomed_publisher, topic, k, ready, go, published)
            assert ready.wait(30), "the publisher never started"
            died, outcomes = _run(main(publisher.pid))
            children.join(publisher, 10, exitcode=-signal.SIGKILL)
            assert all(os.path.exists(p) for p in segment_paths(topic))  # a crash removes nothing
    finally:
        take_over_and_remove(topic)
    (t_receive, reason, end1), (t_iter, _, end2) = outcomes
    assert (reason, end1, end2) == ("crashed", "crashed", "crashed")
    latencies = [t_receive - died, t_iter - died]
    print(f"\nSIGKILL -> PublisherGone (aio): {[f'{t * 1e3:.2f} ms' for t in latencies]}")
    assert max(latencies) < DETECT_BOUND, latencies


# --------------------------------------------------------------------------------------------
# Cancellation
# --------------------------------------------------------------------------------------------


def test_cancelled_receive_leaves_subscriber_usable(topic: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with Publisher(topic) as pub:
            async with aio.Subscriber(topic) as sub:
                # cancelled while waiting
                task = asyncio.create_task(sub.receive())
                await asyncio.sleep(0.05)
                assert not task.done()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert loop.remove_reader(sub.fileno()) is False  # nothing left registered
                pub.publish(b"after cancel")
                assert (await sub.receive(timeout=1)).data == b"after cancel"

                # cancelled after its wake-up arrived but before it ran: the message stays queued
                task = asyncio.create_task(sub.receive())
                await asyncio.sleep(0.05)
                pub.publish(b"kept")
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert (await sub.receive(timeout=1)).data == b"kept"

                # cancelled by a time-out of wait_for
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(sub.receive(), 0.02)
                pub.publish(b"after wait_for")
                assert (await sub.receive(timeout=1)).data == b"after wait_for"
                assert sub.try_receive() is None
                assert sub.lost == 0

    _run(main())


def test_repeated_cancellation_loses_no_message(topic: str) -> None:
    """A thread publishes with random gaps while the loop takes messages through receive() calls
    that wait_for keeps cancelling at random points: every message arrives once, in order."""
    n = 500

    async def main(pub: Publisher) -> tuple[list[int], int]:
        async with aio.Subscriber(topic) as sub:
            rng = random.Random(7)

            def publish_all() -> None:
                for i in range(n):
                    pub.publish(numbered(i))
                    time.sleep(rng.uniform(0, 0.0005))

            thread = threading.Thread(target=publish_all, daemon=True)
            thread.start()
            got: list[int] = []
            cancelled = 0
            try:
                while len(got) < n:
                    try:
                        msg = await asyncio.wait_for(sub.receive(), rng.uniform(0, 0.0008))
                    except asyncio.TimeoutError:
                        cancelled += 1
                        continue
                    assert msg.data == numbered(msg.seq)
                    got.append(msg.seq)
            finally:
                thread.join(10)
            assert sub.try_receive() is None and sub.lost == 0
            return got, cancelled

    with Publisher(topic, slots=1024, slot_size=64) as pub:
        got, cancelled = _run(main(pub))
    assert got == list(range(n))
    assert cancelled > 0


def test_two_tasks_awaiting_one_subscriber_both_get_a_message(topic: str) -> None:
    """Regression: a second waiter's add_reader() used to replace the first one's callback, and its
    remove_reader() unregistered the fd, so one task hung although a message was waiting."""

    async def main() -> list[bytes]:
        with Publisher(topic) as pub:
            async with aio.Subscriber(topic) as sub:
                tasks = [asyncio.create_task(sub.receive()) for _ in range(2)]
                await asyncio.sleep(0.05)
                pub.publish(b"a")
                pub.publish(b"b")
                done, pending = await asyncio.wait(tasks, timeout=2)
                for t in pending:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                assert not pending, "a task awaiting receive() hangs while a message waits in the ring"
                # a third waiter, alone again, is still served
                later = asyncio.create_task(sub.receive(timeout=2))
                await asyncio.sleep(0.02)
                pub.publish(b"c")
                return [*sorted(t.result().data for t in done), (await later).data]

    assert _run(main()) == [b"a", b"b", b"c"]


def test_close_wakes_tasks_awaiting_receive(topic: str) -> None:
    async def main() -> float:
        with Publisher(topic):
            sub = aio.Subscriber(topic)
            try:
                task = asyncio.create_task(sub.receive())
                await asyncio.sleep(0.05)
                closing = time.monotonic()
                sub.close()
                with pytest.raises(sps.ClosedError):
                    await asyncio.wait_for(task, 2)
                return time.monotonic() - closing
            finally:
                sub.close()

    assert _run(main()) < DETECT_BOUND


# --------------------------------------------------------------------------------------------
# Time-outs and arguments
# --------------------------------------------------------------------------------------------


def test_receive_timeout(topic: str) -> None:
    async def main() -> list[float]:
        with Publisher(topic) as pub:
            async with aio.Subscriber(topic) as sub:
                durations = []
                for _ in range(3):
                    began = time.monotonic()
                    with pytest.raises(ReceiveTimeout) as info:
                        await sub.receive(timeout=0.05)
                    durations.append(time.monotonic() - began)
                    assert isinstance(info.value, TimeoutError)

                began = time.monotonic()
                with pytest.raises(ReceiveTimeout):
                    await sub.receive(timeout=0)
                assert time.monotonic() - began < 0.05  # immediate (lenient for a loaded machine)
                pub.publish(b"there")
                assert (await sub.receive(timeout=0)).data == b"there"

                for bad in (-1, -1e-9, math.nan):
                    with pytest.raises(sps.InvalidArgument):
                        await sub.receive(timeout=bad)
                pub.publish(b"pending")
                with pytest.raises(sps.InvalidArgument):  # even with a message waiting
                    await sub.receive(timeout=-1)
                assert (await sub.receive(timeout=1)).data == b"pending"
                return durations

    durations = _run(main())
    assert min(durations) >= 0.05, durations
    # upper bound on the fastest try (a systematic overrun fails them all; one preempted try
    # on a loaded machine does not), and a sanity bound on every try
    assert min(durations) <= 0.15 and max(durations) < 1.0, durations


def test_receive_returns_when_message_arrives_before_timeout(topic: str) -> None:
    async def main() -> float:
        with Publisher(topic) as pub:
            async with aio.Subscriber(topic) as sub:
                asyncio.get_running_loop().call_later(0.05, pub.publish, b"late")
                began = time.monotonic()
                msg = await sub.receive(timeout=5)
                assert msg.data == b"late"
                return time.monotonic() - began

    elapsed = _run(main())
    assert 0.04 <= elapsed < 1.0


# --------------------------------------------------------------------------------------------
# Context managers
# --------------------------------------------------------------------------------------------


def test_async_with_closes_the_subscriber(topic: str) -> None:
    async def main() -> None:
        async with aio.Publisher(topic) as pub:
            async with aio.Subscriber(topic) as sub:
                assert not sub.closed
                assert len(pub.subscribers) == 1
                pub.publish(b"x")
                assert (await sub.receive(timeout=1)).data == b"x"
            assert sub.closed
            assert pub.subscribers == []
            with pytest.raises(sps.ClosedError):
                sub.try_receive()

            with pytest.raises(RuntimeError, match="inside"):
                async with aio.Subscriber(topic) as sub2:
                    raise RuntimeError("inside")
            assert sub2.closed
            assert pub.subscribers == []
        assert pub.closed

    _run(main())
    assert not any(os.path.exists(p) for p in segment_paths(topic))
