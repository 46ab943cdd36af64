"""The README's demo: one publisher and two subscribers, each in its own process."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import time
from multiprocessing.synchronize import Event

from .publisher import Publisher
from .subscriber import Subscriber


def _subscribe(topic: str, label: str, ready: Event) -> None:
    with Subscriber(topic) as sub:
        ready.set()
        received = 0
        for msg in sub:  # sleeps between messages; ends when the publisher closes
            received += 1
            print(f"  [{label}] seq={msg.seq:<3} {msg.data.decode()}", flush=True)
        print(f"  [{label}] publisher {sub.end_reason}: received {received}, lost {sub.lost}", flush=True)


def run(count: int = 10, interval: float = 0.1) -> int:
    """Publishes *count* price ticks to two subscriber processes, which print them.
    Returns 0 if both subscribers finished cleanly, else 1."""
    topic = f"demo-{os.getpid()}"
    ctx = mp.get_context("spawn")  # open by name: works without fork
    with Publisher(topic, slots=64, slot_size=256) as pub:
        print(f"publisher (pid {os.getpid()}) created topic {topic!r}")
        readies = [ctx.Event() for _ in range(2)]
        subs = [
            ctx.Process(target=_subscribe, args=(topic, f"subscriber {i + 1}", ready))
            for i, ready in enumerate(readies)
        ]
        for proc in subs:
            proc.start()
        for ready in readies:
            ready.wait(30)
        price = 100.0
        for i in range(count):
            price += random.uniform(-1, 1)
            seq = pub.publish(f"tick {i}: price={price:.2f}".encode())
            print(f"publisher: seq={seq} price={price:.2f}", flush=True)
            time.sleep(interval)
    for proc in subs:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join()
    print("publisher closed the topic; all done")
    return 0 if all(proc.exitcode == 0 for proc in subs) else 1
