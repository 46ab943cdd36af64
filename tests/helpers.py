"""Helpers shared by the test modules: child processes that cannot outlive a test, results
from children, and time limits on calls that must not hang."""

from __future__ import annotations

import queue
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import pytest


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


def check_drained(got: list[int], k: int) -> None:
    """Every one of messages 0..k-1 arrived, in order."""
    assert got == list(range(k)), got


class Children:
    """Starts child processes and guarantees none outlives the test: join() fails the test if a
    child overstays (after killing it), and leaving the block kills whatever still runs."""

    def __init__(self) -> None:
        self.procs: list[Any] = []

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.exitcode is None:
                proc.kill()
            proc.join(10)

    def start(self, ctx: Any, target: Callable[..., Any], *args: Any) -> Any:
        proc = ctx.Process(target=target, args=args, daemon=True, name=target.__name__)
        proc.start()
        self.procs.append(proc)
        return proc

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
