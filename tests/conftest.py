"""Shared fixtures: unique topic names, segments written by hand, and a check that no test leaks a
segment or a socket.

The leak check judges only this run's own objects, so that another program using shmpubsub on the
same machine (another test run, a benchmark, a service) cannot make it fail:

- in /dev/shm, the objects whose names carry this run's marker (helpers.RUN_MARKER): every topic
  the suite creates is named through unique_topic() (the ``topic`` fixture included), and its
  control segment and file-backed stub carry the topic's name;
- the socket directory is the session's own: SHMPUBSUB_RUNTIME_DIR is set below, before anything
  asks the library for its socket directory, and every child process inherits it. Everything with
  the prefix in it is this run's;
- a test that runs a program naming its own topics (an example, the benchmark harness) names their
  patterns with ``@pytest.mark.creates_topics("frames-*")``: /dev/shm objects matching them are
  judged for that test too.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest
from helpers import (
    RUN_MARKER,
    SLOT_BYTES,
    SLOTS,
    TOTAL,
    Raw,
    live_segment_bytes,
    remove_topic,
    unique_topic,
    write_topic,
)

from shmpubsub import wakeup
from shmpubsub.names import PREFIX, SHM_DIR

SOCKET_DIR = tempfile.mkdtemp(prefix="shmpubsub-tests-")  # created 0700, as the library requires
os.environ["SHMPUBSUB_RUNTIME_DIR"] = SOCKET_DIR


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "creates_topics(*patterns): the test runs a program that names topics itself (glob patterns "
        "of the topic names); the leak check judges /dev/shm objects matching them too",
    )


def own_objects(patterns: tuple[str, ...] = ()) -> set[str]:
    """This run's objects: /dev/shm entries with the prefix and the run's marker (or a topic name
    matching one of *patterns*), and everything with the prefix in the session's socket directory."""
    shm = {
        os.path.join(SHM_DIR, name)
        for name in os.listdir(SHM_DIR)
        if name.startswith(PREFIX)
        and (RUN_MARKER in name or any(fnmatch.fnmatchcase(name[len(PREFIX) :], p) for p in patterns))
    }
    sockets = {os.path.join(SOCKET_DIR, name) for name in os.listdir(SOCKET_DIR) if name.startswith(PREFIX)}
    return shm | sockets


def new_leaks(before: set[str], patterns: tuple[str, ...] = ()) -> set[str]:
    """What this run has left since *before* (a value of own_objects(patterns))."""
    return own_objects(patterns) - before


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails any test that leaves a new object of this run in /dev/shm or the socket directory."""
    patterns = tuple(p for mark in request.node.iter_markers("creates_topics") for p in mark.args)
    before = own_objects(patterns)
    yield
    leaked = new_leaks(before, patterns)
    assert not leaked, f"test leaked shared-memory objects or sockets: {sorted(leaked)}"


@pytest.fixture
def topic() -> str:
    """A topic name no other test (or test run) uses."""
    return unique_topic()


@pytest.fixture
def raw(topic: str) -> Iterator[Raw]:
    """raw(data, control=None) writes the topic's segments by hand; whatever is left of them is
    removed after the test."""

    def write(data: bytes, control: bytes | None = None) -> str:
        return write_topic(topic, data, control)

    yield write
    remove_topic(topic)


@pytest.fixture(scope="module")
def template() -> tuple[bytes, bytes]:
    topic = unique_topic("test-template")
    data, control = live_segment_bytes(topic, slots=SLOTS, slot_size=SLOT_BYTES)
    assert len(data) == TOTAL
    return data, control


@pytest.fixture(scope="module")
def valid_bytes(template: tuple[bytes, bytes]) -> bytes:
    return template[0]


@pytest.fixture(scope="module")
def control_bytes(template: tuple[bytes, bytes]) -> bytes:
    return template[1]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The whole suite must leave nothing of its own behind either. What it did leave is
    reported (and fails the run), then removed all the same, with the session's socket
    directory: a failed run must not litter the machine. A socket something is still bound to
    is left alone, and so is its directory."""
    leaked = own_objects()
    if leaked:
        print(f"\nshmpubsub objects left behind: {sorted(leaked)}")
        session.exitstatus = 1
        for path in leaked - {os.path.join(SOCKET_DIR, n) for n in os.listdir(SOCKET_DIR)}:
            with contextlib.suppress(OSError):
                os.unlink(path)  # this run's segments in /dev/shm
        wakeup.sweep_dead_sockets(SOCKET_DIR)
    if not os.listdir(SOCKET_DIR):
        shutil.rmtree(SOCKET_DIR, ignore_errors=True)
