"""The wake-up layer: sleeping subscribers, wake-up datagrams, time-outs, Ctrl-C, selectors, and what
subscribers see when the publisher (or a subscriber) goes away.

Every test is bounded in time without any plugin: child processes are joined with a time-out and
killed if they overstay (the test then fails saying which one), results come back through queues
read with a time-out, and threads are daemons joined with a time-out. A test that would hang on a
lost wake-up fails instead, naming the message whose wake-up was lost.

Helpers used by child processes live at module top level: the "spawn" start method pickles them by
reference. Latencies measured here (close -> PublisherGone, SIGKILL -> PublisherGone, SIGINT ->
KeyboardInterrupt) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import errno
import gc
import logging
import math
import multiprocessing
import os
import random
import re
import resource
import select
import selectors
import signal
import stat
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from helpers import ArmHook, Children, check_drained, get_result, kill_and_await_death

import shmpubsub as sps
from shmpubsub import Publisher, PublisherGone, ReceiveTimeout, Subscriber, _proc, wakeup
from shmpubsub._core.control import Control
from shmpubsub._core.lib import lib, pointer_to, release
from shmpubsub._core.wake import WakeSender, drain
from shmpubsub.names import CONTROL_SUFFIX, PREFIX, SHM_DIR, socket_name
from shmpubsub.segment import Segment

# Wake-up latency bounds asked of the library (generous for a loaded 2-core machine: a healthy
# wake-up takes tens of microseconds). SHMPUBSUB_TEST_TIME_SCALE stretches them for runs that
# check memory rather than speed: everything is 20-50 times slower under valgrind.
TIME_SCALE = float(os.environ.get("SHMPUBSUB_TEST_TIME_SCALE", "1"))
# close of the publisher, or its death as the kernel reports it (helpers.kill_and_await_death),
# -> PublisherGone in a blocked subscriber
DETECT_BOUND = 0.100 * TIME_SCALE
CTRL_C_BOUND = 2.0 * TIME_SCALE  # SIGINT -> KeyboardInterrupt in a blocked receive()


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _payload(i: int) -> bytes:
    """Message i's body: its number, repeated 1-4 times (so lengths vary too)."""
    return i.to_bytes(8, "little") * (1 + i % 4)


def _wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Polls *predicate* until it returns something true; fails the test after *timeout* s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.002)


def _take(sub: Subscriber) -> sps.Message:
    """try_receive(), which must find a message."""
    msg = sub.try_receive()
    assert msg is not None, "expected a message"
    return msg


