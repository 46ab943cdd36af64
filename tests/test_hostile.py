"""Hostile neighbours: other users, planted objects, and names that try path tricks.

/dev/shm is writable by every local user, so anyone may plant a file under a topic's name. A
publisher never uses, takes over or removes a segment that belongs to another user (not even as
root); a subscriber refuses a segment that anyone but its owner may write, and a control segment
that is not ours alone; on another user's topic it stays passive (it reads, and writes nothing of
theirs). Another user can neither open a private topic nor reach a subscriber's wake-up socket.
A subscriber cannot write the ring: it is mapped read-only from a read-only descriptor.

The tests that need another user switch to ``nobody`` in a forked child, which needs root; they
are skipped otherwise (FIFOs, directories and symlinks planted under a topic's name are in
test_misuse.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import mmap
import os
import pickle
import signal
import socket
import stat
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import shmpubsub as sps
from shmpubsub import admin, wakeup
from shmpubsub.names import CONTROL_SUFFIX, PREFIX, SHM_DIR, socket_name, validate_topic

NOBODY = 65534
TESTS = os.path.dirname(os.path.abspath(__file__))

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user (nobody)")


def shm_path(topic: str, suffix: str = "") -> str:
    return os.path.join(SHM_DIR, PREFIX + topic + suffix)


def as_nobody(action: Callable[[], Any]) -> Any:
    """Runs *action* in a forked child that has become user and group nobody, and returns what
    it returned; fails the test with the child's traceback if it raised."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            outcome = ("ok", action())
        except BaseException:
            outcome = ("error", traceback.format_exc())
        with os.fdopen(write_end, "wb") as out:
            pickle.dump(outcome, out)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as results:
        data = results.read()
    os.waitpid(pid, 0)
    kind, value = pickle.loads(data)
    if kind == "error":
        pytest.fail(f"the child acting as nobody failed:\n{value}")
    return value


def refused(call: Callable[[], Any]) -> str:
    """The name of the exception *call* raised ("" if none), for reporting from a child."""
    try:
        call()
    except Exception as e:
        return type(e).__name__
    return ""


