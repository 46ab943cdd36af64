"""A ring's header and the single-writer lock (csrc/header.c): geometry, creation, validation."""

from __future__ import annotations

import errno
import os
from typing import Any, Final

from ..errors import InvalidArgument, InvalidSegment, InvalidType
from ..records import FileHeaderInfo, HeaderInfo
from .lib import LAYOUT_VERSION, ffi, lib

HEADER_SIZE: Final[int] = lib.SPS_HEADER_SIZE
MAX_SLOT_COUNT: Final[int] = lib.SPS_MAX_SLOT_COUNT
MAX_SLOT_SIZE: Final[int] = lib.SPS_MAX_SLOT_SIZE
MAX_SEQ: Final[int] = lib.SPS_MAX_SEQ
#: The format of ring files this build writes (slots with checksums) and reopens.
FILE_FORMAT: Final[int] = lib.SPS_FILE_FORMAT


class HeaderNotReady(InvalidSegment):
    """The segment exists but its creator has not finished writing the header (or died first)."""


class ForeignSegment(InvalidSegment):
    """The segment does not carry shmpubsub's magic number."""


class FileBackedTopic(InvalidSegment):
    """The segment is a file-backed topic's stub: the ring is in the file it names."""


_HEADER_ERRORS: Final = {
    lib.SPS_E_SIZE: "is smaller than a segment header",
    lib.SPS_E_HEADER_SIZE: "has a corrupt header (wrong header size)",
    lib.SPS_E_GEOMETRY: "has a corrupt header (slot count or slot size out of range)",
    lib.SPS_E_TOTAL: "is truncated or corrupt (its size disagrees with its header)",
    lib.SPS_E_SOCKET_DIR: "has a corrupt header (socket directory)",
    lib.SPS_E_PID: "has a corrupt header (publisher pid out of range)",
    lib.SPS_E_SEQ: "has a corrupt header (write_seq out of range)",
}


def header_error(rc: int, what: str, version: int, file_format: int = 0) -> InvalidSegment:
    """The exception for a validation status *rc* of the segment named *what*."""
    if rc == lib.SPS_E_UNINITIALISED:
        return HeaderNotReady(f"{what} is not initialised (its creator is still starting, or died)")
    if rc == lib.SPS_E_MAGIC:
        return ForeignSegment(f"{what} is not a shmpubsub segment (bad magic number)")
    if rc == lib.SPS_E_FILE_BACKED:
        return FileBackedTopic(f"{what} is file-backed: its ring is in the file its stub names")
    if rc == lib.SPS_E_VERSION:
        return InvalidSegment(
            f"{what} has layout version {version}; this shmpubsub speaks version "
            f"{LAYOUT_VERSION} (publisher and subscriber must run compatible versions)"
        )
    if rc == lib.SPS_E_FILE_FORMAT:
        written = (
            "an older shmpubsub, whose slots carry no checksums"
            if file_format == 0
            else f"an incompatible shmpubsub (ring file format {file_format})"
        )
        return InvalidSegment(
            f"{what} is a ring file written by {written}; this shmpubsub reads and writes ring file "
            f"format {FILE_FORMAT}"
        )
    return InvalidSegment(f"{what} {_HEADER_ERRORS.get(rc, f'is invalid (code {rc})')}")


def geometry(slot_count: int, slot_size: int, ring_file: bool = False) -> tuple[int, int]:
    """(slot stride, total segment size) for a ring, in /dev/shm or, with *ring_file*, in a file
    (whose slots have room for a checksum); InvalidArgument if out of range."""
    if not isinstance(slot_count, int) or not isinstance(slot_size, int):
        raise InvalidType("slots and slot_size must be integers")
    if not 1 <= slot_count <= MAX_SLOT_COUNT or slot_count & (slot_count - 1):
        raise InvalidArgument(
            f"slots must be a power of two between 1 and {MAX_SLOT_COUNT}, not {slot_count}"
        )
    if not 0 <= slot_size <= MAX_SLOT_SIZE:
        raise InvalidArgument(f"slot_size must be between 0 and {MAX_SLOT_SIZE} bytes, not {slot_size}")
    stride = ffi.new("uint64_t *")
    total = ffi.new("uint64_t *")
    layout = lib.sps_file_geometry if ring_file else lib.sps_geometry
    if layout(slot_count, slot_size, stride, total) != lib.SPS_OK:  # pragma: no cover
        raise InvalidArgument(f"no ring of {slot_count} slots of {slot_size} bytes")
    return int(stride[0]), int(total[0])


