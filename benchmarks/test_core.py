"""Per-call cost of the data plane from Python, in one process (no contention for the cores).

``publish`` is timed one call per iteration. Receiving needs messages to be there, so each
round pre-publishes BATCH messages (untimed) and times draining them; the per-message figure is
in ``extra_info`` (and is the round's time divided by BATCH).

The batch calls are timed per call too, with the per-message figure in ``extra_info`` likewise:
``publish_many`` of a list of messages and of records laid end to end (``size=``), and
``try_receive_many`` draining BATCH messages (pre-published each round, untimed). A
``publish_many`` batch here carries at most 16 MiB, so at 1 MiB it holds 16 messages, not BATCH.
The list form first joins the messages into one buffer (one more copy, of the whole batch).
A ``try_receive_many`` batch holds at most 64 KiB of payload (the reader's scratch buffer):
16 messages of 4 KiB, and from 64 KiB on one message per call, as ``try_receive`` takes them
(``extra_info.calls_per_round``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

import shmpubsub as sps

SIZES = [64, 4096, 65536, 1 << 20]
BATCH = 256
BATCH_BYTES = 16 << 20  # the most a publish_many batch carries here


def _batch_for(size: int) -> int:
    return min(BATCH, BATCH_BYTES // size)


@pytest.fixture
def ring(topic: str, request: pytest.FixtureRequest) -> Iterator[tuple[sps.Publisher, sps.Subscriber]]:
    size: int = request.param
    with sps.Publisher(topic, slots=BATCH, slot_size=size) as pub, sps.Subscriber(topic) as sub:
        yield pub, sub


def _per_message(benchmark: pytest.FixtureRequest, batch: int) -> None:
    if benchmark.stats is None:  # type: ignore[attr-defined]  # --benchmark-disable: nothing measured
        return
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


@pytest.mark.parametrize("ring", SIZES, indirect=True, ids=lambda s: f"{s}B")
def test_publish_many_list(
    benchmark: pytest.FixtureRequest, ring: tuple[sps.Publisher, sps.Subscriber]
) -> None:
    pub, _ = ring
    count = _batch_for(pub.slot_size)
    messages = [bytes(pub.slot_size) for _ in range(count)]
    benchmark.pedantic(pub.publish_many, args=(messages,), rounds=50 if pub.slot_size < 65536 else 10)  # type: ignore[attr-defined]
    benchmark.extra_info["messages_per_call"] = count  # type: ignore[attr-defined]
    _per_message(benchmark, count)


@pytest.mark.parametrize("ring", SIZES, indirect=True, ids=lambda s: f"{s}B")
def test_publish_many_records(
    benchmark: pytest.FixtureRequest, ring: tuple[sps.Publisher, sps.Subscriber]
) -> None:
    pub, _ = ring
    size = pub.slot_size
    count = _batch_for(size)
    records = bytes(size * count)

    def publish() -> None:
        pub.publish_many(records, size=size)

    benchmark.pedantic(publish, rounds=50 if size < 65536 else 10)  # type: ignore[attr-defined]
    benchmark.extra_info["messages_per_call"] = count  # type: ignore[attr-defined]
    _per_message(benchmark, count)


@pytest.mark.parametrize("ring", SIZES, indirect=True, ids=lambda s: f"{s}B")
def test_try_receive_many(
    benchmark: pytest.FixtureRequest, ring: tuple[sps.Publisher, sps.Subscriber]
) -> None:
    pub, sub = ring
    records = bytes(pub.slot_size * _batch_for(pub.slot_size))
    calls = 0

    def fill() -> None:
        for _ in range(BATCH // _batch_for(pub.slot_size)):
            pub.publish_many(records, size=pub.slot_size)

    def drain() -> None:
        nonlocal calls
        receive_many = sub.try_receive_many
        taken = 0
        while taken < BATCH:
            got = len(receive_many(BATCH))
            if not got:
                raise AssertionError(f"only {taken} of {BATCH} messages there")
            taken += got
            calls += 1

    rounds = 50 if pub.slot_size < 65536 else 5
    benchmark.pedantic(drain, setup=fill, rounds=rounds)  # type: ignore[operator]
    assert sub.lost == 0
    _per_message(benchmark, BATCH)
    benchmark.extra_info["calls_per_round"] = calls / rounds  # type: ignore[attr-defined]
