"""max_subscribers: refusal, and entries reclaimed from dead, half-claimed or unreaped subscribers."""

from __future__ import annotations

import errno
import multiprocessing
import os
import signal
import subprocess
import sys

import pytest
from children import attach_and_idle
from helpers import Children, process_state, socket_path, wait_for

import shmpubsub as sps
from shmpubsub import Publisher, Subscriber, wakeup
from shmpubsub._core.lib import lib
from shmpubsub.names import CONTROL_SUFFIX, PREFIX
from shmpubsub.segment import Segment

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
            dead.append(children.start(ctx, attach_and_idle, topic, attached))
            assert attached.wait(30), "a subscriber never attached"
        paths = [socket_path(e.token) for e in pub.subscribers]
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


def test_max_subscribers_reclaims_killed_but_unreaped_subscriber(topic: str) -> None:
    """A subscriber killed but not yet reaped by its parent (a zombie) is dead: its entry is
    reclaimed for a newcomer (regression: zombies used to count as alive)."""
    ctx = multiprocessing.get_context("spawn")
    with Children() as children, Publisher(topic, max_subscribers=1) as pub:
        attached = ctx.Event()
        proc = children.start(ctx, attach_and_idle, topic, attached)
        assert attached.wait(30), "the subscriber never attached"
        path = socket_path(pub.subscribers[0].token)
        os.kill(proc.pid, signal.SIGKILL)  # not joined: a zombie until the block ends
        wait_for(lambda: process_state(proc.pid) == b"Z", 5, "the child to die")
        with Subscriber(topic):
            assert [e.pid for e in pub.subscribers] == [os.getpid()]
            assert not os.path.exists(path)
        assert process_state(proc.pid) == b"Z"  # it really was never reaped meanwhile
