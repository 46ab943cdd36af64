"""Blocking receives: their time-outs, and Ctrl-C while one is blocked."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from helpers import CTRL_C_BOUND, socket_path, wait_for

import shmpubsub as sps
from shmpubsub import Publisher, ReceiveTimeout, Subscriber

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

            entry = wait_for(asleep, 20, "the child to block in receive()")
            assert os.path.exists(socket_path(entry.token))
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
        assert not os.path.exists(socket_path(entry.token))
