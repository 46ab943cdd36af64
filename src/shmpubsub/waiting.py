"""How a subscriber waits for a message: spin, ask for a wake-up, sleep, and notice that the
publisher is gone.

A wait spins first (in C, the GIL released), then *arms*: it sets its flag in the control
segment, looks at the ring once more, and only then sleeps on an epoll set holding its wake-up
socket and, where the platform has them, the publisher's pidfd. The look after arming is what
makes a wake-up impossible to lose (docs/architecture.md, "Sleep and wake-up"). A subscriber
that may not register for wake-ups (on another user's topic) is *passive*: it polls instead.
"""

from __future__ import annotations

import math
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Final, TypeVar

from . import _proc, wakeup
from ._core.control import Control
from ._core.ring import Reader
from .errors import (
    InvalidArgument,
    PublisherGone,
    ReceiveTimeout,
    ShmPubSubError,
    TooManyOpenFiles,
    descriptors_needed,
)
from .records import HeaderInfo
from .segment import Segment

_T = TypeVar("_T")

#: Without a pidfd, a waiting subscriber re-checks the publisher's lock this often.
LIVENESS_POLL: Final = 0.05
# Longest single sleep; a longer wait just sleeps again.
_MAX_SLEEP: Final = 3600.0
# Spinning happens in C with the GIL released; Python looks at pending signals this often.
SPIN_SLICE: Final = 0.01
# A passive subscriber polls with sleeps growing up to this.
_PASSIVE_POLL_MAX: Final = 0.001


def check_timeout(timeout: object) -> float | None:
    """A validated time-out in seconds: None (for ever), or a number >= 0. Past about thirty
    years it means for ever too."""
    if type(timeout) is float and 0.0 <= timeout <= 1e9:  # the usual case, first
        return timeout
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise InvalidArgument(f"timeout must be None or a number of seconds >= 0, not {timeout!r}")
    return None if timeout > 1e9 else float(timeout)


