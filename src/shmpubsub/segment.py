"""A named POSIX shared-memory segment, with its lifecycle as explicit steps.

Publisher::

    seg = Segment.create("prices")   # 1. create: shm_open(O_CREAT | O_EXCL), mode 0600
    seg.size(nbytes)                 # 2. size: ftruncate, then posix_fallocate
    mem = seg.map()                  # 3. map: mmap, read-write
    ...
    seg.unmap()                      # 4. unmap: this process's view is gone; the memory is not freed
    seg.remove()                     # 5. remove: shm_unlink; freed once every process has unmapped
    seg.close()                      #    and the descriptor

Subscriber: ``Segment.open("prices")``, ``map()`` (read-only, ``PROT_READ``), ``unmap()``, ``close()``.

A segment nobody removes outlives every process that used it: only step 5 frees
the memory, and only the owner (the publisher) takes it.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat

import posix_ipc

from . import _core
from .errors import (
    ClosedError,
    InvalidSegment,
    NoSpace,
    PermissionDenied,
    SegmentError,
    ShmPubSubError,
    TopicExists,
    TopicNotFound,
)
from .names import SHM_DIR, segment_name, validate_topic


def _refuse_special_file(topic: str, path: str) -> None:
    """/dev/shm is writable by every local user: a FIFO or directory planted under a topic's
    name would make shm_open hang or fail obscurely. Refuse anything but a regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return  # shm_open will say so
    if not stat.S_ISREG(st.st_mode):
        raise InvalidSegment(f"topic {topic!r}: {path} is not a regular file; it was left alone")


