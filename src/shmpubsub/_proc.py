"""Process identity: a pid plus its start time, so a reused pid cannot pass for a dead process."""

from __future__ import annotations

import os


def _stat(pid: int) -> tuple[bytes, int] | None:
    """(state, start time in clock ticks since boot) from ``/proc/PID/stat``, or None if gone."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[0], int(fields[19])


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22), or None if gone."""
    stat = _stat(pid)
    return None if stat is None else stat[1]


def is_alive(pid: int, started: int) -> bool:
    """True if process *pid* is the one that started at *started* and has not exited (a zombie,
    dead but not yet reaped by its parent, counts as dead). Without /proc (or with a start time
    of 0: unknown), only whether some process has that pid: unknown is never taken for dead."""
    stat = _stat(pid)
    if stat is None:
        return not _PROC_READABLE and _exists(pid)
    if stat[0] in (b"Z", b"X"):
        return False
    return started == 0 or stat[1] == started


def _exists(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, but not ours to signal
    return True


_PROC_READABLE = _stat(os.getpid()) is not None


_NO_BOOT_ID = bytes(16)


def boot_id() -> bytes:
    """This boot's 16-byte id (``/proc/sys/kernel/random/boot_id``): a file written in the same
    boot cannot have lost anything in the page cache. All zeros if unknown (never trusted)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            return bytes.fromhex(f.read().decode().strip().replace("-", ""))
    except (OSError, ValueError):
        return _NO_BOOT_ID


def namespace(kind: str) -> int:
    """This process's namespace of *kind* ("pid", "mnt"): the inode of /proc/self/ns/KIND, which
    is the same for every process in it; 0 if it cannot be read."""
    try:
        return os.stat(f"/proc/self/ns/{kind}").st_ino
    except OSError:
        return 0
