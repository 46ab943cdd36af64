"""One-way latency between two processes: ping-pong through two topics, RTT/2.

Two paths: ``spin`` (both sides busy-poll: each holds one of the machine's two cores, so
this is the best case and costs two full cores) and ``block`` (both sides sleep on their
wake-up sockets, ``spin_us=0``: every message pays a wake-up datagram and a scheduler
wake-up). pytest-benchmark's figures are round trips; ``extra_info`` has one-way medians.

``test_one_way_latency_floor_64B`` is the spinning path without the Python API: both ends call
the C core's publish and spin-and-read directly, two cffi calls per hop and no objects made.
The difference to ``spin`` is what the API's Python costs; the rest is the calls themselves and
the cache-line hand-off between the cores.
"""

from __future__ import annotations

import multiprocessing as mp
import uuid
from collections.abc import Iterator

import pytest

import shmpubsub as sps
from shmpubsub._ffi import ffi, lib

MODES = {"spin": 1e6, "block": 0.0}  # spin_us of both ends


def _echo(ping: str, pong: str, spin_us: float, ready: mp.synchronize.Event) -> None:
    with sps.Subscriber(ping, spin_us=spin_us) as sub, sps.Publisher(pong, slots=64, slot_size=64) as pub:
        ready.set()
        for msg in sub:
            pub.publish(msg.data)


@pytest.fixture(params=list(MODES))
def pingpong(request: pytest.FixtureRequest) -> Iterator[tuple[str, sps.Publisher, sps.Subscriber]]:
    mode: str = request.param
    spin_us = MODES[mode]
    ping, pong = f"bench-ping-{uuid.uuid4().hex[:8]}", f"bench-pong-{uuid.uuid4().hex[:8]}"
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    with sps.Publisher(ping, slots=64, slot_size=64) as pub:
        echo = ctx.Process(target=_echo, args=(ping, pong, spin_us, ready))
        echo.start()
        assert ready.wait(30)
        with sps.Subscriber(pong, spin_us=spin_us) as sub:
            pub.publish(bytes(64))  # prime the path
            sub.receive(timeout=10)
            try:
                yield mode, pub, sub
            finally:
                pub.close()
                echo.join(10)
                if echo.is_alive():
                    echo.kill()


def test_one_way_latency_64B(
    benchmark: pytest.FixtureRequest, pingpong: tuple[str, sps.Publisher, sps.Subscriber]
) -> None:
    mode, pub, sub = pingpong
    payload = bytes(64)
    receive = sub.receive

    def roundtrip() -> None:
        pub.publish(payload)
        receive(10)

    benchmark.pedantic(roundtrip, rounds=20000 if mode == "spin" else 5000, warmup_rounds=500)  # type: ignore[attr-defined]
    stats = benchmark.stats.stats  # type: ignore[attr-defined]
    benchmark.extra_info["mode"] = mode  # type: ignore[attr-defined]
    benchmark.extra_info["one_way_median_us"] = round(stats.median / 2 * 1e6, 2)  # type: ignore[attr-defined]
    benchmark.extra_info["one_way_p99_us"] = round(
        sorted(stats.data)[int(len(stats.data) * 0.99)] / 2 * 1e6, 2
    )  # type: ignore[attr-defined]
    assert sub.lost == 0


def _echo_calls(ping: str, pong: str, ready: mp.synchronize.Event) -> None:
    with sps.Subscriber(ping) as sub, sps.Publisher(pong, slots=64, slot_size=64) as pub:
        reader, writer = sub._reader._r, pub._writer._w
        scratch = sub._reader._scratch
        reader.spin_ns = 10_000_000
        ready.set()
        take, publish = lib.sps_take_wait, lib.sps_publish
        while True:
            n = take(reader)
            if n >= 0:
                publish(writer, scratch, n)
            elif lib.sps_reader_topic_closed(reader):
                return


def test_one_way_latency_floor_64B(benchmark: pytest.FixtureRequest) -> None:
    ping, pong = f"bench-ping-{uuid.uuid4().hex[:8]}", f"bench-pong-{uuid.uuid4().hex[:8]}"
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    with sps.Publisher(ping, slots=64, slot_size=64) as pub:
        echo = ctx.Process(target=_echo_calls, args=(ping, pong, ready))
        echo.start()
        try:
            assert ready.wait(30)
            with sps.Subscriber(pong) as sub:
                reader, writer = sub._reader._r, pub._writer._w
                reader.spin_ns = 10_000_000
                payload = ffi.new("char[]", 64)
                take, publish = lib.sps_take_wait, lib.sps_publish

                def roundtrip() -> None:
                    publish(writer, payload, 64)
                    while take(reader) < 0:
                        pass

                benchmark.pedantic(roundtrip, rounds=20000, warmup_rounds=500)  # type: ignore[attr-defined]
                assert sub.lost == 0
        finally:
            pub.close()
            echo.join(10)
            if echo.is_alive():
                echo.kill()
    stats = benchmark.stats.stats  # type: ignore[attr-defined]
    benchmark.extra_info["one_way_median_us"] = round(stats.median / 2 * 1e6, 2)  # type: ignore[attr-defined]
