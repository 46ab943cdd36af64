"""faster-fifo: a circular buffer in shared memory, pickled messages, single and batch calls."""

from __future__ import annotations

import importlib
import queue
from typing import Any, ClassVar

from ..wire import depth_for
from .base import Receiver, RunEnv, Sender, Transport


class _FifoSender(Sender):
    def __init__(self, q: Any) -> None:
        put, put_many = q.put, q.put_many

        def send(data: Any) -> None:
            put(data, True, 3600.0)

        def send_batch(records: bytearray, size: int) -> None:
            # put_many takes a list of objects: one per message, sliced from the records.
            put_many([records[i : i + size] for i in range(0, len(records), size)], True, 3600.0)

        self.send = send  # type: ignore[method-assign]
        self.send_batch = send_batch  # type: ignore[method-assign]


class _FifoReceiver(Receiver):
    def __init__(self, q: Any) -> None:
        self.q = q
        get, get_many = q.get, q.get_many

        def recv() -> Any:
            return get(True, 3600.0)

        def recv_batch() -> Any:
            return get_many(True, 3600.0, max_messages_to_get=256)

        self.recv = recv  # type: ignore[method-assign]
        self.recv_batch = recv_batch  # type: ignore[method-assign]

    def try_recv(self) -> Any:
        try:
            return self.q.get_nowait()
        except queue.Empty:
            return None


class FasterFifo(Transport):
    key = "faster-fifo"
    title = "faster-fifo"
    module = "faster_fifo"
    dist = "faster-fifo"
    pip = "faster-fifo"
    latency_modes: ClassVar[dict[str, Any]] = {"block": "blocking `get()`"}
    throughput_modes: ClassVar[dict[str, Any]] = {
        "block": "blocking `get()`",
        "batch": "`put_many(list)` and blocking `get_many()`: up to 256 messages in one call each way",
    }
    batch_modes = frozenset({"batch"})
    sender_note = (
        "`put(bytearray)` (pickled at once into a circular buffer in shared memory; blocks when full)"
    )

    def channel(self, ctx: Any, env: RunEnv, size: int, receivers: int) -> Any:
        faster_fifo: Any = importlib.import_module("faster_fifo")
        return faster_fifo.Queue(max_size_bytes=max(1 << 20, depth_for(size) * (size + 64)))

    def sender(self, spec: Any, mode: str, size: int, receivers: int) -> Sender:
        return _FifoSender(spec)

    def receiver(self, spec: Any, index: int, mode: str, size: int) -> Receiver:
        return _FifoReceiver(spec)
