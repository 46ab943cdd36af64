"""pub.subscribers: each subscriber's position, losses and sleep as its entry shows them, and a
fork child that leaves its parent's entry alone.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from helpers import numbered, threads, wait_for

import shmpubsub as sps
from shmpubsub import Publisher, Subscriber, _proc, wakeup
from shmpubsub.names import socket_name

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
            pub.publish(numbered(i))
        for _ in range(5):
            sub.receive(timeout=1)
        [info] = pub.subscribers
        assert (info.read_pos, info.lost) == (5, 0)
        for i in range(5, 15):  # messages 5..14 into 8 slots: 5 and 6 are overwritten
            pub.publish(numbered(i))
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

        with threads(wait):
            wait_for(lambda: pub.subscribers[0].asleep, 5, "asleep to show")
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
            wait_for(lambda: pub.subscribers[0].asleep, 5, "the subscriber to sleep")
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
