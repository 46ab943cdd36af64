"""Child-process bodies shared by the wake-up tests: subscribers that stream, poll, sleep or idle
until killed, and a publisher that idles until killed.

They live at a module's top level because the "spawn" start method pickles a target by module
and name; results come back through the queues and events passed in.
"""

from __future__ import annotations

import time
import traceback
from typing import Any

from helpers import numbered

from shmpubsub import Publisher, PublisherGone, Subscriber


def stream_subscriber(
    topic: str, n: int, spin_us: float | None, topic_ready: Any, attached: Any, received: Any, results: Any
) -> None:
    """Takes n messages with receive() (no time-out), checking each, publishing its progress in
    *received*; then expects the end of the stream."""
    try:
        if not topic_ready.wait(30):
            results.put(("error", "the topic was never created"))
            return
        options: dict[str, Any] = {} if spin_us is None else {"spin_us": spin_us}
        with Subscriber(topic, **options) as sub:
            attached.set()
            errors: list[tuple[int, int, bytes]] = []
            for i in range(n):
                msg = sub.receive()
                if (msg.seq, msg.data) != (i, numbered(i)) and len(errors) < 5:
                    errors.append((i, msg.seq, msg.data[:16]))
                received.value = i + 1
            try:
                extra = sub.receive()
                reason = f"unexpected extra message {extra!r}"
            except PublisherGone as e:
                reason = e.reason
            results.put(("done", received.value, sub.lost, errors, reason, sub.end_reason))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def busy_poller(topic: str, n: int, attached: Any, results: Any) -> None:
    """Only ever polls with try_receive() (never receive(), never fileno()) until it is past n."""
    try:
        with Subscriber(topic) as sub:
            attached.set()
            got = 0
            deadline = time.monotonic() + 30
            while sub.next_seq < n:
                if sub.try_receive() is not None:
                    got += 1
                elif time.monotonic() > deadline:
                    break
            results.put(("done", got, sub.lost, sub.next_seq))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def poll_forever(topic: str, attached: Any) -> None:
    """Attaches and busy-polls until killed (never asks for a wake-up)."""
    sub = Subscriber(topic)  # never closed: this process is SIGKILLed
    attached.set()
    while True:
        sub.try_receive()


def sleep_forever(topic: str, attached: Any) -> None:
    """Attaches, then blocks in receive() until killed."""
    sub = Subscriber(topic)  # never closed: this process is SIGKILLed
    attached.set()
    sub.receive()


def receive_forever(topic: str, attached: Any) -> None:
    """Attaches, then blocks in receive() again after every message, until killed."""
    sub = Subscriber(topic, spin_us=0)  # never closed: this process is SIGKILLed
    attached.set()
    while True:
        sub.receive()


def attach_and_idle(topic: str, attached: Any) -> None:
    """Attaches and sleeps (not in receive) until killed."""
    sub = Subscriber(topic)  # never closed: this process is SIGKILLed
    attached.set()
    time.sleep(120)
    sub.close()


def doomed_publisher(topic: str, k: int, ready: Any, go: Any, published: Any) -> None:
    """Creates the topic, publishes k messages when told, then idles until SIGKILLed."""
    pub = Publisher(topic)  # never closed: this process is SIGKILLed
    ready.set()
    if go.wait(30):
        for i in range(k):
            pub.publish(numbered(i))
        published.set()
    time.sleep(120)
    pub.close()


def drain_until_gone(topic: str, mode: str, k: int, attached: Any, results: Any) -> None:
    """Receives (by receive() or by iteration) until the publisher is gone; reports when that
    was noticed, what was received and why the stream ended."""
    try:
        with Subscriber(topic) as sub:
            attached.set()
            got: list[int] = []
            reason: str | None = None
            try:
                if mode == "iterate":
                    for msg in sub:
                        assert msg.data == numbered(msg.seq)
                        got.append(msg.seq)
                else:
                    while True:
                        msg = sub.receive()
                        assert msg.data == numbered(msg.seq)
                        got.append(msg.seq)
            except PublisherGone as e:
                reason = e.reason
            noticed = time.monotonic()
            results.put(("gone", noticed, got, reason, sub.end_reason, sub.lost))
    except BaseException:
        results.put(("error", traceback.format_exc()))
