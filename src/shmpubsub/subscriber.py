"""The subscribing side of a topic: a read-only mapping, a private read position, and a
wake-up socket for when there is nothing to read."""

from __future__ import annotations

import errno
import math
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from . import arrays, filebacked, lifecycle, wakeup
from ._core.header import FileBackedTopic
from ._core.lib import Buffer, release
from ._core.ring import RESYNC_MODES, START_MODES, Reader
from ._handle import Handle
from .errors import ClosedError, InvalidArgument, LoanError, MessageOverwritten, PublisherGone, TopicNotFound
from .message import Batch, Message
from .names import CONTROL_SUFFIX, PREFIX, SHM_DIR, validate_topic
from .segment import Segment
from .waiting import Waiter, check_timeout

if TYPE_CHECKING:
    from numpy.typing import NDArray

_T = TypeVar("_T")


def _check_batch(max_messages: object) -> int:
    if not isinstance(max_messages, int) or isinstance(max_messages, bool) or max_messages < 1:
        raise InvalidArgument(f"max_messages must be an int >= 1, not {max_messages!r}")
    return max_messages


def _check_wait(wait: object) -> float | None:
    """How long to wait for the topic to appear: None (not at all), or seconds (inf: for ever)."""
    if wait is None:
        return None
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not wait >= 0:
        raise InvalidArgument(f"wait must be None or seconds >= 0 (math.inf: for ever), not {wait!r}")
    return math.inf if wait > 1e9 else float(wait)  # past about thirty years: for ever


def _warn_passive(topic: str, why: str) -> None:
    message = (
        f"topic {topic!r}: {why}: this subscriber cannot be woken, so its waits poll the ring (at "
        "most 1 ms apart) and it has no fileno(); share the directory with the publisher "
        "(SHMPUBSUB_RUNTIME_DIR) to sleep until woken"
    )
    warnings.warn(message, RuntimeWarning, stacklevel=4)


_live: weakref.WeakSet[SubscriberBase] = weakref.WeakSet()


def _close_inherited_subscribers() -> None:
    # A fork child's copy shares the parent's socket and control entry: it must not read on
    # the parent's behalf nor, on close, free what the parent still uses.
    for sub in list(_live):
        sub.close()


os.register_at_fork(after_in_child=_close_inherited_subscribers)


