"""The bridge's throughput and added latency against plain pyzmq PUB/SUB over loopback TCP.

    python benchmarks/bridge_bench.py [--count 20000] [--pings 2000]

Plain: a PUB socket in one process, a SUB in another. Bridge: a Publisher, `BridgeOut` and
`BridgeIn` in their own processes, and a Subscriber of the inbound bridge's local topic: shared
memory, TCP, shared memory, with two extra processes on the way. Latency is one way, measured
one message at a time (the receiver compares the send time in the payload with its own
CLOCK_MONOTONIC); throughput is messages received per second while the sender sends flat out
(both ends queue up to 1 000 000 messages, so nothing is dropped unless stated).
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import statistics
import struct
import time
import uuid
from typing import Any

import zmq

import shmpubsub as sps
from shmpubsub.bridge import BridgeIn, BridgeOut

STAMP = struct.Struct("<QQ")  # index, send time (ns)
HWM = 1_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_out(topic: str, address: str, stop: Any) -> None:
    with BridgeOut(topic, address, hwm=HWM) as bridge:
        bridge.run(stop_event=stop)


def run_in(topic: str, address: str, stop: Any) -> None:
    with BridgeIn(topic, address, local_name=topic + "-in", hwm=HWM) as bridge:
        bridge.run(stop_event=stop)


def plain_sender(address: str, size: int, count: int, pings: int, go: Any) -> None:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, HWM)
    pub.bind(address)
    go.wait()
    pad = bytes(size - STAMP.size)
    for i in range(pings):
        pub.send(STAMP.pack(i, time.perf_counter_ns()) + pad)
        time.sleep(0.0005)
    for i in range(count):
        pub.send(STAMP.pack(pings + i, time.perf_counter_ns()) + pad)
    time.sleep(1)
    pub.close(0)
    ctx.term()


def bridge_sender(topic: str, size: int, count: int, pings: int, go: Any, ready: Any, done: Any) -> None:
    slots = 1 << max(10, (count + pings).bit_length())
    with sps.Publisher(topic, slots=slots, slot_size=size) as pub:
        pad = bytes(size - STAMP.size)
        while not ready.is_set():  # until the bridges are connected and the local topic exists
            pub.publish(b"warm".ljust(size, b"\0"))
            time.sleep(0.01)
        go.wait()
        for i in range(pings):
            pub.publish(STAMP.pack(i, time.perf_counter_ns()) + pad)
            time.sleep(0.0005)
        for i in range(count):
            pub.publish(STAMP.pack(pings + i, time.perf_counter_ns()) + pad)
        done.wait(60)


def measure(receive: Any, count: int, pings: int) -> dict[str, float]:
    latencies: list[int] = []
    got = 0
    first = last = 0.0
    while True:
        data = receive()
        if data is None:
            break
        now = time.perf_counter_ns()
        index, sent = STAMP.unpack_from(data)
        if index < pings:
            latencies.append(now - sent)
            continue
        if got == 0:
            first = now
        got += 1
        last = now
        if index == pings + count - 1:
            break
    latencies.sort()
    return {
        "p50_us": statistics.median(latencies) / 1e3,
        "p99_us": latencies[int(len(latencies) * 0.99)] / 1e3,
        "msgs_per_s": (got - 1) / ((last - first) / 1e9) if got > 1 else 0.0,
        "received": got,
    }


def bench_plain(size: int, count: int, pings: int) -> dict[str, float]:
    mp = multiprocessing.get_context("spawn")
    address = f"tcp://127.0.0.1:{free_port()}"
    go = mp.Event()
    sender = mp.Process(target=plain_sender, args=(address, size, count, pings, go), daemon=True)
    sender.start()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, HWM)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(address)
    time.sleep(1.0)  # the slow joiner
    go.set()

    def receive() -> bytes | None:
        return sub.recv() if sub.poll(5000) else None

    try:
        return measure(receive, count, pings)
    finally:
        sender.join(10)
        sub.close(0)
        ctx.term()


def bench_bridge(size: int, count: int, pings: int) -> dict[str, float]:
    mp = multiprocessing.get_context("spawn")
    topic = f"bench-{uuid.uuid4().hex[:12]}"
    address = f"tcp://127.0.0.1:{free_port()}"
    go, ready, done, stop = mp.Event(), mp.Event(), mp.Event(), mp.Event()
    procs = [
        mp.Process(target=bridge_sender, args=(topic, size, count, pings, go, ready, done), daemon=True),
        mp.Process(target=run_out, args=(topic, address, stop), daemon=True),
        mp.Process(target=run_in, args=(topic, address, stop), daemon=True),
    ]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            sub = sps.Subscriber(topic + "-in")
            break
        except sps.TopicNotFound:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    ready.set()
    time.sleep(0.2)
    while sub.try_receive() is not None:
        pass  # the warm-up
    go.set()

    def receive() -> bytes | None:
        while True:
            try:
                msg = sub.receive(timeout=5)
            except (sps.ReceiveTimeout, sps.PublisherGone):
                return None
            if not msg.data.startswith(b"warm"):
                return msg.data

    try:
        result = measure(receive, count, pings)
        result["lost"] = sub.lost
        return result
    finally:
        sub.close()
        done.set()
        stop.set()
        for p in procs:
            p.join(10)
            if p.exitcode is None:
                p.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000, help="messages for the throughput run")
    parser.add_argument("--pings", type=int, default=2000, help="messages for the latency run")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 4096, 65536])
    args = parser.parse_args()
    print("| size | transport | latency p50 | latency p99 | throughput | received |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        count = args.count if size <= 4096 else args.count // 10
        for name, bench in (("pyzmq PUB/SUB", bench_plain), ("shmpubsub bridge", bench_bridge)):
            r = bench(size, count, args.pings)
            print(
                f"| {size} B | {name} | {r['p50_us']:.0f} µs | {r['p99_us']:.0f} µs | "
                f"{r['msgs_per_s']:,.0f} msg/s | {r['received']:.0f} of {count} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
