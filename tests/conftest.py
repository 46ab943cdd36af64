"""Shared fixtures: unique topic names, and a check that no test leaks a segment or a socket."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from shmpubsub.names import PREFIX, SHM_DIR
from shmpubsub.wakeup import socket_dir

SOCKET_DIR = socket_dir()


def leftovers() -> set[str]:
    """Every object with the project's prefix in /dev/shm and in the socket directory."""
    return {
        os.path.join(directory, name)
        for directory in (SHM_DIR, SOCKET_DIR)
        for name in os.listdir(directory)
        if name.startswith(PREFIX)
    }


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fails any test that leaves a new shmpubsub object in /dev/shm or the socket directory."""
    before = leftovers()
    yield
    leaked = leftovers() - before
    assert not leaked, f"test leaked shared-memory objects or sockets: {sorted(leaked)}"


@pytest.fixture
def topic() -> str:
    """A topic name no other test (or test run) uses."""
    return f"test-{uuid.uuid4().hex[:16]}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The whole suite must leave nothing behind either."""
    leaked = leftovers()
    if leaked:
        print(f"\nshmpubsub objects left behind: {sorted(leaked)}")
        session.exitstatus = 1
