"""Wake-up datagrams (csrc/wake.c): the publisher's sends, and a subscriber's drain."""

from __future__ import annotations

import os

from ..errors import InvalidArgument
from .control import Control
from .lib import ffi, lib


class WakeSender:
    """The publisher's wake-up sender: after a publish that finds sleepers, the writer sends
    each a datagram itself, in the same C call. Sends that fail come back here."""

    __slots__ = ("_control", "struct")

    def __init__(self, control: Control, fd: int, prefix: str, max_links: int) -> None:
        if not 0 <= max_links <= 2**32 - 1:
            raise InvalidArgument(f"max_links must be from 0 to 2**32 - 1, not {max_links}")
        self._control = control  # its struct must outlive ours, which points to it
        #: The C handle (``struct sps_waker``), for the writer that sends through it.
        self.struct = ffi.new("struct sps_waker *")
        if lib.sps_waker_init(self.struct, control.struct, fd, prefix.encode(), max_links) != lib.SPS_OK:
            raise InvalidArgument(f"socket path prefix {prefix!r} leaves no room for a token")

    @property
    def links(self) -> int:
        """Sockets kept connected to a subscriber each."""
        return int(self.struct.links_open)

    def close(self) -> None:
        """Closes the connected sockets; only once the control handle is closed (no wake-up
        can then be in flight)."""
        lib.sps_waker_close(self.struct)

    @property
    def sent(self) -> int:
        return int(self.struct.sent)

    @property
    def failed(self) -> int:
        return int(self.struct.failed)

    def wake(self) -> list[tuple[int, int, int]]:
        """Wakes the sleepers; (entry index, token, errno) of each send that failed, here or
        in an earlier publish, each reported once."""
        count = lib.sps_wake(self.struct)
        failures = [(int(f.index), int(f.token), int(f.error)) for f in self.struct.failures[0:count]]
        self.struct.failure_count = 0
        return failures


def drain(fd: int) -> int:
    """Discards the datagrams waiting in a socket: their count."""
    count: int = lib.sps_drain(fd)
    if count < 0:
        raise OSError(-count, os.strerror(-count))
    return count
