"""A subscriber that dies: what it costs the publisher's wake-ups, and the links (connected
sockets) the publisher keeps to the subscribers it wakes.
"""

from __future__ import annotations

import errno
import gc
import logging
import multiprocessing
import os
import resource
import select
from typing import Any

import pytest
from children import poll_forever, receive_forever, sleep_forever
from helpers import Children, numbered, socket_path, take, wait_for

import shmpubsub as sps
from shmpubsub import Publisher, Subscriber, wakeup
from shmpubsub._core.wake import WakeSender, drain
from shmpubsub.names import PREFIX

# --------------------------------------------------------------------------------------------
# 7. Subscriber gone
# --------------------------------------------------------------------------------------------


def test_subscriber_killed_while_asleep_costs_one_failed_send(topic: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    attached = ctx.Event()
    with Children() as children, Publisher(topic) as pub, Subscriber(topic) as live:
        child = children.start(ctx, sleep_forever, topic, attached)
        assert attached.wait(30), "the subscriber never attached"
        entry = wait_for(
            lambda: next((e for e in pub.subscribers if e.pid == child.pid and e.asleep), None),
            10,
            "the child to sleep in receive()",
        )
        path = socket_path(entry.token)
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
        assert take(live).data == b"first"

        for i in range(1000):
            pub.publish(numbered(i))
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
            pub.publish(numbered(round))
            assert sender.links == 2  # the same two sockets, round after round
            assert len(_open_descriptors()) == opened + 2
            assert take(a).seq == take(b).seq == round
        assert pub.wakeups_sent == 6 and pub.wakeup_failures == 0
        b.close()
        c = Subscriber(topic)  # may take b's entry: its link is then made anew
        try:
            _armed(a)
            _armed(c)
            pub.publish(b"again")
            assert sender.links == 2 and pub.wakeup_failures == 0  # not sent down b's old link
            assert take(a).data == take(c).data == b"again"
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
                pub.publish(numbered(round))
                assert pub._waker.sender.links == 1
                for sub in subs:
                    assert select.select([sub.fileno()], [], [], 5)[0], "a subscriber was not woken"
                    assert take(sub).seq == round
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
        child = children.start(ctx, receive_forever, topic, attached)
        assert attached.wait(30), "the subscriber never attached"

        def asleep() -> Any:
            return next((e for e in pub.subscribers if e.pid == child.pid and e.asleep), None)

        wait_for(asleep, 10, "the child to sleep in receive()")
        pub.publish(b"first")  # wakes it through a new link
        assert pub._waker.sender.links == 1 and pub.wakeups_sent == 1
        entry = wait_for(lambda: (e := asleep()) and e.read_pos == 1 and e, 10, "the child to sleep again")
        children.kill(child)
        pub.publish(b"second")  # its link refuses: the subscriber is gone
        assert pub.wakeup_failures == 1 and pub.wakeups_sent == 1
        assert pub._waker.sender.links == 0
        assert pub.subscribers == []
        assert not os.path.exists(socket_path(entry.token))
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
        assert os.path.exists(socket_path(entry.token))
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
            child = children.start(ctx, poll_forever, topic, attached)
            assert attached.wait(30), "the subscriber never attached"
            [entry] = pub.subscribers
            assert not entry.asleep
            path = socket_path(entry.token)
            assert os.path.exists(path)
            for i in range(100):
                pub.publish(numbered(i))
            children.kill(child)
            for i in range(100):
                pub.publish(numbered(i))
            assert (pub.wakeups_sent, pub.wakeup_failures) == (0, 0)  # it never slept
        # close reaped the dead subscriber's socket (no_leaks checks /dev/shm and the directory)
        assert not os.path.exists(path)
