"""The control plane: tiny wake-up datagrams over Unix domain sockets.

A wake-up carries no data and no meaning beyond "look at the ring": the sequence
numbers in shared memory are the truth. A lost, duplicated or spurious datagram can
cost a little latency or a spurious loop, never a message.

Sockets live in a private per-user directory (mode 0700, owned by the user, not a
symlink), so no other user can send to them or read them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import secrets
import socket
import stat
from collections.abc import Collection

from . import _proc
from ._core.control import Control
from ._core.wake import WakeSender, drain
from .errors import PermissionDenied, SegmentError, TooManySubscribers, descriptors_needed
from .names import PREFIX, socket_name
from .records import SubscriberInfo

log = logging.getLogger(__name__)

_WAKE = b"\x01"  # the byte sent carries no meaning (csrc/wake.c sends the same)
_MAX_LINKS = 64  # the default max_subscribers: each of those gets its own connected socket


def socket_dir() -> str:
    """This user's socket directory, created if missing: ``$SHMPUBSUB_RUNTIME_DIR``, else
    ``$XDG_RUNTIME_DIR/shmpubsub``, else ``/tmp/shmpubsub-<uid>``."""
    chosen = os.environ.get("SHMPUBSUB_RUNTIME_DIR")
    if chosen:
        _check_path(chosen)
    else:
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        chosen = os.path.join(xdg, "shmpubsub") if xdg and os.path.isabs(xdg) and os.path.isdir(xdg) else ""
        if not chosen or len(chosen.encode()) > MAX_SOCKET_DIR:
            chosen = f"/tmp/shmpubsub-{os.geteuid()}"
    with contextlib.suppress(FileExistsError):
        os.mkdir(chosen, 0o700)
    check_private_dir(chosen)
    return chosen


# A socket's path is DIR + "/" + PREFIX + 16 hex digits, and must fit sockaddr_un's 107 bytes.
MAX_SOCKET_DIR = 107 - len("/" + socket_name(0))


def _check_path(path: str) -> None:
    if not os.path.isabs(path) or len(path.encode()) > MAX_SOCKET_DIR:
        raise PermissionDenied(
            errno.EACCES,
            f"socket directory {path!r} must be an absolute path of at most {MAX_SOCKET_DIR} bytes",
        )


def check_private_dir(path: str) -> None:
    """Raises PermissionDenied unless *path* is a real directory owned by us with mode 0700
    (no group or other access): anything else could let another user spoof or snoop."""
    _check_path(path)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise PermissionDenied(errno.EACCES, f"socket directory {path!r} is not a directory")
    if st.st_uid != os.geteuid():
        raise PermissionDenied(errno.EACCES, f"socket directory {path!r} belongs to uid {st.st_uid}, not us")
    if st.st_mode & 0o077:
        raise PermissionDenied(
            errno.EACCES, f"socket directory {path!r} has mode {oct(st.st_mode & 0o777)}; it must be 0700"
        )


def unshared_socket_dir(control: Control) -> str | None:
    """Why the socket directory named in *control* cannot carry wake-ups between its publisher
    and us, or None if it can: it does not exist here, or, seen from another mount namespace
    (a container that shares /dev/shm), it is another directory than the publisher's under the
    same path. Within one mount namespace the path is what counts: a directory removed and made
    again is still the one the publisher sends to."""
    try:
        st = os.stat(control.socket_dir)
    except FileNotFoundError:
        return f"its socket directory {control.socket_dir} does not exist here"
    except OSError as e:
        return f"its socket directory {control.socket_dir} cannot be used here ({e.strerror})"
    elsewhere = control.mnt_ns is None or control.mnt_ns != _proc.namespace("mnt")
    if elsewhere and control.socket_dir_id is not None and (st.st_dev, st.st_ino) != control.socket_dir_id:
        return f"{control.socket_dir} here is another directory than its publisher's (not shared with it)"
    return None


class Waker:
    """The publisher's side: one datagram to each subscriber that asked for a wake-up. The
    sends are made in C (csrc/wake.c), by publish() itself; a send that failed comes back here,
    where a dead subscriber is reclaimed."""

    def __init__(self, control: Control, topic: str) -> None:
        self._control = control
        self._topic = topic
        # Made now, not at the first wake-up: a failure (out of descriptors) belongs here,
        # not in the middle of a publish.
        with descriptors_needed(f"topic {topic!r}: cannot make the publisher's wake-up socket"):
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)
        # C appends the token's 16 hex digits, as socket_name() does.
        prefix = os.path.join(control.socket_dir, PREFIX)
        self.sender = WakeSender(control, self._sock.fileno(), prefix, max_links())

    @property
    def sent(self) -> int:
        """Datagrams sent (a full queue counts: a wake-up is already pending there)."""
        return self.sender.sent

    @property
    def failed(self) -> int:
        """Sends that failed: a subscriber that died, mostly."""
        return self.sender.failed

    def wake_sleepers(self) -> None:
        for index, token, error in self.sender.wake():
            self._failed(index, token, error)

    def _failed(self, index: int, token: int, error: int) -> None:
        if error not in (errno.ECONNREFUSED, errno.ENOENT):
            why = f"{os.path.join(self._control.socket_dir, socket_name(token))}: {os.strerror(error)}"
            log.warning("topic %r: cannot wake subscriber %d (%s)", self._topic, index, why)
            return
        entry = self._control.entry(index)  # nobody is bound there: it died
        if entry is not None and entry.token == token:
            log.info("topic %r: subscriber pid %d is gone; reclaiming its entry", self._topic, entry.pid)
            reclaim(self._control, entry)

    def close(self) -> None:
        self.sender.close()
        self._sock.close()


def max_links() -> int:
    """How many sockets a publisher keeps connected to its subscribers: a send through one
    skips the path lookup a send by path makes each time (docs/architecture.md, "Why the sends
    are in C"). One descriptor each, so at most a sixteenth of the descriptors this process may
    open, and at most _MAX_LINKS; the subscribers beyond are woken by path."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return _MAX_LINKS if soft == resource.RLIM_INFINITY else min(_MAX_LINKS, soft // 16)


def reclaim(control: Control, entry: SubscriberInfo) -> bool:
    """Frees a dead subscriber's entry and removes its socket file, unless something is still
    bound to that socket (then the subscriber lives, whatever its entry says)."""
    path = os.path.join(control.socket_dir, socket_name(entry.token))
    if socket_alive(path):
        return False
    if not control.release(entry.index, entry.token, owner=False):
        return False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return True


def socket_alive(path: str) -> bool:
    """True if some process is bound to the Unix datagram socket at *path*. bind() creates
    and binds at once, so a refused connection means its owner is gone. Without a descriptor
    for the probe, the answer is yes: what cannot be judged is left alone."""
    try:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    except OSError:
        return True
    with probe:
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            return True  # not ours to judge: leave it
    return True


def sweep_dead_sockets(directory: str, dry_run: bool = False, skip: Collection[str] = ()) -> list[str]:
    """Removes (with *dry_run*, only lists) the sockets in *directory* with our prefix that
    nobody is bound to: their owners died without closing. A live socket is never touched
    (see socket_alive), nor anything that is not a socket, nor the paths in *skip*."""
    try:
        with descriptors_needed(f"cannot look for dead sockets in {directory}"):
            names = sorted(n for n in os.listdir(directory) if n.startswith(PREFIX))
    except FileNotFoundError:
        return []
    found: list[str] = []
    for name in names:
        path = os.path.join(directory, name)
        if path in skip:
            continue
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        if not stat.S_ISSOCK(mode):
            log.warning("%s: not a socket; left alone", path)
            continue
        if socket_alive(path):
            continue
        if not dry_run:
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except PermissionError as e:
                log.warning("%s: may not remove it: %s", path, e)
                continue
        found.append(path)
    return found


class WakeSocket:
    """A subscriber's side: its bound socket, registered in a control entry."""

    def __init__(self, control: Control, topic: str) -> None:
        directory = control.socket_dir
        try:
            check_private_dir(directory)
        except FileNotFoundError:  # the control segment names it: removed since, or garbage
            raise SegmentError(
                errno.ENOENT, f"topic {topic!r}: its socket directory {directory!r} does not exist"
            ) from None
        self._control = control
        self.token = secrets.randbits(64) | 1
        self.path = os.path.join(directory, socket_name(self.token))
        with descriptors_needed(f"topic {topic!r}: cannot make the subscriber's wake-up socket"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setblocking(False)
        try:
            try:
                self.sock.bind(self.path)
            except OSError as e:  # the directory's file system is full, say
                raise SegmentError(
                    e.errno or errno.EIO, f"topic {topic!r}: cannot make the wake-up socket {self.path}: {e}"
                ) from None
            pid = os.getpid()
            index = control.claim(self.token, pid, _proc.start_time(pid) or 0)
            if index is None:
                reap_dead_entries(control)
                index = control.claim(self.token, pid, _proc.start_time(pid) or 0)
            if index is None:
                raise TooManySubscribers(topic, control.max_subscribers)
        except BaseException:
            self._unbind()
            raise
        self.index = index

    def drain(self) -> None:
        """Discards pending wake-ups (they only ever mean: look at the ring)."""
        drain(self.sock.fileno())

    def wake_self(self) -> None:
        """Makes our descriptor readable (used when the topic ended after we armed)."""
        with contextlib.suppress(OSError):  # queue full (already readable), or socket gone
            self.sock.sendto(_WAKE, self.path)

    def close(self, owner: bool = True) -> None:
        """Closes the socket; its *owner* also frees the entry and removes the socket file
        (a fork child that inherited them must leave both to its parent)."""
        if owner:
            self._control.release(self.index, self.token, owner=True)
            self._unbind()
        else:
            self.sock.close()

    def _unbind(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def reap_dead_entries(control: Control) -> int:
    """Reclaims the entries (and sockets) of subscribers whose process is gone, and frees the
    entries of those that died in the middle of claiming one."""
    # pid 0: an entry claimed an instant ago, its pid not yet written.
    dead = [e for e in control.entries() if e.pid > 0 and not _proc.is_alive(e.pid, e.start_time)]
    freed = sum(
        control.abandon(index, pid) for index, pid in control.abandoned_claims() if not _proc.is_alive(pid, 0)
    )
    return freed + sum(reclaim(control, entry) for entry in dead)
