"""CI helper: shmpubsub objects left in /dev/shm and in the socket directories.

    python3 .ci/leftovers.py clean-stale   remove objects no live process uses (before the run)
    python3 .ci/leftovers.py check         exit 1 if any shmpubsub.* object is in /dev/shm (after the run)

Standard library only, so it runs with the machine's python3 before any venv exists.
"""

from __future__ import annotations

import glob
import os
import socket
import stat
import sys

PREFIX = "shmpubsub."
SHM_DIR = "/dev/shm"


def shm_objects() -> list[str]:
    return sorted(glob.glob(os.path.join(SHM_DIR, PREFIX + "*")))


def socket_dirs() -> list[str]:
    """Where the library may put its wake-up sockets (see shmpubsub.wakeup.socket_dir)."""
    dirs = [os.environ.get("SHMPUBSUB_RUNTIME_DIR", "")]
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg:
        dirs.append(os.path.join(xdg, "shmpubsub"))
    dirs.append(f"/tmp/shmpubsub-{os.geteuid()}")
    return [d for d in dict.fromkeys(dirs) if d and os.path.isdir(d)]


def sockets() -> list[str]:
    found = []
    for d in socket_dirs():
        for path in glob.glob(os.path.join(d, PREFIX + "*")):
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    found.append(path)
            except FileNotFoundError:
                pass
    return sorted(found)


def shm_in_use() -> set[str]:
    """Every /dev/shm path some process has open or mapped."""
    used: set[str] = set()
    for proc in glob.glob("/proc/[0-9]*"):
        try:
            for fd in os.listdir(f"{proc}/fd"):
                try:
                    used.add(os.readlink(f"{proc}/fd/{fd}"))
                except OSError:
                    pass
            with open(f"{proc}/maps") as maps:
                for line in maps:
                    if SHM_DIR in line:
                        used.add(line.split(None, 5)[-1].strip())
        except OSError:
            pass  # gone, or not ours to read
    return used


def socket_is_dead(path: str) -> bool:
    """True if nobody is bound to this datagram socket any more."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.connect(path)
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
    return False


def clean_stale() -> int:
    used = shm_in_use()
    for path in shm_objects():
        if path in used:
            print(f"leftovers: {path} is in use by a live process: left alone")
        else:
            print(f"leftovers: removing stale {path} (from an earlier run on this machine, not this one)")
            os.unlink(path)
    for path in sockets():
        if socket_is_dead(path):
            print(f"leftovers: removing stale socket {path}")
            os.unlink(path)
    return 0


def check() -> int:
    left = shm_objects()
    socks = sockets()
    for path in socks:
        print(f"leftovers: WARNING: socket left behind: {path}")
    if left:
        print(f"leftovers: FAIL: {len(left)} object(s) with the prefix {PREFIX!r} left in {SHM_DIR}:")
        for path in left:
            print(f"  {path}")
        return 1
    print(f"leftovers: OK: nothing with the prefix {PREFIX!r} in {SHM_DIR}")
    return 0


if __name__ == "__main__":
    modes = {"clean-stale": clean_stale, "check": check}
    if len(sys.argv) != 2 or sys.argv[1] not in modes:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(modes)}")
    sys.exit(modes[sys.argv[1]]())
