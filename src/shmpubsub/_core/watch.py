"""Directory watches (csrc/watch.c): a descriptor that turns readable when a name appears."""

from __future__ import annotations

import os

from ..errors import descriptors_needed
from .lib import lib


def dir_watch(directory: str) -> int:
    """An inotify descriptor (non-blocking, close-on-exec) watching *directory* for names that
    are created or moved into it; the caller reads its events and closes it."""
    with descriptors_needed(f"cannot watch {directory} for new topics"):
        fd: int = lib.sps_dir_watch(os.fsencode(directory))
        if fd < 0:
            raise OSError(-fd, f"cannot watch {directory}: {os.strerror(-fd)}")
    return fd
