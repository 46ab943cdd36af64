"""The leak check (conftest.py) judges this run's own objects only: an object of another program
that appears during a test is ignored, and one of this run's that stays behind is caught."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from conftest import SOCKET_DIR, new_leaks, own_objects
from helpers import RUN_MARKER, RUN_MARKER_ENV, remove_topic, shm_path, unique_topic, write_raw

import shmpubsub as sps
from shmpubsub import wakeup
from shmpubsub.names import CONTROL_SUFFIX

# Another program's topic: made by a process with none of this run's environment (its own socket
# directory, no run marker), left for the duration of the test, then removed.
FOREIGN = """
import sys, time
import shmpubsub as sps
pub = sps.Publisher(sys.argv[1], slots=4, slot_size=64)
sub = sps.Subscriber(sys.argv[1])
sub.fileno()
print("ready", flush=True)
sys.stdin.readline()
sub.close()
pub.close()
"""


def test_the_session_has_its_own_socket_directory() -> None:
    assert wakeup.socket_dir() == SOCKET_DIR == os.environ["SHMPUBSUB_RUNTIME_DIR"]
    assert os.environ[RUN_MARKER_ENV] == RUN_MARKER
    assert RUN_MARKER in unique_topic()


def test_a_foreign_topic_appearing_during_a_test_is_ignored(tmp_path: os.PathLike[str]) -> None:
    name = f"foreign-{uuid.uuid4().hex[:12]}"
    env = {k: v for k, v in os.environ.items() if k != RUN_MARKER_ENV}
    env["SHMPUBSUB_RUNTIME_DIR"] = os.path.join(os.fspath(tmp_path), "sockets")
    before = own_objects()
    foreign = subprocess.Popen(
        [sys.executable, "-c", FOREIGN, name],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert foreign.stdout is not None and foreign.stdout.readline() == "ready\n"
        assert os.path.exists(shm_path(name)) and os.path.exists(shm_path(name, CONTROL_SUFFIX))
        assert os.listdir(env["SHMPUBSUB_RUNTIME_DIR"])  # its subscriber's socket
        assert new_leaks(before) == set()
    finally:
        foreign.communicate("\n", timeout=30)
    assert foreign.returncode == 0


def test_this_runs_leftovers_are_caught_and_others_are_not() -> None:
    ours, theirs = unique_topic(), f"test-{uuid.uuid4().hex[:16]}"  # theirs: no run marker
    before = own_objects()
    try:
        write_raw(shm_path(ours), b"left behind")
        write_raw(shm_path(ours, CONTROL_SUFFIX), b"")
        write_raw(shm_path(theirs), b"another program's")
        socket = os.path.join(SOCKET_DIR, "shmpubsub." + "f" * 16)
        write_raw(socket, b"")
        assert new_leaks(before) == {shm_path(ours), shm_path(ours, CONTROL_SUFFIX), socket}
    finally:
        remove_topic(ours)
        remove_topic(theirs)
        os.unlink(socket)
    assert new_leaks(before) == set()


@pytest.mark.creates_topics("example-*")
def test_a_declared_pattern_is_judged_too(request: pytest.FixtureRequest) -> None:
    patterns = tuple(p for mark in request.node.iter_markers("creates_topics") for p in mark.args)
    assert patterns == ("example-*",)
    name = f"example-{os.getpid()}"
    before = own_objects(patterns)
    with sps.Publisher(name, slots=4, slot_size=64):
        assert new_leaks(before, patterns) == {shm_path(name), shm_path(name, CONTROL_SUFFIX)}
    assert new_leaks(before, patterns) == set()
