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

The same five steps for a region of a real file (a file-backed ring, or any existing file or
device region, :meth:`Segment.map_file`)::

    seg = Segment.create_file(path)  # 1. create: open(O_CREAT | O_EXCL), mode 0600; or open an
                                     #    existing one: O_RDONLY unless writable, and the mapping's
                                     #    protection never exceeds that
    seg.size(nbytes)                 # 2. size: ftruncate, then posix_fallocate (disk blocks reserved
                                     #    now: a full disk fails here, never with SIGBUS later)
    mem = seg.map()                  # 3. map: mmap(MAP_SHARED) at a page-aligned offset
    seg.flush()                      #    msync(MS_SYNC): what was written is on disk when it returns
    seg.unmap()                      # 4. unmap: frees no disk space and loses nothing written (the
                                     #    page cache keeps it, and writes it back in its own time:
                                     #    unmapping is no msync, only flush() waits for the disk)
    seg.remove()                     # 5. remove: unlink the path. The data goes with the last
                                     #    descriptor or mapping; a file-backed ring's publisher never
                                     #    does this: the file outliving the process is the point
    seg.close()
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import posix_ipc

from ._core.header import lock_held, lock_take
from ._core.lib import pointer_to, release
from .errors import (
    OUT_OF_DESCRIPTORS,
    ClosedError,
    InvalidArgument,
    InvalidSegment,
    InvalidType,
    NoSpace,
    PermissionDenied,
    ReadOnlySegment,
    SegmentError,
    ShmPubSubError,
    TooManyOpenFiles,
    TopicExists,
    TopicNotFound,
)
from .names import SHM_DIR, segment_name, validate_topic

# posix_ipc reports running out of file descriptors without an errno, in these words.
_POSIX_IPC_ERRNOS = {
    "This process already has the maximum number of files open": errno.EMFILE,
    "The system limit on the total number of open files has been reached": errno.ENFILE,
}


def _refusal(e: Exception, what: str) -> ShmPubSubError:
    """The library's exception for the operating system refusing *what*."""
    code = getattr(e, "errno", None) or _POSIX_IPC_ERRNOS.get(str(e), errno.EIO)
    if code in OUT_OF_DESCRIPTORS:
        return TooManyOpenFiles(code, what)
    return SegmentError(code, f"{what}: {e}")


def _describe_owner(path: str, st: os.stat_result | None = None) -> str:
    """*path*, its owner and its mode (from *st*, else from the name)."""
    if st is None:
        try:
            st = os.stat(path)
        except OSError:
            return path
    return f"{path}, owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):#o}"


