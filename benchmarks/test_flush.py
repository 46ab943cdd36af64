"""Publish cost on a file-backed ring, with and without flushing (``flush_every``,
``flush_interval``), against the same ring in /dev/shm; what one ``flush()`` costs; and what
the slot checksums of ring files cost, by message size.

Each round publishes BATCH messages of 64 bytes, so a flush every N messages is paid in the
round as it is in real use; the per-message figure is in ``extra_info``. The ring file is in
pytest's tmp_path: the figures are those of that file system and disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import shmpubsub as sps
from shmpubsub._ffi import ffi, lib

BATCH = 1000
PAYLOAD = bytes(64)

POLICIES: dict[str, dict[str, Any]] = {
    "shm": {},
    "file, no flush": {"path": True},
    "file, flush_every=1000": {"path": True, "flush_every": 1000},
    "file, flush_every=100": {"path": True, "flush_every": 100},
    "file, flush_every=10": {"path": True, "flush_every": 10},
    "file, flush_interval=0.1": {"path": True, "flush_interval": 0.1},
    "file, flush_interval=0.01": {"path": True, "flush_interval": 0.01},
}


@pytest.fixture
def publisher(topic: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[sps.Publisher]:
    options = dict(POLICIES[request.param])
    if options.pop("path", False):
        options["path"] = tmp_path / "bench.ring"
    with sps.Publisher(topic, slots=4096, slot_size=64, **options) as pub:
        yield pub


@pytest.mark.parametrize("publisher", list(POLICIES), indirect=True)
def test_publish(benchmark: Any, publisher: sps.Publisher) -> None:
    def publish_batch() -> None:
        publish = publisher.publish
        for _ in range(BATCH):
            publish(PAYLOAD)

    benchmark.pedantic(publish_batch, rounds=30, warmup_rounds=2)
    stats = benchmark.stats.stats
    benchmark.extra_info["ns_per_message_mean"] = round(stats.mean / BATCH * 1e9, 1)
    benchmark.extra_info["ns_per_message_median"] = round(stats.median / BATCH * 1e9, 1)


@pytest.mark.parametrize("dirty", [1, 100], ids=lambda n: f"{n} messages")
def test_flush(benchmark: Any, topic: str, tmp_path: Path, dirty: int) -> None:
    """One flush() after *dirty* messages: msync of the ring, then of its header page."""
    with sps.Publisher(topic, slots=4096, slot_size=64, path=tmp_path / "bench.ring") as pub:

        def publish() -> None:
            for _ in range(dirty):
                pub.publish(PAYLOAD)

        benchmark.pedantic(pub.flush, setup=publish, rounds=50)


SIZES = [64, 4096, 65536]


@pytest.mark.parametrize("backing", ["shm", "file"])
@pytest.mark.parametrize("size", SIZES, ids=lambda n: f"{n} bytes")
def test_publish_by_size(benchmark: Any, topic: str, tmp_path: Path, size: int, backing: str) -> None:
    """Publishing without flushing: a ring file computes each message's checksum (CRC-32C)
    on top of what a /dev/shm ring does."""
    path = tmp_path / "bench.ring" if backing == "file" else None
    message = bytes(range(256)) * (size // 256) or bytes(size)
    with sps.Publisher(topic, slots=256, slot_size=size, path=path) as pub:

        def publish_batch() -> None:
            publish = pub.publish
            for _ in range(BATCH):
                publish(message)

        benchmark.pedantic(publish_batch, rounds=20, warmup_rounds=2)
    stats = benchmark.stats.stats
    benchmark.extra_info["ns_per_message_median"] = round(stats.median / BATCH * 1e9, 1)


@pytest.mark.parametrize("implementation", ["sps_crc32c", "sps_crc32c_portable"])
@pytest.mark.parametrize("size", SIZES, ids=lambda n: f"{n} bytes")
def test_crc32c(benchmark: Any, size: int, implementation: str) -> None:
    """The checksum alone, from Python (one cffi call each): SSE4.2 where the CPU has it, and
    the portable table."""
    data = ffi.from_buffer(bytes(size))
    crc = getattr(lib, implementation)
    benchmark(crc, 0, data, size)
    benchmark.extra_info["hardware"] = bool(lib.sps_crc32c_hardware())