def _busy_wait(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _socket_path(token: int) -> str:
    return os.path.join(wakeup.socket_dir(), socket_name(token))


def _segment_paths(topic: str) -> list[str]:
    return [os.path.join(SHM_DIR, PREFIX + topic), os.path.join(SHM_DIR, PREFIX + topic + CONTROL_SUFFIX)]


def _entries(topic: str) -> list[sps.SubscriberInfo]:
    """The topic's subscriber entries, read from its control segment (for a publisher that lives
    in another process; a local one has ``pub.subscribers``)."""
    segment = Segment.open(topic, writable=False, suffix=CONTROL_SUFFIX)
    try:
        mapping = segment.map()
        base = pointer_to(mapping, writable=False)
        try:
            return Control(base, len(mapping), f"control of {topic!r}").entries()
        finally:
            release(base)
    finally:
        segment.close()


def _take_over_and_remove(topic: str) -> None:
    """After a SIGKILLed publisher its segments stay in /dev/shm; a new publisher on the topic
    removes them (takeover) and its close removes its own. Nothing of the topic may remain."""
    Publisher(topic).close()
    left = [p for p in _segment_paths(topic) if os.path.exists(p)]
    assert not left, f"takeover + close left {left} behind"


@contextmanager
def _threads(*targets: Callable[[], None]) -> Iterator[list[threading.Thread]]:
    """Runs daemon threads; on leaving, joins them (bounded) and fails if one is stuck."""
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in threads:
        t.start()
    try:
        yield threads
    finally:
        for t in threads:
            t.join(10)
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"threads still blocked after 10 s: {stuck}"


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
# Child-process bodies (top level: spawn pickles them by reference)
# --------------------------------------------------------------------------------------------


def _stream_subscriber(
    topic: str, n: int, spin_us: float | None, topic_ready: Any, attached: Any, received: Any, results: Any
) -> None:
    """Takes n messages with receive() (no time-out), checking each, publishing its progress in
    *received*; then expects the end of the stream."""
    try:
        if not topic_ready.wait(30):
            results.put(("error", "the topic was never created"))
            return
        options: dict[str, Any] = {} if spin_us is None else {"spin_us": spin_us}
        with Subscriber(topic, **options) as sub:
            attached.set()
            errors: list[tuple[int, int, bytes]] = []
            for i in range(n):
                msg = sub.receive()
                if (msg.seq, msg.data) != (i, _payload(i)) and len(errors) < 5:
                    errors.append((i, msg.seq, msg.data[:16]))
                received.value = i + 1
            try:
                extra = sub.receive()
                reason = f"unexpected extra message {extra!r}"
            except PublisherGone as e:
                reason = e.reason
            results.put(("done", received.value, sub.lost, errors, reason, sub.end_reason))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def _busy_poller(topic: str, n: int, attached: Any, results: Any) -> None:
    """Only ever polls with try_receive() (never receive(), never fileno()) until it is past n."""
    try:
        with Subscriber(topic) as sub:
            attached.set()
            got = 0
            deadline = time.monotonic() + 30
            while sub.next_seq < n:
                if sub.try_receive() is not None:
                    got += 1
                elif time.monotonic() > deadline:
                    break
            results.put(("done", got, sub.lost, sub.next_seq))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def _poll_forever(topic: str, attached: Any) -> None:
    """Attaches and busy-polls until killed (never asks for a wake-up)."""
    sub = Subscriber(topic)  # never closed: this process is SIGKILLed
    attached.set()
    while True:
        sub.try_receive()


def _sleep_forever(topic: str, attached: Any) -> None:
    """Attaches, then blocks in receive() until killed."""
    sub = Subscriber(topic)  # never closed: this process is SIGKILLed
    attached.set()
    sub.receive()


def _receive_forever(topic: str, attached: Any) -> None:
    """Attaches, then blocks in receive() again after every message, until killed."""
    sub = Subscriber(topic, spin_us=0)  # never closed: this process is SIGKILLed
    attached.set()
    while True:
        sub.receive()


def _attach_and_idle(topic: str, attached: Any) -> None:
    """Attaches and sleeps (not in receive) until killed."""
    sub = Subscriber(topic)  # never closed: this process is SIGKILLed
    attached.set()
    time.sleep(120)
    sub.close()


def _doomed_publisher(topic: str, k: int, ready: Any, go: Any, published: Any) -> None:
    """Creates the topic, publishes k messages when told, then idles until SIGKILLed."""
    pub = Publisher(topic)  # never closed: this process is SIGKILLed
    ready.set()
    if go.wait(30):
        for i in range(k):
            pub.publish(_payload(i))
        published.set()
    time.sleep(120)
    pub.close()


def _drain_until_gone(topic: str, mode: str, k: int, attached: Any, results: Any) -> None:
    """Receives (by receive() or by iteration) until the publisher is gone; reports when that
    was noticed, what was received and why the stream ended."""
    try:
        with Subscriber(topic) as sub:
            attached.set()
            got: list[int] = []
            reason: str | None = None
            try:
                if mode == "iterate":
                    for msg in sub:
                        assert msg.data == _payload(msg.seq)
                        got.append(msg.seq)
                else:
                    while True:
                        msg = sub.receive()
                        assert msg.data == _payload(msg.seq)
                        got.append(msg.seq)
            except PublisherGone as e:
                reason = e.reason
            noticed = time.monotonic()
            results.put(("gone", noticed, got, reason, sub.end_reason, sub.lost))
    except BaseException:
        results.put(("error", traceback.format_exc()))


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
            ctx, _stream_subscriber, topic, n, spin_us, topic_ready, attached, received, results
        )
        with Publisher(topic, slots=8192, slot_size=64) as pub:  # n < slots: never lapped
            topic_ready.set()
            assert attached.wait(30), "the subscriber never attached"
            for i in range(n):
                pub.publish(_payload(i))
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
                    _busy_wait(rng.uniform(1e-6, 100e-6))
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
        child = children.start(ctx, _busy_poller, topic, n, attached, results)
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
            pub.publish(_payload(i))
        assert pub.wakeups_sent == 1
        assert not pub.subscribers[0].asleep
        got = []
        while (msg := sub.try_receive()) is not None:  # the last, empty call re-arms
            got.append(msg.seq)
        assert got == list(range(100))
        assert pub.subscribers[0].asleep
        for i in range(100, 200):
            pub.publish(_payload(i))
        assert pub.wakeups_sent == 2
        # Taking messages without ever finding the ring empty does not re-arm.
        for i in range(100, 150):
            assert _take(sub).seq == i
        for i in range(200, 300):
            pub.publish(_payload(i))
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

        with _threads(consume):
            _wait_for(lambda: pub.subscribers[0].asleep, 5, "the subscriber to sleep")
            for i in range(n):
                pub.publish(_payload(i))
        assert not failure, failure
        assert got == list(range(n))
        print(f"\n{n} back-to-back messages: {counter.arms} arms, {pub.wakeups_sent} wake-ups")
        assert 1 <= pub.wakeups_sent <= counter.arms
        assert pub.wakeups_sent <= n
        assert pub.wakeup_failures == 0