class Waiter:
    """The waiting side of one subscriber: its wake-up socket, its epoll set, the publisher's
    pidfd, and what it knows of the publisher's end."""

    def __init__(self, reader: Reader, segment: Segment, header: HeaderInfo, topic: str, spin: float) -> None:
        """*spin* is how long a wait spins (seconds) before it sleeps."""
        self._reader = reader
        self._segment = segment
        self._header = header
        self._topic = topic
        self.spin = spin
        #: The spin that the first read of a receive() does inside its C call.
        self.spin_ns = int(min(spin, SPIN_SLICE) * 1e9)
        #: Whether an empty non-blocking read asks for a wake-up (from the first fileno() on).
        self.selectable = False
        self._wake_pending = False  # a wake-up datagram may wait in our socket
        self._publisher_dead = False
        self._end_reason: str | None = None
        self._wake: wakeup.WakeSocket | None = None
        self._pidfd: int | None = None
        self._pidfd_lock = threading.Lock()
        self._confirm_by_lock = True  # see watch_publisher
        self._epoll: select.epoll | None = None

    # -- setting up ----------------------------------------------------------------

    def register(self, control: Control) -> None:
        """Claims an entry in *control* with a wake-up socket, and sleeps on it from now on.
        Without this the waiter stays passive."""
        self._wake = wakeup.WakeSocket(control, self._topic)
        self._reader.bind(control, self._wake.index)
        with descriptors_needed(f"topic {self._topic!r}: cannot make the subscriber's epoll descriptor"):
            self._epoll = select.epoll()
        self._epoll.register(self._wake.sock.fileno(), select.EPOLLIN)
        self._reader.watch(self._epoll.fileno(), self._wake.sock.fileno())

    def watch_publisher(self, pid_ns: int | None) -> None:
        """Watches the publisher's end. *pid_ns* is the publisher's PID namespace, from its
        control segment (None: not known, as for a passive subscriber).

        In the publisher's own PID namespace, a pidfd turns readable when its process ends,
        without any polling (its start time is checked after opening it, so a reused pid cannot
        pass for it). From another PID namespace (a container sharing /dev/shm) the pid names
        nobody, or another process: the single-writer lock, which holds across namespaces, is
        polled instead (LIVENESS_POLL apart). Where the namespace is not known, a death the pid
        reports is confirmed by the lock (:meth:`_pid_says_dead`)."""
        ours = _proc.namespace("pid")
        if pid_ns is not None and ours and pid_ns != ours:
            return  # the pid means nothing here: _ended() probes the lock
        self._confirm_by_lock = pid_ns is None or not ours
        pid, started = self._header.publisher_pid, self._header.publisher_start_time
        try:
            with descriptors_needed(f"topic {self._topic!r}: cannot watch the publisher's process"):
                self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._pid_says_dead()
            return
        except TooManyOpenFiles:
            raise
        except (AttributeError, OSError):
            return  # no pidfds here: blocked waits re-check the publisher's lock instead
        if self._epoll is not None:
            self._epoll.register(self._pidfd, select.EPOLLIN)
        if not _proc.is_alive(pid, started):  # the pid was reused (or is another namespace's)
            self._pid_says_dead()

    def _pid_says_dead(self) -> None:
        """The publisher's pid, or its pidfd, says it is gone. Where the publisher's PID
        namespace is not known to be ours, the lock decides: if someone still holds it, the pid
        is not the publisher as seen from here; its pidfd is dropped, and the publisher's
        liveness is judged by the lock from now on, LIVENESS_POLL apart."""
        if not self._confirm_by_lock or not self._segment.lock_held():
            self._publisher_dead = True
            return
        with self._pidfd_lock:  # two threads waiting on one subscriber may both get here
            pidfd, self._pidfd = self._pidfd, None
            if pidfd is not None:
                if self._epoll is not None:
                    self._epoll.unregister(pidfd)
                os.close(pidfd)

    def fileno(self) -> int:
        """The epoll descriptor, for selectors and event loops; from now on an empty read asks
        for a wake-up (:meth:`after_empty_read`)."""
        if self._epoll is None:
            raise ShmPubSubError(
                f"topic {self._topic!r}: this subscriber cannot register for wake-ups (the topic belongs "
                "to another user, its publisher's socket directory is not shared with it, or, for a "
                "ring file, its publisher is gone), so it has no descriptor to wait on"
            )
        self.selectable = True
        return self._epoll.fileno()

    def poll_limit(self, seconds: float) -> float:
        """How long an event loop may wait on :meth:`fileno` before it looks at the publisher's
        liveness: the descriptor turns readable when the publisher dies only where a pidfd
        watches it."""
        return seconds if self._pidfd is not None else min(seconds, LIVENESS_POLL)

    # -- waiting -----------------------------------------------------------------------

    def after_empty_read(self, take: Callable[[], _T | None]) -> _T | None:
        """For a selectable subscriber whose non-blocking read found nothing: asks for a
        wake-up, so that the descriptor turns readable, and looks once more with *take*."""
        if not self.selectable:
            return None
        return self.arm_and_read(drain=True, take=take)

    def wait(
        self,
        timeout: float | None,
        take: Callable[[], _T | None],
        spun: float = 0.0,
        sleep_take: Callable[[int], _T | None] | None = None,
    ) -> _T:
        """Waits until *take* (a read: consuming a message, or locating one for a view)
        returns something, and returns it; *spun* seconds of spinning and of the time-out
        were spent already. *sleep_take*, if given, sleeps and then takes in one C call, so
        that a message reaches the caller from a wake-up without a Python step between.
        Raises ReceiveTimeout or PublisherGone."""
        deadline = math.inf if timeout is None else time.monotonic() + timeout - spun
        spin = self.spin - spun
        backoff = 0.00005
        while True:
            if spin > 0 and self._spin_until(min(deadline, time.monotonic() + spin)):
                got = take()
                if got is not None:
                    return got
                continue
            spin = self.spin
            # A wake-up datagram left from an earlier wait is drained first: it would end
            # the coming sleep at once.
            got = self.arm_and_read(drain=self._wake_pending or self.selectable, take=take)
            if got is not None:
                return got
            reason = self._ended()
            if reason is not None:
                # The publisher may have published its last messages and closed (or died) just
                # after we looked. `closed` is stored after the last write_seq, so one more read
                # sees everything it published; the caller's next receive() reads the rest.
                got = take()
                if got is not None:
                    return got
                raise PublisherGone(self._topic, reason)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if not self.selectable:
                    self._reader.disarm()
                raise ReceiveTimeout(f"no message on topic {self._topic!r} within {timeout} s")
            if sleep_take is not None and self._epoll is not None:
                got = self._sleep_take(remaining, sleep_take)
            else:
                self._wake_pending = self._sleep(remaining, backoff) or self._wake_pending
                got = take()
            backoff = min(backoff * 2, _PASSIVE_POLL_MAX)
            if got is not None:
                return got

    def _spin_until(self, deadline: float) -> bool:
        """Spins in C until a message is there (True), or the topic closed or the deadline
        passed (False). In slices, so that Python handles signals (Ctrl-C) in between."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            outcome = self._reader.spin(min(remaining, SPIN_SLICE))
            if outcome:
                return outcome == 1

    def _sleep(self, seconds: float, backoff: float) -> bool:
        """Sleeps until woken, the publisher's process ends, or *seconds* pass. True if a
        wake-up datagram is waiting (to be drained before the next arming)."""
        if self._epoll is None:  # passive: poll
            time.sleep(min(backoff, seconds))
            return False
        woken = False
        for fd, _ in self._epoll.poll(self._sleep_limit(seconds)):
            if fd == self._pidfd:
                self._pid_says_dead()
            else:
                woken = True
        return woken

    def _sleep_take(self, seconds: float, sleep_take: Callable[[int], _T | None]) -> _T | None:
        """_sleep, then take, in one C call (sleep_read)."""
        limit = self._sleep_limit(seconds)
        got = sleep_take(-1 if limit < 0 else math.ceil(limit * 1000))
        # What woke it matters only when nothing came: reading it goes through cffi, slow just
        # after a wake-up (cold caches); a message is taken to mean a datagram to drain.
        if got is None:
            woken, publisher_ended = self._reader.woke
            if publisher_ended and self._pidfd is not None:
                self._pid_says_dead()
        else:
            woken = True
        self._wake_pending = woken or self._wake_pending
        return got

    def _sleep_limit(self, seconds: float) -> float:
        """How long one sleep may last (-1: for ever). Without a pidfd, the publisher's lock is
        looked at now and then; and epoll is never given a time-out it cannot represent."""
        seconds = min(seconds, LIVENESS_POLL if self._pidfd is None else _MAX_SLEEP)
        return -1 if math.isinf(seconds) else seconds

    def arm_and_read(self, drain: bool, take: Callable[[], _T | None]) -> _T | None:
        """Asks for a wake-up, then looks once more with *take* (the look after arming is what
        makes a wake-up impossible to lose)."""
        if self._wake is None:
            return None
        if drain:
            self._wake.drain()
            self._wake_pending = False
        if self._reader.arm():
            got = take()
            if got is not None:
                return got
            self._wake.wake_self()  # the topic ended: keep our descriptor readable
            self._wake_pending = True
        return None

    def interrupt(self) -> None:
        """Ends a sleep in another thread (its next look finds the subscriber closed)."""
        if self._wake is not None:
            self._wake.wake_self()

    # -- the publisher's end -----------------------------------------------------------

    def _ended(self, watched: bool = True) -> str | None:
        """None while the publisher lives; "closed" or "crashed" once it is gone. With
        *watched*, the caller's sleeps watch the publisher's pidfd, which then costs no system
        call here: a death it reported is known already."""
        if self._end_reason is None:
            if self._reader.topic_closed:
                self._end_reason = "closed"
            elif self._publisher_dead or (
                (not watched or self._epoll is None or self._pidfd is None) and self._publisher_died()
            ):
                self._end_reason = "crashed"
        return self._end_reason

    @property
    def end_reason(self) -> str | None:
        """None while the publisher lives; ``"closed"`` or ``"crashed"`` once it is gone."""
        return self._ended(watched=False)

    def _publisher_died(self) -> bool:
        if self._pidfd is not None:
            probe = select.poll()
            probe.register(self._pidfd, select.POLLIN)
            if probe.poll(0):
                self._pid_says_dead()
        else:
            self._publisher_dead = not self._segment.lock_held()
        return self._publisher_dead

    def close(self, owner: bool) -> None:
        """Closes the socket, the epoll set and the pidfd; the *owner* (not a fork child that
        inherited them) also frees its control entry and removes the socket file."""
        if self._wake is not None:
            self._wake.close(owner=owner)
        if self._epoll is not None:
            self._epoll.close()
        if self._pidfd is not None:
            os.close(self._pidfd)