def init_header(
    base: Any,
    size: int,
    slot_count: int,
    slot_size: int,
    *,
    epoch: int,
    pid: int,
    start_time: int,
    created_ns: int,
) -> None:
    """Writes a fresh header for a /dev/shm ring (the magic last)."""
    rc = lib.sps_header_init(base, size, slot_count, slot_size, epoch, pid, start_time, created_ns)
    if rc != lib.SPS_OK:  # pragma: no cover - geometry was checked by the caller
        raise InvalidArgument(f"cannot lay out {slot_count} slots of {slot_size} bytes in {size} bytes")


def read_header(base: Any, size: int, what: str) -> HeaderInfo:
    """Validates the header of a mapping of *size* bytes; *what* names it in errors."""
    info = ffi.new("struct sps_header_info *")
    rc = lib.sps_header_read(base, size, info)
    if rc != lib.SPS_OK:
        raise header_error(rc, what, info.layout_version, info.file_format)
    return header_info(info)


def inspect_header(base: Any, size: int, what: str) -> tuple[HeaderInfo, FileHeaderInfo]:
    """Validates a ring's header for the holder of its single-writer lock, who may find the
    magic withdrawn by a writer that died while opening it (sps_header_inspect)."""
    info = ffi.new("struct sps_header_info *")
    file = ffi.new("struct sps_file_header_info *")
    rc = lib.sps_header_inspect(base, size, info, file)
    if rc != lib.SPS_OK:
        raise header_error(rc, what, info.layout_version, info.file_format)
    return header_info(info), file_info(file)


def file_header(base: Any) -> FileHeaderInfo:
    """The file block of a header already validated by read_header."""
    file = ffi.new("struct sps_file_header_info *")
    lib.sps_header_file(base, file)
    return file_info(file)


def header_info(info: Any) -> HeaderInfo:
    """A ``struct sps_header_info`` as a record."""
    return HeaderInfo(
        layout_version=info.layout_version,
        slot_count=info.slot_count,
        slot_size=info.slot_size,
        slot_stride=info.slot_stride,
        total_size=info.total_size,
        epoch=info.epoch,
        publisher_pid=info.publisher_pid,
        publisher_start_time=info.publisher_start_time,
        created_ns=info.created_ns,
        write_seq=info.write_seq,
        closed=bool(info.closed),
    )


def file_info(info: Any) -> FileHeaderInfo:
    """A ``struct sps_file_header_info`` as a record."""
    return FileHeaderInfo(
        flushed=int(info.flushed),
        boot_id=bytes(ffi.buffer(info.boot_id)),
        topic=ffi.string(info.topic).decode(errors="replace"),
        format=int(info.format),
    )


def lock_take(fd: int) -> bool:
    """Takes the single-writer lock on *fd*: True if taken, False if another holder has it."""
    err = lib.sps_lock_take(fd)
    if err == 0:
        return True
    if err in (errno.EAGAIN, errno.EACCES):  # held by someone else
        return False
    raise OSError(err, f"cannot lock the segment: {os.strerror(err)}")


def lock_held(fd: int) -> bool:
    """True if any other open file description holds the single-writer lock on *fd*."""
    rc = lib.sps_lock_probe(fd)
    if rc < 0:
        raise OSError(-rc, f"cannot probe the segment lock: {os.strerror(-rc)}")
    return bool(rc)
