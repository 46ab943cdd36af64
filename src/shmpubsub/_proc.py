"""Process identity: a pid plus its start time, so a reused pid cannot pass for a dead process."""

from __future__ import annotations


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
    dead but not yet reaped by its parent, counts as dead)."""
    stat = _stat(pid)
    return stat is not None and stat[1] == started and stat[0] not in (b"Z", b"X")