@contextlib.contextmanager
def planted(path: str, data: bytes, uid: int, mode: int) -> Iterator[None]:
    """A file at *path* with *data*, owned by *uid* with *mode*, as another user would plant it;
    removed afterwards (the library must have left it alone)."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, data)
        os.fchown(fd, uid, uid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    try:
        yield
        assert os.path.exists(path), f"{path} was removed"
        with open(path, "rb") as f:
            assert f.read() == data, f"{path} was changed"
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def ours_in_shm(topic: str) -> set[str]:
    return {n for n in os.listdir(SHM_DIR) if n.startswith(PREFIX + topic)}


def dead_topic_bytes(topic: str) -> tuple[bytes, bytes]:
    """The data and control segments of a real topic, as its publisher would leave them if it
    were killed: a valid header, nobody holding the lock."""
    with sps.Publisher(topic, slots=4, slot_size=64) as pub:
        pub.publish(b"planted")
        with open(shm_path(topic), "rb") as f, open(shm_path(topic, CONTROL_SUFFIX), "rb") as c:
            return f.read(), c.read()


# -- names -------------------------------------------------------------------------------------------

PATH_TRICKS = [
    ".",
    "..",
    "../etc",
    "a/../../b",
    "/abs",
    "trailing/",
    "nul\0byte",
    "",
    "x" * 65,
    os.fsdecode(b"caf\xe9"),  # not UTF-8: a lone surrogate after decoding
    "x\udc80",
    "topic@ctl",  # would collide with a control segment's name
    "é",
]


@pytest.mark.parametrize("name", PATH_TRICKS, ids=ascii)
def test_names_that_try_path_tricks_are_rejected_before_anything_is_made(name: str) -> None:
    before = set(os.listdir(SHM_DIR)), set(os.listdir(wakeup.socket_dir()))
    for make in (sps.Publisher, sps.Subscriber, sps.Segment.create, sps.Segment.open, admin.topic_info):
        with pytest.raises(sps.InvalidArgument):
            make(name)
    assert set(os.listdir(wakeup.socket_dir())) == before[1]  # the run's own directory
    # /dev/shm is shared with whatever else runs here: what these names could have made is a
    # name that is no valid topic ("shmpubsub..", "shmpubsub.topic@ctl"), or a part of the
    # name cut at a NUL ("shmpubsub.nul").
    made = {n[len(PREFIX) :] for n in set(os.listdir(SHM_DIR)) - before[0] if n.startswith(PREFIX)}
    assert not {rest for rest in made if not _valid_topic(rest) or rest in name}


def _valid_topic(name: str) -> bool:
    try:
        validate_topic(name)
    except sps.InvalidArgument:
        return False
    return True


@pytest.mark.parametrize("name", [b"bytes", bytearray(b"x"), os.fsencode("caf\udce9")], ids=repr)
def test_names_as_bytes_are_rejected(name: object) -> None:
    with pytest.raises(sps.InvalidArgument, match="must be a str"):
        sps.Publisher(name)  # type: ignore[arg-type]


# -- the ring is read-only to subscribers ------------------------------------------------------------


def write_through_subscriber_mapping(topic: str) -> None:
    """Runs in a separate process that has nothing of the publisher's: attaches a subscriber,
    prints (JSON) how the ring is mapped and opened and what mprotect(PROT_WRITE) says, then
    writes one byte through the mapping, which must kill it with SIGSEGV."""
    sub = sps.Subscriber(topic, start="oldest")
    with open("/proc/self/maps") as lines:
        maps = [line.split() for line in lines if line.rstrip().endswith(shm_path(topic))]
    start, end = (int(x, 16) for x in maps[0][0].split("-"))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    rc = libc.mprotect(start, end - start, mmap.PROT_READ | mmap.PROT_WRITE)
    report = {
        "perms": [fields[1] for fields in maps],
        "mprotect": [rc, ctypes.get_errno()],
        "access_mode": os.O_ACCMODE & fcntl.fcntl(sub._segment.fileno(), fcntl.F_GETFL),
        "python_write": refused(lambda: sub._segment.mapping.__setitem__(0, 0)),
        "received": sub.receive(timeout=5).data.decode(),
    }
    print(json.dumps(report), flush=True)
    ctypes.memset(start + 4096, 0xFF, 8)  # slot 0's sequence word
    print("the write went through", flush=True)


def test_a_subscriber_cannot_write_the_ring(topic: str) -> None:
    """A subscriber's descriptor is O_RDONLY and its mapping PROT_READ, so the kernel refuses
    to make it writable (mprotect: EACCES), Python refuses item assignment, and a raw write
    through the mapping dies with SIGSEGV, leaving the ring intact for everyone."""
    with sps.Publisher(topic, slots=4, slot_size=64) as pub, sps.Subscriber(topic, start="oldest") as sub:
        pub.publish(b"intact")
        code = (
            f"import sys; sys.path.insert(0, {TESTS!r}); "
            f"import test_hostile; test_hostile.write_through_subscriber_mapping({topic!r})"
        )
        # Under AddressSanitizer the SIGSEGV must stay a SIGSEGV, not become ASan's abort.
        env = {**os.environ, "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":handle_segv=0"}
        run = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env
        )
        assert run.returncode == -signal.SIGSEGV, f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"
        report = json.loads(run.stdout.splitlines()[0])
        assert report["perms"] == ["r--s"], report  # one mapping of the ring, never writable
        assert report["mprotect"] == [-1, errno.EACCES], report
        assert report["access_mode"] == os.O_RDONLY, report
        assert report["python_write"] == "TypeError", report
        assert report["received"] == "intact"
        pub.publish(b"still intact")
        assert [sub.receive(timeout=1).data for _ in range(2)] == [b"intact", b"still intact"]


def test_segment_writable_by_others_is_refused(topic: str) -> None:
    """No publisher makes a ring that anyone but its owner may write, nor a control segment that
    anyone but its owner may use: either one was planted, or opened up, and is refused."""
    with sps.Publisher(topic, slots=4, slot_size=64) as pub:
        for path, mode in [
            (shm_path(topic), 0o620),
            (shm_path(topic), 0o602),
            (shm_path(topic, CONTROL_SUFFIX), 0o640),
        ]:
            original = stat.S_IMODE(os.stat(path).st_mode)
            os.chmod(path, mode)
            try:
                with pytest.raises(sps.PermissionDenied, match=f"mode {mode:#o}.*refused"):
                    sps.Subscriber(topic)
            finally:
                os.chmod(path, original)
            assert pub.subscribers == []
        with sps.Subscriber(topic) as sub:  # as the publisher made them: fine
            pub.publish(b"ok")
            assert sub.receive(timeout=1).data == b"ok"


# -- other users ---------------------------------------------------------------------------------------


@needs_root
def test_another_user_cannot_open_a_private_topic_or_reach_its_sockets(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=64) as pub, sps.Subscriber(topic) as sub:
        sockets = [os.path.join(wakeup.socket_dir(), socket_name(e.token)) for e in pub.subscribers]
        data, control = shm_path(topic), shm_path(topic, CONTROL_SUFFIX)

        def attack() -> dict[str, str]:
            for name in ("SHMPUBSUB_RUNTIME_DIR", "XDG_RUNTIME_DIR"):  # our own socket directory
                os.environ.pop(name, None)
            wake = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            return {
                "subscribe": refused(lambda: sps.Subscriber(topic)),
                "publish": refused(lambda: sps.Publisher(topic)),
                "read ring": refused(lambda: open(data, "rb")),
                "write ring": refused(lambda: open(data, "r+b")),
                "read control": refused(lambda: open(control, "rb")),
                "remove ring": refused(lambda: os.unlink(data)),
                "remove control": refused(lambda: os.unlink(control)),
                "list sockets": refused(lambda: os.listdir(os.path.dirname(sockets[0]))),
                "send wake-up": refused(lambda: wake.sendto(b"\x01", sockets[0])),
                "connect": refused(lambda: wake.connect(sockets[0])),
            }

        own_dir = f"/tmp/shmpubsub-{NOBODY}"
        existed = os.path.exists(own_dir)
        try:
            outcome = as_nobody(attack)
        finally:
            if not existed:
                subprocess.run(["rm", "-rf", own_dir], check=False)
        assert outcome.pop("subscribe") == outcome.pop("publish") == "PermissionDenied", outcome
        assert set(outcome.values()) == {"PermissionError"}, outcome
        pub.publish(b"undisturbed")
        assert sub.receive(timeout=1).data == b"undisturbed"
        assert pub.wakeups_sent == pub.wakeup_failures == 0


@needs_root
def test_another_users_reader_is_passive(topic: str) -> None:
    """On a topic shared read-only (mode 0o644), another user reads, but can neither write the
    ring nor use the control segment: it takes no entry and binds no socket."""
    with sps.Publisher(topic, slots=4, slot_size=64, mode=0o644) as pub:
        pub.publish(b"shared")
        before = set(os.listdir(wakeup.socket_dir()))

        def read() -> dict[str, str]:
            with sps.Subscriber(topic, start="oldest") as sub:
                return {
                    "received": sub.receive(timeout=5).data.decode(),
                    "fileno": refused(sub.fileno),
                    "write ring": refused(lambda: open(shm_path(topic), "r+b")),
                    "control": refused(lambda: open(shm_path(topic, CONTROL_SUFFIX), "rb")),
                }

        assert as_nobody(read) == {
            "received": "shared",
            "fileno": "ShmPubSubError",
            "write ring": "PermissionError",
            "control": "PermissionError",
        }
        assert pub.subscribers == [] and set(os.listdir(wakeup.socket_dir())) == before


@needs_root
def test_even_root_reads_another_users_topic_passively(topic: str) -> None:
    """A topic that belongs to another user gets no entry, socket or write from our subscriber,
    even when we are root and could."""
    with sps.Publisher(topic, slots=4, slot_size=64, mode=0o644) as pub:
        for path in (shm_path(topic), shm_path(topic, CONTROL_SUFFIX)):
            os.chown(path, NOBODY, NOBODY)  # as if nobody had published it
        pub.publish(b"theirs")
        with sps.Subscriber(topic, start="oldest") as sub:
            assert sub.receive(timeout=1).data == b"theirs"
            assert pub.subscribers == []
            with pytest.raises(sps.ShmPubSubError, match="another user"):
                sub.fileno()


@needs_root
@pytest.mark.parametrize("which", ["ring", "control"])
def test_publisher_leaves_another_users_dead_topic_alone(topic: str, which: str) -> None:
    """A dead topic (valid header, no lock holder) that belongs to another user is not taken
    over or removed, not even by root: PermissionDenied names its owner. Without the ring, a
    control segment of another user's is refused the same way, and our new ring goes again."""
    data, control = dead_topic_bytes(topic)
    path, content = (shm_path(topic), data) if which == "ring" else (shm_path(topic, CONTROL_SUFFIX), control)
    with planted(path, content, NOBODY, 0o644 if which == "ring" else 0o600):
        with pytest.raises(sps.PermissionDenied, match=f"uid {NOBODY}") as info:
            sps.Publisher(topic, slots=4, slot_size=64)
        assert isinstance(info.value, PermissionError)
        assert ours_in_shm(topic) == {os.path.basename(path)}  # no half-made topic of ours either


