"""A publisher and subscribers in different PID namespaces that share /dev/shm and the socket
directory (a container run with --ipc=host but not --pid=host): messages and wake-ups flow, no
crash is reported while the publisher lives, a real crash is still noticed, and the publisher
never reclaims a live subscriber whose pid it cannot see. Each side runs in its own namespace
through `unshare --pid --fork --mount-proc` (root only)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from helpers import read_report, report, run_function, stop_process, unshare_unavailable, wait_for

import shmpubsub as sps
from shmpubsub import admin, wakeup
from shmpubsub.names import socket_name

SCALE = float(os.environ.get("SHMPUBSUB_TEST_TIME_SCALE", "1"))


NAMESPACE = ("--pid", "--fork", "--mount-proc")
REASON = unshare_unavailable(*NAMESPACE)
if REASON is not None:
    print(f"\ntest_pid_namespaces: skipped: {REASON}", file=sys.stderr)
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def _in_new_namespace(function: str, *args: Any, stdin: bool = False) -> subprocess.Popen[str]:
    """Runs this module's *function* with *args* in a new PID namespace: the process is pid 1
    there and sees none of ours. --kill-child: a SIGKILL to unshare kills it too."""
    prefix = ("unshare", *NAMESPACE, "--kill-child")
    return run_function("test_pid_namespaces", function, *args, prefix=prefix, stdin=stdin)


# -- what runs inside the namespace -------------------------------------------------------


def subscriber_inside(topic: str, count: int) -> int:
    """Attaches, says so, receives *count* messages by blocking receive(), then blocks until the
    publisher is gone and reports how it ended and when."""
    with sps.Subscriber(topic, start="oldest") as sub:
        report(pid=os.getpid(), end_reason=sub.end_reason)
        got = [sub.receive(timeout=30).data.decode() for _ in range(count)]
        report(got=got, end_reason=sub.end_reason)
        try:
            sub.receive(timeout=30)
        except sps.PublisherGone as e:
            report(gone=e.reason, at=time.monotonic())
    return 0


def publisher_inside(topic: str) -> int:
    """Creates the topic, says so, publishes a message each time its stdin gives a line."""
    with sps.Publisher(topic, slots=16, slot_size=64) as pub:
        report(pid=os.getpid())
        for line in sys.stdin:
            pub.publish(line.strip().encode())
    return 0


# -- the tests ---------------------------------------------------------------------------------


def test_a_subscriber_in_another_namespace_receives_and_sees_a_crash(topic: str) -> None:
    publisher = run_function("test_pid_namespaces", "publisher_inside", topic, stdin=True)  # here
    try:
        assert read_report(publisher)["pid"] == publisher.pid
        inside = _in_new_namespace("subscriber_inside", topic, 3)
        try:
            first = read_report(inside)
            assert first == {"pid": 1, "end_reason": None}  # no false crash
            assert publisher.stdin is not None
            for i in range(3):
                time.sleep(0.05)  # the subscriber sleeps in between: each message wakes it
                publisher.stdin.write(f"m{i}\n")
                publisher.stdin.flush()
            assert read_report(inside) == {"got": ["m0", "m1", "m2"], "end_reason": None}
            time.sleep(0.2)  # blocked in its last receive
            publisher.kill()
            publisher.wait(10)
            died = time.monotonic()
            ended = read_report(inside)
            assert ended["gone"] == "crashed"
            print(f"\ncrash noticed across the namespace {1e3 * (ended['at'] - died):.1f} ms after it")
            assert ended["at"] - died < 0.1 + 0.4 * SCALE
            assert inside.wait(10) == 0
        finally:
            stop_process(inside)
    finally:
        stop_process(publisher)
        with sps.Publisher(topic):  # takes the dead topic over, then removes it on close
            pass


def test_a_publisher_in_another_namespace_is_alive_to_subscribers_and_tools_here(topic: str) -> None:
    inside = _in_new_namespace("publisher_inside", topic, stdin=True)
    try:
        assert read_report(inside)["pid"] == 1  # the header's pid names nobody here (or init)
        assert inside.stdin is not None
        with sps.Subscriber(topic) as sub:
            assert sub.end_reason is None
            time.sleep(0.1)
            assert sub.end_reason is None  # still: no false crash
            info = admin.topic_info(topic)
            assert info.state == "alive" and info.publisher_alive
            inside.stdin.write("hello\n")
            inside.stdin.flush()
            assert sub.receive(timeout=10).data == b"hello"
            inside.send_signal(signal.SIGKILL)  # unshare, and with it the publisher inside
            inside.wait(10)
            died = time.monotonic()
            with pytest.raises(sps.PublisherGone) as gone:
                sub.receive(timeout=10)
            noticed = time.monotonic()
            assert gone.value.reason == "crashed"
            print(f"\ncrash noticed across the namespace {1e3 * (noticed - died):.1f} ms after it")
            assert noticed - died < 0.1 + 0.4 * SCALE
        assert admin.topic_info(topic).state == "dead"
    finally:
        stop_process(inside)
        with sps.Publisher(topic):  # takes the dead topic over, then removes it on close
            pass


def test_a_subscriber_the_publisher_cannot_see_is_never_reclaimed_while_it_lives(topic: str) -> None:
    with sps.Publisher(topic, slots=16, slot_size=64, max_subscribers=2) as pub:
        inside = _in_new_namespace("subscriber_inside", topic, 1)
        try:
            assert read_report(inside)["end_reason"] is None
            wait_for(lambda: any(e.asleep for e in pub.subscribers), 10, "the foreign subscriber to sleep")
            with sps.Subscriber(topic):
                # Full: the publisher reaps what looks dead before refusing. The foreign pid looks
                # dead from here, but its wake-up socket is bound: it stays.
                with pytest.raises(sps.TooManySubscribers):
                    sps.Subscriber(topic)
                assert len(pub.subscribers) == 2
                (status,) = [s for s in admin.topic_info(topic).subscriber_details or () if s.pid == 1]
                assert status.alive
            pub.publish(b"still here")
            assert read_report(inside)["got"] == ["still here"]
            (foreign,) = pub.subscribers
            inside.send_signal(signal.SIGKILL)  # unshare, and with it the subscriber inside
            inside.wait(10)
            socket = os.path.join(wakeup.socket_dir(), socket_name(foreign.token))
            wait_for(lambda: not wakeup.socket_alive(socket), 10, "the subscriber inside to die")
            with sps.Subscriber(topic), sps.Subscriber(topic) as last:  # full: the dead one is reaped
                assert foreign.index in {e.index for e in pub.subscribers}  # its entry, reused
                assert all(e.pid == os.getpid() for e in pub.subscribers)
                assert not os.path.exists(socket)
                pub.publish(b"to the living")
                assert last.receive(timeout=10).data == b"to the living"
        finally:
            stop_process(inside)
