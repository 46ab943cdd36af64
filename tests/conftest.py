"""Shared fixtures: unique topic names, and a check that no test leaks a segment."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from shmpubsub.names import PREFIX, SHM_DIR


def leftovers() -> set[str]:
    """Every object with the project's prefix in /dev/shm."""
    return {name for name in os.listdir(SHM_DIR) if name.startswith(PREFIX)}


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fails any test that leaves a new shmpubsub object in /dev/shm behind."""
    before = leftovers()
    yield
    leaked = leftovers() - before
    for name in leaked:  # clean up so one leak does not fail every later test
        os.unlink(os.path.join(SHM_DIR, name))
    assert not leaked, f"test leaked shared-memory objects: {sorted(leaked)}"


@pytest.fixture
def topic() -> str:
    """A topic name no other test (or test run) uses."""
    return f"test-{uuid.uuid4().hex[:16]}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The whole suite must leave nothing behind either."""
    leaked = leftovers()
    if leaked:
        print(f"\nshmpubsub objects left in {SHM_DIR}: {sorted(leaked)}")
        session.exitstatus = 1
