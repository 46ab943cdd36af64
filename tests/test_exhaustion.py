"""Resource exhaustion: a full /dev/shm, a full subscriber table, no file descriptor left.

Each is a clear error at the call that hit it (NoSpace, TooManySubscribers, TooManyOpenFiles),
leaves nothing half-made behind (no segment, no socket file, no control entry), and the topics
already open stay usable for everyone else.

A full /dev/shm is made in a private mount namespace (``unshare -m``) over a 1 MiB tmpfs, and the
descriptor limit is lowered in a forked child: neither touches the test process.
"""

from __future__ import annotations

import errno
import gc
import multiprocessing
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest
from helpers import RUN_MARKER, Children, get_result

import shmpubsub as sps
from shmpubsub._core.header import geometry
from shmpubsub.names import CONTROL_SUFFIX, PREFIX, SHM_DIR
from shmpubsub.wakeup import socket_dir

TESTS = os.path.dirname(os.path.abspath(__file__))


def _objects() -> set[str]:
    """The objects of this test run: those with the library's prefix in the run's own socket
    directory, and in /dev/shm those named with the run's marker (every topic here is)."""
    return {
        os.path.join(directory, name)
        for directory in (SHM_DIR, socket_dir())
        for name in os.listdir(directory)
        if name.startswith(PREFIX) and (directory != SHM_DIR or RUN_MARKER in name)
    }


def _wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def _asleep(pub: sps.Publisher, pid: int) -> bool:
    return any(e.pid == pid and e.asleep for e in pub.subscribers)


# -- /dev/shm full ---------------------------------------------------------------------------------

_TMPFS = "size=1m"
_MOUNT = f"mount -t tmpfs -o {_TMPFS} tmpfs /dev/shm"


def _private_shm_unavailable() -> str | None:
    """Why a private, tiny /dev/shm cannot be made here (None if it can)."""
    if shutil.which("unshare") is None:
        return "no unshare command"
    try:
        probe = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", _MOUNT],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare failed: {e}"
    if probe.returncode != 0:
        return f"cannot mount a tmpfs over /dev/shm in a private mount namespace: {probe.stderr.strip()}"
    return None


def _fill(path: str, leave: int) -> None:
    """Makes the file at *path* take all of /dev/shm's free space but *leave* bytes."""
    vfs = os.statvfs(SHM_DIR)
    free = vfs.f_bavail * vfs.f_frsize
    if os.path.exists(path):
        free += os.stat(path).st_blocks * 512
        os.unlink(path)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.posix_fallocate(fd, 0, free - leave)
    finally:
        os.close(fd)
    vfs = os.statvfs(SHM_DIR)
    assert vfs.f_bavail * vfs.f_frsize == leave