class Segment:
    """One named shared-memory object and (at most) one mapping of it in this process."""

    def __init__(self, topic: str, shm: posix_ipc.SharedMemory, writable: bool, suffix: str = "") -> None:
        self.topic = topic
        self.name = segment_name(topic, suffix)
        self.writable = writable
        self._shm: posix_ipc.SharedMemory | None = shm
        self._mapping: mmap.mmap | None = None

    # -- 1. create / open ------------------------------------------------

    @classmethod
    def create(cls, topic: str, mode: int = 0o600, suffix: str = "") -> Segment:
        """Creates a new, empty segment (O_CREAT | O_EXCL) with exactly *mode* (umask ignored).
        *suffix* selects a companion object of the topic (its control segment).

        Raises TopicExists if the name is taken, PermissionDenied if creation is not allowed.
        """
        name = segment_name(topic, suffix)
        try:
            shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=mode & 0o777, size=0)
        except posix_ipc.ExistentialError:
            raise TopicExists(errno.EEXIST, f"topic {topic!r} already exists ({SHM_DIR}{name})") from None
        except posix_ipc.PermissionsError:
            raise PermissionDenied(
                errno.EACCES, f"may not create topic {topic!r} ({SHM_DIR}{name})"
            ) from None
        except (posix_ipc.Error, OSError) as e:
            code = getattr(e, "errno", None) or errno.EIO
            raise SegmentError(code, f"cannot create topic {topic!r}: {e}") from None
        os.fchmod(shm.fd, mode & 0o777)
        return cls(topic, shm, writable=True, suffix=suffix)

    @classmethod
    def open(cls, topic: str, writable: bool = False, suffix: str = "") -> Segment:
        """Opens an existing segment, read-only unless *writable*.

        Raises TopicNotFound if it does not exist, PermissionDenied if access is not allowed.
        """
        name = segment_name(validate_topic(topic), suffix)
        _refuse_special_file(topic, SHM_DIR + name)
        try:
            shm = posix_ipc.SharedMemory(name, 0, read_only=not writable)
        except posix_ipc.ExistentialError:
            raise TopicNotFound(errno.ENOENT, f"no topic {topic!r}: no publisher has created it") from None
        except posix_ipc.PermissionsError:
            raise PermissionDenied(errno.EACCES, f"may not open topic {topic!r} ({SHM_DIR}{name})") from None
        except (posix_ipc.Error, OSError) as e:
            code = getattr(e, "errno", None) or errno.EIO
            raise SegmentError(code, f"cannot open topic {topic!r}: {e}") from None
        return cls(topic, shm, writable, suffix)

    # -- 2. size -----------------------------------------------------------

    def size(self, nbytes: int) -> None:
        """Sets the size and reserves the memory now, so a full /dev/shm fails here with NoSpace
        rather than with SIGBUS at the first write."""
        fd = self.fileno()
        try:
            os.ftruncate(fd, nbytes)
            os.posix_fallocate(fd, 0, nbytes)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EFBIG, errno.ENOMEM):
                raise NoSpace(self.topic, nbytes) from None
            raise SegmentError(
                e.errno, f"cannot size topic {self.topic!r} to {nbytes} bytes: {e.strerror}"
            ) from None

    @property
    def nbytes(self) -> int:
        """The segment's size as the kernel reports it (fstat), never as its header claims."""
        return os.fstat(self.fileno()).st_size

    # -- 3. map --------------------------------------------------------------

    def map(self) -> mmap.mmap:
        """Maps the whole segment: read-write for the owner, PROT_READ for everyone else.
        Raises InvalidSegment if it is empty."""
        if self._mapping is not None:
            return self._mapping
        nbytes = self.nbytes
        if nbytes == 0:  # mmap cannot map it; a creator sizes its segments before anyone maps them
            raise InvalidSegment(f"topic {self.topic!r}: {SHM_DIR}{self.name} is empty")
        fd = self.fileno()
        if self.writable:
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            self._mapping = mmap.mmap(fd, nbytes, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        else:
            self._mapping = mmap.mmap(fd, nbytes, access=mmap.ACCESS_READ)
        return self._mapping

    @property
    def mapping(self) -> mmap.mmap:
        if self._mapping is None:
            raise ShmPubSubError(f"topic {self.topic!r}: the segment is not mapped")
        return self._mapping

    # -- 4. unmap --------------------------------------------------------------

    def unmap(self) -> None:
        """Drops this process's mapping. Frees nothing: the segment lives on until removed.

        If Python views into the mapping are still alive, the unmapping happens when the
        last of them goes (never earlier, so no view can ever point at unmapped memory).
        """
        mapping, self._mapping = self._mapping, None
        if mapping is not None:
            try:
                mapping.close()
            except BufferError:
                pass  # views remain; the mmap object unmaps itself when they are gone

    # -- 5. remove -------------------------------------------------------------

    def remove(self) -> None:
        """Removes the name (shm_unlink), if it still names this segment (not a successor's)."""
        if self.still_named():
            try:
                posix_ipc.unlink_shared_memory(self.name)
            except posix_ipc.ExistentialError:
                pass  # already gone
            except posix_ipc.Error as e:
                raise SegmentError(errno.EACCES, f"cannot remove {SHM_DIR}{self.name}: {e}") from None

    def still_named(self) -> bool:
        """True if the segment's name still refers to this very object."""
        try:
            named = os.stat(SHM_DIR + self.name)
        except FileNotFoundError:
            return False
        mine = os.fstat(self.fileno())
        return (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino)

    # -- the descriptor and the single-writer lock ------------------------------

    def fileno(self) -> int:
        if self._shm is None:
            raise ClosedError(f"topic {self.topic!r}: the segment is closed")
        fd: int = self._shm.fd
        return fd

    def lock(self) -> bool:
        """Takes the single-writer lock (an OFD lock, dropped by the kernel when the owner dies).
        True if taken, False if another process holds it."""
        return _core.lock_take(self.fileno())

    def lock_held(self) -> bool:
        """True if some other open file description holds the single-writer lock."""
        return _core.lock_held(self.fileno())

    def close(self) -> None:
        """Unmaps (if mapped) and closes the descriptor, which releases a lock held through it."""
        self.unmap()
        shm, self._shm = self._shm, None
        if shm is not None:
            shm.close_fd()

    @property
    def closed(self) -> bool:
        return self._shm is None

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("mapped" if self._mapping is not None else "open")
        return f"<Segment {self.name} {'rw' if self.writable else 'ro'} {state}>"
