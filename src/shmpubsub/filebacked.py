"""File-backed rings: a topic's ring in a regular file instead of /dev/shm.

``Publisher(topic, path=...)`` keeps the ring, with the same layout and validation, in the
file at *path*; the topic's /dev/shm name then holds a one-page *stub* that names the file. The
stub claims the name exactly as a ring does (created O_EXCL, single-writer lock, taken over
when its owner dies), so a topic has one publisher whatever backs it, and a subscriber opening
the topic by name follows the stub to the file. The publisher locks the file too: one writer
per file, whatever topic name it comes under. The control segment stays in /dev/shm.

On close the file is kept, with everything published on disk and ``closed`` set in its
header; the stub and the control segment go. A publisher that reopens the file (after a
close, a ``kill -9`` or a power cut) repairs it and continues the numbering (``reopen``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Any

from . import _proc, lifecycle
from ._core import file as ring_file
from ._core.header import file_header, geometry, inspect_header, read_header
from ._core.lib import Buffer, pointer_to, release
from ._core.ring import Writer
from .errors import ClosedError, InvalidArgument, InvalidSegment, InvalidType, SegmentError, TopicNotFound
from .records import FileHeaderInfo, HeaderInfo, Recovery
from .segment import Segment

log = logging.getLogger(__name__)


def ring_path(path: object) -> str:
    """*path* as an absolute path (subscribers elsewhere follow it from the stub), checked."""
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidType(f"path must be a str or os.PathLike, not {type(path).__name__}")
    absolute = os.path.abspath(os.fspath(path))
    if len(os.fsencode(absolute)) >= ring_file.PATH_MAX:
        raise InvalidArgument(f"path {absolute!r} is too long (at most {ring_file.PATH_MAX - 1} bytes)")
    if os.path.isdir(absolute):
        raise InvalidArgument(f"path {absolute!r} is a directory; give the ring file's path")
    return absolute


def check_options(path: object, overwrite: object, flush_every: object, flush_interval: object) -> None:
    """Refuses file options without a path, and bad values."""
    if not isinstance(overwrite, bool):
        raise InvalidArgument(f"overwrite must be True or False, not {overwrite!r}")
    if flush_every is not None and (
        not isinstance(flush_every, int) or isinstance(flush_every, bool) or flush_every < 1
    ):
        raise InvalidArgument(f"flush_every must be None or a number of messages >= 1, not {flush_every!r}")
    if flush_interval is not None and (
        isinstance(flush_interval, bool)
        or not isinstance(flush_interval, (int, float))
        or not 0 < flush_interval < 1e6
    ):
        raise InvalidArgument(
            f"flush_interval must be None or a number of seconds > 0, not {flush_interval!r}"
        )
    if path is None and (overwrite or flush_every is not None or flush_interval is not None):
        raise InvalidArgument("overwrite, flush_every and flush_interval need a file-backed topic (path=...)")


class RingFile:
    """The publisher's side of a ring file: the locked file, its mapping, and its durability."""

    def __init__(
        self,
        topic: str,
        segment: Segment,
        created: bool,
        existing: tuple[HeaderInfo, FileHeaderInfo] | None,
        slots: int,
        slot_size: int,
    ) -> None:
        self.topic = topic
        self.segment = segment
        self.path = segment.path
        self.created = created
        self.slots = slots
        self.slot_size = slot_size
        self._existing = existing
        self._base: Any = None
        self._size = 0
        self._lock = threading.Lock()  # one flush at a time; none after close
        self._closed = False
        self._error: SegmentError | None = None  # from the background flusher, raised by flush()
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()
        self.flushed = 0
        self.due = 0  # flush_every: flush when this many messages are published
        self._every: int | None = None

    # -- opening ---------------------------------------------------------------------

    @classmethod
    def open(cls, topic: str, path: str, slots: int, slot_size: int, mode: int, overwrite: bool) -> RingFile:
        """Creates the ring file, or opens an existing one that validates as *topic*'s ring of the
        given geometry. Takes the file's single-writer lock.

        Raises TopicExists if another publisher holds the file, InvalidSegment if it is not a
        valid ring (truncated, corrupt, foreign, an incompatible version), InvalidArgument if it
        is another topic's or of another geometry: in each case the file is left unchanged,
        unless *overwrite*, which replaces such a file with a fresh ring.
        """
        segment, created = lifecycle.claim(topic, mode, path)
        try:
            existing = None if created else _validate(segment, topic, slots, slot_size, overwrite)
            if existing is None:
                _, total = geometry(slots, slot_size, ring_file=True)
                if not created:
                    log.warning("%s: replacing it with a fresh ring (overwrite=True)", path)
                    os.ftruncate(segment.fileno(), 0)  # nothing of the old content survives
                segment.size(total)
                _sync_directory(path)  # the new file's name and size survive a power cut too
            segment.map()
        except BaseException:
            if created:
                segment.remove()
            segment.close()
            raise
        return cls(topic, segment, created, existing, slots, slot_size)

    @property
    def old_epoch(self) -> int | None:
        """The epoch of the ring being reopened (the new one must differ), or None."""
        return None if self._existing is None else self._existing[0].epoch

    def initialise(
        self, base: Any, *, epoch: int, pid: int, start_time: int, created_ns: int
    ) -> Recovery | None:
        """Writes a fresh header, or reopens the existing ring (repairing it: see
        ``_core.file.reopen``); then flushes, so the new incarnation is on disk. Returns what the
        reopening found, or None for a fresh ring."""
        self._base, self._size = base, len(self.segment.mapping)
        boot = _proc.boot_id()
        if self._existing is None:
            ring_file.init_header_file(
                base, self._size, self.slots, self.slot_size, epoch=epoch, pid=pid, start_time=start_time,
                created_ns=created_ns, topic=self.topic, boot_id=boot,
            )
            recovery = None
        else:
            header, file = self._existing
            recovery = ring_file.reopen(
                base, self._size, self.path, trusted_end=_trusted_end(header, file, boot), epoch=epoch,
                pid=pid, start_time=start_time, boot_id=boot, created_ns=created_ns,
            )
            log.info("%s: reopened at message %d (%s)", self.path, recovery.next, recovery)
        self.flush()
        return recovery

    # -- durability -------------------------------------------------------------------

    def flushing_every(self, writer: Writer, messages: int) -> FlushEvery:
        """*writer*'s publishing calls, flushing once *messages* were published since the last flush."""
        self._every = messages
        self.due = self.flushed + messages
        return FlushEvery(writer, self)

    def flush(self, only_if_new: bool = False) -> int:
        """msync of the whole mapping, and a note in the header of how far it goes; returns the
        number of messages on disk. Raises ClosedError after close, SegmentError if the disk (or
        an earlier background flush) failed."""
        with self._lock:
            if self._closed:
                raise ClosedError(f"topic {self.topic!r}: the publisher is closed")
            error, self._error = self._error, None
            if error is not None:
                raise error
            self.flushed = ring_file.flush(self._base, self._size, self.path, only_if_new)
            if self._every is not None:
                self.due = self.flushed + self._every
            return self.flushed

    def start_flusher(self, interval: float) -> None:
        """Flushes every *interval* seconds in a background thread, if anything was published:
        a check at publish time alone could leave the last messages before a pause unflushed for
        ever. The disk work runs with the GIL released."""
        self._flusher = threading.Thread(
            target=self._flush_periodically,
            args=(interval,),
            name=f"shmpubsub flush {self.topic}",
            daemon=True,
        )
        self._flusher.start()

    def _flush_periodically(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.flush(only_if_new=True)
            except ClosedError:
                return
            except SegmentError as e:
                log.error("%s: background flush failed: %s", self.path, e)
                with self._lock:
                    self._error = e

    # -- closing -----------------------------------------------------------------------

    def stop_flusher(self) -> None:
        self._stop.set()
        flusher, self._flusher = self._flusher, None
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join()

    def final_flush(self) -> None:
        """After the writer marked the ring closed: puts that mark on disk; no flush after it."""
        self.flush()
        with self._lock:
            self._closed = True

    def close(self, remove: bool = False, owner: bool = True) -> None:
        """Unmaps and closes the file (releasing its lock). The file stays, unless *remove*
        (a ring created by a publisher that failed to start). A fork child (not the *owner*)
        skips the flush lock: a fork in the middle of a flush left its copy locked for ever."""
        self.stop_flusher()
        if owner:
            with self._lock:
                self._closed = True
        self._closed = True
        if remove:
            with contextlib.suppress(OSError, SegmentError):
                self.segment.remove()
        self.segment.close()


class FlushEvery:
    """The publishing calls of a ring file's writer with ``flush_every``: each flushes once
    that many messages are published since the last flush (the writer's own calls otherwise)."""

    __slots__ = ("_ring", "_writer")

    def __init__(self, writer: Writer, ring: RingFile) -> None:
        self._writer = writer
        self._ring = ring

    def publish(self, data: Buffer) -> int:
        seq = self._writer.publish(data)
        if seq + 1 >= self._ring.due:
            self._ring.flush()
        return seq

    def commit(self) -> int:
        seq = self._writer.commit()
        if seq + 1 >= self._ring.due:
            self._ring.flush()
        return seq

    def publish_many(self, messages: Any, size: int | None) -> int:
        first = self._writer.publish_many(messages, size)
        if self._writer.next_seq >= self._ring.due:
            self._ring.flush()
        return first

    def skip(self, count: int) -> None:
        self._writer.skip(count)
        if self._writer.next_seq >= self._ring.due:
            self._ring.flush()


def _validate(
    segment: Segment, topic: str, slots: int, slot_size: int, overwrite: bool
) -> tuple[HeaderInfo, FileHeaderInfo] | None:
    """The header of a ring file we hold the lock of, if it can be reopened as *topic*'s ring of
    the requested geometry; None if it cannot and *overwrite* says to replace it; else raises."""
    path = segment.path
    problem: InvalidSegment | InvalidArgument
    try:
        if segment.nbytes == 0:
            raise InvalidSegment(f"{path} is empty, not a shmpubsub ring")
        with segment.mapped() as (base, size):
            header, file = inspect_header(base, size, path)
        if not file.topic:
            raise InvalidSegment(f"{path} is a shmpubsub segment, but not a ring file (it names no topic)")
        if file.topic != topic:
            raise InvalidArgument(f"{path} holds the ring of topic {file.topic!r}, not {topic!r}")
        if (slots, slot_size) != (header.slot_count, header.slot_size):
            raise InvalidArgument(
                f"{path} holds a ring of {header.slot_count} slots of {header.slot_size} bytes, not "
                f"{slots} of {slot_size} (reopen it with slots={header.slot_count}, "
                f"slot_size={header.slot_size})"
            )
        return header, file
    except (InvalidSegment, InvalidArgument) as e:
        problem = e
    if overwrite:
        return None
    hint = "it was left unchanged; pass overwrite=True to replace it with a fresh ring"
    refusal = InvalidArgument if isinstance(problem, InvalidArgument) else InvalidSegment
    raise refusal(f"{problem}; {hint}") from None


def _trusted_end(header: HeaderInfo, file: FileHeaderInfo, boot: bytes) -> int:
    """How far the complete messages of a ring file whose writer ended can be trusted to be
    on disk. In the same boot the page cache held everything, whatever the process suffered;
    a clean close flushed everything before setting `closed`. Otherwise (the machine went down
    meanwhile) only what a flush recorded is known to have reached the disk."""
    same_boot = boot == file.boot_id and any(boot)
    return ring_file.TRUST_ALL if same_boot or header.closed else file.flushed


def recovered_copy(segment: Segment, base: Any) -> tuple[Any, HeaderInfo]:
    """For a reader of a ring file whose publisher is gone: remaps it privately (copy on write)
    and repairs that copy as a new publisher would repair the file, so the reader takes exactly
    what a restart would keep (checksums verified) and counts the rest lost; the file is left
    as it is. *base* points into the segment's present mapping, which this replaces. Returns
    the new (pointer, header)."""
    release(base)
    segment.unmap()
    mapping = segment.map_copy()
    base = pointer_to(mapping, writable=True)
    try:
        header = read_header(base, len(mapping), segment.what)
        trusted = _trusted_end(header, file_header(base), _proc.boot_id())
        recovery = ring_file.recover_copy(base, len(mapping), segment.what, trusted_end=trusted)
        if recovery.repaired:
            log.info("%s: its publisher is gone; reading it repaired (%s)", segment.path, recovery)
        return base, read_header(base, len(mapping), segment.what)
    except BaseException:
        release(base)
        raise


def _sync_directory(path: str) -> None:
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory; the file itself is synced all the same
    finally:
        os.close(fd)


def write_stub(stub: Segment, path: str, epoch: int, pid: int) -> None:
    """Sizes, fills and unmaps the topic's stub (its magic last: then it leads to a ready ring)."""
    stub.size(ring_file.STUB_SIZE)
    with stub.mapped(writable=True) as (base, size):
        ring_file.init_stub(base, size, path, epoch, pid)


def follow_stub(stub: Segment) -> Segment:
    """The ring file a topic's stub names, opened read-only; closes the stub."""
    with contextlib.closing(stub), stub.mapped() as (base, size):
        info = ring_file.read_stub(base, size, stub.what)
    try:
        return Segment.open_file(info.path, topic=stub.topic)
    except TopicNotFound:
        raise InvalidSegment(
            f"topic {stub.topic!r} is file-backed, but its ring file {info.path} is gone"
        ) from None


def file_topic(base: Any, segment: Segment, topic: str | None) -> str:
    """The topic a validated ring file belongs to; InvalidArgument if not *topic* (when given)."""
    found = file_header(base).topic
    if not found:
        raise InvalidSegment(f"{segment.path} is a shmpubsub segment but not a ring file (it names no topic)")
    if topic is not None and found != topic:
        raise InvalidArgument(f"{segment.path} holds the ring of topic {found!r}, not {topic!r}")
    return found