@needs_root
def test_subscriber_refuses_a_control_segment_of_another_user(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=64) as pub:
        control = shm_path(topic, CONTROL_SUFFIX)
        os.chown(control, NOBODY, NOBODY)
        try:
            with pytest.raises(sps.PermissionDenied, match=f"uid {NOBODY}"):
                sps.Subscriber(topic)
        finally:
            os.chown(control, 0, 0)
        assert pub.subscribers == []


@needs_root
def test_socket_directory_of_another_user_is_refused(topic: str, tmp_path: Any, monkeypatch: Any) -> None:
    theirs = tmp_path / "sockets"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, NOBODY, NOBODY)
    monkeypatch.setenv("SHMPUBSUB_RUNTIME_DIR", str(theirs))
    with pytest.raises(sps.PermissionDenied, match=f"belongs to uid {NOBODY}"):
        sps.Publisher(topic)
    assert not os.path.exists(shm_path(topic))
    # A publisher's directory that changes hands later is refused by its subscribers.
    os.chown(theirs, 0, 0)
    with sps.Publisher(topic) as pub:
        os.chown(theirs, NOBODY, NOBODY)
        try:
            with pytest.raises(sps.PermissionDenied, match=f"belongs to uid {NOBODY}"):
                sps.Subscriber(topic)
        finally:
            os.chown(theirs, 0, 0)
        assert pub.subscribers == [] and os.listdir(theirs) == []
