"""Fork (a child's copies cannot publish nor remove) and permissions (mode, read-only opens)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from contextlib import suppress

import pytest
from helpers import remove_topic, shm_path

import shmpubsub as sps
from shmpubsub._core.header import geometry

# -- fork ------------------------------------------------------------------------------------------


def test_fork_child_cannot_publish_and_does_not_remove(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"before fork")
        pid = os.fork()
        if pid == 0:  # the child: report through the exit status only
            status = 10
            try:
                try:
                    pub.publish(b"from child")
                except sps.ClosedError as e:
                    status = 0 if "fork" in str(e) else 11
                else:
                    status = 12
            finally:
                os._exit(status)
        _, wait_status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(wait_status) == 0
        assert os.path.exists(shm_path(topic))
        assert not pub.closed
        assert pub.publish(b"after fork") == 1
        assert [(m.seq, m.data) for m in iter(sub.try_receive, None)] == [
            (0, b"before fork"),
            (1, b"after fork"),
        ]
        with pytest.raises(sps.TopicExists):  # the parent still holds the single-writer lock
            sps.Publisher(topic, slots=4, slot_size=16)
    assert not os.path.exists(shm_path(topic))


def test_fork_child_does_not_keep_the_lock_alive(topic: str) -> None:
    """The publisher dies; the child it forked lives on. The topic must still be claimable."""
    code = f"""
        import os, sys, time
        import shmpubsub as sps
        pub = sps.Publisher({topic!r}, slots=4, slot_size=16)
        pub.publish(b"x")
        if os.fork() == 0:
            # fork() has returned here, so the at-fork handlers have run: report in.
            print(os.getpid(), flush=True)
            time.sleep(30)
            os._exit(0)
        time.sleep(60)
    """
    grandchild = 0
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True
    ) as parent:
        try:
            assert parent.stdout is not None
            grandchild = int(parent.stdout.readline())
            os.kill(parent.pid, signal.SIGKILL)
            parent.wait(timeout=10)
            os.kill(grandchild, 0)  # still alive, holding whatever it inherited
            with sps.Publisher(topic, slots=4, slot_size=16) as pub:
                assert pub.publish(b"taken over") == 0
        finally:
            if parent.poll() is None:
                parent.kill()
            if grandchild:
                with suppress(ProcessLookupError):
                    os.kill(grandchild, signal.SIGKILL)
            remove_topic(topic)


# -- permissions -----------------------------------------------------------------------------------


def test_segment_open_is_read_only(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=8) as pub:
        pub.publish(b"x")
        seg = sps.Segment.open(topic)
        try:
            assert not seg.writable
            mem = seg.map()
            assert len(mem) == seg.nbytes == geometry(4, 8)[1]
            with pytest.raises(TypeError):
                mem[0] = 0
            assert "ro" in repr(seg)
        finally:
            seg.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another user")
@pytest.mark.parametrize(("mode", "expected"), [(0o600, "denied"), (0o644, "read"), (0o640, "denied")])
def test_other_user_access_follows_mode(topic: str, mode: int, expected: str) -> None:
    nobody = 65534
    with sps.Publisher(topic, slots=4, slot_size=8, mode=mode) as pub:
        pub.publish(b"shared")
        pid = os.fork()
        if pid == 0:
            status = 10
            try:
                os.setgroups([])
                os.setgid(nobody)
                os.setuid(nobody)
                try:
                    with sps.Subscriber(topic, start="oldest") as sub:
                        status = 0 if sub.try_receive() == sps.Message(b"shared", 0) else 11
                except sps.PermissionDenied as e:
                    status = 1 if isinstance(e, PermissionError) else 12
            finally:
                os._exit(status)
        _, wait_status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(wait_status) == (0 if expected == "read" else 1)