# --------------------------------------------------------------------------------------------
# 3. Time-outs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spin_us", [0, 50, 2000])
def test_receive_timeout_duration(topic: str, spin_us: float) -> None:
    with Publisher(topic) as pub, Subscriber(topic, spin_us=spin_us) as sub:
        durations = []
        for _ in range(3):
            began = time.monotonic()
            with pytest.raises(ReceiveTimeout) as info:
                sub.receive(timeout=0.05)
            durations.append(time.monotonic() - began)
            assert isinstance(info.value, TimeoutError)
        assert min(durations) >= 0.05, durations  # never early
        # upper bound on the fastest try (a systematic overrun fails them all; one preempted try
        # on a loaded machine does not), and a sanity bound on every try
        assert min(durations) <= 0.15 and max(durations) < 1.0, durations
        # A receive that timed out withdrew its wake-up request: the next publish costs nothing.
        assert not pub.subscribers[0].asleep
        pub.publish(b"x")
        assert pub.wakeups_sent == 0
        assert sub.receive(timeout=0.05).data == b"x"


def test_receive_timeout_zero(topic: str) -> None:
    with Publisher(topic) as pub, Subscriber(topic) as sub:
        began = time.monotonic()
        with pytest.raises(ReceiveTimeout):
            sub.receive(timeout=0)
        assert time.monotonic() - began < 0.05  # immediate (lenient for a loaded machine)
        assert not pub.subscribers[0].asleep
        pub.publish(b"a")
        pub.publish(b"b")
        assert sub.receive(timeout=0).data == b"a"
        assert sub.receive(timeout=0.0).data == b"b"
        with pytest.raises(ReceiveTimeout):
            sub.receive(timeout=0)
        assert pub.wakeups_sent == 0


def test_receive_returns_early_when_message_arrives(topic: str) -> None:
    with Publisher(topic) as pub, Subscriber(topic, spin_us=0) as sub:
        timer = threading.Timer(0.05, pub.publish, args=(b"late",))
        began = time.monotonic()
        timer.start()
        try:
            msg = sub.receive(timeout=5)
        finally:
            timer.join(5)
        elapsed = time.monotonic() - began
        assert msg.data == b"late"
        assert 0.04 <= elapsed < 1.0
        assert pub.wakeups_sent == 1


@pytest.mark.parametrize("spin_us", [0, 50])
def test_blocking_receive_sleeps_instead_of_polling(topic: str, spin_us: float) -> None:
    with Publisher(topic), Subscriber(topic, spin_us=spin_us) as sub:
        cpu, began = time.process_time(), time.monotonic()
        with pytest.raises(ReceiveTimeout):
            sub.receive(timeout=0.3)
        cpu, wall = time.process_time() - cpu, time.monotonic() - began
    assert cpu < 0.25 * wall, f"a blocked receive() burnt {cpu:.3f} s of CPU in {wall:.3f} s"


@pytest.mark.parametrize("timeout", [-1, -1e-9, -math.inf, math.nan])
def test_receive_invalid_timeout(topic: str, timeout: float) -> None:
    with Publisher(topic), Subscriber(topic) as sub:
        with pytest.raises(sps.InvalidArgument) as info:
            sub.receive(timeout=timeout)
        assert isinstance(info.value, ValueError)


def test_receive_invalid_timeout_with_message_pending(topic: str) -> None:
    """The time-out is checked before anything is read (regression: it used to be checked only
    when receive() had to wait, so a pending message was returned for timeout=-1)."""
    with Publisher(topic) as pub, Subscriber(topic) as sub:
        pub.publish(b"x")
        with pytest.raises(sps.InvalidArgument):
            sub.receive(timeout=-1)
        assert sub.receive(timeout=0).data == b"x"  # and the message was not consumed


# --------------------------------------------------------------------------------------------
# 4. Ctrl-C
# --------------------------------------------------------------------------------------------

_CTRL_C_CHILD = r"""
import sys, time
import shmpubsub as sps
topic, mode = sys.argv[1], sys.argv[2]
sub = sps.Subscriber(topic)
try:
    if mode == "receive":
        sub.receive()
    elif mode == "receive-timeout":
        sub.receive(timeout=60)
    else:
        for _ in sub:
            pass
    print("NOT INTERRUPTED", flush=True)
except KeyboardInterrupt:
    caught = time.monotonic()
    sub.close()
    print(f"KeyboardInterrupt at {caught!r}", flush=True)
    sys.exit(0)
"""


