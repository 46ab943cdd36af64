"""The publishing side of a topic: owns the segment from creation to removal."""

from __future__ import annotations

import atexit
import os
import secrets
import time
import weakref
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _proc, arrays, filebacked, lifecycle, wakeup
from ._core.control import Control, control_geometry, init_control
from ._core.header import geometry, init_header
from ._core.lib import Buffer, pointer_to, release
from ._core.ring import Writer
from ._handle import Handle
from .errors import ClosedError, InvalidArgument, MessageTooLarge, NotFileBacked
from .names import validate_topic
from .records import Recovery, SubscriberInfo
from .segment import Segment

if TYPE_CHECKING:
    from numpy.typing import NDArray

_live: weakref.WeakSet[Publisher] = weakref.WeakSet()


class Publisher(Handle):
    """The single writer of a topic.

    ``Publisher(topic, slots=1024, slot_size=4096, max_subscribers=64, mode=0o600)`` creates
    the topic: *slots* messages (a power of two) of at most *slot_size* bytes each are
    retained, and up to *max_subscribers* subscribers may attach. If a publisher already owns
    the topic, :class:`TopicExists` names its pid; if the previous owner died, its segments
    are removed and the topic re-created with a new epoch.

    Use it as a context manager, or call :meth:`close`, which marks the topic closed, wakes
    every sleeping subscriber and removes the segments.

    **File-backed rings.** With ``path="/some/dir/prices.ring"`` the ring lives in that file
    (same layout and validation) and outlives the process: subscribers attach by the topic's
    name or by the path, :meth:`flush` makes what was published durable, ``flush_every=N``
    flushes after every N messages and ``flush_interval=S`` every S seconds (in a background
    thread, if anything was published). Closing keeps the file, flushed and marked closed. A
    publisher on an existing file reopens it (after a close, a crash or a power cut): it repairs
    the ring (:attr:`recovery`) and continues the sequence numbers. A file that is not a valid
    ring of this topic and geometry is refused (InvalidSegment; InvalidArgument for another
    topic, *slots* or *slot_size*) and left unchanged, unless ``overwrite=True``, which replaces
    it with a fresh ring. *mode* applies to a file created here; TopicExists if another
    publisher holds the file.

    Attributes:
        topic (str): The topic's name.
        slots (int): How many messages the ring retains.
        slot_size (int): The largest message, in bytes.
        max_subscribers (int): How many subscribers may attach.
        epoch (int): A random number that identifies this incarnation of the topic: a topic
            re-created (or a ring file reopened) gets a new one.
    """

    def __init__(
        self,
        topic: str,
        *,
        slots: int = 1024,
        slot_size: int = 4096,
        max_subscribers: int = 64,
        mode: int = 0o600,
        path: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
        flush_every: int | None = None,
        flush_interval: float | None = None,
    ) -> None:
        self.topic = validate_topic(topic)
        if not isinstance(mode, int) or not 0 <= mode <= 0o777:
            raise InvalidArgument(
                f"mode must be a permission mask such as 0o600, not {mode:#o}"
                if isinstance(mode, int)
                else f"mode must be an int such as 0o600, not {mode!r}"
            )
        filebacked.check_options(path, overwrite, flush_every, flush_interval)
        ring_path = None if path is None else filebacked.ring_path(path)
        _, total = geometry(slots, slot_size, ring_file=path is not None)
        control_total = control_geometry(max_subscribers)
        sockets = wakeup.socket_dir()
        wakeup.sweep_dead_sockets(sockets)
        self._pid = os.getpid()
        # Other users may at most read the ring; the control segment is the owner's alone (a
        # process that may write it could make the publisher fault, e.g. by truncating it),
        # so other users' subscribers attach passively, without wake-ups. For a file-backed
        # ring, the segment under the topic's name is the stub naming its file.
        self._segment, _ = lifecycle.claim(self.topic, mode & 0o644)
        self._control_segment: Segment | None = None
        self._ring_file: filebacked.RingFile | None = None
        #: What reopening an existing ring file found and repaired; None for a fresh ring.
        self.recovery: Recovery | None = None
        try:
            if ring_path is None:
                self._segment.size(total)
                mapping = self._segment.map()
            else:
                self._ring_file = filebacked.RingFile.open(
                    self.topic, ring_path, slots, slot_size, mode & 0o644, overwrite
                )
                mapping = self._ring_file.segment.mapping
            self._base = pointer_to(mapping, writable=True)
            self.epoch = secrets.randbits(63) | 1
            if self._ring_file is not None and self.epoch == self._ring_file.old_epoch:
                self.epoch ^= 2  # a reopened ring gets a new epoch, as a re-created one does
            # The control segment is complete before the data header's magic is written:
            # a subscriber that sees the magic finds everything it needs.
            self._control_segment = lifecycle.create_control(self.topic, mode & 0o600)
            self._control_segment.size(control_total)
            self._control_base = pointer_to(self._control_segment.map(), writable=True)
            sockets_stat = os.stat(sockets)
            where = (sockets_stat.st_dev, sockets_stat.st_ino, _proc.namespace("pid"), _proc.namespace("mnt"))
            init_control(self._control_base, control_total, max_subscribers, self.epoch, sockets, where)
            self._control = Control(self._control_base, control_total, f"topic {self.topic!r}")
            incarnation = {
                "epoch": self.epoch,
                "pid": self._pid,
                "start_time": _proc.start_time(self._pid) or 0,
                "created_ns": time.time_ns(),
            }
            if self._ring_file is None:
                init_header(self._base, total, slots, slot_size, **incarnation)
            else:
                self.recovery = self._ring_file.initialise(self._base, **incarnation)
                # Last: a subscriber that follows the stub finds the ring ready.
                filebacked.write_stub(self._segment, self._ring_file.path, self.epoch, self._pid)
            self._writer = Writer(self._base, total, self.topic)
            # The calls that add messages: the writer's, or with flush_every a ring file's
            # that flush as they go.
            self._adding: Writer | filebacked.FlushEvery = (
                self._writer
                if self._ring_file is None or flush_every is None
                else self._ring_file.flushing_every(self._writer, flush_every)
            )
            self._waker = wakeup.Waker(self._control, self.topic)
            self._writer.bind(self._control, self._waker.sender, self._waker.wake_sleepers)
            self._view = memoryview(mapping)
        except BaseException:
            self._release_pointers()
            for segment in (self._control_segment, self._segment):
                if segment is not None:
                    segment.remove()
                    segment.close()
            if self._ring_file is not None:
                self._ring_file.close(remove=self._ring_file.created)
            raise
        if self._ring_file is not None and flush_interval is not None:
            self._ring_file.start_flusher(flush_interval)
        self.slots = slots
        self.slot_size = slot_size
        self.max_subscribers = max_subscribers
        self._loan_open = False
        # publish() is bound here, once, to what does the work: the writer's one C call (or a
        # ring file's flushing publish). A method around it would add a Python call to every
        # message. After close() it refuses with ClosedError, as the method would.
        self.publish = self._adding.publish  # type: ignore[method-assign,assignment]
        self._closed = False
        _live.add(self)

    # -- publishing --------------------------------------------------------

    def publish(self, data: Buffer) -> int:
        """Publishes one message (any bytes-like object, copied once into the ring).

        Returns its sequence number (0, 1, 2, ...). Never blocks and never waits for
        subscribers. Raises MessageTooLarge if it exceeds ``slot_size``, ClosedError after
        close, LoanError while a loan is open. Costs one C call and one copy.
        """
        return self._adding.publish(data)

    def publish_many(
        self, messages: Iterable[Buffer] | Buffer, *, size: int | None = None
    ) -> int:
        """Publishes a batch in one C call: much cheaper per message than publish() for small ones.

        *messages* is an iterable of bytes-like objects; or, with *size*, one bytes-like object
        holding messages of *size* bytes each, end to end (rows of a numpy array, records of a
        struct array). All or none: MessageTooLarge, naming the first that does not fit, and
        nothing is published. The messages get consecutive sequence numbers: returns the
        first's (an empty batch returns the number the next message will get). Subscribers
        may take each message as soon as it is written; sleeping ones are woken once, after
        the last.
        """
        return self._adding.publish_many(messages, size)

    def skip(self, count: int) -> None:
        """Records that the next *count* messages were lost before they reached this publisher
        (a bridge republishing a remote topic, say): their sequence numbers are used up, and
        every subscriber counts them in ``lost`` exactly as if it had been lapped, so that
        ``received + lost`` still adds up. Costs one C call and at most one slot write per
        number (one ring-full at most). Raises InvalidArgument for a count below 0, or one
        that would carry sequence numbers past 2**62.
        """
        self._adding.skip(count)

    def loan(self, size: int) -> Loan:
        """Lends the next slot for a zero-copy write of exactly *size* bytes::

            with pub.loan(5) as buf:      # a writable memoryview into the slot
                buf[:] = b"hello"         # published when the block exits normally
            loan.seq                       # (on the Loan object) its sequence number

        If the block raises, nothing is published. The view holds the slot's previous bytes
        until overwritten. Neither it nor anything made from it (``numpy.frombuffer(buf)``) may
        be used after the block: it is released on exit, but views derived from it share the
        slot's memory and would change a published message unseen. Raises MessageTooLarge if
        *size* exceeds ``slot_size``.
        """
        if isinstance(size, int) and size > self.slot_size:
            raise MessageTooLarge(
                f"a loan of {size} bytes does not fit topic {self.topic!r} (slot_size={self.slot_size})"
            )
        return Loan(self, size)

    def publish_array(self, array: NDArray[Any]) -> int:
        """Publishes a numpy array with its dtype and shape; a subscriber gets it back with
        ``msg.array()`` or :meth:`Subscriber.view_array`. Returns its sequence number.

        The message is a small header (:mod:`shmpubsub.arrays`; typically 64 bytes) and the data
        in C order, written straight into the slot through a loan: one copy, also for a
        non-contiguous array. Raises MessageTooLarge if it does not fit
        ``slot_size`` (see ``arrays.message_size``), InvalidArgument for object dtypes or more
        than 32 dimensions, InvalidType for a non-array, MissingDependency without numpy.
        """
        head, array = arrays.prepare(array)
        size = len(head) + array.nbytes
        if size > self.slot_size:
            raise MessageTooLarge(
                f"an array of {array.nbytes} bytes ({array.dtype} {array.shape}) and its {len(head)}-byte "
                f"header do not fit topic {self.topic!r} (slot_size={self.slot_size})"
            )
        loan = self.loan(size)
        with loan as buf:
            arrays.fill(buf, head, array)
        # The numpy view over the loan died inside fill: the loan's memoryview is released on exit.
        assert loan.seq is not None
        return loan.seq

    def flush(self) -> int:
        """Makes everything published so far durable: msync(MS_SYNC) of the ring file, then a
        note in its header of how far that goes (which a restart after a power cut trusts).
        Returns the number of messages now on disk. Blocks until the disk has them (the GIL is
        released meanwhile): milliseconds on a disk, a little CPU and a system call if nothing
        was published since the last flush.

        Raises NotFileBacked for a /dev/shm topic (it has no disk), ClosedError after close,
        SegmentError if the disk failed (here, or in a background flush since the last call).
        """
        if self._ring_file is None:
            raise NotFileBacked(
                f"topic {self.topic!r} lives in shared memory only: there is nothing to flush "
                "(Publisher(..., path=...) makes a file-backed ring)"
            )
        if self._closed:
            raise ClosedError(f"topic {self.topic!r}: the publisher is closed")
        return self._ring_file.flush()

    # -- state ---------------------------------------------------------------

    @property
    def path(self) -> str | None:
        """The ring file of a file-backed topic (absolute), or None for a /dev/shm one."""
        return None if self._ring_file is None else self._ring_file.path

    @property
    def published(self) -> int:
        """Number of messages published on this topic (the next sequence number)."""
        return self._writer.next_seq

    @property
    def wakeups_sent(self) -> int:
        """Wake-up datagrams sent. Stays 0 while no subscriber sleeps: publishing then makes
        no system call at all."""
        return self._waker.sent

    @property
    def wakeup_failures(self) -> int:
        """Wake-ups that could not be delivered (each one a subscriber found dead and reclaimed)."""
        return self._waker.failed

    @property
    def subscribers(self) -> list[SubscriberInfo]:
        """The attached subscribers, as their control entries describe them."""
        if self._closed:
            raise ClosedError(f"topic {self.topic!r}: the publisher is closed")
        return self._control.entries()

    def close(self) -> None:
        """Marks the topic closed, wakes every sleeping subscriber, then unmaps and removes the
        segments. Subscribers drain what is left and then see the end of the stream. Idempotent.

        In a process that inherited this publisher through fork(), only releases that
        process's own view: the topic belongs to the process that created it.
        """
        if self._closed:
            return
        self._closed = True
        _live.discard(self)
        owner = os.getpid() == self._pid
        try:
            if owner:
                if self._ring_file is not None:  # everything published reaches the disk...
                    self._ring_file.stop_flusher()
                    self._ring_file.flush()
                # Refuses new calls, waits for those in flight in other threads, sets
                # `closed` in the header and wakes the sleepers.
                self._writer.close()
                if self._ring_file is not None:  # ...then the mark of a clean close
                    self._ring_file.final_flush()
                wakeup.reap_dead_entries(self._control)
            else:
                self._writer.forked()
        finally:
            # Whatever failed above, the segments must still go: a leak outlives us all.
            self._control.close()  # waits for wake-ups in flight in other threads
            self._waker.close()
            self._view.release()
            self._release_pointers()
            for segment in (self._control_segment, self._segment):
                if segment is not None:
                    if owner:
                        segment.unmap()
                        segment.remove()
                    segment.close()
            if self._ring_file is not None:
                self._ring_file.close(owner=owner)  # the file stays: outliving us is its point
        if owner:
            wakeup.sweep_dead_sockets(self._control.socket_dir)

    def _release_pointers(self) -> None:
        for name in ("_base", "_control_base"):
            pointer = self.__dict__.pop(name, None)
            if pointer is not None:
                release(pointer)

    def _after_fork_in_child(self) -> None:
        # The child must neither publish (single writer) nor keep the lock alive after the
        # parent dies (it shares the parent's open file description): drop its copies.
        self._writer.forked()
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"published={self.published}"
        return f"<shmpubsub.Publisher {self.topic!r} slots={self.slots} slot_size={self.slot_size} {state}>"


