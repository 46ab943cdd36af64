"""Directory watches (csrc/watch.c): a descriptor that turns readable when a name appears."""

from __future__ import annotations

import errno
import os

from ..errors import SegmentError, descriptors_needed
from .lib import lib


def dir_watch(directory: str) -> int:
    """An inotify descriptor (non-blocking, close-on-exec) watching *directory* for names that
    are created or moved into it; the caller reads its events and closes it. Raises
    FileNotFoundError if the directory does not exist, TooManyOpenFiles when out of descriptors
    or of inotify instances, SegmentError for other refusals (out of inotify watches...)."""
    what = f"cannot watch {directory} for new topics"
    limits = "out of descriptors, or of inotify instances: fs.inotify.max_user_instances"
    with descriptors_needed(f"{what} ({limits})"):
        fd: int = lib.sps_dir_watch(os.fsencode(directory))
        if fd == -errno.ENOENT:
            raise FileNotFoundError(errno.ENOENT, f"{directory} does not exist")
        if fd in (-errno.EMFILE, -errno.ENFILE):
            raise OSError(-fd, os.strerror(-fd))
    if fd == -errno.ENOSPC:
        raise SegmentError(errno.ENOSPC, f"{what}: out of inotify watches (fs.inotify.max_user_watches)")
    if fd < 0:
        raise SegmentError(-fd, f"{what}: {os.strerror(-fd)}")
    return fd