class SubscriberBase(Handle):
    """What :class:`Subscriber` and ``shmpubsub.aio.Subscriber`` share: attaching to a topic,
    the reads that never wait, the state, and closing. Their waiting reads are their own."""

    def __init__(
        self,
        topic: str | None = None,
        *,
        start: str = "next",
        lapped: str = "oldest",
        spin_us: float = 50.0,
        path: str | os.PathLike[str] | None = None,
        wait: float | None = None,
    ) -> None:
        if topic is None and path is None:
            raise InvalidArgument("a subscriber needs a topic name (a str), or the path= of a ring file")
        if topic is not None:
            topic = validate_topic(topic)
        self.topic = topic or ""
        if not isinstance(start, str) or start not in START_MODES:
            raise InvalidArgument(f"start must be one of {sorted(START_MODES)}, not {start!r}")
        if not isinstance(lapped, str) or lapped not in RESYNC_MODES:
            raise InvalidArgument(f"lapped must be one of {sorted(RESYNC_MODES)}, not {lapped!r}")
        if not isinstance(spin_us, (int, float)) or not 0 <= spin_us <= 1e6:
            raise InvalidArgument(f"spin_us must be between 0 and 1e6 microseconds, not {spin_us!r}")
        wait = _check_wait(wait)
        self._pid = os.getpid()
        self._state_lock = threading.Lock()  # guards _waiting against a close() in another thread
        self._waiting = 0
        self._release_deferred = False
        self._view_open = False
        ring_path = None if path is None else filebacked.ring_path(path)
        deadline = None if wait is None else time.monotonic() + wait
        watch: lifecycle.NameWatch | None = None
        try:
            while True:
                try:
                    self._attach(topic, ring_path, start, lapped, spin_us)
                    break
                except TopicNotFound:
                    if deadline is None or wait == 0:
                        raise
                    if watch is None:  # armed before one more look: nothing created meanwhile is missed
                        watch = lifecycle.NameWatch(*self._names(ring_path))
                        continue
                    if not watch.wait(deadline - time.monotonic()):
                        what = f"topic {self.topic!r}" if ring_path is None else ring_path
                        raise TopicNotFound(errno.ENOENT, f"{what} did not appear within {wait} s") from None
        finally:
            if watch is not None:
                watch.close()
        self._closed = False
        _live.add(self)

    def _names(self, ring_path: str | None) -> tuple[str, list[str]]:
        """The directory where the topic (or ring file) appears, and the names that say it did:
        the ring (or its stub) and, created last before the ring is ready, the control segment."""
        if ring_path is not None:
            return os.path.dirname(ring_path), [os.path.basename(ring_path)]
        return SHM_DIR, [PREFIX + self.topic, PREFIX + self.topic + CONTROL_SUFFIX]

    def _attach(
        self, topic: str | None, ring_path: str | None, start: str, lapped: str, spin_us: float
    ) -> None:
        """One attempt to attach; on failure everything it made is released again."""
        self.topic = topic or ""
        self._control_segment: Segment | None = None
        self._control_base: object | None = None
        self._mapping_view: memoryview | None = None  # zero-copy views are slices of it
        by_path = ring_path is not None
        self._segment = (
            Segment.open(self.topic, writable=False)
            if ring_path is None
            else Segment.open_file(ring_path, topic=self.topic)
        )
        try:
            self._segment.check_trusted()
            try:
                self._base, self.header = lifecycle.attach(self._segment)
            except FileBackedTopic:  # the topic's stub: its ring is in a file
                if by_path:
                    raise  # a stub copied to a file is no ring file
                self._segment = filebacked.follow_stub(self._segment)
                self._segment.check_trusted()
                self._base, self.header = lifecycle.attach(self._segment)
            if self._segment.name is None:
                self.topic = filebacked.file_topic(self._base, self._segment, topic)
                if not self._segment.lock_held():  # its publisher is gone: read what a restart keeps
                    self._base, self.header = filebacked.recovered_copy(self._segment, self._base)
            self._mapping_view = memoryview(self._segment.mapping).toreadonly()
            self._reader = Reader(
                self._base,
                self.header.total_size,
                self._mapping_view,
                self.topic,
                START_MODES[start],
                RESYNC_MODES[lapped],
            )
            self._waiter = Waiter(self._reader, self._segment, self.header, self.topic, spin_us / 1e6)
            # On another user's topic the subscriber stays passive (it writes nothing of
            # theirs, not even as root): it reads, and its waits poll instead of sleeping on a
            # socket. So it does for a ring file opened by path whose publisher is gone.
            pid_ns = None
            if self._segment.ours:
                control = lifecycle.attach_control(self.topic, self.header.epoch, optional=by_path)
                if control is not None:
                    self._control_segment, self._control_base, entries = control
                    pid_ns = entries.pid_ns
                    unshared = wakeup.unshared_socket_dir(entries)
                    if unshared is None:
                        self._waiter.register(entries)
                    else:
                        _warn_passive(self.topic, unshared)
            self._waiter.watch_publisher(pid_ns)
        except BaseException:
            self._release()
            for name in ("_reader", "_waiter", "_base"):  # released: a next attempt starts bare
                self.__dict__.pop(name, None)
            raise

    # -- reads that never wait -------------------------------------------------------

    def try_receive(self) -> Message | None:
        """The next message, or None if there is none yet. Never blocks.

        A message is returned only after its copy was validated (never torn). Costs one C
        call and two copies up to 4 KiB (into a private buffer, then into the returned bytes),
        two C calls and one copy (straight into the returned bytes) above.
        """
        got = self._reader.read()
        if got is None and self._waiter.selectable:
            return self._waiter.after_empty_read(self._reader.read)
        return got

    def try_receive_many(self, max_messages: int = 256) -> Batch:
        """Every message there is, up to *max_messages* (at most 4096), in one C call: a
        :class:`Batch` of consecutive messages, empty if there is none yet. Never blocks.

        Much cheaper per message than try_receive() (no Message objects: one C call, then one
        bytes per payload); a batch stops early at a loss, so that its messages are numbered
        ``batch.seq`` on without a gap.
        """
        max_messages = _check_batch(max_messages)
        batch = self._reader.read_many(max_messages)
        if not batch and self._waiter.selectable:
            got = self._waiter.after_empty_read(lambda: self._reader.read_many(max_messages) or None)
            return batch if got is None else got
        return batch

    def receive_into(self, buffer: Buffer) -> int | None:
        """Copies the next message into a writable buffer (one copy, no allocation): a
        bytearray, a writable memoryview, a writable C-contiguous numpy array of any dtype.

        Returns its length in bytes, also for an array of larger items (``n // a.itemsize``
        items), and its sequence number is then :attr:`last_seq`; or None if there is none
        yet. Raises MessageTooLarge, leaving the message unread, if it does not fit;
        InvalidArgument for a non-contiguous array.
        """
        n = self._reader.read_into(buffer)
        if n is None and self._waiter.selectable:  # as try_receive: ask for a wake-up
            return self._waiter.after_empty_read(lambda: self._reader.read_into(buffer))
        return n

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
        return self._waiter.fileno()

    def _wait(
        self,
        timeout: float | None,
        take: Callable[[], _T | None],
        spun: float = 0.0,
        sleep_take: Callable[[int], _T | None] | None = None,
    ) -> _T:
        """The waiter's wait (see :meth:`Waiter.wait`), counted, so that a close() in another
        thread leaves the release of the mapping to the last waiting thread. Raises
        ClosedError if another thread closes the subscriber meanwhile."""
        with self._state_lock:
            if self._closed:
                raise ClosedError(f"topic {self.topic!r}: the subscriber is closed")
            self._waiting += 1
        try:
            return self._waiter.wait(timeout, take, spun, sleep_take)
        finally:
            with self._state_lock:
                self._waiting -= 1
                release = self._closed and self._waiting == 0 and self._release_deferred
                self._release_deferred = self._release_deferred and not release
            if release:
                self._release()  # a close() in another thread left this to the last waiter

    # -- state -------------------------------------------------------------------

    @property
    def end_reason(self) -> str | None:
        """None while the publisher lives; ``"closed"`` or ``"crashed"`` once it is gone (messages
        may remain to be received: iteration and receive() deliver them first)."""
        return self._waiter.end_reason

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
            self._waiter.interrupt()
            return
        self._release()

    def _release(self) -> None:
        if hasattr(self, "_reader"):
            self._reader.close()
        if self._mapping_view is not None:
            self._mapping_view.release()  # open views are slices of their own: they stay valid
        if hasattr(self, "_waiter"):
            self._waiter.close(owner=os.getpid() == self._pid)
        for pointer in (self._control_base, getattr(self, "_base", None)):
            if pointer is not None:
                release(pointer)
        if self._control_segment is not None:
            self._control_segment.close()
        self._segment.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"next_seq={self.next_seq} lost={self.lost}"
        return f"<shmpubsub.Subscriber {self.topic!r} {state}>"