def _pages(nbytes: int) -> int:
    page = os.sysconf("SC_PAGE_SIZE")
    return -(-nbytes // page) * page


def full_shm_scenario() -> None:
    """Runs in a private mount namespace whose /dev/shm is a 1 MiB tmpfs (see the test below)."""
    live, new = "full-live", "full-new"
    ring_bytes = geometry(4, 4096)[1]
    live_objects = {PREFIX + live, PREFIX + live + CONTROL_SUFFIX}

    def ours() -> set[str]:
        return {n for n in os.listdir(SHM_DIR) if n.startswith(PREFIX)}

    filler = os.path.join(SHM_DIR, "filler")
    with sps.Publisher(live, slots=4, slot_size=64) as pub, sps.Subscriber(live) as sub:
        # Nothing left at all: the ring cannot be reserved.
        _fill(filler, leave=0)
        try:
            sps.Publisher(new, slots=4, slot_size=4096)
        except sps.NoSpace as e:
            assert e.errno == errno.ENOSPC and new in str(e), e
        else:
            raise AssertionError("a topic created on a full /dev/shm did not raise NoSpace")
        assert ours() == live_objects, ours()

        # Room for the ring, none for its control segment: the ring must go again.
        _fill(filler, leave=_pages(ring_bytes))
        try:
            sps.Publisher(new, slots=4, slot_size=4096)
        except sps.NoSpace:
            pass
        else:
            raise AssertionError("a topic whose control segment does not fit did not raise NoSpace")
        assert ours() == live_objects, ours()

        # The topic that exists keeps working, for old subscribers and new ones.
        pub.publish(b"still here")
        assert sub.receive(timeout=5).data == b"still here"
        with sps.Subscriber(live) as late:
            got: list[bytes] = []
            waiter = threading.Thread(target=lambda: got.append(late.receive(timeout=10).data))
            waiter.start()
            _wait_for(lambda: _asleep(pub, os.getpid()), 5, "the late subscriber to sleep")
            pub.publish(b"wake up")
            waiter.join(10)
            assert got == [b"wake up"], got

        os.unlink(filler)
        with sps.Publisher(new, slots=4, slot_size=4096) as again:
            assert again.publish(b"room again") == 0
    assert ours() == set(), ours()


def test_full_dev_shm_refuses_new_topics_and_spares_live_ones() -> None:
    """A topic that does not fit raises NoSpace at Publisher(...) (not SIGBUS at the first write:
    the segment's memory is reserved when it is sized), leaves no segment behind, also when only
    its control segment does not fit, and a live topic keeps publishing, attaching and waking."""
    why = _private_shm_unavailable()
    if why is not None:
        pytest.skip(why)
    code = (
        f"import sys; sys.path.insert(0, {TESTS!r}); "
        "import test_exhaustion; test_exhaustion.full_shm_scenario()"
    )
    in_namespace = ["unshare", "-m", "--propagation", "private", "sh", "-c", f'{_MOUNT} && exec "$0" -c "$1"']
    run = subprocess.run(
        [*in_namespace, sys.executable, code],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, f"the scenario failed (exit {run.returncode}):\n{run.stdout}\n{run.stderr}"


# -- too many subscribers ---------------------------------------------------------------------------


def _sleep_in_receive(topic: str, attached: Any, results: Any) -> None:
    try:
        with sps.Subscriber(topic) as sub:
            attached.set()
            results.put(sub.receive(timeout=30).data)
    except BaseException:
        results.put(("error", traceback.format_exc()))


def _try_to_attach(topic: str, results: Any) -> None:
    try:
        sps.Subscriber(topic).close()
        results.put("attached")
    except sps.TooManySubscribers as e:
        results.put(("refused", e.errno))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def test_too_many_subscribers_is_refused_while_the_others_sleep(topic: str) -> None:
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    with Children() as children, sps.Publisher(topic, max_subscribers=3) as pub, sps.Subscriber(topic) as me:
        sleepers = []
        for _ in range(2):
            attached = ctx.Event()
            sleepers.append(children.start(ctx, _sleep_in_receive, topic, attached, results))
            assert attached.wait(30), "a subscriber never attached"
        _wait_for(lambda: all(_asleep(pub, p.pid) for p in sleepers), 10, "both subscribers to sleep")
        entries, objects = pub.subscribers, _objects()

        for _ in range(20):
            t0 = time.monotonic()
            with pytest.raises(sps.TooManySubscribers) as info:
                sps.Subscriber(topic)
            assert time.monotonic() - t0 < 2.0  # refused at once, never after a wait
            assert info.value.errno == errno.EUSERS and topic in str(info.value)
        refused = children.start(ctx, _try_to_attach, topic, results)
        assert get_result(results, 30, "the refused subscriber") == ("refused", errno.EUSERS)
        children.join(refused, 10)

        assert _objects() == objects  # no socket file and no segment left by the refused ones
        assert pub.subscribers == entries  # no entry taken, none disturbed: both still asleep
        pub.publish(b"for everyone")
        assert [get_result(results, 10, "a sleeping subscriber") for _ in sleepers] == [b"for everyone"] * 2
        assert me.receive(timeout=5).data == b"for everyone"
        for proc in sleepers:
            children.join(proc, 10)
        with sps.Subscriber(topic) as newcomer:  # their entries are free again
            pub.publish(b"next")
            assert newcomer.receive(timeout=5).data == b"next"


# -- no file descriptor left ------------------------------------------------------------------------


def _free_descriptors_below(limit: int) -> int:
    free = 0
    for fd in range(limit):
        try:
            os.fstat(fd)
        except OSError:
            free += 1
    return free


def _leave_free(count: int) -> None:
    """Lowers RLIMIT_NOFILE so that exactly *count* more descriptors can be opened."""
    limit = 0
    while _free_descriptors_below(limit) < count or _fd_open(limit):
        limit += 1
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _sleep_until_killed(topic: str) -> None:
    with sps.Subscriber(topic) as sub:
        sub.receive()


def _descriptor_scenario(topic: str) -> dict[str, Any]:
    """Runs in a forked child: lowers the descriptor limit step by step under Subscriber(...)
    and Publisher(...), then publishes and wakes with no descriptor left at all."""
    normal = resource.getrlimit(resource.RLIMIT_NOFILE)
    refusals: dict[str, set[str]] = {"subscriber": set(), "publisher": set()}
    with sps.Publisher(topic, slots=8, slot_size=64) as pub, sps.Subscriber(topic) as sub:
        objects, entries = _objects(), pub.subscribers

        makers: dict[str, Callable[[], sps.Subscriber | sps.Publisher]] = {
            "subscriber": lambda: sps.Subscriber(topic),
            "publisher": lambda: sps.Publisher(topic + "-2", slots=2, slot_size=8),
        }
        for free in range(12):
            for kind, make in makers.items():
                # Garbage holding a descriptor (this child inherited the whole test session's)
                # must not free one in the middle of a step: that skips the step's refusal.
                gc.collect()
                gc.disable()
                _leave_free(free)
                try:
                    make().close()
                except sps.TooManyOpenFiles as e:
                    assert e.errno == errno.EMFILE and isinstance(e, OSError), e
                    refusals[kind].add(re.sub(r" '[^']*'", "", e.strerror.split(": ")[-2]))  # what failed
                finally:
                    resource.setrlimit(resource.RLIMIT_NOFILE, normal)
                    gc.enable()
                assert _objects() == objects, f"{kind}, {free} descriptors free: left {_objects() - objects}"
                assert pub.subscribers == entries

        # A subscriber killed in its sleep: waking it fails, and reclaiming it needs a descriptor.
        doomed = os.fork()
        if doomed == 0:
            try:
                _sleep_until_killed(topic)
            finally:
                os._exit(0)
        _wait_for(lambda: _asleep(pub, doomed), 10, "the doomed subscriber to sleep")
        os.kill(doomed, 9)
        os.waitpid(doomed, 0)

        # With no descriptor left at all, the topic still works, wake-ups included.
        got: list[bytes] = []
        waiter = threading.Thread(target=lambda: got.append(sub.receive(timeout=10).data))
        waiter.start()
        _wait_for(lambda: _asleep(pub, os.getpid()), 10, "the subscriber to sleep")
        _leave_free(0)
        try:
            pub.publish(b"no descriptor needed")
            waiter.join(10)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, normal)
        assert got == [b"no descriptor needed"], got
        assert pub.wakeup_failures == 1  # the dead sleeper's; reclaimed later, when it can be
    return {kind: sorted(found) for kind, found in refusals.items()}


def _descriptor_child(topic: str, results: Any) -> None:
    try:
        results.put(_descriptor_scenario(topic))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def test_out_of_descriptors_is_a_clear_error_at_every_step(topic: str) -> None:
    """Whichever descriptor a Subscriber(...) or Publisher(...) runs out at (shm_open, mmap, the
    socket, the epoll, the pidfd), it raises TooManyOpenFiles (an OSError with errno EMFILE),
    leaves no segment, socket file or control entry behind, and the handles already open keep
    publishing and waking; reclaiming a dead subscriber without a descriptor waits for later
    instead of failing the publish."""
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    with Children() as children:
        proc = children.start(ctx, _descriptor_child, topic, results)
        refusals = get_result(results, 60, "the child at its descriptor limit")
        children.join(proc, 10)
    assert set(refusals["subscriber"]) >= {
        "cannot open topic",
        "cannot map topic",
        "cannot make the subscriber's wake-up socket",
        "cannot make the subscriber's epoll descriptor",
        "cannot watch the publisher's process",
    }, refusals
    assert set(refusals["publisher"]) >= {
        "cannot create topic",
        "cannot map topic",
        "cannot make the publisher's wake-up socket",
    }, refusals


def test_a_full_socket_directory_is_a_clear_error(topic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """bind() of the wake-up socket failing (its file system full) is a SegmentError at
    Subscriber(...), leaving no entry behind; the topic serves the others."""

    def full(self: socket.socket, address: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with sps.Publisher(topic, max_subscribers=1) as pub:
        with monkeypatch.context() as patch:
            patch.setattr(socket.socket, "bind", full)
            with pytest.raises(sps.SegmentError, match="wake-up socket") as info:
                sps.Subscriber(topic)
            assert info.value.errno == errno.ENOSPC
        assert pub.subscribers == []
        with sps.Subscriber(topic) as sub:  # the one entry is free
            pub.publish(b"ok")
            assert sub.receive(timeout=1).data == b"ok"
