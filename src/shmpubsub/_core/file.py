"""File-backed rings (csrc/file.c, and the recovery in csrc/ring.c): a ring file's header,
its repair when reopened, durability, and the stub naming the file under the topic's name."""

from __future__ import annotations

import os
from typing import Any, Final

from ..errors import InvalidArgument, SegmentError
from ..records import Recovery, StubInfo
from .header import header_error
from .lib import LAYOUT_VERSION, ffi, lib

TOPIC_MAX: Final[int] = lib.SPS_TOPIC_MAX
BOOT_ID_SIZE: Final[int] = lib.SPS_BOOT_ID_SIZE
STUB_SIZE: Final[int] = lib.SPS_STUB_SIZE
PATH_MAX: Final[int] = lib.SPS_PATH_MAX
#: Trust every complete message when reopening a ring (see reopen).
TRUST_ALL: Final = 2**64 - 1


def _boot_id(boot_id: bytes) -> bytes:
    if len(boot_id) != BOOT_ID_SIZE:  # pragma: no cover - _proc.boot_id() gives 16 bytes
        raise InvalidArgument(f"a boot id has {BOOT_ID_SIZE} bytes, not {len(boot_id)}")
    return boot_id


def init_header_file(
    base: Any,
    size: int,
    slot_count: int,
    slot_size: int,
    *,
    epoch: int,
    pid: int,
    start_time: int,
    created_ns: int,
    topic: str,
    boot_id: bytes,
) -> None:
    """Writes a fresh header for a file-backed ring of *topic* (the magic last)."""
    rc = lib.sps_header_init_file(
        base, size, slot_count, slot_size, epoch, pid, start_time, created_ns, topic.encode(),
        _boot_id(boot_id),
    )
    if rc != lib.SPS_OK:  # pragma: no cover - geometry and topic were checked by the caller
        raise InvalidArgument(f"cannot lay out {slot_count} slots of {slot_size} bytes in {size} bytes")


def reopen(
    base: Any,
    size: int,
    what: str,
    *,
    trusted_end: int,
    epoch: int,
    pid: int,
    start_time: int,
    boot_id: bytes,
    created_ns: int,
) -> Recovery:
    """Reopens a ring file whose writer ended: repairs its slots, continues its numbering, and
    gives it a new incarnation (sps_file_reopen). The caller holds the single-writer lock."""
    out = ffi.new("struct sps_recovery *")
    boot = _boot_id(boot_id)
    rc = lib.sps_file_reopen(base, size, trusted_end, epoch, pid, start_time, created_ns, boot, out)
    if rc != lib.SPS_OK:
        raise header_error(rc, what, 0)
    return _recovery(out)


def _recovery(out: Any) -> Recovery:
    return Recovery(
        int(out.next), int(out.kept), int(out.torn), int(out.corrupt), int(out.unflushed), int(out.repaired)
    )


def recover_copy(base: Any, size: int, what: str, *, trusted_end: int) -> Recovery:
    """Repairs a private copy-on-write mapping of a ring file whose publisher is gone, as
    :func:`reopen` would repair the file; the file is untouched (sps_file_recover_copy)."""
    out = ffi.new("struct sps_recovery *")
    rc = lib.sps_file_recover_copy(base, size, trusted_end, out)
    if rc != lib.SPS_OK:
        raise header_error(rc, what, 0)
    return _recovery(out)


def flush(base: Any, size: int, what: str, only_if_new: bool = False) -> int:
    """msync(MS_SYNC) of a ring's whole mapping (with *only_if_new*, only if something was
    published since the last flush); returns how many messages are now on disk. Releases the
    GIL while the disk works."""
    flushed = ffi.new("uint64_t *")
    rc = lib.sps_file_flush(base, size, int(only_if_new), flushed)
    if rc != lib.SPS_OK:
        raise SegmentError(-rc, f"{what}: cannot write it to disk: {os.strerror(-rc)}")
    return int(flushed[0])


def init_stub(base: Any, size: int, path: str, epoch: int, pid: int) -> None:
    """Writes a topic's stub naming the ring file at *path* (the magic last)."""
    encoded = os.fsencode(path)
    if len(encoded) >= PATH_MAX:  # pragma: no cover - checked by the caller
        raise InvalidArgument(f"path {path!r} is too long")
    rc = lib.sps_stub_init(base, size, encoded, epoch, pid)
    if rc != lib.SPS_OK:  # pragma: no cover
        raise InvalidArgument(f"cannot write a stub for {path!r} (code {rc})")


def read_stub(base: Any, size: int, what: str) -> StubInfo:
    """Validates a file-backed topic's stub."""
    info = ffi.new("struct sps_stub_info *")
    rc = lib.sps_stub_read(base, size, info)
    if rc != lib.SPS_OK:
        raise header_error(rc, f"{what} (a file-backed topic's stub)", LAYOUT_VERSION)
    return StubInfo(os.fsdecode(ffi.string(info.path)), int(info.epoch), int(info.publisher_pid))
