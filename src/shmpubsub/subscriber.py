"""The subscribing side of a topic: a read-only mapping, a private read position, and a
wake-up socket for when there is nothing to read."""

from __future__ import annotations

import math
import os
import select
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from . import _core, _proc, arrays, filebacked, wakeup
from ._handle import Handle
from .errors import (
    ClosedError,
    InvalidArgument,
    InvalidSegment,
    LoanError,
    MessageOverwritten,
    PublisherGone,
    ReceiveTimeout,
    ShmPubSubError,
    TooManyOpenFiles,
    TopicNotFound,
    descriptors_needed,
)
from .message import Batch, Message
from .names import CONTROL_SUFFIX, validate_topic
from .segment import Segment

if TYPE_CHECKING:
    from numpy.typing import NDArray

_T = TypeVar("_T")

# How long attaching waits for a publisher that is still creating its segment.
_ATTACH_WAIT = 5.0
# ...and how long for one whose segment is unlocked: a creator locks within microseconds.
_ORPHAN_GRACE = 0.2
# Without a pidfd, a blocked subscriber re-checks the publisher's lock this often.
_LIVENESS_POLL = 0.05
# Longest single sleep; a longer wait just sleeps again.
_MAX_SLEEP = 3600.0
# Spinning happens in C with the GIL released; Python looks at pending signals this often.
_SPIN_SLICE = 0.01
# A subscriber that may not register for wake-ups (on another user's topic) polls with
# sleeps growing up to this.
_PASSIVE_POLL_MAX = 0.001


def _check_batch(max_messages: object) -> int:
    if not isinstance(max_messages, int) or isinstance(max_messages, bool) or max_messages < 1:
        raise InvalidArgument(f"max_messages must be an int >= 1, not {max_messages!r}")
    return max_messages


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


_live: weakref.WeakSet[Subscriber] = weakref.WeakSet()


def _close_inherited_subscribers() -> None:
    # A fork child's copy shares the parent's socket and control entry: it must not read on
    # the parent's behalf nor, on close, free what the parent still uses.
    for sub in list(_live):
        sub.close()


os.register_at_fork(after_in_child=_close_inherited_subscribers)


