"""shmpubsub itself: Publisher.publish / publish_many, and Subscriber.receive / receive_many /
view."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, ClassVar

from ..wire import MIN_SIZE, depth_for
from .base import Receiver, RunEnv, Sender, Transport


class _Seen(bytes):
    """What a zero-copy receiver touched of a message: its first bytes (the number), and its
    length as len()."""

    length: int

    def __new__(cls, head: Any, length: int) -> _Seen:
        seen = super().__new__(cls, head)
        seen.length = length
        return seen

    def __len__(self) -> int:
        return self.length


class _SpsSender(Sender):
    def __init__(self, spec: dict[str, Any], receivers: int) -> None:
        import shmpubsub as sps

        self.pub = sps.Publisher(
            spec["topic"], slots=spec["slots"], slot_size=spec["slot_size"], max_subscribers=max(8, receivers)
        )
        self.send = self.pub.publish  # type: ignore[method-assign,assignment]
        publish_many = self.pub.publish_many

        def send_batch(records: bytearray, size: int) -> None:
            publish_many(records, size=size)

        self.send_batch = send_batch  # type: ignore[method-assign]

    def close(self) -> None:
        self.pub.close()


class _SpsReceiver(Receiver):
    def __init__(self, spec: dict[str, Any], mode: str, spin_us: float) -> None:
        import shmpubsub as sps

        self.sub = sps.Subscriber(spec["topic"], start="next", spin_us=spin_us)
        self._retracted = 0
        self._sample: bytes | None = None
        if mode == "view":
            # Zero-copy: the message is touched in its slot (its length and number), then the
            # view is validated; one overwritten meanwhile is retracted, and the next taken.
            # One message in 256 is copied inside its view, as the sample checked byte for byte.
            view = self.sub.view
            taken = 0

            def recv() -> Any:
                nonlocal taken
                while True:
                    taken += 1
                    current = view()
                    data = current.__enter__().data
                    seen = _Seen(data[:8], len(data))
                    copy = bytes(data) if taken & 255 == 1 else None
                    try:
                        current.__exit__(None, None, None)
                    except sps.MessageOverwritten:
                        self._retracted += 1
                        continue
                    if copy is not None and len(copy) > MIN_SIZE:
                        self._sample = copy
                    return seen

        else:
            receive = self.sub.receive

            def recv() -> Any:
                return receive().data

        self.recv = recv  # type: ignore[method-assign]
        self.recv_batch = self.sub.receive_many  # type: ignore[method-assign,assignment]

    def try_recv(self) -> Any:
        msg = self.sub.try_receive()
        return None if msg is None else msg.data

    def lost(self) -> int | None:
        return self.sub.lost

    def retracted(self) -> int:
        return self._retracted

    def sample(self) -> bytes | None:
        return self._sample

    def close(self) -> None:
        self.sub.close()


class ShmPubSub(Transport):
    key = "shmpubsub"
    title = "shmpubsub"
    module = "shmpubsub"
    dist = "shmpubsub"
    pip = "."
    broadcast = True
    lossy = True
    latency_modes: ClassVar[dict[str, Any]] = {
        "spin": "`receive()` with `spin_us=1e6`: spins in C with the GIL released",
        "block": "`receive()` with `spin_us=0`: sleeps on its wake-up socket",
    }
    spin_modes = frozenset({"spin"})
    throughput_modes: ClassVar[dict[str, Any]] = {
        "default": "`receive()` with the default `spin_us=50` (spins 50 µs, then sleeps)",
        "batch": "`publish_many(records, size=n)` and `receive_many()`: up to 256 messages in one "
        "call each way",
        "view": "`view()`: zero-copy, the message touched in its slot, then the view validated",
    }
    batch_modes = frozenset({"batch"})
    sender_note = "`Publisher.publish(bytearray)` (one copy into the ring; never blocks, laps slow readers)"
    _SPIN: ClassVar[dict[str, Any]] = {"spin": 1e6, "block": 0.0}

    def channel(self, ctx: Any, env: RunEnv, size: int, receivers: int) -> Any:
        return {
            "topic": f"cmp-{env.uid}-{uuid.uuid4().hex[:10]}",
            "slots": depth_for(size),
            "slot_size": size,
        }

    def clean_up_after(self, pid: int, start_time: int, specs: Sequence[Any]) -> None:
        # A child interrupted inside Publisher() or Subscriber() has nothing to close: what it
        # created (a segment, a control entry, a wake-up socket) names it, and admin removes it.
        from shmpubsub import admin

        admin.clean_up_after(pid, start_time, [spec["topic"] for spec in specs])

    def sender(self, spec: Any, mode: str, size: int, receivers: int) -> Sender:
        return _SpsSender(spec, receivers)

    def receiver(self, spec: Any, index: int, mode: str, size: int) -> Receiver:
        return _SpsReceiver(spec, mode, self._SPIN.get(mode, 50.0))
