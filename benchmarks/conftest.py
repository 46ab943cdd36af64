"""Benchmark fixtures. Run with ``pytest benchmarks/`` (not part of the default test run)."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def topic() -> str:
    return f"bench-{uuid.uuid4().hex[:16]}"
