"""Helpers shared by the test modules: child processes that cannot outlive a test, results
from children, time limits on calls that must not hang, and segments written by hand."""

from __future__ import annotations

import faulthandler
import os
import queue
import select
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import pytest

import shmpubsub as sps
from shmpubsub.names import CONTROL_SUFFIX, PREFIX, SHM_DIR


class Hang(Exception):
    """A call did not return within its time limit."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raises Hang in the main thread if the block runs longer than *seconds*.

    Works for the library's retry loops because they return to Python between C calls."""

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def get_result(results: Any, timeout: float, what: str) -> Any:
    """The next result from a child; fails the test on a time-out or if the child reported an error."""
    try:
        item = results.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"no result from {what} within {timeout} s")
    if isinstance(item, tuple) and item and item[0] == "error":
        pytest.fail(f"{what} failed:\n{item[1]}")
    return item


def kill_and_await_death(pid: int, timeout: float = 10) -> float:
    """SIGKILLs *pid* and returns the monotonic time at which the kernel reports it dead.

    Crash-detection bounds are timed from here, not from the kill: the kernel tears down the
    process's address space before anyone can see it dead, and on a loaded host that alone has
    taken 200 ms. What the library adds after that moment is what the bounds are about. The
    process's pidfd says so at once; without pidfds (valgrind lacks them) /proc is polled."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while not dead_or_zombie(pid):
            if time.monotonic() > deadline:
                pytest.fail(f"process {pid} still alive {timeout} s after SIGKILL")
            time.sleep(0.001)
        return time.monotonic()
    try:
        os.kill(pid, signal.SIGKILL)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(timeout * 1000):
            pytest.fail(f"process {pid} still alive {timeout} s after SIGKILL")
        return time.monotonic()
    finally:
        os.close(pidfd)


def dead_or_zombie(pid: int) -> bool:
    """True once *pid* has exited, reaped or not."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return True
    return data[data.rindex(b")") + 2 :].split()[0] in (b"Z", b"X")


def check_drained(got: list[int], k: int) -> None:
    """Every one of messages 0..k-1 arrived, in order."""
    assert got == list(range(k)), got


class Children:
    """Starts child processes and guarantees none outlives the test: join() fails the test if a
    child overstays (after killing it), and leaving the block kills whatever still runs. When
    the block fails, the children still running first print their threads' stacks to stderr,
    so that a hang in a child shows where it was; stacks() gives them for a failure message."""

    def __init__(self) -> None:
        self.procs: list[Any] = []
        self._stacks_dir = tempfile.mkdtemp(prefix="child-stacks-")

    def __enter__(self) -> Children:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            running = [proc for proc in self.procs if proc.exitcode is None]
            if exc_type is not None and running:
                sys.stderr.write(self.stacks())
            for proc in running:
                proc.kill()
            for proc in self.procs:
                proc.join(10)
        finally:
            shutil.rmtree(self._stacks_dir, ignore_errors=True)

    def start(self, ctx: Any, target: Callable[..., Any], *args: Any) -> Any:
        name = target.__name__
        stacks = os.path.join(self._stacks_dir, f"{name}-{len(self.procs)}")
        proc = ctx.Process(target=_traceable, args=(stacks, target, *args), daemon=True, name=name)
        proc.start()
        proc.stacks_path = stacks
        self.procs.append(proc)
        return proc

    def stacks(self) -> str:
        """The threads' stacks of every child still running, as faulthandler prints them."""
        running = [proc for proc in self.procs if proc.exitcode is None]
        for proc in running:
            os.kill(proc.pid, signal.SIGUSR1)
        time.sleep(0.5)
        text = ""
        for proc in running:
            try:
                with open(proc.stacks_path) as f:
                    dump = f.read()
            except FileNotFoundError:
                dump = "(it has not started its stack dumper yet)\n"
            text += f"\n--- stacks of child {proc.name} (pid {proc.pid}) ---\n{dump}"
        return text

    @staticmethod
    def join(proc: Any, timeout: float, exitcode: int | None = 0) -> None:
        proc.join(timeout)
        if proc.exitcode is None:
            proc.kill()
            proc.join(10)
            pytest.fail(f"child {proc.name} did not finish within {timeout} s (killed)")
        if exitcode is not None:
            assert proc.exitcode == exitcode, f"child {proc.name} exited with {proc.exitcode}"

    @staticmethod
    def kill(proc: Any) -> None:
        proc.kill()
        proc.join(10)


def _traceable(stacks_path: str, target: Callable[..., Any], *args: Any) -> Any:
    """Runs *target* in a child that writes all its threads' stacks to *stacks_path* on SIGUSR1
    (a file of its own: a forked child's sys.stderr may be pytest's in-memory capture, and
    the parent reads the file into its failure report)."""
    stacks = open(stacks_path, "w")  # noqa: SIM115 - faulthandler writes to it until the end
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    return target(*args)


class ArmHook:
    """Wraps a Subscriber's private C reader: runs *action* once, right after the subscriber's
    first arm() (which found nothing), to force one legal interleaving with the publisher."""

    def __init__(self, inner: Any, action: Callable[[], None]) -> None:
        self._inner = inner
        self._action: Callable[[], None] | None = action

    def arm(self) -> bool:
        ready = bool(self._inner.arm())
        if self._action is not None:
            action, self._action = self._action, None
            action()
        return ready

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def shm_path(topic: str, suffix: str = "") -> str:
    return os.path.join(SHM_DIR, PREFIX + topic + suffix)


def write_raw(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def write_topic(topic: str, data: bytes, control: bytes | None) -> str:
    """Writes a topic by hand: its data segment and (if given) its control segment."""
    write_raw(shm_path(topic), data)
    if control is not None:
        write_raw(shm_path(topic, CONTROL_SUFFIX), control)
    return shm_path(topic)


def remove_topic(topic: str) -> None:
    for path in (shm_path(topic), shm_path(topic, CONTROL_SUFFIX)):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def live_segment_bytes(
    topic: str, messages: int = 3, slots: int = 4, slot_size: int = 64, max_subscribers: int = 4
) -> tuple[bytes, bytes]:
    """The bytes of a real data segment holding a few messages, and of its control segment (no
    subscriber attached), read while the publisher lives."""
    with sps.Publisher(topic, slots=slots, slot_size=slot_size, max_subscribers=max_subscribers) as pub:
        for i in range(messages):
            pub.publish((b"message %d" % i)[:slot_size])
        with open(shm_path(topic), "rb") as f:
            data = f.read()
        with open(shm_path(topic, CONTROL_SUFFIX), "rb") as f:
            control = f.read()
    assert not os.path.exists(shm_path(topic))
    return data, control
