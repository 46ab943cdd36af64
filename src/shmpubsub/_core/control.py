"""The control segment (csrc/control.c): one entry per attached subscriber, and the sleepers
bitmap. Subscribers may write it, so everything read from it is untrusted."""

from __future__ import annotations

from typing import Any, Final

from ..errors import ClosedError, InvalidArgument
from ..records import SubscriberInfo
from .header import header_error
from .lib import ffi, lib

MAX_SUBSCRIBERS: Final[int] = lib.SPS_MAX_SUBSCRIBERS
SOCKET_DIR_MAX: Final[int] = lib.SPS_SOCKET_DIR_MAX


def control_geometry(max_subscribers: int) -> int:
    """Total size of a control segment; InvalidArgument if out of range."""
    if not isinstance(max_subscribers, int) or not 1 <= max_subscribers <= MAX_SUBSCRIBERS:
        raise InvalidArgument(
            f"max_subscribers must be between 1 and {MAX_SUBSCRIBERS}, not {max_subscribers!r}"
        )
    total = ffi.new("uint64_t *")
    lib.sps_control_geometry(max_subscribers, total)
    return int(total[0])


def init_control(
    base: Any, size: int, max_subscribers: int, epoch: int, socket_dir: str, where: tuple[int, int, int, int]
) -> None:
    """Writes a fresh control segment for the ring of *epoch*. *where* says where its publisher
    is: the socket directory's st_dev and st_ino, the publisher's PID and mount namespaces (0:
    unknown)."""
    encoded = socket_dir.encode()
    if len(encoded) >= SOCKET_DIR_MAX:  # pragma: no cover - socket_dir() keeps it short
        raise InvalidArgument(f"socket directory {socket_dir!r} is too long")
    rc = lib.sps_control_init(base, size, max_subscribers, epoch, encoded, ffi.new("uint64_t[4]", where))
    if rc != lib.SPS_OK:  # pragma: no cover
        raise InvalidArgument(f"cannot initialise a control segment (code {rc})")


class Control:
    """A validated control segment: subscriber entries and the sleepers bitmap."""

    __slots__ = ("epoch", "max_subscribers", "mnt_ns", "pid_ns", "socket_dir", "socket_dir_id", "struct")

    def __init__(self, base: Any, size: int, what: str) -> None:
        #: The C handle (``struct sps_control``), for the writer, reader and waker it binds.
        self.struct = ffi.new("struct sps_control *")
        info = ffi.new("struct sps_control_info *")
        rc = lib.sps_control_open(self.struct, base, size, info)
        if rc != lib.SPS_OK:
            raise header_error(rc, what, info.layout_version)
        self.epoch = int(info.epoch)
        self.max_subscribers = int(info.max_subscribers)
        self.socket_dir = ffi.string(info.socket_dir).decode(errors="replace")
        #: The socket directory's (st_dev, st_ino) as its publisher saw it; None if not recorded.
        self.socket_dir_id = (
            (int(info.socket_dir_dev), int(info.socket_dir_ino)) if info.socket_dir_ino else None
        )
        #: The publisher's PID and mount namespaces (inodes); None if not recorded.
        self.pid_ns: int | None = int(info.pid_ns) or None
        self.mnt_ns: int | None = int(info.mnt_ns) or None

    def claim(self, token: int, pid: int, start_time: int) -> int | None:
        """Takes a free entry for *token* (odd): its index, or None if all are taken."""
        index: int = lib.sps_control_claim(self.struct, token, pid, start_time)
        if index == lib.SPS_CLOSED:
            raise ClosedError("the control segment is closed")
        return None if index == lib.SPS_FULL else index

    def release(self, index: int, token: int, owner: bool) -> bool:
        """Frees entry *index* if it still belongs to *token*; the *owner* also withdraws its
        sleep request (a reclaimer must not: the bit may already be a new owner's)."""
        return bool(lib.sps_control_release(self.struct, index, token, int(owner)))

    def close(self) -> None:
        """Refuses further calls and waits for those in flight in other threads."""
        lib.sps_control_close(self.struct)

    def entry(self, index: int) -> SubscriberInfo | None:
        """Entry *index*, or None if it is free."""
        info = ffi.new("struct sps_entry_info *")
        if lib.sps_control_entry(self.struct, index, info) != lib.SPS_OK:
            return None
        return SubscriberInfo(
            index, info.token, info.pid, info.start_time, info.read_pos, info.lost, bool(info.asleep)
        )

    def abandoned_claims(self) -> list[tuple[int, int]]:
        """(index, pid) of each entry being claimed: a claim under way, or a claimer that died
        in the middle of it (then :meth:`abandon` frees it)."""
        info = ffi.new("struct sps_entry_info *")
        found = []
        for index in range(self.max_subscribers):
            if lib.sps_control_entry(self.struct, index, info) == lib.SPS_CLAIMING:
                found.append((index, int(info.pid)))
        return found

    def abandon(self, index: int, pid: int) -> bool:
        """Frees entry *index* if *pid* (dead) is still claiming it."""
        return bool(lib.sps_control_abandon(self.struct, index, pid))

    def entries(self) -> list[SubscriberInfo]:
        """Every taken entry."""
        found = (self.entry(i) for i in range(self.max_subscribers))
        return [e for e in found if e is not None]