class Loan:
    """A slot lent for a zero-copy write; see :meth:`Publisher.loan`."""

    __slots__ = ("_pub", "_size", "_view", "seq")

    def __init__(self, pub: Publisher, size: int) -> None:
        self._pub = pub
        self._size = size
        self._view: memoryview | None = None
        #: The message's sequence number once published, else None.
        self.seq: int | None = None

    def __enter__(self) -> memoryview:
        if self._pub.closed:
            raise ClosedError(f"topic {self._pub.topic!r}: the publisher is closed")
        offset = self._pub._writer.loan(self._size)
        self._view = self._pub._view[offset : offset + self._size]
        return self._view

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        view, self._view = self._view, None
        if view is not None:
            # Views derived from it (memoryview(buf), numpy.frombuffer(buf)) share the memory
            # without holding this view: they cannot be revoked, hence the docstring's rule.
            view.release()
        if exc_type is None:
            self.seq = self._pub._adding.commit()
        elif not self._pub.closed:
            self._pub._writer.abort()


def _disable_inherited_publishers() -> None:
    for pub in list(_live):
        pub._after_fork_in_child()


def _close_at_exit() -> None:
    # A publisher still open when the interpreter exits (in a reference cycle, say) would be
    # collected after the modules its close() needs are gone: close it while they exist.
    for pub in list(_live):
        pub.close()


os.register_at_fork(after_in_child=_disable_inherited_publishers)
atexit.register(_close_at_exit)