class Subscriber(SubscriberBase):
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

    ``wait`` lets subscribers start before their publisher: ``None`` (the default) raises
    TopicNotFound at once; a number of seconds (``math.inf``: for ever) waits that long for the
    topic (or the ring file at ``path``) to appear, then raises TopicNotFound. The wait sleeps
    on an inotify descriptor of the directory, costing no CPU, and attaches within milliseconds
    of the topic becoming ready; Ctrl-C ends it.

    A file-backed topic is attached by its name or by ``path=`` (its ring file; then *topic*
    may be left out, and if given must be the file's). A ring file whose publisher is gone can
    be read all the same: the subscriber then reads what the ring holds and ends with
    PublisherGone like any topic whose publisher left (it attaches passively, without
    wake-ups, when the topic's control segment is gone or belongs to another incarnation).

    Attributes:
        topic (str): The topic's name (for a subscriber by ``path=``, the name the file records).
        header (HeaderInfo): The ring's header as validated when attaching (its ``write_seq``
            and ``closed`` as they were then).
    """

    # -- waiting reads ---------------------------------------------------------------

    def receive(self, timeout: float | None = None) -> Message:
        """The next message, waiting up to *timeout* seconds (None: for ever).

        Raises ReceiveTimeout (a TimeoutError) when the time is up, PublisherGone once the
        publisher has closed or died and every message it published has been received.
        Ctrl-C interrupts the wait. The first ``spin_us`` (up to 10 ms) are spun inside the
        same C call that reads, so a message that arrives meanwhile costs no extra call.
        """
        spin_ns = self._waiter.spin_ns
        if timeout is not None:
            timeout = check_timeout(timeout)
            if timeout is not None and timeout < self._waiter.spin:  # (None now: huge, for ever)
                spin_ns = int(timeout * 1e9)
        got = self._reader.read_wait(spin_ns)
        if got is not None:
            return got
        return self._wait(timeout, self._reader.read, spin_ns / 1e9, self._reader.sleep_read)

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

        Costs the same whatever the size (two C calls and a memoryview slice): cheaper than any
        copying read from about 16 KiB on if the block reads part of the message; a block that
        reads every byte gains only for large messages, as the reads then pay what the copy
        saved (docs/benchmarks.md, "Zero-copy view against copying").
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
