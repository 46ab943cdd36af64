"""Per-call cost of the data plane from Python, in one process (no contention for the cores).

``publish`` is timed one call per iteration. Receiving needs messages to be there, so each
round pre-publishes BATCH messages (untimed) and times draining them; the per-message figure is
in ``extra_info`` (and is the round's time divided by BATCH).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

import shmpubsub as sps

SIZES = [64, 4096, 65536, 1 << 20]
BATCH = 256


@pytest.fixture
def ring(topic: str, request: pytest.FixtureRequest) -> Iterator[tuple[sps.Publisher, sps.Subscriber]]:
    size: int = request.param
    with sps.Publisher(topic, slots=BATCH, slot_size=size) as pub, sps.Subscriber(topic) as sub:
        yield pub, sub


def _per_message(benchmark: pytest.FixtureRequest, batch: int) -> None:
    stats = benchmark.stats.stats  # type: ignore[attr-defined]
    benchmark.extra_info["ns_per_message_median"] = round(stats.median / batch * 1e9, 1)  # type: ignore[attr-defined]


@pytest.mark.parametrize("ring", SIZES, indirect=True, ids=lambda s: f"{s}B")
def test_publish(benchmark: Callable[..., object], ring: tuple[sps.Publisher, sps.Subscriber]) -> None:
    pub, _ = ring
    payload = bytes(pub.slot_size)
    benchmark(pub.publish, payload)


@pytest.mark.parametrize("ring", SIZES, indirect=True, ids=lambda s: f"{s}B")
def test_try_receive(benchmark: pytest.FixtureRequest, ring: tuple[sps.Publisher, sps.Subscriber]) -> None:
    pub, sub = ring
    payload = bytes(pub.slot_size)

    def fill() -> None:
        for _ in range(BATCH):
            pub.publish(payload)

    def drain() -> None:
        receive = sub.try_receive
        for _ in range(BATCH):
            receive()

    benchmark.pedantic(drain, setup=fill, rounds=50 if pub.slot_size < 65536 else 5)  # type: ignore[operator]
    assert sub.lost == 0
    _per_message(benchmark, BATCH)


@pytest.mark.parametrize("ring", SIZES, indirect=True, ids=lambda s: f"{s}B")
def test_receive_into(benchmark: pytest.FixtureRequest, ring: tuple[sps.Publisher, sps.Subscriber]) -> None:
    pub, sub = ring
    payload = bytes(pub.slot_size)
    buffer = bytearray(pub.slot_size)

    def fill() -> None:
        for _ in range(BATCH):
            pub.publish(payload)

    def drain() -> None:
        receive_into = sub.receive_into
        for _ in range(BATCH):
            receive_into(buffer)

    benchmark.pedantic(drain, setup=fill, rounds=50 if pub.slot_size < 65536 else 5)  # type: ignore[operator]
    assert sub.lost == 0
    _per_message(benchmark, BATCH)


@pytest.mark.parametrize("ring", [64], indirect=True, ids=lambda s: f"{s}B")
def test_latest(benchmark: Callable[..., object], ring: tuple[sps.Publisher, sps.Subscriber]) -> None:
    pub, sub = ring
    pub.publish(bytes(64))
    benchmark(sub.latest)