def _refuse_special_file(topic: str, path: str) -> None:
    """/dev/shm is writable by every local user: a FIFO, directory or symlink planted under a
    topic's name would make shm_open hang or fail obscurely. Refuse anything but a regular file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return  # shm_open will say so
    if not stat.S_ISREG(st.st_mode):
        raise InvalidSegment(f"topic {topic!r}: {path} is not a regular file; it was left alone")


class Segment:
    """One named shared-memory object, or one region of a file, and (at most) one mapping of it in
    this process. The module's docstring walks through the five steps for both: create, size,
    map, unmap (frees nothing, and for a file loses nothing written), remove (unlink; data goes
    with the last descriptor and mapping).

    Attributes:
        topic (str): The topic the segment belongs to (empty for a file mapped on its own).
        writable (bool): Whether it was opened, and is mapped, for writing.
        offset (int): Where the mapping starts in a file (0 for shared memory).
    """

    def __init__(
        self,
        topic: str,
        fd: int,
        writable: bool,
        suffix: str = "",
        *,
        path: str | None = None,
        offset: int = 0,
        length: int | None = None,
    ) -> None:
        self.topic = topic
        #: The shm_open name ("/shmpubsub.<topic>..."), or None for a file.
        self.name: str | None = segment_name(topic, suffix) if path is None else None
        #: Where the object is in the file system: under /dev/shm, or the file's path.
        self.path = SHM_DIR + self.name if self.name is not None else path or ""
        self.writable = writable
        self.offset = offset
        self._length = length
        self._fd: int | None = fd
        self._mapping: mmap.mmap | None = None

    @property
    def what(self) -> str:
        """The segment as error messages name it."""
        return f"topic {self.topic!r}" if self.name is not None else f"file {self.path}"

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
            raise _refusal(e, f"cannot create topic {topic!r}") from None
        os.fchmod(shm.fd, mode & 0o777)
        return cls(topic, shm.fd, writable=True, suffix=suffix)

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
            raise PermissionDenied(
                errno.EACCES, f"may not open topic {topic!r} ({_describe_owner(SHM_DIR + name)})"
            ) from None
        except (posix_ipc.Error, OSError) as e:
            raise _refusal(e, f"cannot open topic {topic!r}") from None
        return cls(topic, shm.fd, writable, suffix)

    @classmethod
    def create_file(cls, path: str, mode: int = 0o600, topic: str = "") -> Segment:
        """Creates a new, empty regular file (O_CREAT | O_EXCL) with exactly *mode*, for a
        file-backed ring of *topic*. Raises TopicExists if the path exists."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode & 0o777)
        except FileExistsError:
            raise TopicExists(errno.EEXIST, f"{path} already exists") from None
        except OSError as e:
            raise _file_error(e, path, "create") from None
        os.fchmod(fd, mode & 0o777)
        return cls(topic, fd, writable=True, path=path)

    @classmethod
    def open_file(cls, path: str, writable: bool = False, topic: str = "") -> Segment:
        """Opens an existing regular file, read-only unless *writable*. Raises TopicNotFound if
        it does not exist, PermissionDenied if access is not allowed, InvalidArgument if it is
        not a regular file."""
        fd = _open_existing(path, writable)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise InvalidArgument(f"{path} is not a regular file")
        return cls(topic, fd, writable, path=path)

    @classmethod
    def map_file(
        cls, path: str | os.PathLike[str], offset: int = 0, length: int | None = None, writable: bool = False
    ) -> Segment:
        """Opens an existing file or device and maps *length* bytes of it from *offset* (steps
        1 and 3; ``mapping`` is the mmap). The file is opened O_RDONLY and mapped PROT_READ unless
        *writable* (O_RDWR, PROT_READ | PROT_WRITE, MAP_SHARED): the protection never exceeds
        what the file was opened with, and a write through a read-only mapping raises
        ReadOnlySegment (:meth:`write`) or TypeError (the mmap itself).

        *offset* must be a multiple of the page size (``mmap.ALLOCATIONGRANULARITY``); *length*
        defaults to the rest of the file and must lie within it (a block device's size counts; a
        character device has none, so give *length*). Raises InvalidArgument for a bad offset or
        length, TopicNotFound if the path does not exist, PermissionDenied if it may not be
        opened so. Costs an open, an fstat and an mmap.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidType(f"path must be a str or os.PathLike, not {type(path).__name__}")
        path = os.fspath(path)
        for name, value in (("offset", offset), ("length", length)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise InvalidType(f"{name} must be an int, not {type(value).__name__}")
        if offset < 0 or offset % mmap.ALLOCATIONGRANULARITY:
            raise InvalidArgument(
                f"offset {offset} is not a multiple of the page size ({mmap.ALLOCATIONGRANULARITY} "
                "bytes): mmap can only map whole pages"
            )
        fd = _open_existing(path, writable)
        try:
            available = _mappable_size(fd, path)
            if length is None:
                if available is None:
                    raise InvalidArgument(f"{path} is a character device: give the length to map")
                length = available - offset
            if length <= 0:
                raise InvalidArgument(
                    f"nothing to map: {path} has {available} bytes, offset {offset}, length {length}"
                )
            if available is not None and offset + length > available:
                raise InvalidArgument(
                    f"offset {offset} + length {length} reaches beyond the end of {path} ({available} bytes)"
                )
            segment = cls("", fd, writable, path=path, offset=offset, length=length)
        except BaseException:
            os.close(fd)
            raise
        try:
            segment.map()
        except BaseException:
            segment.close()
            raise
        return segment

    # -- 2. size -----------------------------------------------------------

    def size(self, nbytes: int) -> None:
        """Sets the size and reserves the memory (or disk blocks) now, so a full /dev/shm or disk
        fails here with NoSpace rather than with SIGBUS at the first write."""
        fd = self.fileno()
        try:
            os.ftruncate(fd, nbytes)
            os.posix_fallocate(fd, 0, nbytes)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EFBIG, errno.ENOMEM, errno.EDQUOT):
                raise NoSpace(self.topic, nbytes, None if self.name is not None else self.path) from None
            raise SegmentError(e.errno, f"cannot size {self.what} to {nbytes} bytes: {e.strerror}") from None

    @property
    def nbytes(self) -> int:
        """The segment's size as the kernel reports it (fstat), never as its header claims."""
        return os.fstat(self.fileno()).st_size

    # -- 3. map --------------------------------------------------------------

    def map(self) -> mmap.mmap:
        """Maps the segment (a file region: from its offset): read-write for the owner,
        PROT_READ for everyone else. Raises InvalidSegment if it is empty."""
        if self._mapping is not None:
            return self._mapping
        length = self._length if self._length is not None else self.nbytes
        if length == 0:  # mmap cannot map it; a creator sizes its segments before anyone maps them
            raise InvalidSegment(f"{self.what} is empty")
        fd = self.fileno()
        try:
            if self.writable:
                flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
                prot = mmap.PROT_READ | mmap.PROT_WRITE
                self._mapping = mmap.mmap(fd, length, flags=flags, prot=prot, offset=self.offset)
            else:
                self._mapping = mmap.mmap(fd, length, access=mmap.ACCESS_READ, offset=self.offset)
        except OSError as e:  # mmap dup()s the descriptor: EMFILE is possible too
            raise _refusal(e, f"cannot map {self.what}") from None
        return self._mapping

    def map_copy(self) -> mmap.mmap:
        """Maps the segment copy-on-write (MAP_PRIVATE), as :meth:`map` otherwise would: the
        mapping is writable, but what is written stays in this process and never reaches the
        segment (or file), even one opened read-only."""
        if self._mapping is None:
            length = self._length if self._length is not None else self.nbytes
            self._mapping = mmap.mmap(self.fileno(), length, access=mmap.ACCESS_COPY, offset=self.offset)
        return self._mapping

    @contextmanager
    def mapped(self, writable: bool = False) -> Iterator[tuple[Any, int]]:
        """Maps the segment for the length of a ``with`` block, for a look at its header or a
        one-off write: yields (a C pointer to the mapping, its size), then releases the pointer
        and unmaps, unless the segment was mapped before the block (then it stays mapped)."""
        was_mapped = self._mapping is not None
        mapping = self.map()
        base = None
        try:
            base = pointer_to(mapping, writable)
            yield base, len(mapping)
        finally:
            if base is not None:
                release(base)
            if not was_mapped:
                self.unmap()

    @property
    def mapping(self) -> mmap.mmap:
        """The mapping made by :meth:`map` (ShmPubSubError if there is none)."""
        if self._mapping is None:
            raise ShmPubSubError(f"{self.what}: the segment is not mapped")
        return self._mapping

    def write(self, offset: int, data: Any) -> None:
        """Copies *data* (bytes-like) into the mapping at *offset* (relative to the mapping).
        Raises ReadOnlySegment if the mapping is read-only, InvalidArgument out of bounds."""
        mapping = self.mapping
        if not self.writable:
            raise ReadOnlySegment(f"{self.what} is mapped read-only (opened O_RDONLY): it cannot be written")
        try:
            view = memoryview(data).cast("B")
        except TypeError:
            raise InvalidType(f"expected a bytes-like object, not {type(data).__name__}") from None
        if not isinstance(offset, int) or offset < 0 or offset + len(view) > len(mapping):
            raise InvalidArgument(
                f"{len(view)} bytes at offset {offset} do not fit a mapping of {len(mapping)} bytes"
            )
        mapping[offset : offset + len(view)] = view

    def flush(self) -> None:
        """msync(MS_SYNC): returns once everything written through the mapping is on disk (a
        no-op for /dev/shm, which has no disk, and for read-only mappings)."""
        try:
            self.mapping.flush()
        except OSError as e:
            raise SegmentError(e.errno, f"cannot write {self.what} to disk: {e.strerror}") from None

    # -- 4. unmap --------------------------------------------------------------

    def unmap(self) -> None:
        """Drops this process's mapping. Frees nothing: the segment lives on until removed (and
        what was written to a file stays in the page cache until written back).

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
        """Removes the name (shm_unlink, or unlink for a file), if it still names this segment
        (not a successor's). A device is never removed."""
        if self.name is None:
            if not stat.S_ISREG(os.fstat(self.fileno()).st_mode):
                raise InvalidArgument(f"{self.path} is not a regular file: it is not removed")
            if self.still_named():
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass  # already gone
                except OSError as e:
                    raise _file_error(e, self.path, "remove") from None
            return
        if self.still_named():
            try:
                posix_ipc.unlink_shared_memory(self.name)
            except posix_ipc.ExistentialError:
                pass  # already gone
            except posix_ipc.Error as e:
                raise SegmentError(errno.EACCES, f"cannot remove {self.path}: {e}") from None

    def still_named(self) -> bool:
        """True if the segment's name (or path) still refers to this very object."""
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(self.fileno())
        return (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino)

    # -- who may change it ---------------------------------------------------------
    # Judged from the descriptor (fstat), so it is the object we opened, whatever the name
    # leads to by now. /dev/shm is writable by every local user: anyone may plant a file there.

    @property
    def ours(self) -> bool:
        """True if the segment belongs to our effective uid."""
        return os.fstat(self.fileno()).st_uid == os.geteuid()

    def check_ours(self) -> None:
        """Raises PermissionDenied unless the segment is ours (another user's is never taken
        over, removed or written, not even by root)."""
        if not self.ours:
            raise PermissionDenied(
                errno.EPERM,
                f"topic {self.topic!r}: {self._described()}; it belongs to another user and was left alone",
            )

    def check_trusted(self, private: bool = False) -> None:
        """Raises PermissionDenied if anyone but its owner may write the segment: no publisher
        makes such a segment, and anybody could change it under us. If *private*, also unless
        it is ours and nobody else may even read it (a control segment is its owner's alone)."""
        mode = stat.S_IMODE(os.fstat(self.fileno()).st_mode)
        if mode & (0o077 if private else 0o022):
            raise PermissionDenied(
                errno.EPERM,
                f"topic {self.topic!r}: {self._described()}; other users may "
                f"{'use' if private else 'write'} it, so it was not made by a shmpubsub publisher: refused",
            )
        if private:
            self.check_ours()

    def _described(self) -> str:
        where = SHM_DIR + self.name if self.name is not None else str(self.path)
        return _describe_owner(where, os.fstat(self.fileno()))

    # -- the descriptor and the single-writer lock ------------------------------

    def fileno(self) -> int:
        """The segment's file descriptor (ClosedError once closed)."""
        if self._fd is None:
            raise ClosedError(f"{self.what}: the segment is closed")
        return self._fd

    def lock(self) -> bool:
        """Takes the single-writer lock (an OFD lock, dropped by the kernel when the owner dies).
        True if taken, False if another process holds it."""
        return lock_take(self.fileno())

    def lock_new(self, grace: float) -> bool:
        """Locks a segment we just created, retrying for up to *grace* seconds: a contender
        probing it (to judge whether its owner died) holds the lock only briefly."""
        deadline = time.monotonic() + grace
        while not self.lock():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True

    def lock_held(self) -> bool:
        """True if some other open file description holds the single-writer lock."""
        return lock_held(self.fileno())

    def close(self) -> None:
        """Unmaps (if mapped) and closes the descriptor, which releases a lock held through it."""
        self.unmap()
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._fd is None

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("mapped" if self._mapping is not None else "open")
        return f"<Segment {self.path} {'rw' if self.writable else 'ro'} {state}>"


def _file_error(e: OSError, path: str, action: str) -> SegmentError:
    if isinstance(e, PermissionError):
        return PermissionDenied(e.errno, f"may not {action} {path}")
    return SegmentError(e.errno, f"cannot {action} {path}: {e.strerror}")


def _open_existing(path: str, writable: bool) -> int:
    """Opens *path*: O_RDONLY unless *writable*; O_NONBLOCK so that a FIFO cannot hang us."""
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        raise TopicNotFound(errno.ENOENT, f"{path} does not exist") from None
    except OSError as e:
        raise _file_error(e, path, "open" if not writable else "open for writing") from None


def _mappable_size(fd: int, path: str) -> int | None:
    """Bytes that may be mapped: a regular file's size, a block device's; None for a character
    device (which has no size). Anything else cannot be mapped."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode):
        return os.fstat(fd).st_size
    if stat.S_ISBLK(mode):
        return os.lseek(fd, 0, os.SEEK_END)
    if stat.S_ISCHR(mode):
        return None
    raise InvalidArgument(f"{path} is neither a regular file nor a device: it cannot be mapped")
