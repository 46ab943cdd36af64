"""When the zero-copy view pays: per-message cost of try_receive, receive_into and view, one process.

Each round publishes BATCH messages (untimed), then times draining them three ways; the
per-message figure is in ``extra_info`` (the round's median divided by BATCH):

- ``try_receive``: two copies (into the subscriber's buffer, then into the returned bytes);
- ``receive_into``: one copy, into a preallocated buffer;
- ``view``: no copy (the block does nothing with the data, so this is the protocol's cost);
- ``view_sum`` / ``receive_into_sum``: the same, with a consumer that reads every byte once
  (numpy sums the payload as uint64 words), which is what a real consumer of a large message does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

import shmpubsub as sps

SIZES = [64, 4096, 16384, 65536, 1 << 20]
BATCH = 256


@pytest.fixture
def ring(topic: str, request: pytest.FixtureRequest) -> Iterator[tuple[sps.Publisher, sps.Subscriber]]:
    size: int = request.param
    with sps.Publisher(topic, slots=BATCH, slot_size=size) as pub, sps.Subscriber(topic) as sub:
        yield pub, sub


def _run(
    benchmark: pytest.FixtureRequest, pub: sps.Publisher, sub: sps.Subscriber, drain: Callable[[], None]
) -> None:
    payload = bytes(pub.slot_size)

    def fill() -> None:
        for _ in range(BATCH):
            pub.publish(payload)

    benchmark.pedantic(drain, setup=fill, rounds=50 if pub.slot_size < 65536 else 10)  # type: ignore[operator]
    assert sub.lost == 0
    stats = benchmark.stats.stats  # type: ignore[attr-defined]
    benchmark.extra_info["ns_per_message_median"] = round(stats.median / BATCH * 1e9, 1)  # type: ignore[attr-defined]


_sizes = pytest.mark.parametrize("ring", SIZES, indirect=True, ids=lambda s: f"{s}B")


@_sizes
def test_try_receive(benchmark: pytest.FixtureRequest, ring: tuple[sps.Publisher, sps.Subscriber]) -> None:
    pub, sub = ring

    def drain() -> None:
        receive = sub.try_receive
        for _ in range(BATCH):
            receive()

    _run(benchmark, pub, sub, drain)


@_sizes
def test_receive_into(benchmark: pytest.FixtureRequest, ring: tuple[sps.Publisher, sps.Subscriber]) -> None:
    pub, sub = ring
    buffer = bytearray(pub.slot_size)

    def drain() -> None:
        receive_into = sub.receive_into
        for _ in range(BATCH):
            receive_into(buffer)

    _run(benchmark, pub, sub, drain)


@_sizes
def test_view(benchmark: pytest.FixtureRequest, ring: tuple[sps.Publisher, sps.Subscriber]) -> None:
    pub, sub = ring

    def drain() -> None:
        view = sub.view
        for _ in range(BATCH):
            with view():
                pass

    _run(benchmark, pub, sub, drain)


@_sizes
def test_receive_into_sum(
    benchmark: pytest.FixtureRequest, ring: tuple[sps.Publisher, sps.Subscriber]
) -> None:
    pub, sub = ring
    buffer = np.empty(pub.slot_size // 8, dtype=np.uint64)

    def drain() -> None:
        receive_into, total = sub.receive_into, np.add.reduce
        for _ in range(BATCH):
            receive_into(buffer)
            total(buffer)

    _run(benchmark, pub, sub, drain)


@_sizes
def test_view_sum(benchmark: pytest.FixtureRequest, ring: tuple[sps.Publisher, sps.Subscriber]) -> None:
    pub, sub = ring

    def drain() -> None:
        view, frombuffer, total = sub.view, np.frombuffer, np.add.reduce
        for _ in range(BATCH):
            with view() as v:
                total(frombuffer(v.data, np.uint64))

    _run(benchmark, pub, sub, drain)
