"""A subscriber's fileno() in a selector: readable on publish, on close and when the publisher crashes."""

from __future__ import annotations

import multiprocessing
import selectors
import signal
import threading
import time

import pytest
from children import doomed_publisher
from helpers import DETECT_BOUND, Children, kill_and_await_death, numbered, take, take_over_and_remove

from shmpubsub import Publisher, PublisherGone, Subscriber

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
            pub.publish(numbered(i))
        assert sel.select(timeout=5)
        assert [take(sub).seq for _ in range(5)] == [1, 2, 3, 4, 5]
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
        assert take(sub).data == b"last"
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
            publisher = children.start(ctx, doomed_publisher, topic, 3, ready, go, published)
            assert ready.wait(30), "the publisher never started"
            with Subscriber(topic) as sub, selectors.DefaultSelector() as sel:
                sel.register(sub.fileno(), selectors.EVENT_READ)
                assert sub.try_receive() is None
                go.set()
                assert published.wait(10)
                assert sel.select(timeout=5)  # a publish from another process
                assert [take(sub).seq for _ in range(3)] == [0, 1, 2]
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
        take_over_and_remove(topic)