@pytest.mark.parametrize("mode", ["receive", "receive-timeout", "iterate"])
def test_ctrl_c_interrupts_blocked_receive(topic: str, mode: str) -> None:
    with Publisher(topic) as pub:
        proc = subprocess.Popen(
            [sys.executable, "-c", _CTRL_C_CHILD, topic, mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:

            def asleep() -> Any:
                if proc.poll() is not None:
                    pytest.fail(f"the child exited early: {proc.communicate()}")
                entries = pub.subscribers
                return entries and entries[0].asleep and entries[0]

            entry = _wait_for(asleep, 20, "the child to block in receive()")
            assert os.path.exists(_socket_path(entry.token))
            time.sleep(0.05)  # well inside epoll by now
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, (out, err)
        found = re.search(r"KeyboardInterrupt at ([0-9.e+-]+)", out)
        assert found, (out, err)
        latency = float(found.group(1)) - sent
        print(f"\nSIGINT -> KeyboardInterrupt ({mode}): {latency * 1e3:.2f} ms")
        assert latency < CTRL_C_BOUND, f"{latency:.3f} s"
        # the child closed its subscriber: its entry and socket are gone
        assert pub.subscribers == []
        assert not os.path.exists(_socket_path(entry.token))


# --------------------------------------------------------------------------------------------
# 5. selectors
# --------------------------------------------------------------------------------------------


def test_selector_readable_on_publish_and_on_close(topic: str) -> None:
    with Publisher(topic) as pub, Subscriber(topic) as sub, selectors.DefaultSelector() as sel:
        sel.register(sub.fileno(), selectors.EVENT_READ)
        assert sub.try_receive() is None  # arms
        assert sel.select(0) == []
        time.sleep(0.05)
        assert sel.select(0) == []  # nothing spurious

        timer = threading.Timer(0.05, pub.publish, args=(b"hello",))
        began = time.monotonic()
        timer.start()
        try:
            events = sel.select(timeout=5)
        finally:
            timer.join(5)
        assert events and events[0][0].fd == sub.fileno()
        assert time.monotonic() - began >= 0.04
        msg = sub.try_receive()
        assert msg is not None and msg.data == b"hello"
        assert sub.try_receive() is None  # drains the datagram and re-arms
        assert sel.select(0) == []

        # Several messages, one readiness; the descriptor goes quiet once they are all taken.
        for i in range(5):
            pub.publish(_payload(i))
        assert sel.select(timeout=5)
        assert [_take(sub).seq for _ in range(5)] == [1, 2, 3, 4, 5]
        assert sub.try_receive() is None
        assert sel.select(0) == []

        assert sub.end_reason is None
        closing = time.monotonic()
        pub.close()
        events = sel.select(timeout=5)
        print(f"\nclose -> selector readable: {(time.monotonic() - closing) * 1e3:.2f} ms")
        assert events
        assert sub.end_reason == "closed"
        assert sub.try_receive() is None
        assert sel.select(0)  # stays readable: the end is permanent
        with pytest.raises(PublisherGone) as info:
            sub.receive()
        assert info.value.reason == "closed"
        sel.unregister(sub.fileno())


def test_selector_readable_after_close_when_not_armed(topic: str) -> None:
    """The subscriber took a message and did not look again before the publisher closed (so it
    was not armed and got no datagram): its next empty try_receive() makes the fd readable."""
    with Publisher(topic) as pub, Subscriber(topic) as sub, selectors.DefaultSelector() as sel:
        sel.register(sub.fileno(), selectors.EVENT_READ)
        pub.publish(b"last")
        assert _take(sub).data == b"last"
        assert not pub.subscribers[0].asleep
        pub.close()
        assert sub.end_reason == "closed"
        assert sub.try_receive() is None
        assert sel.select(timeout=1)


def test_selector_readable_when_publisher_crashes(topic: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready, go, published = ctx.Event(), ctx.Event(), ctx.Event()
    try:
        with Children() as children:
            publisher = children.start(ctx, _doomed_publisher, topic, 3, ready, go, published)
            assert ready.wait(30), "the publisher never started"
            with Subscriber(topic) as sub, selectors.DefaultSelector() as sel:
                sel.register(sub.fileno(), selectors.EVENT_READ)
                assert sub.try_receive() is None
                go.set()
                assert published.wait(10)
                assert sel.select(timeout=5)  # a publish from another process
                assert [_take(sub).seq for _ in range(3)] == [0, 1, 2]
                assert sub.try_receive() is None
                assert sel.select(0) == []
                died = kill_and_await_death(publisher.pid)
                events = sel.select(timeout=5)
                latency = time.monotonic() - died
                assert events
                assert sub.end_reason == "crashed"
                with pytest.raises(PublisherGone) as info:
                    sub.receive()
                assert info.value.reason == "crashed"
            children.join(publisher, 10, exitcode=-signal.SIGKILL)
        print(f"\nSIGKILL -> selector readable: {latency * 1e3:.2f} ms")
        assert latency < DETECT_BOUND, f"{latency * 1e3:.2f} ms"
    finally:
        _take_over_and_remove(topic)


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
            with _threads(*(lambda i=i: run(i) for i in range(len(modes)))):
                _wait_for(
                    lambda: len(pub.subscribers) == len(modes) and all(e.asleep for e in pub.subscribers),
                    5,
                    "every subscriber to sleep",
                )
                for i in range(k):
                    pub.publish(_payload(i))
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
            procs.append(children.start(ctx, _drain_until_gone, topic, mode, k, attached, results))
            assert attached.wait(30), "a subscriber never attached"
        _wait_for(
            lambda: len(pub.subscribers) == len(modes) and all(e.asleep for e in pub.subscribers),
            10,
            "every subscriber to sleep",
        )
        for i in range(k):
            pub.publish(_payload(i))
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
            pub.publish(_payload(i))
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
            publisher = children.start(ctx, _doomed_publisher, topic, k, ready, go, published)
            assert ready.wait(30), "the publisher never started"
            subscriber = children.start(ctx, _drain_until_gone, topic, "receive", k, attached, results)
            assert attached.wait(30), "the subscriber never attached"
            go.set()
            assert published.wait(10)
            _wait_for(
                lambda: any(e.read_pos == k and e.asleep for e in _entries(topic)),
                10,
                "the subscriber to take every message and sleep",
            )
            time.sleep(0.02)
            died = kill_and_await_death(publisher.pid)
            _, noticed, got, reason, end_reason, lost = get_result(results, 10, "the subscriber")
            children.join(subscriber, 10)
            children.join(publisher, 10, exitcode=-signal.SIGKILL)
            # A crashed publisher removes nothing: its segments are still there.
            assert all(os.path.exists(p) for p in _segment_paths(topic))
    finally:
        _take_over_and_remove(topic)
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
            publisher = children.start(ctx, _doomed_publisher, topic, k, ready, go, published)
            assert ready.wait(30), "the publisher never started"
            with Subscriber(topic) as sub:
                go.set()
                got = [sub.receive(timeout=10).seq for _ in range(k)]

                def kill_when_asleep() -> None:
                    deadline = time.monotonic() + 10
                    while not any(e.asleep for e in _entries(topic)):
                        if time.monotonic() > deadline:
                            return  # receive() below then times out and the test fails
                        time.sleep(0.002)
                    time.sleep(0.02)
                    died.append(kill_and_await_death(publisher.pid))

                with _threads(kill_when_asleep):
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
        _take_over_and_remove(topic)
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
            publisher = children.start(ctx, _doomed_publisher, topic, k, ready, go, published)
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
        _take_over_and_remove(topic)


# --------------------------------------------------------------------------------------------
# 7. Subscriber gone
# --------------------------------------------------------------------------------------------


def test_subscriber_killed_while_asleep_costs_one_failed_send(topic: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    attached = ctx.Event()
    with Children() as children, Publisher(topic) as pub, Subscriber(topic) as live:
        child = children.start(ctx, _sleep_forever, topic, attached)
        assert attached.wait(30), "the subscriber never attached"
        entry = _wait_for(
            lambda: next((e for e in pub.subscribers if e.pid == child.pid and e.asleep), None),
            10,
            "the child to sleep in receive()",
        )
        path = _socket_path(entry.token)
        children.kill(child)
        assert os.path.exists(path)  # nobody removed it yet
        assert [e.pid for e in pub.subscribers if e.pid == child.pid]  # still listed, still "asleep"

        live.fileno()
        assert live.try_receive() is None  # a live sleeper, to show it is still served

        pub.publish(b"first")
        assert pub.wakeup_failures == 1
        assert pub.wakeups_sent == 1  # the live one
        assert [e.pid for e in pub.subscribers] == [os.getpid()]
        assert not os.path.exists(path)
        assert _take(live).data == b"first"

        for i in range(1000):
            pub.publish(_payload(i))
        assert pub.wakeup_failures == 1
        assert [e.pid for e in pub.subscribers] == [os.getpid()]


def _open_descriptors() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}  # listdir's own: the lowest free


def _armed(sub: Subscriber) -> None:
    sub.fileno()
    assert sub.try_receive() is None  # asks for a wake-up


def test_publisher_keeps_one_connected_socket_per_subscriber_it_wakes(topic: str) -> None:
    gc.collect()  # earlier tests' garbage would otherwise close its descriptors during this one
    before = _open_descriptors()
    with Publisher(topic) as pub, Subscriber(topic) as a, Subscriber(topic) as b:
        sender = pub._waker.sender
        assert sender.links == 0  # made at a subscriber's first wake-up, not before
        opened = len(_open_descriptors())
        for round in range(3):
            _armed(a)
            _armed(b)
            pub.publish(_payload(round))
            assert sender.links == 2  # the same two sockets, round after round
            assert len(_open_descriptors()) == opened + 2
            assert _take(a).seq == _take(b).seq == round
        assert pub.wakeups_sent == 6 and pub.wakeup_failures == 0
        b.close()
        c = Subscriber(topic)  # may take b's entry: its link is then made anew
        try:
            _armed(a)
            _armed(c)
            pub.publish(b"again")
            assert sender.links == 2 and pub.wakeup_failures == 0  # not sent down b's old link
            assert _take(a).data == _take(c).data == b"again"
        finally:
            c.close()
    assert not _open_descriptors() - before  # the links went with the publisher


def test_subscribers_beyond_the_links_are_woken_by_path(topic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wakeup, "_MAX_LINKS", 1)
    with Publisher(topic) as pub:
        subs = [Subscriber(topic) for _ in range(3)]
        try:
            for round in range(2):
                for sub in subs:
                    _armed(sub)
                pub.publish(_payload(round))
                assert pub._waker.sender.links == 1
                for sub in subs:
                    assert select.select([sub.fileno()], [], [], 5)[0], "a subscriber was not woken"
                    assert _take(sub).seq == round
            assert pub.wakeups_sent == 6 and pub.wakeup_failures == 0
        finally:
            for sub in subs:
                sub.close()


def test_max_links_is_a_sixteenth_of_the_descriptor_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = {resource.RLIMIT_NOFILE: (160, 4096)}
    monkeypatch.setattr(resource, "getrlimit", lambda which: limits[which])
    assert wakeup.max_links() == 10
    limits[resource.RLIMIT_NOFILE] = (1 << 20, 1 << 20)
    assert wakeup.max_links() == wakeup._MAX_LINKS
    limits[resource.RLIMIT_NOFILE] = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    assert wakeup.max_links() == wakeup._MAX_LINKS


def test_a_subscriber_killed_after_a_wakeup_costs_one_failed_send_on_its_link(topic: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    attached = ctx.Event()
    with Children() as children, Publisher(topic) as pub:
        child = children.start(ctx, _receive_forever, topic, attached)
        assert attached.wait(30), "the subscriber never attached"

        def asleep() -> Any:
            return next((e for e in pub.subscribers if e.pid == child.pid and e.asleep), None)

        _wait_for(asleep, 10, "the child to sleep in receive()")
        pub.publish(b"first")  # wakes it through a new link
        assert pub._waker.sender.links == 1 and pub.wakeups_sent == 1
        entry = _wait_for(lambda: (e := asleep()) and e.read_pos == 1 and e, 10, "the child to sleep again")
        children.kill(child)
        pub.publish(b"second")  # its link refuses: the subscriber is gone
        assert pub.wakeup_failures == 1 and pub.wakeups_sent == 1
        assert pub._waker.sender.links == 0
        assert pub.subscribers == []
        assert not os.path.exists(_socket_path(entry.token))
        pub.publish(b"third")
        assert pub.wakeup_failures == 1


def test_a_send_failing_for_another_reason_is_logged_and_the_subscriber_kept(
    topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Only a refused or missing socket means a dead subscriber; anything else (EACCES, say,
    # which root never gets) is reported and left alone.
    with Publisher(topic) as pub, Subscriber(topic) as sub:
        entry = pub.subscribers[0]
        waker = pub._waker
        with caplog.at_level(logging.WARNING, logger="shmpubsub.wakeup"):
            waker._failed(entry.index, entry.token, errno.EACCES)
        assert "cannot wake subscriber" in caplog.text and os.strerror(errno.EACCES) in caplog.text
        assert [e.token for e in pub.subscribers] == [entry.token]
        assert os.path.exists(_socket_path(entry.token))
        sub.fileno()
        assert sub.try_receive() is None  # armed: the next publish wakes it from C again
        pub.publish(b"x")
        assert pub.wakeups_sent == 1 and pub.wakeup_failures == 0


def test_wake_sender_refuses_a_socket_path_prefix_with_no_room_for_a_token(topic: str) -> None:
    with Publisher(topic) as pub, pytest.raises(sps.InvalidArgument, match="no room for a token"):
        WakeSender(pub._control, pub._waker._sock.fileno(), "/" + "d" * 100 + "/" + PREFIX, 0)


def test_drain_discards_every_pending_wakeup_and_reports_a_closed_socket(topic: str) -> None:
    with Publisher(topic), Subscriber(topic) as sub:
        wake = sub._waiter._wake
        assert wake is not None
        for _ in range(3):
            wake.wake_self()
        assert drain(wake.sock.fileno()) == 3
        assert drain(wake.sock.fileno()) == 0
    with pytest.raises(OSError) as raised:
        drain(-1)
    assert raised.value.errno == errno.EBADF


def test_subscriber_killed_while_awake_leaves_nothing_after_close(topic: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    attached = ctx.Event()
    with Children() as children:
        with Publisher(topic) as pub:
            child = children.start(ctx, _poll_forever, topic, attached)
            assert attached.wait(30), "the subscriber never attached"
            [entry] = pub.subscribers
            assert not entry.asleep
            path = _socket_path(entry.token)
            assert os.path.exists(path)
            for i in range(100):
                pub.publish(_payload(i))
            children.kill(child)
            for i in range(100):
                pub.publish(_payload(i))
            assert (pub.wakeups_sent, pub.wakeup_failures) == (0, 0)  # it never slept
        # close reaped the dead subscriber's socket (no_leaks checks /dev/shm and the directory)
        assert not os.path.exists(path)


# --------------------------------------------------------------------------------------------
# 8. max_subscribers
# --------------------------------------------------------------------------------------------


def _our_sockets() -> set[str]:
    directory = wakeup.socket_dir()
    return {n for n in os.listdir(directory) if n.startswith(PREFIX)}


def test_max_subscribers_refuses_then_frees(topic: str) -> None:
    with Publisher(topic, max_subscribers=2) as pub:
        a, b = Subscriber(topic), Subscriber(topic)
        try:
            sockets = _our_sockets()
            with pytest.raises(sps.TooManySubscribers) as info:
                Subscriber(topic)
            assert isinstance(info.value, OSError) and info.value.errno == errno.EUSERS
            assert topic in str(info.value) and "2" in str(info.value)
            assert _our_sockets() == sockets  # the refused one removed its socket
            assert len(pub.subscribers) == 2
            a.close()
            assert len(pub.subscribers) == 1
            with Subscriber(topic) as c:
                assert len(pub.subscribers) == 2
                pub.publish(b"x")
                assert c.receive(timeout=1).data == b"x"
                assert b.receive(timeout=1).data == b"x"
                with pytest.raises(sps.TooManySubscribers):
                    Subscriber(topic)
        finally:
            a.close()
            b.close()


def test_max_subscribers_reclaims_dead_entries(topic: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    with Children() as children, Publisher(topic, max_subscribers=2) as pub:
        dead = []
        for _ in range(2):
            attached = ctx.Event()
            dead.append(children.start(ctx, _attach_and_idle, topic, attached))
            assert attached.wait(30), "a subscriber never attached"
        paths = [_socket_path(e.token) for e in pub.subscribers]
        assert len(paths) == 2 and all(os.path.exists(p) for p in paths)
        for proc in dead:
            children.kill(proc)  # killed and reaped
        with Subscriber(topic) as first, Subscriber(topic) as second:
            assert sorted(e.pid for e in pub.subscribers) == [os.getpid()] * 2
            assert not any(os.path.exists(p) for p in paths)
            with pytest.raises(sps.TooManySubscribers):
                Subscriber(topic)
            pub.publish(b"y")
            assert first.receive(timeout=1).data == second.receive(timeout=1).data == b"y"


def _plant_claim(topic: str, index: int, pid: int) -> None:
    """Writes, into the control segment, the marker a claimer leaves while it claims entry
    *index* (its pid times two): as if it had died in the middle of the claim."""
    control = Segment.open(topic, writable=True, suffix=CONTROL_SUFFIX)
    try:
        offset = lib.SPS_CONTROL_HEADER_SIZE + index * lib.SPS_ENTRY_SIZE
        control.map()[offset : offset + 8] = (pid << 1).to_bytes(8, sys.byteorder)
    finally:
        control.close()


def test_an_entry_whose_claimer_died_mid_claim_is_freed(topic: str) -> None:
    """A subscriber killed between taking an entry and writing its token leaves the claim
    marker, which names it: the entry is freed once it is dead, never while it lives."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(gone.stdout)  # exited and reaped
    with Publisher(topic, max_subscribers=1) as pub:
        _plant_claim(topic, 0, os.getpid())  # a claim under way, by a live process
        with pytest.raises(sps.TooManySubscribers):
            Subscriber(topic)
        _plant_claim(topic, 0, dead_pid)
        assert pub.subscribers == []  # a claim is no subscriber yet
        with Subscriber(topic) as sub:
            [entry] = pub.subscribers
            assert entry.pid == os.getpid()
            pub.publish(b"z")
            assert sub.receive(timeout=1).data == b"z"


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return False
    return data[data.rindex(b")") + 2 :].split()[0] == b"Z"


def test_max_subscribers_reclaims_killed_but_unreaped_subscriber(topic: str) -> None:
    """A subscriber killed but not yet reaped by its parent (a zombie) is dead: its entry is
    reclaimed for a newcomer (regression: zombies used to count as alive)."""
    ctx = multiprocessing.get_context("spawn")
    with Children() as children, Publisher(topic, max_subscribers=1) as pub:
        attached = ctx.Event()
        proc = children.start(ctx, _attach_and_idle, topic, attached)
        assert attached.wait(30), "the subscriber never attached"
        path = _socket_path(pub.subscribers[0].token)
        os.kill(proc.pid, signal.SIGKILL)  # not joined: a zombie until the block ends
        _wait_for(lambda: _is_zombie(proc.pid), 5, "the child to die")
        with Subscriber(topic):
            assert [e.pid for e in pub.subscribers] == [os.getpid()]
            assert not os.path.exists(path)
        assert _is_zombie(proc.pid)  # it really was never reaped meanwhile


# --------------------------------------------------------------------------------------------
# 9. The socket directory is private
# --------------------------------------------------------------------------------------------


def test_socket_directory_is_private_and_holds_the_sockets(topic: str) -> None:
    directory = wakeup.socket_dir()
    st = os.lstat(directory)
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == os.geteuid()
    with Publisher(topic) as pub, Subscriber(topic), Subscriber(topic):
        for entry in pub.subscribers:
            path = _socket_path(entry.token)
            assert os.path.dirname(path) == directory
            assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_check_private_dir_accepts_only_private_directories(tmp_path: Any) -> None:
    good = tmp_path / "good"
    good.mkdir(mode=0o700)
    os.chmod(good, 0o700)
    wakeup.check_private_dir(str(good))

    wide = tmp_path / "wide"
    wide.mkdir()
    os.chmod(wide, 0o755)
    with pytest.raises(sps.PermissionDenied, match="0700"):
        wakeup.check_private_dir(str(wide))
    os.chmod(wide, 0o710)
    with pytest.raises(sps.PermissionDenied):
        wakeup.check_private_dir(str(wide))

    link = tmp_path / "link"
    link.symlink_to(good)  # a symlink to a perfectly private directory is still refused
    with pytest.raises(sps.PermissionDenied, match="not a directory"):
        wakeup.check_private_dir(str(link))

    plain = tmp_path / "file"
    plain.write_text("")
    os.chmod(plain, 0o700)
    with pytest.raises(sps.PermissionDenied):
        wakeup.check_private_dir(str(plain))

    with pytest.raises(sps.PermissionDenied):
        wakeup.check_private_dir("relative/dir")
    with pytest.raises(FileNotFoundError):
        wakeup.check_private_dir(str(tmp_path / "missing"))


def test_socket_dir_from_environment_is_created_private(tmp_path: Any, monkeypatch: Any) -> None:
    chosen = tmp_path / "sockets"
    monkeypatch.setenv("SHMPUBSUB_RUNTIME_DIR", str(chosen))
    assert wakeup.socket_dir() == str(chosen)
    assert stat.S_IMODE(os.lstat(chosen).st_mode) == 0o700
    os.chmod(chosen, 0o755)
    with pytest.raises(sps.PermissionDenied):
        wakeup.socket_dir()


def test_subscriber_refuses_a_socket_directory_opened_up_later(
    topic: str, tmp_path: Any, monkeypatch: Any
) -> None:
    chosen = tmp_path / "sockets"
    monkeypatch.setenv("SHMPUBSUB_RUNTIME_DIR", str(chosen))
    with Publisher(topic):
        os.chmod(chosen, 0o755)
        try:
            with pytest.raises(sps.PermissionDenied):
                Subscriber(topic)
        finally:
            os.chmod(chosen, 0o700)
    assert [n for n in os.listdir(chosen) if n.startswith(PREFIX)] == []


# --------------------------------------------------------------------------------------------
# 10. pub.subscribers
# --------------------------------------------------------------------------------------------


def test_subscribers_reports_position_and_losses(topic: str) -> None:
    with Publisher(topic, slots=8, slot_size=64) as pub, Subscriber(topic) as sub:
        [info] = pub.subscribers
        assert info.pid == os.getpid()
        assert info.start_time == _proc.start_time(os.getpid())
        assert info.token % 2 == 1 and info.token != 0
        assert (info.read_pos, info.lost, info.asleep) == (0, 0, False)
        for i in range(5):
            pub.publish(_payload(i))
        for _ in range(5):
            sub.receive(timeout=1)
        [info] = pub.subscribers
        assert (info.read_pos, info.lost) == (5, 0)
        for i in range(5, 15):  # messages 5..14 into 8 slots: 5 and 6 are overwritten
            pub.publish(_payload(i))
        # The reader resumes one message (the lap margin of 8 slots) after the oldest, 7.
        assert [sub.receive(timeout=1).seq for _ in range(7)] == list(range(8, 15))
        [info] = pub.subscribers
        assert (info.read_pos, info.lost) == (15, 3) == (sub.next_seq, sub.lost)


def test_subscribers_shows_asleep_while_blocked(topic: str) -> None:
    with Publisher(topic) as pub, Subscriber(topic) as sub:
        got: list[Any] = []

        def wait() -> None:
            try:
                got.append(sub.receive(timeout=10))
            except BaseException as e:
                got.append(e)

        with _threads(wait):
            _wait_for(lambda: pub.subscribers[0].asleep, 5, "asleep to show")
            assert pub.subscribers[0].read_pos == 0
            pub.publish(b"wake")
        assert len(got) == 1 and isinstance(got[0], sps.Message) and got[0].data == b"wake"
        [info] = pub.subscribers
        assert not info.asleep and info.read_pos == 1
        assert pub.wakeups_sent == 1


def test_fork_child_leaves_the_parents_subscriber_alone(topic: str) -> None:
    """A fork child's copy of a subscriber is closed at once; the child exiting normally (which
    would collect it) must not free the parent's entry or remove the parent's socket."""
    with Publisher(topic) as pub, Subscriber(topic, spin_us=0) as sub:
        entry = pub.subscribers[0]
        path = os.path.join(wakeup.socket_dir(), socket_name(entry.token))
        pid = os.fork()
        if pid == 0:  # the child: report through the exit status only
            status = 10
            try:
                try:
                    sub.try_receive()
                except sps.ClosedError:
                    sub.close()
                    status = 0
                else:
                    status = 11
            finally:
                os._exit(status)
        _, wait_status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(wait_status) == 0
        assert os.path.exists(path)
        assert [e.token for e in pub.subscribers] == [entry.token]

        def publish_once_asleep() -> None:  # not after a fixed delay: under valgrind, 50 ms is nothing
            _wait_for(lambda: pub.subscribers[0].asleep, 5, "the subscriber to sleep")
            time.sleep(0.01)
            pub.publish(b"still woken")

        # A subscriber shows asleep once it has armed, just before its last look at the ring:
        # a message that arrives in between is taken without a wake-up. Try until one was sent.
        for _ in range(20):
            threading.Thread(target=publish_once_asleep, daemon=True).start()
            assert sub.receive(timeout=5).data == b"still woken"
            if pub.wakeups_sent >= 1:
                break
        assert pub.wakeups_sent >= 1