class Subscriber(Handle):
    """A reader of a topic. It maps the ring read-only: nothing it does can corrupt it.

    ``start`` picks the first message: ``"next"`` (published after attaching), ``"latest"``
    (the newest already published) or ``"oldest"`` (the oldest the ring still holds).
    ``lapped`` picks where a subscriber that fell a whole ring behind resumes: ``"oldest"``
    (an eighth of the ring after the oldest message still intact, which is the one the
    publisher overwrites next: losing few, without being lapped again at once) or ``"latest"``. Either way
    :attr:`lost` grows by exactly the number of messages skipped.

    A blocking :meth:`receive` first spins for up to ``spin_us`` microseconds (in C, with the
    GIL released), then sleeps on its wake-up socket; the publisher wakes it with one datagram.

    Raises TopicNotFound if no publisher has created the topic, InvalidSegment if a segment is
    corrupt, foreign or of an incompatible version, TooManySubscribers if every entry is taken.

    A file-backed topic is attached by its name or by ``path=`` (its ring file; then *topic*
    may be left out, and if given must be the file's). A ring file whose publisher is gone can
    be read all the same: the subscriber then reads what the ring holds and ends with
    PublisherGone like any topic whose publisher left (it attaches passively, without
    wake-ups, when the topic's control segment is gone or belongs to another incarnation).

    Attributes:
        topic (str): The topic's name (for a subscriber by ``path=``, the name the file records).
        header: The ring's header as validated when attaching: its geometry (``slot_count``,
            ``slot_size``, ``slot_stride``, ``total_size``), ``epoch``, ``layout_version``,
            ``publisher_pid``, ``publisher_start_time`` and ``created_ns``, and ``write_seq``
            and ``closed`` as they were then.
    """

    def __init__(
        self,
        topic: str | None = None,
        *,
        start: str = "next",
        lapped: str = "oldest",
        spin_us: float = 50.0,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        if topic is None and path is None:
            raise InvalidArgument("a subscriber needs a topic name (a str), or the path= of a ring file")
        if topic is not None:
            topic = validate_topic(topic)
        self.topic = topic or ""
        if not isinstance(start, str) or start not in _core.START_MODES:
            raise InvalidArgument(f"start must be one of {sorted(_core.START_MODES)}, not {start!r}")
        if not isinstance(lapped, str) or lapped not in _core.RESYNC_MODES:
            raise InvalidArgument(f"lapped must be one of {sorted(_core.RESYNC_MODES)}, not {lapped!r}")
        if not isinstance(spin_us, (int, float)) or not 0 <= spin_us <= 1e6:
            raise InvalidArgument(f"spin_us must be between 0 and 1e6 microseconds, not {spin_us!r}")
        self._spin = spin_us / 1e6
        self._spin_ns = int(min(self._spin, _SPIN_SLICE) * 1e9)  # spun inside the first read
        self._selectable = False
        self._wake_pending = False  # a wake-up datagram may wait in our socket
        self._publisher_dead = False
        self._end_reason: str | None = None
        self._control_segment: Segment | None = None
        self._control_base: object | None = None
        self._wake: wakeup.WakeSocket | None = None
        self._pidfd: int | None = None
        self._epoll: select.epoll | None = None
        self._pid = os.getpid()
        self._state_lock = threading.Lock()  # guards _waiting against a close() in another thread
        self._waiting = 0
        self._release_deferred = False
        self._mapping_view: memoryview | None = None  # zero-copy views are slices of it
        self._view_open = False
        by_path = path is not None
        self._segment = (
            Segment.open(self.topic, writable=False)
            if path is None
            else Segment.open_file(filebacked.ring_path(path), topic=self.topic)
        )
        try:
            self._segment.check_trusted()
            try:
                self._base, self.header = _attach(self._segment)
            except _core.FileBackedTopic:  # the topic's stub: its ring is in a file
                if by_path:
                    raise  # a stub copied to a file is no ring file
                self._segment = filebacked.follow_stub(self._segment)
                self._segment.check_trusted()
                self._base, self.header = _attach(self._segment)
            if self._segment.name is None:
                self.topic = filebacked.file_topic(self._base, self._segment, topic)
                if not self._segment.lock_held():  # its publisher is gone: read what a restart keeps
                    self._base, self.header = filebacked.recovered_copy(self._segment, self._base)
            self._mapping_view = memoryview(self._segment.mapping).toreadonly()
            self._reader = _core.Reader(
                self._base,
                self.header.total_size,
                self._mapping_view,
                self.topic,
                _core.START_MODES[start],
                _core.RESYNC_MODES[lapped],
            )
            self._register(optional=by_path)
            self._watch_publisher()
        except BaseException:
            self._release()
            raise
        self._closed = False
        _live.add(self)

    def _register(self, optional: bool = False) -> None:
        """Claims a control entry and binds the wake-up socket. On another user's topic the
        subscriber stays passive (it writes nothing of theirs, not even as root): it reads,
        and its blocking calls poll instead of sleeping on a socket. So it does, if *optional*
        (a ring file opened by path), when the control segment is gone or another
        incarnation's: the file's publisher is gone."""
        if not self._segment.ours:
            return
        try:
            self._control_segment = Segment.open(self.topic, writable=True, suffix=CONTROL_SUFFIX)
        except TopicNotFound:
            if optional:
                return
            raise
        self._control_segment.check_trusted(private=True)
        mapping = self._control_segment.map()
        self._control_base = _core.pointer_to(mapping, writable=True)
        control = _core.Control(self._control_base, len(mapping), f"control segment of topic {self.topic!r}")
        if control.epoch != self.header.epoch and optional:
            _core.release(self._control_base)
            self._control_base = None
            self._control_segment.close()
            self._control_segment = None
            return
        if control.epoch != self.header.epoch:
            raise InvalidSegment(
                f"topic {self.topic!r} was re-created while attaching (control segment of another epoch); "
                "attach again"
            )
        self._wake = wakeup.WakeSocket(control, self.topic)
        self._reader.bind(control, self._wake.index)
        with descriptors_needed(f"topic {self.topic!r}: cannot make the subscriber's epoll descriptor"):
            self._epoll = select.epoll()
        self._epoll.register(self._wake.sock.fileno(), select.EPOLLIN)
        self._reader.watch(self._epoll.fileno(), self._wake.sock.fileno())

    def _watch_publisher(self) -> None:
        """A pidfd turns readable when the publisher's process ends, without any polling. The
        start time is checked after opening it, so a reused pid cannot pass for the publisher."""
        pid, started = self.header.publisher_pid, self.header.publisher_start_time
        try:
            with descriptors_needed(f"topic {self.topic!r}: cannot watch the publisher's process"):
                self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._publisher_dead = True
            return
        except TooManyOpenFiles:
            raise
        except (AttributeError, OSError):
            return  # no pidfds here: blocked waits re-check the publisher's lock instead
        if not _proc.is_alive(pid, started):  # the pid was reused: ours is gone
            self._publisher_dead = True
        if self._epoll is not None:
            self._epoll.register(self._pidfd, select.EPOLLIN)

    # -- receiving -------------------------------------------------------------

    def try_receive(self) -> Message | None:
        """The next message, or None if there is none yet. Never blocks.

        A message is returned only after its copy was validated (never torn). Costs one C
        call and two copies up to 4 KiB (into a private buffer, then into the returned bytes),
        two C calls and one copy (straight into the returned bytes) above.
        """
        got = self._reader.read()
        if got is None and self._selectable:
            return self._arm_and_read(drain=True, take=self._reader.read)
        return got

    def receive(self, timeout: float | None = None) -> Message:
        """The next message, waiting up to *timeout* seconds (None: for ever).

        Raises ReceiveTimeout (a TimeoutError) when the time is up, PublisherGone once the
        publisher has closed or died and every message it published has been received.
        Ctrl-C interrupts the wait. The first ``spin_us`` (up to 10 ms) are spun inside the
        same C call that reads, so a message that arrives meanwhile costs no extra call.
        """
        spin_ns = self._spin_ns
        if timeout is not None:
            timeout = check_timeout(timeout)
            if timeout is not None and timeout < self._spin:  # (None now: huge, for ever)
                spin_ns = int(timeout * 1e9)
        got = self._reader.read_wait(spin_ns)
        if got is not None:
            return got
        return self._wait(timeout, self._reader.read, spin_ns / 1e9, self._reader.sleep_read)

    def try_receive_many(self, max_messages: int = 256) -> Batch:
        """Every message there is, up to *max_messages* (at most 4096), in one C call: a
        :class:`Batch` of consecutive messages, empty if there is none yet. Never blocks.

        Much cheaper per message than try_receive() (no Message objects: one C call, then one
        bytes per payload); a batch stops early at a loss, so that its messages are numbered
        ``batch.seq`` on without a gap.
        """
        max_messages = _check_batch(max_messages)
        batch = self._reader.read_many(max_messages)
        if not batch and self._selectable:
            got = self._arm_and_read(drain=True, take=lambda: self._reader.read_many(max_messages) or None)
            return batch if got is None else got
        return batch

    def receive_many(self, max_messages: int = 256, timeout: float | None = None) -> Batch:
        """Like :meth:`try_receive_many`, but waits like :meth:`receive` until there is at least
        one message (ReceiveTimeout, PublisherGone), then takes all there are, up to
        *max_messages*."""
        max_messages = _check_batch(max_messages)
        timeout = check_timeout(timeout)
        batch = self._reader.read_many(max_messages)
        if batch:
            return batch
        return self._wait(timeout, lambda: self._reader.read_many(max_messages) or None)

    def __iter__(self) -> Iterator[Message]:
        """Blocking iteration; ends when the publisher is gone and everything is received."""
        return self

    def __next__(self) -> Message:
        try:
            return self.receive()
        except PublisherGone:
            raise StopIteration from None

    def receive_into(self, buffer: _core.Buffer) -> int | None:
        """Copies the next message into a writable buffer (one copy, no allocation): a
        bytearray, a writable memoryview, a writable C-contiguous numpy array of any dtype.

        Returns its length in bytes, also for an array of larger items (``n // a.itemsize``
        items), and its sequence number is then :attr:`last_seq`; or None if there is none
        yet. Raises MessageTooLarge, leaving the message unread, if it does not fit;
        InvalidArgument for a non-contiguous array.
        """
        n = self._reader.read_into(buffer)
        if n is None and self._selectable:  # as try_receive: ask for a wake-up
            return self._arm_and_read(drain=True, take=lambda: self._reader.read_into(buffer))
        return n

    def view(self, timeout: float | None = None) -> View:
        """A zero-copy read of the next message, for large ones: no copy at all::

            with sub.view(timeout=1.0) as view:   # waits like receive(timeout=1.0)
                view.data      # a read-only memoryview straight into the slot
                view.seq       # the message's sequence number
                view.array()   # for publish_array messages: a read-only numpy array over it

        Entering waits like :meth:`receive` and raises like it (ReceiveTimeout, PublisherGone).
        The publisher may overwrite the message while the block reads it: leaving the block
        then raises MessageOverwritten, and everything read inside the block must be discarded
        (the message counts in :attr:`lost`). Otherwise the message is consumed. An exception
        raised inside the block propagates unchanged, and the message is consumed (or counted
        lost) all the same. ``view.data`` is released on exit; views derived from it (arrays)
        must not be used after the block. Inside the block, do not take messages from this
        subscriber (receive, try_receive, ...; LoanError on exit) nor open another view
        (LoanError).

        Costs the same whatever the size (two C calls and a memoryview slice, ~1.8 us on a
        slow VM): cheaper than any copying read from ~16 KiB on if the block reads part of
        the message; a block that reads every byte gains only for large messages (about 20% at
        1 MiB), as the reads then pay what the copy saved (docs/benchmarks.md).
        """
        return View(self, None if timeout is None else check_timeout(timeout))

    @contextmanager
    def view_array(self, timeout: float | None = None) -> Iterator[NDArray[Any]]:
        """A zero-copy read of the next message as a numpy array (one sent with ``publish_array``)::

            with sub.view_array(timeout=1.0) as frame:   # read-only, straight over the slot
                brightness = frame.mean()

        :meth:`view` and :meth:`View.array` in one: waits, raises and validates the same way
        (MessageOverwritten on exit if the message was overwritten meanwhile: discard what was
        computed from it). NotAnArray if the message is not an array message (it is consumed).
        """
        with self.view(timeout) as view:
            yield view.array()

    def latest(self) -> Message | None:
        """The newest complete message, or None if nothing was published. Does not move the
        stream: :meth:`try_receive` continues where it was."""
        return self._reader.read_latest()

    def fileno(self) -> int:
        """A descriptor for selectors and event loops. From the first call on, whenever
        try_receive() returns None the subscriber asks for a wake-up, and the descriptor turns
        readable when a message arrives, or when the publisher goes (then check
        :attr:`end_reason`)."""
        if self._closed:
            raise ClosedError(f"topic {self.topic!r}: the subscriber is closed")
        if self._epoll is None:
            raise ShmPubSubError(
                f"topic {self.topic!r}: this subscriber cannot register for wake-ups (the topic belongs "
                "to another user, or, for a ring file, its publisher is gone), so it has no descriptor "
                "to wait on"
            )
        self._selectable = True
        return self._epoll.fileno()

    # -- waiting -----------------------------------------------------------------

    def _wait(
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
        Raises ReceiveTimeout or PublisherGone, and ClosedError if another thread closes the
        subscriber meanwhile."""
        with self._state_lock:
            if self._closed:
                raise ClosedError(f"topic {self.topic!r}: the subscriber is closed")
            self._waiting += 1
        try:
            return self._wait_loop(timeout, take, spun, sleep_take)
        finally:
            with self._state_lock:
                self._waiting -= 1
                release = self._closed and self._waiting == 0 and self._release_deferred
                self._release_deferred = self._release_deferred and not release
            if release:
                self._release()  # a close() in another thread left this to the last waiter

    def _wait_loop(
        self,
        timeout: float | None,
        take: Callable[[], _T | None],
        spun: float,
        sleep_take: Callable[[int], _T | None] | None,
    ) -> _T:
        deadline = math.inf if timeout is None else time.monotonic() + timeout - spun
        spin = self._spin - spun
        backoff = 0.00005
        while True:
            if spin > 0 and self._spin_until(min(deadline, time.monotonic() + spin)):
                got = take()
                if got is not None:
                    return got
                continue
            spin = self._spin
            # A wake-up datagram left from an earlier wait is drained first: it would end
            # the coming sleep at once.
            got = self._arm_and_read(drain=self._wake_pending or self._selectable, take=take)
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
                raise PublisherGone(self.topic, reason)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if not self._selectable:
                    self._reader.disarm()
                raise ReceiveTimeout(f"no message on topic {self.topic!r} within {timeout} s")
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
            outcome = self._reader.spin(min(remaining, _SPIN_SLICE))
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
                self._publisher_dead = True
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
            self._publisher_dead = publisher_ended or self._publisher_dead
        else:
            woken = True
        self._wake_pending = woken or self._wake_pending
        return got

    def _sleep_limit(self, seconds: float) -> float:
        """How long one sleep may last (-1: for ever). Without a pidfd, the publisher's lock is
        looked at now and then; and epoll is never given a time-out it cannot represent."""
        seconds = min(seconds, _LIVENESS_POLL if self._pidfd is None else _MAX_SLEEP)
        return -1 if math.isinf(seconds) else seconds

    def _arm_and_read(self, drain: bool, take: Callable[[], _T | None]) -> _T | None:
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

    def _ended(self) -> str | None:
        """Like end_reason, but with no system call where the sleep itself watches the
        publisher's pidfd."""
        if self._end_reason is None:
            if self._reader.topic_closed:
                self._end_reason = "closed"
            elif self._publisher_dead or (
                (self._epoll is None or self._pidfd is None) and self._publisher_died()
            ):
                self._end_reason = "crashed"
        return self._end_reason

    # -- state -------------------------------------------------------------------

    @property
    def end_reason(self) -> str | None:
        """None while the publisher lives; ``"closed"`` or ``"crashed"`` once it is gone (messages
        may remain to be received: iteration and receive() deliver them first)."""
        if self._end_reason is None:
            if self._reader.topic_closed:
                self._end_reason = "closed"
            elif self._publisher_dead or self._publisher_died():
                self._end_reason = "crashed"
        return self._end_reason

    def _publisher_died(self) -> bool:
        if self._pidfd is not None:
            probe = select.poll()
            probe.register(self._pidfd, select.POLLIN)
            dead = bool(probe.poll(0))
        else:
            dead = not self._segment.lock_held()
        self._publisher_dead = dead
        return dead

    @property
    def lost(self) -> int:
        """Total number of messages this subscriber missed because the publisher lapped it."""
        return self._reader.lost

    @property
    def last_seq(self) -> int:
        """Sequence number of the message most recently received."""
        return self._reader.last_seq

    @property
    def next_seq(self) -> int:
        """Sequence number of the message this subscriber will receive next."""
        return self._reader.next_seq

    @property
    def pending(self) -> int:
        """How many messages have been published that this subscriber has not yet taken
        (some may be lost to lapping by the time it gets there)."""
        return max(0, self._reader.write_seq - self._reader.next_seq)

    @property
    def publisher_closed(self) -> bool:
        """True once the publisher has closed the topic (messages may remain to be read)."""
        return self._reader.topic_closed

    @property
    def slots(self) -> int:
        """How many messages the ring retains."""
        return self.header.slot_count

    @property
    def slot_size(self) -> int:
        """The largest message, in bytes."""
        return self.header.slot_size

    @property
    def epoch(self) -> int:
        """Changes each time the topic is re-created."""
        return self.header.epoch

    def close(self) -> None:
        """Leaves the topic: frees the control entry, removes the wake-up socket and unmaps
        (the segments stay the publisher's to remove). Idempotent.

        In a process that inherited this subscriber through fork(), only releases that
        process's copies: the entry and the socket stay with the process that attached."""
        if self._closed:
            return
        with self._state_lock:
            self._closed = True
            self._release_deferred = self._waiting > 0
        _live.discard(self)
        if self._release_deferred:
            # Another thread waits in receive(): refuse its next call (it raises ClosedError),
            # end its sleep, and let it release everything on its way out.
            self._reader.close()
            if self._wake is not None:
                self._wake.wake_self()
            return
        self._release()

    def _release(self) -> None:
        if hasattr(self, "_reader"):
            self._reader.close()
        if self._mapping_view is not None:
            self._mapping_view.release()  # open views are slices of their own: they stay valid
        if self._wake is not None:
            self._wake.close(owner=os.getpid() == self._pid)
        if self._epoll is not None:
            self._epoll.close()
        if self._pidfd is not None:
            os.close(self._pidfd)
        for pointer in (self._control_base, getattr(self, "_base", None)):
            if pointer is not None:
                _core.release(pointer)
        if self._control_segment is not None:
            self._control_segment.close()
        self._segment.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"next_seq={self.next_seq} lost={self.lost}"
        return f"<shmpubsub.Subscriber {self.topic!r} {state}>"


_NO_DATA = memoryview(b"")


class View:
    """A message read in place, from :meth:`Subscriber.view`.

    ``data`` is a read-only memoryview of the payload, straight into the ring's slot; ``seq``
    its sequence number; :meth:`array` the numpy array of an array message. Valid inside the
    ``with`` block only, and only if leaving the block raises no MessageOverwritten.

    Attributes:
        data (memoryview): The payload, read-only, in the ring's slot.
        seq (int): Its sequence number.
    """

    __slots__ = ("_sub", "_timeout", "data", "seq")

    def __init__(self, sub: Subscriber, timeout: float | None) -> None:
        self._sub = sub
        self._timeout = timeout
        self.data = _NO_DATA  # until entered
        self.seq = -1

    def array(self) -> NDArray[Any]:
        """The numpy array of an array message: a read-only view over :attr:`data` (no copy).
        Raises NotAnArray, or MissingDependency without numpy."""
        return arrays.decode(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __enter__(self) -> View:
        sub = self._sub
        if sub._view_open:
            raise LoanError(f"topic {sub.topic!r}: a view of this subscriber is already open")
        view = sub._reader.view
        self.data, self.seq = view() or sub._wait(self._timeout, view)
        sub._view_open = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        sub = self._sub
        sub._view_open = False
        try:
            self.data.release()
        except BufferError:
            pass  # something still uses it; the mapping stays valid while it does
        if sub._closed:
            return  # closed inside the block: there is nothing left to end
        intact = sub._reader.view_end()
        if intact:
            return
        if intact is None:
            # The stream was read inside the block: message self.seq was taken by that read.
            if exc_type is None:
                raise LoanError(
                    f"topic {sub.topic!r}: the subscriber took messages while a view of message "
                    f"{self.seq} was open; what the view read was not validated"
                )
            return
        if exc is None:
            raise MessageOverwritten(sub.topic, self.seq)
        if hasattr(exc, "add_note"):  # Python 3.11+; the torn read may be what raised
            exc.add_note(f"(message {self.seq} of topic {sub.topic!r} was overwritten while viewed)")

    def __repr__(self) -> str:
        try:
            state = f"len={len(self.data)}"
        except ValueError:
            state = "released"
        return f"<shmpubsub.View topic={self._sub.topic!r} seq={self.seq} {state}>"


def _attach(segment: Segment) -> tuple[object, _core.HeaderInfo]:
    """Maps a segment and validates its header, waiting briefly for a publisher that is still
    creating it. Returns (C pointer to the mapping, header)."""
    what = segment.what
    began = time.monotonic()
    delay = 0.0005
    while True:
        if segment.nbytes > 0:  # a creator sizes its segment whole before writing to it
            mapping = segment.map()
            base = _core.pointer_to(mapping, writable=False)
            try:
                return base, _core.read_header(base, len(mapping), what)
            except _core.HeaderNotReady:
                _core.release(base)
                segment.unmap()
            except BaseException:
                _core.release(base)
                raise
        waited = time.monotonic() - began
        if waited > _ATTACH_WAIT or (waited > _ORPHAN_GRACE and not segment.lock_held()):
            raise InvalidSegment(
                f"{what} exists but was never initialised (its publisher died while creating it, "
                "or is stuck); a new publisher on the topic will replace it"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
