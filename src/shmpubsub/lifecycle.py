"""A topic's segments from creation to removal, as publishers, subscribers and the admin tools
see them: one classification of what a segment holds, the single writer's claim (in /dev/shm
or on a ring file), a reader's attach, and the companion control segment.

Every judgement here rests on two facts the kernel keeps: a creator sizes its segment whole
before writing to it, and holds the single-writer lock (an OFD lock the kernel drops when the
process dies) from microseconds after creating it. So an empty or uninitialised segment
belongs to a creator still starting up (lock held, or within the grace below) or to one that
died starting (neither), and a segment nobody holds belongs to a dead publisher.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import select
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

from ._core.control import Control
from ._core.file import read_stub
from ._core.header import FileBackedTopic, ForeignSegment, HeaderNotReady, file_header, read_header
from ._core.lib import pointer_to, release
from ._core.watch import dir_watch
from .errors import InvalidSegment, TopicExists, TopicNotFound
from .names import CONTROL_SUFFIX
from .records import FileHeaderInfo, HeaderInfo, StubInfo
from .segment import Segment

log = logging.getLogger(__name__)

#: A creator holds its new segment unlocked only between creating and locking it
#: (microseconds); one found unlocked and uninitialised for longer belongs to a dead creator.
STARTUP_GRACE: Final = 0.2
#: Rounds of create-or-take-over before a claim gives up on contention.
CLAIM_ATTEMPTS: Final = 50
#: How long attaching waits for a live publisher that is still initialising its segment.
ATTACH_WAIT: Final = 5.0


@dataclass(frozen=True)
class Look:
    """What a segment (or ring file) holds. ``kind`` is one of:

    - ``"ok"``: a valid header (``header``; ``file``, the header's file block, for a ring file);
    - ``"unready"``: empty or uninitialised: a creator still starting, or dead while starting;
    - ``"stub"``: a file-backed topic's stub (``stub`` names the ring file);
    - ``"invalid"``: ours but unusable (another layout version, corrupt, truncated);
    - ``"foreign"``: not a shmpubsub segment at all.

    ``error`` is the exception that says what is wrong (for ``"unready"``, ``"invalid"``,
    ``"foreign"`` and ``"stub"``), ready to raise.
    """

    kind: str
    header: HeaderInfo | None = None
    error: InvalidSegment | None = None
    file: FileHeaderInfo | None = None
    stub: StubInfo | None = None

    @property
    def problem(self) -> str | None:
        return None if self.error is None else str(self.error)


def classify(segment: Segment, what: str | None = None) -> Look:
    """Looks at *segment*'s header through a read-only mapping of its own (never left mapped);
    *what* names it in the errors (default: ``segment.what``)."""
    what = segment.what if what is None else what
    if segment.nbytes == 0:  # a creator sizes its segment whole before writing to it
        empty = HeaderNotReady(f"{what} is empty (its creator is still starting, or died)")
        return Look("unready", error=empty)
    with segment.mapped() as (base, size):
        try:
            header = read_header(base, size, what)
        except HeaderNotReady as e:
            return Look("unready", error=_kept(e))
        except ForeignSegment as e:
            return Look("foreign", error=_kept(e))
        except FileBackedTopic as e:
            if segment.name is None:  # a stub copied to a file is no ring file
                return Look("invalid", error=_kept(e))
            try:
                return Look("stub", error=_kept(e), stub=read_stub(base, size, what))
            except InvalidSegment as bad:
                return Look("invalid", error=_kept(bad))
        except InvalidSegment as e:
            return Look("invalid", error=_kept(e))
        return Look("ok", header, file=file_header(base) if segment.name is None else None)


def _kept(error: InvalidSegment) -> InvalidSegment:
    """*error* without its traceback, to be kept in a Look: the traceback's frames would hold
    this call's locals (the segment, the C pointer) in a reference cycle until a collection."""
    return error.with_traceback(None)


def owner_of(segment: Segment) -> str:
    """Names the publisher holding *segment* (from its header or stub), for error messages."""
    try:
        look = classify(segment)
    except Exception:
        return "another process"  # unreadable: name no pid
    if look.header is not None:
        return f"pid {look.header.publisher_pid}"
    if look.stub is not None:
        return f"pid {look.stub.publisher_pid}, ring file {look.stub.path}"
    return "another process"


# -- the single writer ------------------------------------------------------------------


def claim(topic: str, mode: int, path: str | None = None) -> tuple[Segment, bool]:
    """Creates the topic's segment (with *path*: the ring file) and takes its single-writer
    lock: (segment, created). A segment whose owner is dead is taken over: in /dev/shm it is
    removed with its control segment and created afresh; a ring file is returned as found
    (created False), for the caller to validate and reopen.

    Raises TopicExists if a live publisher holds it, InvalidSegment for a foreign object under
    the topic's name, PermissionDenied for another user's topic (never taken over).
    """
    unready_since: float | None = None
    for _ in range(CLAIM_ATTEMPTS):
        try:
            segment = Segment.create(topic, mode) if path is None else Segment.create_file(path, mode, topic)
        except TopicExists:
            pass
        else:
            if segment.lock_new(STARTUP_GRACE):
                return segment, True
            segment.close()
            if path is not None:  # the file stays; whoever holds its lock now is its publisher
                raise TopicExists(f"{path} was created by another publisher at the same moment")
            continue  # a contender's probe held it: try again
        try:
            existing = (
                Segment.open(topic, writable=True)
                if path is None
                else Segment.open_file(path, writable=True, topic=topic)
            )
        except TopicNotFound:
            continue  # removed meanwhile: create it
        taken_over = False
        try:
            if path is None:
                existing.check_ours()  # another user's topic is neither ours to use nor to take over
            if not existing.lock():
                if existing.still_named():
                    raise _live_owner(topic, path, existing)
                continue
            # Lock taken: its owner is dead, unless a creator is just starting up. If the name
            # no longer leads to it, someone else took the topic over meanwhile: start again
            # (removing by name now would remove the new owner's segments).
            if not existing.still_named():
                continue
            if not _initialised(existing, path):
                now = time.monotonic()
                unready_since = unready_since or now
                if now - unready_since < STARTUP_GRACE:
                    existing.close()  # releases our probe lock
                    time.sleep(0.005)
                    continue
            if path is not None:
                taken_over = True
                return existing, False
            log.info("topic %r: its publisher is gone; removing its segments and re-creating them", topic)
            existing.remove()
            remove_control(topic)
        finally:
            if not taken_over:
                existing.close()
    if path is not None:
        raise TopicExists(f"{path}: could not claim it after {CLAIM_ATTEMPTS} attempts (contention)")
    raise TopicExists(
        errno.EEXIST, f"topic {topic!r}: could not claim it after {CLAIM_ATTEMPTS} attempts (contention)"
    )


def _live_owner(topic: str, path: str | None, segment: Segment) -> TopicExists:
    if path is not None:
        return TopicExists(f"{path} is in use by another publisher ({owner_of(segment)})")
    return TopicExists(errno.EEXIST, f"topic {topic!r} already has a live publisher ({owner_of(segment)})")


def _initialised(segment: Segment, path: str | None) -> bool:
    """True if the segment's creator got as far as finishing it (any layout version: only that
    is asked). A ring file only needs a size: its header is validated, and repaired, by whoever
    reopens it. A foreign segment under a topic's name is refused, never destroyed."""
    if path is not None:
        return segment.nbytes > 0
    look = classify(segment)
    if look.kind == "foreign":
        raise InvalidSegment(
            f"{segment.name} exists but is not a shmpubsub segment; it was left alone "
            "(remove it by hand if it is garbage)"
        )
    return look.kind != "unready"  # another version, truncated, a stub: a dead publisher's, replaceable


def create_control(topic: str, mode: int) -> Segment:
    """Creates the topic's control segment. The caller holds the topic's lock, so one found
    under the name is a dead publisher's leftover: it is removed and created afresh."""
    try:
        return Segment.create(topic, mode, suffix=CONTROL_SUFFIX)
    except TopicExists:
        remove_control(topic)
        return Segment.create(topic, mode, suffix=CONTROL_SUFFIX)


def remove_control(topic: str) -> None:
    """Removes the topic's control segment, if there is one and it is ours."""
    try:
        stale = Segment.open(topic, writable=False, suffix=CONTROL_SUFFIX)
    except TopicNotFound:
        return
    try:
        stale.check_ours()
        stale.remove()
    finally:
        stale.close()


# -- readers ------------------------------------------------------------------------------


def attach(segment: Segment) -> tuple[Any, HeaderInfo]:
    """Maps *segment* read-only and validates its header, waiting briefly for a publisher that
    is still creating it: (a C pointer to the mapping, which stays mapped; the header). Raises
    InvalidSegment (FileBackedTopic for a stub, whose ring is in the file it names)."""
    began = time.monotonic()
    delay = 0.0005
    while True:
        look = classify(segment)
        if look.kind == "ok":
            mapping = segment.map()
            base = pointer_to(mapping, writable=False)
            try:
                return base, read_header(base, len(mapping), segment.what)
            except HeaderNotReady:  # a ring file being reopened just now
                release(base)
                segment.unmap()
            except BaseException:
                release(base)
                raise
        elif look.kind != "unready":
            assert look.error is not None
            raise look.error
        waited = time.monotonic() - began
        if waited > ATTACH_WAIT or (waited > STARTUP_GRACE and not segment.lock_held()):
            raise InvalidSegment(
                f"{segment.what} exists but was never initialised (its publisher died while creating "
                "it, or is stuck); a new publisher on the topic will replace it"
            )
        time.sleep(delay)
        # Readiness is a store into the mapping, which no event announces: look often enough
        # that a subscriber waiting for the topic attaches within a few ms of it.
        delay = min(delay * 2, 0.005)


def attach_control(topic: str, epoch: int, optional: bool) -> tuple[Segment, Any, Control] | None:
    """A subscriber's read-write view of the topic's control segment, validated as the one of
    the ring of *epoch*: (segment, C pointer to its mapping, Control). With *optional* (a ring
    file opened by path), None when it is gone or another incarnation's: the file's publisher
    is gone. Raises TopicNotFound, PermissionDenied (a control segment is its owner's alone),
    InvalidSegment."""
    try:
        segment = Segment.open(topic, writable=True, suffix=CONTROL_SUFFIX)
    except TopicNotFound:
        if optional:
            return None
        raise
    base = None
    try:
        segment.check_trusted(private=True)
        mapping = segment.map()
        base = pointer_to(mapping, writable=True)
        control = Control(base, len(mapping), f"control segment of topic {topic!r}")
        if control.epoch == epoch:
            return segment, base, control
        if not optional:
            raise InvalidSegment(
                f"topic {topic!r} was re-created while attaching (control segment of another epoch); "
                "attach again"
            )
    except BaseException:
        if base is not None:
            release(base)
        segment.close()
        raise
    release(base)
    segment.close()
    return None


# -- waiting for a topic to appear ----------------------------------------------------------

# struct inotify_event: wd, mask, cookie, len, then len bytes of NUL-padded name.
_EVENT: Final = struct.Struct("iIII")
_IN_Q_OVERFLOW: Final = 0x4000  # the kernel dropped events: anything may have appeared


class NameWatch:
    """Waits, without polling, until one of *names* appears in *directory* (inotify). Arm it
    before the first look for what it waits for, so that a name created between that look and
    the wait is not missed."""

    def __init__(self, directory: str, names: Iterable[str]) -> None:
        self._names = {os.fsencode(name) for name in names}
        try:
            self._fd: int | None = dir_watch(directory)
        except FileNotFoundError:
            missing = f"{directory} does not exist: nothing can appear in it"
            raise TopicNotFound(errno.ENOENT, missing) from None

    def wait(self, seconds: float) -> bool:
        """Sleeps until one of the names appears (True) or *seconds* pass (False; ``math.inf``:
        no limit). A signal handler that raises (Ctrl-C) ends it."""
        assert self._fd is not None
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            # poll() takes at most about 24 days in milliseconds; a longer wait polls again.
            limit = None if math.isinf(remaining) else math.ceil(min(remaining, 2_000_000.0) * 1000)
            if poller.poll(limit) and self._appeared():
                return True

    def _appeared(self) -> bool:
        """Reads every pending event: True if one names what we wait for."""
        assert self._fd is not None
        found = False
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return found
            offset = 0
            while offset + _EVENT.size <= len(data):
                _, mask, _, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
                found = found or name in self._names or bool(mask & _IN_Q_OVERFLOW)
                offset += _EVENT.size + length

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> NameWatch:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
