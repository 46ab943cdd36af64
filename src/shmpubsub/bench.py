"""shmpubsub side by side with the transports a user would otherwise pick, in one run.

    pip install '.[bench]'
    shmpubsub bench [--quick] [--sizes 64,4K,64K,1M] [--out docs] [--only KEY,...]
    (or: python benchmarks/compare.py ..., which writes into the checkout's docs/)

Peers: multiprocessing.Queue, multiprocessing.Pipe, a raw socket.socketpair, pyzmq over ipc://
(PUSH/PULL and PUB/SUB), faster-fifo and iceoryx2. A peer that cannot be imported is reported
as missing (with the pip command), never dropped.

Workloads, each over every message size:

- one-way latency: ping-pong through two channels between two processes, RTT/2, median and
  p99, through each transport's spinning/polling path and its blocking path;
- throughput 1→1: one publisher sends as fast as it can for a time budget; one receiver
  touches every message (``len()`` and its 8-byte sequence number) and checks the last
  payload byte for byte; messages delivered per second, and the ones lost;
- fan-out 1→N (N=4): the same with N receivers, for the transports that broadcast.

Every side runs in its own process, started with multiprocessing 'spawn'; the harness process
only waits. Results go to ``OUT/benchmarks-compare.json``, ``OUT/img/compare-*.png`` and a
section of ``OUT/benchmarks.md`` between ``<!-- compare:begin -->`` and ``<!-- compare:end -->``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import importlib
import importlib.metadata
import json
import multiprocessing as mp
import multiprocessing.connection
import os
import platform
import queue
import resource
import select
import shutil
import socket
import statistics
import struct
import sys
import tempfile
import time
import traceback
import uuid
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

# -- messages -------------------------------------------------------------------------------
#
# Every message starts with its sequence number (little-endian u64); the rest is a fixed
# pattern, so the receiver can check a whole payload against what the sender must have sent.
# Two sequence numbers are reserved for the harness's own messages (16 bytes long).

HDR = struct.Struct("<Q")
PROBE = (1 << 64) - 1  # "are you there": sent until every receiver has seen one
END = (1 << 64) - 2  # end of the stream
PROBE_MSG = HDR.pack(PROBE) + bytes(8)
END_MSG = HDR.pack(END) + bytes(8)
MIN_SIZE = 16
_PATTERN = bytes((i * 7 + 3) & 0xFF for i in range(251))

DEFAULT_SIZES = [64, 4096, 65536, 1 << 20]
BUFFER_BYTES = 64 << 20  # per-receiver buffering given to every transport that has a knob for it


def payload_for(seq: int, size: int) -> bytearray:
    """The message *seq* of a stream of *size*-byte messages."""
    buf = bytearray((_PATTERN * (size // len(_PATTERN) + 1))[:size])
    HDR.pack_into(buf, 0, seq)
    return buf


def depth_for(size: int) -> int:
    """Messages of *size* bytes every transport may buffer per receiver (where it can be told):
    a power of two, at most 4096 and at most BUFFER_BYTES worth, at least 32."""
    depth = 4096
    while depth > 32 and depth * size > BUFFER_BYTES:
        depth //= 2
    return depth


# -- transports -------------------------------------------------------------------------------
#
# An adapter makes channels in the harness process (names, or objects that travel to the
# children as Process arguments) and, in the children, senders and receivers with one interface:
#
#   Sender.send(data)      copies one bytes-like message into the transport
#   Receiver.recv()        the next message as a bytes-like object (blocking or spinning, by
#                          mode); it stays valid until the call after the next one
#   Receiver.try_recv()    the same, or None at once (used only to connect, never timed)
#   Receiver.lost()        losses the transport itself reports, or None


class Sender:
    def send(self, data: Any) -> None:
        raise NotImplementedError

    def send_batch(self, records: bytearray, size: int) -> None:
        """Batch modes: sends the *size*-byte messages laid end to end in *records*, through
        the transport's batch call (converting them to what it takes)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class Receiver:
    def recv(self) -> Any:
        raise NotImplementedError

    def recv_batch(self) -> Sequence[Any]:
        """Batch modes: every message there is (at least one, at most 256), in one call."""
        raise NotImplementedError

    def try_recv(self) -> Any:
        raise NotImplementedError

    def lost(self) -> int | None:
        return None

    def retracted(self) -> int:
        """Zero-copy modes: messages found overwritten when their view was validated (never
        returned, so never counted as delivered)."""
        return 0

    def sample(self) -> bytes | None:
        """Zero-copy modes: a validated copy of a recent message, for the byte-for-byte check
        (recv() returns only what it touched in the slot)."""
        return None

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class RunEnv:
    """Per-run names: everything a run creates carries its uid, under its own directory."""

    uid: str
    workdir: str

    @property
    def iox_prefix(self) -> str:
        return f"spscmp{self.uid}_"


class Transport:
    key = ""
    title = ""
    module: str | None = None  # what must import for the transport to be there
    dist: str | None = None  # its distribution, for the version
    pip: str | None = None  # what to install if it is missing
    broadcast = False  # one message reaches every receiver (fan-out)
    lossy = False  # may drop messages by design (then sends never block)
    latency_modes: ClassVar[dict[str, str]] = {}  # mode -> how the receiver waits
    spin_modes: frozenset[str] = frozenset()  # modes that busy-poll
    throughput_modes: ClassVar[dict[str, str]] = {}
    batch_modes: frozenset[str] = frozenset()  # throughput modes that send and receive in batches
    sender_note = ""

    def missing(self) -> str | None:
        """None if usable here, else why not ("missing (pip install ...)")."""
        if self.module is None:
            return None
        try:
            importlib.import_module(self.module)
        except Exception as exc:
            return f"missing (pip install {self.pip}): {type(exc).__name__}: {exc}"
        return None

    def version(self) -> str | None:
        if self.dist is None:
            return platform.python_version()
        try:
            return importlib.metadata.version(self.dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    def channel(self, ctx: Any, env: RunEnv, size: int, receivers: int) -> Any:
        raise NotImplementedError

    def close_channel(self, spec: Any) -> None:
        pass

    def sender(self, spec: Any, mode: str, size: int, receivers: int) -> Sender:
        raise NotImplementedError

    def receiver(self, spec: Any, index: int, mode: str, size: int) -> Receiver:
        raise NotImplementedError

    def finish_process(self) -> None:
        """Releases per-process state (a child calls it once at the end)."""


# shmpubsub ---------------------------------------------------------------------------------


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

    def close_channel(self, spec: Any) -> None:
        # Only a killed child leaves these behind; a clean run removes them itself.
        for suffix in ("", "@ctl"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"/dev/shm/shmpubsub.{spec['topic']}{suffix}")

    def sender(self, spec: Any, mode: str, size: int, receivers: int) -> Sender:
        return _SpsSender(spec, receivers)

    def receiver(self, spec: Any, index: int, mode: str, size: int) -> Receiver:
        return _SpsReceiver(spec, mode, self._SPIN.get(mode, 50.0))


# iceoryx2 ------------------------------------------------------------------------------------

_IOX_NODES: dict[str, Any] = {}
_IOX_TYPES: dict[int, Any] = {}


def _iox_node(spec: dict[str, Any]) -> Any:
    """One node per process, with the run's own prefix and root directory (so the run can
    remove whatever iceoryx2 leaves behind without touching anybody else's)."""
    iox2: Any = importlib.import_module("iceoryx2")
    node = _IOX_NODES.get(spec["prefix"])
    if node is None:
        iox2.set_log_level_from_env_or(iox2.LogLevel.Error)
        config = iox2.config.default()
        config.global_cfg.prefix = iox2.FileName.new(spec["prefix"])
        config.global_cfg.root_path = iox2.Path.new(spec["root"])
        node = iox2.NodeBuilder.new().config(config).create(iox2.ServiceType.Ipc)
        _IOX_NODES[spec["prefix"]] = node
    return node


def _iox_bytes_type(n: int) -> Any:
    t = _IOX_TYPES.get(n)
    if t is None:
        t = _IOX_TYPES[n] = ctypes.c_char * n
    return t


def _iox_services(spec: dict[str, Any], event: bool) -> tuple[Any, Any]:
    iox2: Any = importlib.import_module("iceoryx2")
    node = _iox_node(spec)
    name = iox2.ServiceName.new(spec["name"])
    pubsub = (
        node.service_builder(name)
        .publish_subscribe(iox2.Slice[ctypes.c_uint8])
        .subscriber_max_buffer_size(spec["depth"])
        .subscriber_max_borrowed_samples(4)
        .max_subscribers(max(2, spec["receivers"]))
        .max_publishers(1)
        .history_size(0)
        .enable_safe_overflow(True)
        .open_or_create()
    )
    events = None
    if event:
        events = (
            node.service_builder(name)
            .event()
            .max_listeners(max(2, spec["receivers"]))
            .max_notifiers(1)
            .open_or_create()
        )
    return pubsub, events


class _IoxSender(Sender):
    def __init__(self, spec: dict[str, Any], mode: str, size: int) -> None:
        self.service, self.events = _iox_services(spec, mode == "event")
        self.pub = self.service.publisher_builder().initial_max_slice_len(size).create()
        self.notifier = None if self.events is None else self.events.notifier_builder().create()

    def send(self, data: Any) -> None:
        n = len(data)
        sample = self.pub.loan_slice_uninit(n)
        memoryview(_iox_bytes_type(n).from_address(sample.payload_ptr)).cast("B")[:] = data
        sample.assume_init().send()
        if self.notifier is not None:
            self.notifier.notify()

    def close(self) -> None:
        if self.notifier is not None:
            self.notifier.delete()
        self.pub.delete()
        self.service = self.events = None


class _IoxReceiver(Receiver):
    """Hands out a zero-copy view of each sample; a sample is returned to the publisher two
    receives later (so the view stays valid until the call after the next one)."""

    def __init__(self, spec: dict[str, Any], mode: str) -> None:
        self.service, self.events = _iox_services(spec, mode == "event")
        self.sub = self.service.subscriber_builder().buffer_size(spec["depth"]).create()
        self.listener = None if self.events is None else self.events.listener_builder().create()
        self.held: list[Any] = []
        receive = self.sub.receive
        listener = self.listener

        def view(sample: Any) -> memoryview:
            held = self.held
            held.append(sample)
            if len(held) > 2:
                held.pop(0).delete()
            n = sample.header.number_of_elements
            return memoryview(_iox_bytes_type(n).from_address(sample.payload_ptr))

        if listener is None:

            def recv() -> memoryview:
                sample = receive()
                while sample is None:
                    sample = receive()
                return view(sample)

        else:
            blocking_wait = listener.blocking_wait

            def recv() -> memoryview:
                sample = receive()
                while sample is None:
                    blocking_wait()
                    sample = receive()
                return view(sample)

        self._view = view
        self.recv = recv  # type: ignore[method-assign]

    def try_recv(self) -> Any:
        sample = self.sub.receive()
        return None if sample is None else self._view(sample)

    def close(self) -> None:
        for sample in self.held:
            sample.delete()
        self.held.clear()
        if self.listener is not None:
            self.listener.delete()
        self.sub.delete()
        self.service = self.events = None


class Iceoryx2(Transport):
    key = "iceoryx2"
    title = "iceoryx2"
    module = "iceoryx2"
    dist = "iceoryx2"
    pip = "iceoryx2"
    broadcast = True
    lossy = True
    latency_modes: ClassVar[dict[str, Any]] = {
        "poll": "`Subscriber.receive()` in a busy loop",
        "event": "`Listener.blocking_wait()` on an event service; the sender `Notifier.notify()`s after "
        "every send",
    }
    spin_modes = frozenset({"poll"})
    throughput_modes: ClassVar[dict[str, Any]] = latency_modes
    sender_note = (
        "`loan_slice_uninit(n)` on a `Slice[c_uint8]` service, one copy into the loan, "
        "`assume_init().send()`; safe overflow (never blocks, drops a slow subscriber's oldest sample); "
        "the receiver reads the sample in place (zero-copy view via `payload_ptr`)"
    )

    def channel(self, ctx: Any, env: RunEnv, size: int, receivers: int) -> Any:
        return {
            "name": f"spscmp/{env.uid}/{uuid.uuid4().hex[:10]}",
            "prefix": env.iox_prefix,
            "root": os.path.join(env.workdir, "iceoryx2") + "/",
            "depth": depth_for(size),
            "receivers": receivers,
        }

    def sender(self, spec: Any, mode: str, size: int, receivers: int) -> Sender:
        return _IoxSender(spec, mode, size)

    def receiver(self, spec: Any, index: int, mode: str, size: int) -> Receiver:
        return _IoxReceiver(spec, mode)

    def finish_process(self) -> None:
        _IOX_NODES.clear()
        gc.collect()


# pyzmq ---------------------------------------------------------------------------------------


class _ZmqSender(Sender):
    def __init__(self, spec: dict[str, Any], kind: int) -> None:
        import zmq

        self.sock: Any = zmq.Context.instance().socket(kind)
        self.sock.setsockopt(zmq.SNDHWM, spec["hwm"])
        self.sock.bind(spec["endpoint"])
        self.send = self.sock.send  # type: ignore[method-assign]

    def close(self) -> None:
        self.sock.close(linger=0)


class _ZmqReceiver(Receiver):
    def __init__(self, spec: dict[str, Any], kind: int, mode: str) -> None:
        import zmq

        self.sock: Any = zmq.Context.instance().socket(kind)
        sock: Any = self.sock
        sock.setsockopt(zmq.RCVHWM, spec["hwm"])
        if kind == zmq.SUB:
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(spec["endpoint"])
        receive, again, noblock = sock.recv, zmq.Again, zmq.NOBLOCK
        if mode == "poll":

            def recv() -> bytes:
                while True:
                    try:
                        return receive(noblock)  # type: ignore[no-any-return]
                    except again:
                        pass

            self.recv = recv  # type: ignore[method-assign]
        else:
            self.recv = receive  # type: ignore[method-assign]

    def try_recv(self) -> Any:
        import zmq

        try:
            return self.sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return None

    def close(self) -> None:
        self.sock.close(linger=0)


class Zmq(Transport):
    module = "zmq"
    dist = "pyzmq"
    pip = "pyzmq"
    latency_modes: ClassVar[dict[str, Any]] = {
        "block": "blocking `recv()`",
        "poll": "`recv(zmq.NOBLOCK)` in a busy loop (catching `zmq.Again`)",
    }
    spin_modes = frozenset({"poll"})
    throughput_modes: ClassVar[dict[str, Any]] = {"block": "blocking `recv()`"}

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.key = f"zmq-{pattern}"
        if pattern == "pushpull":
            self.title = "pyzmq PUSH/PULL"
            self.sender_note = (
                "`send(bytearray)` (copies) on a PUSH socket bound to `ipc://`; blocks at the high-water mark"
            )
        else:
            self.title = "pyzmq PUB/SUB"
            self.broadcast = True
            self.lossy = True
            self.sender_note = (
                "`send(bytearray)` (copies) on a PUB socket bound to `ipc://`; drops at the high-water mark"
            )

    def version(self) -> str | None:
        try:
            import zmq

            return f"{zmq.pyzmq_version()} (libzmq {zmq.zmq_version()})"
        except Exception:
            return None

    def _kinds(self) -> tuple[int, int]:
        import zmq

        return (zmq.PUSH, zmq.PULL) if self.pattern == "pushpull" else (zmq.PUB, zmq.SUB)

    def channel(self, ctx: Any, env: RunEnv, size: int, receivers: int) -> Any:
        path = os.path.join(env.workdir, f"zmq-{uuid.uuid4().hex[:10]}.sock")
        return {"endpoint": f"ipc://{path}", "path": path, "hwm": depth_for(size)}

    def close_channel(self, spec: Any) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(spec["path"])

    def sender(self, spec: Any, mode: str, size: int, receivers: int) -> Sender:
        return _ZmqSender(spec, self._kinds()[0])

    def receiver(self, spec: Any, index: int, mode: str, size: int) -> Receiver:
        return _ZmqReceiver(spec, self._kinds()[1], mode)

    def finish_process(self) -> None:
        import zmq

        zmq.Context.instance().term()


# multiprocessing.Queue -----------------------------------------------------------------------


class _QueueSender(Sender):
    def __init__(self, q: Any) -> None:
        self.q = q
        put = q.put

        def send(data: Any) -> None:
            put(bytes(data))  # the feeder thread pickles later: it must not see the buffer change

        self.send = send  # type: ignore[method-assign]

    def close(self) -> None:
        self.q.cancel_join_thread()


class _QueueReceiver(Receiver):
    def __init__(self, q: Any) -> None:
        self.q = q
        self.recv = q.get  # type: ignore[method-assign]

    def try_recv(self) -> Any:
        try:
            return self.q.get_nowait()
        except queue.Empty:
            return None


class MpQueue(Transport):
    key = "mp-queue"
    title = "multiprocessing.Queue"
    latency_modes: ClassVar[dict[str, Any]] = {"block": "blocking `get()`"}
    throughput_modes: ClassVar[dict[str, Any]] = latency_modes
    sender_note = "`put(bytes(buf))` (a feeder thread pickles it into a pipe); `maxsize` bounds it"

    def channel(self, ctx: Any, env: RunEnv, size: int, receivers: int) -> Any:
        return ctx.Queue(maxsize=depth_for(size))

    def close_channel(self, spec: Any) -> None:
        spec.close()
        spec.join_thread()

    def sender(self, spec: Any, mode: str, size: int, receivers: int) -> Sender:
        return _QueueSender(spec)

    def receiver(self, spec: Any, index: int, mode: str, size: int) -> Receiver:
        return _QueueReceiver(spec)


# multiprocessing.Pipe ------------------------------------------------------------------------


class _PipeSender(Sender):
    def __init__(self, conn: Any) -> None:
        self.send = conn.send_bytes  # type: ignore[method-assign]


class _PipeReceiver(Receiver):
    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.recv = conn.recv_bytes  # type: ignore[method-assign]

    def try_recv(self) -> Any:
        return self.conn.recv_bytes() if self.conn.poll(0) else None


class MpPipe(Transport):
    key = "mp-pipe"
    title = "multiprocessing.Pipe"
    latency_modes: ClassVar[dict[str, Any]] = {"block": "blocking `recv_bytes()`"}
    throughput_modes: ClassVar[dict[str, Any]] = latency_modes
    sender_note = "`send_bytes(bytearray)` on `Pipe()` (duplex: a Unix stream socket pair)"

    def channel(self, ctx: Any, env: RunEnv, size: int, receivers: int) -> Any:
        return ctx.Pipe()  # (receiving end, sending end)

    def close_channel(self, spec: Any) -> None:
        for conn in spec:
            conn.close()

    def sender(self, spec: Any, mode: str, size: int, receivers: int) -> Sender:
        return _PipeSender(spec[1])

    def receiver(self, spec: Any, index: int, mode: str, size: int) -> Receiver:
        return _PipeReceiver(spec[0])


# socket.socketpair ---------------------------------------------------------------------------

_LEN = struct.Struct("<I")


class _SocketSender(Sender):
    """A 4-byte length, then the payload: one sendmsg() per message."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, data: Any) -> None:
        n = len(data)
        sent = self.sock.sendmsg([_LEN.pack(n), data])
        if sent < n + 4:  # a partial write (large messages): send the rest
            if sent < 4:
                self.sock.sendall(_LEN.pack(n)[sent:])
                sent = 4
            self.sock.sendall(memoryview(data)[sent - 4 :])


class _SocketReceiver(Receiver):
    """Reads the length, then the payload, each with one recv_into(MSG_WAITALL), into one of
    two buffers in turn (a message stays valid until the call after the next one)."""

    def __init__(self, sock: socket.socket, size: int) -> None:
        self.sock = sock
        self.head = bytearray(4)
        self.buffers = [memoryview(bytearray(max(size, MIN_SIZE))) for _ in range(2)]
        self.turn = 0

    def _exactly(self, view: memoryview, n: int) -> None:
        got = self.sock.recv_into(view, n, socket.MSG_WAITALL)
        while got < n:
            more = self.sock.recv_into(view[got:], n - got, socket.MSG_WAITALL)
            if more == 0:
                raise EOFError("the sender closed the socket")
            got += more

    def recv(self) -> Any:
        self._exactly(memoryview(self.head), 4)
        (n,) = _LEN.unpack(self.head)
        self.turn ^= 1
        view = self.buffers[self.turn][:n]
        self._exactly(view, n)
        return view

    def try_recv(self) -> Any:
        return self.recv() if select.select([self.sock], [], [], 0)[0] else None


class SocketPair(Transport):
    key = "socketpair"
    title = "socket.socketpair"
    latency_modes: ClassVar[dict[str, Any]] = {
        "block": "blocking `recv_into(MSG_WAITALL)` of the length, then of the payload"
    }
    throughput_modes: ClassVar[dict[str, Any]] = latency_modes
    sender_note = "length-prefixed frames on `socket.socketpair()` (AF_UNIX stream), one `sendmsg()` each"

    def channel(self, ctx: Any, env: RunEnv, size: int, receivers: int) -> Any:
        return socket.socketpair()  # (sending end, receiving end)

    def close_channel(self, spec: Any) -> None:
        for sock in spec:
            sock.close()

    def sender(self, spec: Any, mode: str, size: int, receivers: int) -> Sender:
        return _SocketSender(spec[0])

    def receiver(self, spec: Any, index: int, mode: str, size: int) -> Receiver:
        return _SocketReceiver(spec[1], size)


# faster-fifo ---------------------------------------------------------------------------------


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


TRANSPORTS: dict[str, Transport] = {
    t.key: t
    for t in (
        ShmPubSub(),
        Iceoryx2(),
        Zmq("pushpull"),
        Zmq("pubsub"),
        MpQueue(),
        MpPipe(),
        SocketPair(),
        FasterFifo(),
    )
}


# -- the child processes -----------------------------------------------------------------------


@dataclass
class Chan:
    """One channel of one cell: the transport's spec, and per receiver an event it sets once it
    has seen a probe (ack) and one it sets once it has seen the end (done)."""

    spec: Any
    acks: list[Any]
    done: list[Any]


@dataclass
class Side:
    """What one child process does, for each size in turn."""

    role: str  # ping | echo | pub | sub
    transport: str
    mode: str
    sizes: list[int]
    out: list[Chan] | None
    inp: list[Chan] | None
    index: int
    receivers: int
    barrier: Any
    budget: float
    warmup: float
    max_rounds: int
    cpu: int | None


def _child_main(side: Side, results: Any) -> None:
    transport = TRANSPORTS[side.transport]
    try:
        if side.cpu is not None:
            os.sched_setaffinity(0, {side.cpu})
        role = _ROLES[side.role]
        for i, size in enumerate(side.sizes):
            try:
                results.send(("ok", size, role(transport, side, i, size)))
            except Exception:
                side.barrier.abort()
                results.send(("error", size, traceback.format_exc()))
                break
    finally:
        with contextlib.suppress(Exception):
            transport.finish_process()
        results.close()


def _sync(
    tx: Sender | None, acks: Sequence[Any], rx: Receiver | None, my_ack: Any, timeout: float = 30.0
) -> None:
    """Sends probes until every receiver of *tx* has seen one, and reads *rx* until it has.
    Late-joining transports (PUB/SUB, a subscriber attaching "next") need this before data."""
    deadline = time.monotonic() + timeout
    seen = rx is None
    while True:
        pending = tx is not None and not all(e.is_set() for e in acks)
        if pending:
            tx.send(PROBE_MSG)  # type: ignore[union-attr]
        if not seen:
            data = rx.try_recv()  # type: ignore[union-attr]
            while data is not None:
                if HDR.unpack_from(data)[0] == PROBE:
                    seen = True
                    my_ack.set()
                    break
                data = rx.try_recv()  # type: ignore[union-attr]
        if seen and not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"could not connect within {timeout} s (probes seen: {seen})")
        time.sleep(0.0005)


def _finish(tx: Sender, done: Sequence[Any], lossy: bool, timeout: float = 60.0) -> None:
    """Ends the stream. A lossy transport may drop the end mark, so it is repeated until every
    receiver has seen it, at growing intervals (each repeat may push a lagging receiver's last
    messages out); a lossless one gets it once (more could block a full channel)."""
    deadline = time.monotonic() + timeout
    tx.send(END_MSG)
    interval = 0.01
    for event in done:
        while not event.wait(interval):
            if time.monotonic() > deadline:
                raise TimeoutError(f"a receiver did not see the end within {timeout} s")
            if lossy:
                tx.send(END_MSG)
                interval = min(2 * interval, 0.2)


def _percentile(sorted_values: Sequence[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def _pingpong(tx: Sender, rx: Receiver, size: int, side: Side) -> dict[str, Any]:
    buf = payload_for(0, size)
    pack, unpack = HDR.pack_into, HDR.unpack_from
    send, recv, now = tx.send, rx.recv, time.perf_counter_ns
    seq = 0
    warm_until = now() + int(side.warmup * 1e9)
    while seq < 20 or now() < warm_until:  # warm-up; also swallows any stray probe
        pack(buf, 0, seq)
        send(buf)
        data = recv()
        while unpack(data)[0] == PROBE:
            data = recv()
        seq += 1
    samples = array("q", bytes(8 * side.max_rounds))
    mismatched = bad_length = 0
    cpu0 = time.process_time()
    start = now()
    deadline = start + int(side.budget * 1e9)
    n = 0
    data = b""
    while n < side.max_rounds:
        pack(buf, 0, seq)
        t0 = now()
        send(buf)
        data = recv()
        t1 = now()
        if unpack(data)[0] != seq:
            mismatched += 1
        if len(data) != size:
            bad_length += 1
        samples[n] = t1 - t0
        n += 1
        seq += 1
        if t1 >= deadline:
            break
    wall = (now() - start) / 1e9
    cpu = time.process_time() - cpu0
    verified = bytes(data) == bytes(payload_for(seq - 1, size))
    rtts = sorted(samples[:n])
    return {
        "round_trips": n,
        "one_way_us": {
            "min": rtts[0] / 2000,
            "median": statistics.median(rtts) / 2000,
            "p90": _percentile(rtts, 0.90) / 2000,
            "p99": _percentile(rtts, 0.99) / 2000,
            "p999": _percentile(rtts, 0.999) / 2000,
            "max": rtts[-1] / 2000,
            "mean": sum(rtts) / n / 2000,
        },
        "mismatched": mismatched,
        "bad_length": bad_length,
        "verified": verified,
        "cpu_util": cpu / wall if wall > 0 else None,
    }


def _open_pair(transport: Transport, side: Side, i: int, size: int) -> tuple[Sender, Receiver]:
    assert side.out is not None and side.inp is not None
    tx = transport.sender(side.out[i].spec, side.mode, size, 1)
    try:
        side.barrier.wait()
        rx = transport.receiver(side.inp[i].spec, 0, side.mode, size)
    except BaseException:
        tx.close()
        raise
    return tx, rx


def _role_ping(transport: Transport, side: Side, i: int, size: int) -> dict[str, Any]:
    assert side.out is not None and side.inp is not None
    tx, rx = _open_pair(transport, side, i, size)
    try:
        side.barrier.wait()
        _sync(tx, side.out[i].acks, rx, side.inp[i].acks[0])
        result = _pingpong(tx, rx, size, side)
        _finish(tx, side.out[i].done, transport.lossy)
        return result
    finally:
        rx.close()
        tx.close()


def _role_echo(transport: Transport, side: Side, i: int, size: int) -> dict[str, Any]:
    assert side.out is not None and side.inp is not None
    tx, rx = _open_pair(transport, side, i, size)
    try:
        side.barrier.wait()
        _sync(tx, side.out[i].acks, rx, side.inp[i].acks[0])
        pong = payload_for(0, size)
        pack, unpack = HDR.pack_into, HDR.unpack_from
        send, recv = tx.send, rx.recv
        cpu0, wall0 = time.process_time(), time.perf_counter()
        while True:
            seq = unpack(recv())[0]
            if seq >= END:
                if seq == END:
                    break
                continue
            pack(pong, 0, seq)
            send(pong)
        wall = time.perf_counter() - wall0
        side.inp[i].done[0].set()
        return {"cpu_util": (time.process_time() - cpu0) / wall if wall > 0 else None}
    finally:
        rx.close()
        tx.close()


def batch_for(size: int) -> int:
    """Messages per batch in batch modes: 64, or fewer to keep a batch within 256 KiB."""
    return max(1, min(64, (256 << 10) // size))


def _role_pub(transport: Transport, side: Side, i: int, size: int) -> dict[str, Any]:
    assert side.out is not None
    chan = side.out[i]
    tx = transport.sender(chan.spec, side.mode, size, side.receivers)
    try:
        side.barrier.wait()  # the sender exists
        side.barrier.wait()  # so do the receivers
        _sync(tx, chan.acks, None, None)
        now = time.perf_counter_ns
        cpu0 = time.process_time()
        t0 = now()
        deadline = t0 + int(side.budget * 1e9)
        if side.mode in transport.batch_modes:
            seq = _send_batches(tx, size, side.max_rounds, deadline)
        else:
            seq = _send_each(tx, size, side.max_rounds, deadline)
        t1 = now()
        cpu = time.process_time() - cpu0
        _finish(tx, chan.done, transport.lossy)
        return {"sent": seq, "t0": t0, "t1": t1, "cpu_util": cpu / ((t1 - t0) / 1e9)}
    finally:
        tx.close()


def _send_each(tx: Sender, size: int, max_messages: int, deadline: int) -> int:
    """Sends messages 0, 1, ... one call each until the deadline; returns how many."""
    buf = payload_for(0, size)
    pack, send, now = HDR.pack_into, tx.send, time.perf_counter_ns
    mask = 63 if size <= 4096 else 0
    seq = 0
    while seq < max_messages:
        pack(buf, 0, seq)
        send(buf)
        seq += 1
        if not seq & mask and now() >= deadline:
            break
    return seq


def _send_batches(tx: Sender, size: int, max_messages: int, deadline: int) -> int:
    """The same in batches: the messages lie end to end in one buffer, each stamped with its
    number (one strided store per batch)."""
    per_batch = batch_for(size)
    records = payload_for(0, size) * per_batch
    numbers = memoryview(records).cast("Q")[:: size // 8]
    send_batch, now = tx.send_batch, time.perf_counter_ns
    seq = 0
    while seq < max_messages:
        numbers[:] = array("Q", range(seq, seq + per_batch))
        send_batch(records, size)
        seq += per_batch
        if now() >= deadline:
            break
    return seq


def _role_sub(transport: Transport, side: Side, i: int, size: int) -> dict[str, Any]:
    assert side.inp is not None
    chan = side.inp[i]
    side.barrier.wait()
    rx = transport.receiver(chan.spec, side.index, side.mode, size)
    try:
        side.barrier.wait()
        _sync(None, (), rx, chan.acks[side.index])
        cpu0, wall0 = time.process_time(), time.perf_counter_ns()
        receive = _receive_batches if side.mode in transport.batch_modes else _receive_each
        tally = receive(rx, size, wall0)
        cpu_util = (time.process_time() - cpu0) / max(1e-9, (time.perf_counter_ns() - wall0) / 1e9)
        verified = _verify(rx.sample(), tally, size)
        retracted = rx.retracted()
        chan.done[side.index].set()
        return {
            "delivered": tally.count,
            "retracted": retracted,
            "last_seq": tally.last,
            "t_end": tally.t_last,
            "cpu_util": cpu_util,
            "verified": verified,
            "out_of_order": tally.out_of_order,
            "bad_length": tally.bad_length,
            "transport_lost": rx.lost(),
        }
    finally:
        rx.close()


def _verify(sample: bytes | None, tally: _Tally, size: int) -> bool:
    """The sample (zero-copy modes), or else the last message, byte for byte."""
    if sample is not None:
        return sample == bytes(payload_for(HDR.unpack_from(sample)[0], size))
    try:
        return tally.previous is not None and bytes(tally.previous) == bytes(payload_for(tally.last, size))
    except ValueError:  # a released view
        return False


@dataclass
class _Tally:
    """What a receiver saw: messages, the last number and payload, and anomalies."""

    count: int
    last: int
    out_of_order: int
    bad_length: int
    previous: Any
    t_last: int  # when the last message came


def _receive_each(rx: Receiver, size: int, t_start: int) -> _Tally:
    """Receives one message per call until the end mark, touching each: len() and its number."""
    recv, unpack, now = rx.recv, HDR.unpack_from, time.perf_counter_ns
    count = out_of_order = bad_length = 0
    last = -1
    previous: Any = None
    t_last = t_start
    while True:
        data = recv()
        t = now()  # the time of the last message, whenever the end mark comes
        seq = unpack(data)[0]
        if seq >= END:
            if seq == END:
                break
            continue
        t_last = t
        if len(data) != size:
            bad_length += 1
        if seq <= last:
            out_of_order += 1
        last = seq
        count += 1
        previous = data
    return _Tally(count, last, out_of_order, bad_length, previous, t_last)


def _receive_batches(rx: Receiver, size: int, t_start: int) -> _Tally:
    """The same, a batch per call; every message is touched just the same."""
    recv_batch, unpack, now = rx.recv_batch, HDR.unpack_from, time.perf_counter_ns
    count = out_of_order = bad_length = 0
    last = -1
    previous: Any = None
    t_last = t_start
    ended = False
    while not ended:
        batch = recv_batch()
        t = now()
        for data in batch:
            seq = unpack(data)[0]
            if seq >= END:
                ended = ended or seq == END
                continue
            t_last = t
            if len(data) != size:
                bad_length += 1
            if seq <= last:
                out_of_order += 1
            last = seq
            count += 1
            previous = data
    return _Tally(count, last, out_of_order, bad_length, previous, t_last)


_ROLES: dict[str, Callable[[Transport, Side, int, int], dict[str, Any]]] = {
    "ping": _role_ping,
    "echo": _role_echo,
    "pub": _role_pub,
    "sub": _role_sub,
}


# -- the harness -------------------------------------------------------------------------------


@dataclass
class Options:
    sizes: list[int] = field(default_factory=lambda: list(DEFAULT_SIZES))
    budget: float = 2.0  # seconds measured per cell
    warmup: float = 0.2
    fanout: int = 4
    pin: bool = True
    workloads: tuple[str, ...] = ("latency", "throughput", "fanout")
    only: tuple[str, ...] | None = None
    max_rounds: int = 1_000_000
    max_messages: int = 20_000_000
    repeat: int = 1  # runs of every row; each cell keeps its best run
    quiet: bool = False


@dataclass
class Row:
    workload: str  # latency | throughput | fanout
    transport: str
    mode: str

    @property
    def label(self) -> str:
        return f"{TRANSPORTS[self.transport].title} ({self.mode})"


def _log(opts: Options, text: str) -> None:
    if not opts.quiet:
        print(text, file=sys.stderr, flush=True)


def _stop(procs: Sequence[Any], grace: float) -> None:
    """Waits up to *grace* seconds for the children to end (they release what they created
    after their last result), then kills what is left."""
    deadline = time.monotonic() + grace
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join(5)


def run_row(row: Row, opts: Options, env: RunEnv) -> list[dict[str, Any]]:
    """Runs one transport/mode of one workload over every size, in one set of processes.
    Returns one result per size."""
    transport = TRANSPORTS[row.transport]
    ctx = mp.get_context("spawn")
    sizes = opts.sizes
    receivers = opts.fanout if row.workload == "fanout" else 1
    chans: list[list[Chan]] = []

    def chan(n_receivers: int) -> list[Chan]:
        made = [
            Chan(
                transport.channel(ctx, env, size, n_receivers),
                [ctx.Event() for _ in range(n_receivers)],
                [ctx.Event() for _ in range(n_receivers)],
            )
            for size in sizes
        ]
        chans.append(made)
        return made

    common = {
        "transport": row.transport,
        "mode": row.mode,
        "sizes": sizes,
        "budget": opts.budget,
        "warmup": opts.warmup,
    }
    sides: list[Side] = []
    procs: list[Any] = []
    conns: list[Any] = []
    try:
        if row.workload == "latency":
            ab, ba = chan(1), chan(1)
            barrier = ctx.Barrier(2, timeout=60)
            for role, out, inp, cpu in (("ping", ab, ba, 0), ("echo", ba, ab, 1)):
                sides.append(
                    Side(
                        role=role,
                        out=out,
                        inp=inp,
                        index=0,
                        receivers=1,
                        barrier=barrier,
                        max_rounds=opts.max_rounds,
                        cpu=cpu if opts.pin else None,
                        **common,  # type: ignore[arg-type]
                    )
                )
        else:
            stream = chan(receivers)
            barrier = ctx.Barrier(receivers + 1, timeout=60)
            pin = opts.pin and receivers == 1
            sides.append(
                Side(
                    role="pub",
                    out=stream,
                    inp=None,
                    index=0,
                    receivers=receivers,
                    barrier=barrier,
                    max_rounds=opts.max_messages,
                    cpu=0 if pin else None,
                    **common,  # type: ignore[arg-type]
                )
            )
            for index in range(receivers):
                sides.append(
                    Side(
                        role="sub",
                        out=None,
                        inp=stream,
                        index=index,
                        receivers=receivers,
                        barrier=barrier,
                        max_rounds=opts.max_messages,
                        cpu=1 if pin else None,
                        **common,  # type: ignore[arg-type]
                    )
                )
        for side in sides:
            reader, writer = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_child_main, args=(side, writer), daemon=True, name=f"compare-{side.role}"
            )
            proc.start()
            writer.close()
            procs.append(proc)
            conns.append(reader)
        got = _collect(conns, sides, opts)
        failed = any(status != "ok" for per_side in got for status, _ in per_side.values())
        _stop(procs, 3.0 if failed else 30.0)
    finally:
        _stop(procs, 0.0)
        for conn in conns:
            conn.close()
        for made in chans:
            for c in made:
                with contextlib.suppress(Exception):
                    transport.close_channel(c.spec)
    return [_combine(row, size, [got[s].get(size) for s in range(len(sides))], sides) for size in sizes]


def _collect(conns: list[Any], sides: list[Side], opts: Options) -> list[dict[int, tuple[str, Any]]]:
    """Reads each child's per-size results, giving up on a cell that makes no progress."""
    per_size = 45.0 + 4 * (opts.budget + opts.warmup)
    got: list[dict[int, tuple[str, Any]]] = [{} for _ in sides]
    open_conns = {conn: k for k, conn in enumerate(conns)}
    deadline = time.monotonic() + per_size + 30  # spawning and importing
    while open_conns:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            for k in open_conns.values():
                for size in sides[k].sizes:
                    got[k].setdefault(size, ("error", f"timed out (no progress for {per_size:.0f} s)"))
            break
        ready: list[Any] = mp.connection.wait(list(open_conns), remaining)
        for conn in ready:
            k = open_conns[conn]
            try:
                status, size, payload = conn.recv()
            except (EOFError, OSError):
                del open_conns[conn]
                for size in sides[k].sizes:
                    got[k].setdefault(size, ("error", "the process ended without a result"))
                continue
            got[k][size] = (status, payload)
            deadline = time.monotonic() + per_size
            if status == "error":
                # The others are stuck waiting for this one: give them a moment, then stop them.
                deadline = min(deadline, time.monotonic() + 3)
    return got


def _combine(row: Row, size: int, parts: list[tuple[str, Any] | None], sides: list[Side]) -> dict[str, Any]:
    base: dict[str, Any] = {
        "workload": row.workload,
        "transport": row.transport,
        "mode": row.mode,
        "size": size,
    }
    errors = [f"{sides[k].role}: {p[1]}" for k, p in enumerate(parts) if p is not None and p[0] == "error"]
    if errors or any(p is None for p in parts):
        tail = errors[0].strip().splitlines()[-1] if errors else "no result"
        return {**base, "status": "error", "error": tail, "detail": errors}
    values = [p[1] for p in parts if p is not None]
    if row.workload == "latency":
        ping, echo = values
        return {
            **base,
            "status": "ok",
            **ping,
            "cpu_util": {"ping": ping["cpu_util"], "echo": echo["cpu_util"]},
        }
    pub, subs = values[0], values[1:]
    seconds = (pub["t1"] - pub["t0"]) / 1e9
    receivers = []
    for sub in subs:
        window = (sub["t_end"] - pub["t0"]) / 1e9
        receivers.append(
            {
                "delivered": sub["delivered"],
                "lost": pub["sent"] - sub["delivered"],
                "delivered_per_s": sub["delivered"] / window,
                "seconds": window,
                "verified": sub["verified"],
                "out_of_order": sub["out_of_order"],
                "bad_length": sub["bad_length"],
                "transport_lost": sub["transport_lost"],
                "cpu_util": sub["cpu_util"],
            }
        )
    return {
        **base,
        "status": "ok",
        "sent": pub["sent"],
        "sent_per_s": pub["sent"] / seconds,
        "seconds": seconds,
        "publisher_cpu_util": pub["cpu_util"],
        "receivers": receivers,
        "delivered_per_s": min(r["delivered_per_s"] for r in receivers),
        "delivered_per_s_mean": sum(r["delivered_per_s"] for r in receivers) / len(receivers),
        "lost": max(r["lost"] for r in receivers),
        "verified": all(r["verified"] for r in receivers),
    }


def plan(opts: Options) -> tuple[list[Row], dict[str, str]]:
    """The rows to run, and the transports that will not run (key -> why)."""
    skipped: dict[str, str] = {}
    rows: list[Row] = []
    for key, transport in TRANSPORTS.items():
        if opts.only is not None and key not in opts.only:
            skipped[key] = "not selected (--only)"
            continue
        why = transport.missing()
        if why is not None:
            skipped[key] = why
            continue
        if "latency" in opts.workloads:
            rows += [Row("latency", key, mode) for mode in transport.latency_modes]
        if "throughput" in opts.workloads:
            rows += [Row("throughput", key, mode) for mode in transport.throughput_modes]
        if "fanout" in opts.workloads and transport.broadcast:
            rows += [Row("fanout", key, mode) for mode in transport.throughput_modes]
    return rows, skipped


def run(opts: Options) -> dict[str, Any]:
    """Runs every row; returns everything the reports need."""
    started = time.time()
    load_before = os.getloadavg()
    machine_before = _machine_cpu()
    rows, skipped = plan(opts)
    env = RunEnv(uid=uuid.uuid4().hex[:8], workdir=tempfile.mkdtemp(prefix="sps-compare-"))
    runs: list[list[list[dict[str, Any]]]] = [[] for _ in rows]  # row -> attempt -> size
    try:
        for attempt in range(opts.repeat):
            for n, row in enumerate(rows):
                t0 = time.monotonic()
                cells = run_row(row, opts, env)
                runs[n].append(cells)
                bad = [c for c in cells if c["status"] != "ok"]
                note = f"; {len(bad)} failed: {bad[0]['error']}" if bad else ""
                count = f"[{attempt * len(rows) + n + 1}/{opts.repeat * len(rows)}]"
                what = f"{count} {row.workload:<10} {row.label:<40}"
                _log(opts, f"{what} {time.monotonic() - t0:5.1f} s{note}")
    finally:
        _cleanup(env)
    results = [_best(list(attempts)) for row_runs in runs for attempts in zip(*row_runs, strict=True)]
    return {
        "meta": machine_info()
        | _sharing(machine_before, time.time() - started)
        | {
            "date": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).strftime(
                "%Y-%m-%d %H:%M UTC"
            ),
            "duration_s": round(time.time() - started, 1),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "options": {
            "sizes": opts.sizes,
            "budget_s": opts.budget,
            "warmup_s": opts.warmup,
            "fanout": opts.fanout,
            "pinned": opts.pin,
            "workloads": list(opts.workloads),
            "repeat": opts.repeat,
            "buffer_depth": {str(s): depth_for(s) for s in opts.sizes},
        },
        "transports": {
            key: {
                "title": t.title,
                "version": None if key in skipped else t.version(),
                "status": skipped.get(key, "ok"),
                "broadcast": t.broadcast,
                "lossy": t.lossy,
                "latency_modes": t.latency_modes,
                "throughput_modes": t.throughput_modes,
                "spin_modes": sorted(t.spin_modes),
                "sender": t.sender_note,
            }
            for key, t in TRANSPORTS.items()
        },
        "results": results,
    }


def _best(attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """Of several runs of one cell, the best (lowest median latency, most delivered per second):
    other work on the machine only ever makes a run worse. The others are kept, summarised."""
    ok = [c for c in attempts if c["status"] == "ok"]
    if not ok:
        return attempts[-1]
    if ok[0]["workload"] == "latency":
        best = min(ok, key=lambda c: float(c["one_way_us"]["median"]))
        summary = [c["one_way_us"]["median"] if c["status"] == "ok" else None for c in attempts]
    else:
        best = max(ok, key=lambda c: float(c["delivered_per_s"]))
        summary = [c["delivered_per_s"] if c["status"] == "ok" else None for c in attempts]
    return best if len(attempts) == 1 else {**best, "attempts": summary}


def _cleanup(env: RunEnv) -> None:
    """Removes what the run's peers may leave behind: iceoryx2's files (its own prefix and root
    directory) and zmq's socket files (in the run's directory)."""
    shutil.rmtree(env.workdir, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir("/dev/shm"):
            if name.startswith(env.iox_prefix):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join("/dev/shm", name))


def _machine_cpu() -> tuple[float, float, float]:
    """CPU-seconds so far: (the whole machine busy, stolen by the hypervisor, ours: this process
    and every child it waited for)."""
    ours = sum(
        r.ru_utime + r.ru_stime
        for r in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return (0.0, 0.0, ours)
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return ((user + nice + system + irq + softirq) / tick, steal / tick, ours)


def _sharing(before: tuple[float, float, float], wall: float) -> dict[str, Any]:
    """How much of the machine others used during the run: its busy CPU time minus ours."""
    after = _machine_cpu()
    ours = after[2] - before[2]
    return {
        "cpu_seconds_available": round(wall * (os.cpu_count() or 1), 1),
        "cpu_seconds_ours": round(ours, 1),
        "cpu_seconds_others": round(max(0.0, after[0] - before[0] - ours), 1),
        "cpu_seconds_stolen": round(after[1] - before[1], 1),
    }


def machine_info() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


# -- reports -----------------------------------------------------------------------------------

TIMES = "\u00d7"  # the multiplication sign, for ratios
BEGIN_MARK = "<!-- compare:begin -->"
END_MARK = "<!-- compare:end -->"


def fmt_size(size: int) -> str:
    if size >= 1 << 20 and size % (1 << 20) == 0:
        return f"{size >> 20} MiB"
    if size >= 1024 and size % 1024 == 0:
        return f"{size >> 10} KiB"
    return f"{size} B"


def fmt_us(us: float) -> str:
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.1f} µs" if us < 100 else f"{us:.0f} µs"


def fmt_rate(per_s: float) -> str:
    if per_s >= 1e6:
        return f"{per_s / 1e6:.2f} M/s"
    if per_s >= 1e3:
        return f"{per_s / 1e3:.1f} k/s"
    return f"{per_s:.0f}/s"


def fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return ""
    return f" ({TIMES}{ratio:.2f})" if ratio < 10 else f" ({TIMES}{ratio:.0f})"


def parse_size(text: str) -> int:
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    scale = {"k": 1 << 10, "m": 1 << 20}.get(t[-1:], 1)
    value = int(t[:-1] if scale > 1 else t) * scale
    if value < MIN_SIZE:
        raise argparse.ArgumentTypeError(f"sizes start at {MIN_SIZE} bytes (the sequence number needs 8)")
    return value


class Report:
    """Turns run() output into markdown (and plots)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.sizes: list[int] = data["options"]["sizes"]
        self.transports: dict[str, Any] = data["transports"]
        self.cells: dict[tuple[str, str, str, int], dict[str, Any]] = {
            (c["workload"], c["transport"], c["mode"], c["size"]): c for c in data["results"]
        }

    def rows(self, workload: str) -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        for c in self.data["results"]:
            if c["workload"] == workload and (c["transport"], c["mode"]) not in seen:
                seen.append((c["transport"], c["mode"]))
        return seen

    def label(self, transport: str, mode: str) -> str:
        return f"{self.transports[transport]['title']} | {mode}"

    def is_spin(self, transport: str, mode: str) -> bool:
        return mode in self.transports[transport]["spin_modes"]

    def reference(self, workload: str, transport: str, mode: str, size: int) -> dict[str, Any] | None:
        """The shmpubsub cell a peer's cell is compared with: same workload and size; for
        latency, the same kind of path (spinning or blocking)."""
        if workload == "latency":
            ref_mode = "spin" if self.is_spin(transport, mode) else "block"
        else:
            ref_mode = "default"
        cell = self.cells.get((workload, "shmpubsub", ref_mode, size))
        return cell if cell is not None and cell["status"] == "ok" else None

    def latency_ratio(self, cell: dict[str, Any], key: str = "median") -> float | None:
        ref = self.reference("latency", cell["transport"], cell["mode"], cell["size"])
        if ref is None or cell["status"] != "ok":
            return None
        return float(cell["one_way_us"][key]) / float(ref["one_way_us"][key])

    def rate_ratio(self, cell: dict[str, Any]) -> float | None:
        ref = self.reference(cell["workload"], cell["transport"], cell["mode"], cell["size"])
        if ref is None or cell["status"] != "ok" or ref["delivered_per_s"] == 0:
            return None
        return float(cell["delivered_per_s"]) / float(ref["delivered_per_s"])

    @staticmethod
    def failed(cell: dict[str, Any] | None) -> str | None:
        if cell is None:
            return "not run"
        if cell["status"] != "ok":
            return f"error: {cell['error'][:80]}"
        return None

    # -- sections --

    def markdown(self, command: str, note: str | None) -> str:
        meta, opts = self.data["meta"], self.data["options"]
        out: list[str] = []
        w = out.append
        w("## Side by side with the alternatives")
        w("")
        w(f"Written by `{command}` on {meta['date']} (the run took {meta['duration_s']:.0f} s).")
        if note:
            w("")
            w(f"**{note}**")
        w("")
        w(
            f"- Machine: {meta['nproc']} CPUs ({meta['usable_cpus']} usable), {meta['cpu_model']}, "
            f"Linux {meta['kernel']}, Python {meta['python']}. Load average (1/5/15 min) "
            f"{'/'.join(map(str, meta['loadavg_before']))} before the run and "
            f"{'/'.join(map(str, meta['loadavg_after']))} after it. Of the "
            f"{meta['cpu_seconds_available']:.0f} CPU-seconds the machine had during the run, the "
            f"benchmark's processes used {meta['cpu_seconds_ours']:.0f}, other processes "
            f"{meta['cpu_seconds_others']:.0f}, and the hypervisor stole {meta['cpu_seconds_stolen']:.0f}."
        )
        versions = ", ".join(
            f"{t['title']} {t['version']}"
            for t in self.transports.values()
            if t["status"] == "ok" and t["version"] is not None
        )
        w(f"- Versions: {versions}.")
        w(
            "- Cores: every side runs in its own process (multiprocessing 'spawn'); the harness process only "
            "waits. "
            + (
                "Two-process cells are pinned with `os.sched_setaffinity`, sender (ping) to CPU 0 and "
                "receiver (echo) to CPU 1; fan-out cells are not pinned. "
                if opts["pinned"]
                else "Nothing is pinned: the kernel places the processes. "
            )
            + "Spinning/polling latency cells: both processes busy-poll, one per core. Blocking cells: both "
            "sleep whenever they wait. Throughput 1→1: the publisher and the receiver have a core each, "
            "busy as far as the transport lets them (the CPU columns say how busy: process CPU time over "
            "wall time, 100 % = one core). "
            f"Fan-out 1→{opts['fanout']}: {opts['fanout'] + 1} processes share the {meta['nproc']} cores, "
            "so a receiver that spins takes time from the publisher and from the other receivers. Any other "
            "process on the machine (see the CPU-seconds above) takes time from a pinned process, which "
            "cannot move to the other core."
        )
        w(
            f"- Each cell is measured for {opts['budget_s']} s after {opts['warmup_s']} s of warm-up "
            "(latency) or until the publisher's time budget runs out (throughput)"
            + (
                f"; everything ran {opts['repeat']} times, and each cell shows its best run (lowest median "
                "latency, most delivered per second; all runs are in the JSON). "
                if opts.get("repeat", 1) > 1
                else ". "
            )
            + "Every message carries "
            "its sequence number in its first 8 bytes; receivers call `len()` on every message, read that "
            "number, and compare the last message byte for byte with what was sent (*verified*). Where a "
            "transport has a buffer size to set, it gets the same number of messages per receiver: "
            + ", ".join(f"{fmt_size(int(s))}: {d}" for s, d in opts["buffer_depth"].items())
            + " (shmpubsub slots, iceoryx2 subscriber buffer, zmq high-water marks, Queue `maxsize`, "
            "faster-fifo bytes); pipes and sockets have the kernel's buffers."
        )
        w(
            "- Ratios in parentheses are the peer's figure divided by shmpubsub's for the same size and "
            "workload (latency: its spinning path against spinning peers, its blocking path against "
            "blocking ones). Latency: above 1 means slower than shmpubsub. Throughput: below 1 means fewer "
            "messages delivered per second than shmpubsub."
        )
        w("")
        self._latency_64(w)
        self._latency_sizes(w)
        self._throughput(w)
        self._fanout(w)
        self._notes(w)
        return "\n".join(out).rstrip() + "\n"

    def _latency_64(self, w: Callable[[str], None]) -> None:
        rows = self.rows("latency")
        if not rows:
            return
        size = self.sizes[0]
        w(f"### One-way latency, {fmt_size(size)}")
        w("")
        w("Ping-pong through two channels between two processes; one-way = round trip / 2.")
        w("")
        w("| transport | receive path | median | p99 | median vs shmpubsub | CPU ping / echo |")
        w("|---|---|---|---|---|---|")
        for transport, mode in rows:
            cell = self.cells.get(("latency", transport, mode, size))
            kind = "spins" if self.is_spin(transport, mode) else "blocks"
            name = f"{self.transports[transport]['title']} | {mode} ({kind})"
            why = self.failed(cell)
            if why is not None or cell is None:
                w(f"| {name} | {why} | | | | |")
                continue
            lat = cell["one_way_us"]
            ratio = self.latency_ratio(cell)
            cpu = cell["cpu_util"]
            flag = "" if cell["verified"] and not cell["mismatched"] else " ⚠ unverified"
            versus = "" if ratio is None else f"{TIMES}{ratio:.2f}"
            w(
                f"| {name} | {fmt_us(lat['median'])}{flag} | {fmt_us(lat['p99'])} | {versus} | "
                f"{_pct(cpu['ping'])} / {_pct(cpu['echo'])} |"
            )
        w("")

    def _latency_sizes(self, w: Callable[[str], None]) -> None:
        rows = self.rows("latency")
        if not rows or len(self.sizes) < 2:
            return
        w("### One-way latency by message size (median; p99 in the JSON)")
        w("")
        w("| transport | path | " + " | ".join(fmt_size(s) for s in self.sizes) + " |")
        w("|---|---|" + "---|" * len(self.sizes))
        for transport, mode in rows:
            line = []
            for size in self.sizes:
                cell = self.cells.get(("latency", transport, mode, size))
                why = self.failed(cell)
                if why is not None or cell is None:
                    line.append(why or "")
                else:
                    line.append(fmt_us(cell["one_way_us"]["median"]) + fmt_ratio(self.latency_ratio(cell)))
            w(f"| {self.label(transport, mode)} | " + " | ".join(line) + " |")
        w("")
        w("![one-way latency against message size](img/compare-latency.png)")
        w("")

    def _throughput(self, w: Callable[[str], None]) -> None:
        rows = self.rows("throughput")
        if not rows:
            return
        w("### Throughput 1→1: messages delivered per second")
        w("")
        w(
            "One publisher sends for the time budget as fast as the transport lets it; one receiver takes "
            "every message it can get. Delivered per second = messages received ÷ (last one received - "
            "first one sent). Lossy transports never make the publisher wait: what the receiver cannot keep "
            "up with is lost, and shown below."
        )
        w("")
        w("| transport | receive path | " + " | ".join(fmt_size(s) for s in self.sizes) + " |")
        w("|---|---|" + "---|" * len(self.sizes))
        for transport, mode in rows:
            line = []
            for size in self.sizes:
                cell = self.cells.get(("throughput", transport, mode, size))
                why = self.failed(cell)
                if why is not None or cell is None:
                    line.append(why or "")
                    continue
                flag = "" if cell["verified"] else " ⚠ unverified"
                line.append(fmt_rate(cell["delivered_per_s"]) + fmt_ratio(self.rate_ratio(cell)) + flag)
            w(f"| {self.label(transport, mode)} | " + " | ".join(line) + " |")
        w("")
        w(
            "Sent by the publisher per second; lost (share of what was sent); CPU time of the publisher / "
            "of the receiver, as a share of one core:"
        )
        w("")
        w("| transport | receive path | " + " | ".join(fmt_size(s) for s in self.sizes) + " |")
        w("|---|---|" + "---|" * len(self.sizes))
        for transport, mode in rows:
            line = []
            for size in self.sizes:
                cell = self.cells.get(("throughput", transport, mode, size))
                if cell is None or cell["status"] != "ok":
                    line.append("")
                    continue
                cpu = f"{_pct(cell['publisher_cpu_util'])} / {_pct(cell['receivers'][0]['cpu_util'])}"
                line.append(f"{fmt_rate(cell['sent_per_s'])}, {_loss(cell['lost'], cell['sent'])}, CPU {cpu}")
            w(f"| {self.label(transport, mode)} | " + " | ".join(line) + " |")
        w("")
        w("![throughput against message size](img/compare-throughput.png)")
        w("")

    def _fanout(self, w: Callable[[str], None]) -> None:
        if "fanout" not in self.data["options"]["workloads"]:
            return
        n = self.data["options"]["fanout"]
        rows = self.rows("fanout")
        w(f"### Fan-out 1→{n}")
        w("")
        w(
            f"One publisher, {n} receivers, each in its own process ({n + 1} processes on "
            f"{self.data['meta']['nproc']} cores). Per "
            "receiver: messages delivered per second (slowest to fastest) and the most any receiver lost. "
            "The ratio compares the slowest receiver with shmpubsub's slowest. With more processes "
            "than cores, the publisher's wall-clock rate falls with the CPU time the receivers take "
            "from it; *per CPU-second* (messages sent per second of the publisher's own CPU time) "
            "shows what the receivers cost it otherwise, against the same in the 1→1 run."
        )
        w("")
        w(
            "| transport | receive path | size | publisher sent | per CPU-second (vs 1→1) "
            "| delivered per receiver | most lost |"
        )
        w("|---|---|---|---|---|---|---|")
        for transport, mode in rows:
            for size in self.sizes:
                cell = self.cells.get(("fanout", transport, mode, size))
                why = self.failed(cell)
                if why is not None or cell is None:
                    w(f"| {self.label(transport, mode)} | {fmt_size(size)} | {why} | | | |")
                    continue
                rates = [r["delivered_per_s"] for r in cell["receivers"]]
                flag = "" if cell["verified"] else " ⚠ unverified"
                per_cpu = _per_cpu_second(cell)
                alone = _per_cpu_second(self.cells.get(("throughput", transport, mode, size)))
                versus = f" ({_pct(per_cpu / alone)})" if per_cpu and alone else ""
                w(
                    f"| {self.label(transport, mode)} | {fmt_size(size)} | {fmt_rate(cell['sent_per_s'])} "
                    f"(CPU {_pct(cell['publisher_cpu_util'])}) | "
                    f"{fmt_rate(per_cpu) if per_cpu else 'n/a'}{versus} | "
                    f"{fmt_rate(min(rates))} to {fmt_rate(max(rates))}"
                    f"{fmt_ratio(self.rate_ratio(cell))}{flag} | {_loss(cell['lost'], cell['sent'])} |"
                )
        for t in self.transports.values():
            if t["status"] == "ok" and not t["broadcast"]:
                no_fanout = "point-to-point: one message, one receiver (no broadcast)"
                w(f"| {t['title']} | N/A | | {no_fanout} | | | |")
        w("")

    def _notes(self, w: Callable[[str], None]) -> None:
        w("### How each transport is driven")
        w("")
        for key, t in self.transports.items():
            if t["status"] != "ok":
                continue
            paths = "; ".join(f"*{m}*: {d}" for m, d in (t["latency_modes"] | t["throughput_modes"]).items())
            w(f"- **{t['title']}** ({key}): sends with {t['sender']}. Receive paths: {paths}.")
        w("")
        missing = {k: t for k, t in self.transports.items() if t["status"] != "ok"}
        failed = [c for c in self.data["results"] if c["status"] != "ok"]
        if missing or failed:
            w("### Not measured")
            w("")
            for key, t in missing.items():
                w(f"- **{t['title']}** ({key}): {t['status']}")
            for c in failed:
                where = f"{c['workload']} {self.label(c['transport'], c['mode'])} {fmt_size(c['size'])}"
                w(f"- {where}: {c['error']}")
            w("")

    # -- plots --

    def look(self, transport: str, mode: str) -> dict[str, Any]:
        """One colour per transport; a marker per receive path; shmpubsub drawn thicker."""
        keys = list(self.transports)
        modes = list(self.transports[transport]["latency_modes"])
        modes += [m for m in self.transports[transport]["throughput_modes"] if m not in modes]
        return {
            "color": f"C{keys.index(transport) % 10}",
            "marker": "osD^v"[modes.index(mode) % 5],
            "linewidth": 2.5 if transport == "shmpubsub" else 1.2,
        }

    def plots(self, img_dir: str) -> list[str]:
        """Writes the two PNGs; returns their paths ([] if matplotlib is missing)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return []
        os.makedirs(img_dir, exist_ok=True)
        written = []
        meta = self.data["meta"]
        subtitle = f"{meta['nproc']} CPUs, {meta['cpu_model']}, Linux {meta['kernel']}, {meta['date']}"

        fig, ax = plt.subplots(figsize=(9, 6))
        for transport, mode in self.rows("latency"):
            xs, ys = [], []
            for size in self.sizes:
                cell = self.cells.get(("latency", transport, mode, size))
                if cell is not None and cell["status"] == "ok":
                    xs.append(size)
                    ys.append(cell["one_way_us"]["median"])
            if xs:
                style = "-" if self.is_spin(transport, mode) else "--"
                ax.plot(xs, ys, style, label=self.label(transport, mode), **self.look(transport, mode))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(self.sizes, [fmt_size(s) for s in self.sizes])
        ax.set_xlabel("message size")
        ax.set_ylabel("one-way latency, median (µs)")
        ax.set_title(f"One-way latency (solid: spinning, dashed: blocking)\n{subtitle}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(img_dir, "compare-latency.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

        fig, (left, right) = plt.subplots(1, 2, figsize=(13, 6))
        for workload, style in (("throughput", "-"), ("fanout", ":")):
            for transport, mode in self.rows(workload):
                xs, msgs, gbs = [], [], []
                for size in self.sizes:
                    cell = self.cells.get((workload, transport, mode, size))
                    if cell is not None and cell["status"] == "ok":
                        xs.append(size)
                        msgs.append(cell["delivered_per_s"])
                        gbs.append(cell["delivered_per_s"] * size / 1e9)
                if xs:
                    n = "1→1" if workload == "throughput" else f"1→{self.data['options']['fanout']}, slowest"
                    label = f"{self.label(transport, mode)} [{n}]"
                    left.plot(xs, msgs, style, label=label, **self.look(transport, mode))
                    right.plot(xs, gbs, style, label=label, **self.look(transport, mode))
        for ax, ylabel in ((left, "messages delivered per second"), (right, "payload delivered, GB/s")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(self.sizes, [fmt_size(s) for s in self.sizes])
            ax.set_xlabel("message size")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
        right.legend(fontsize=7)
        fig.suptitle(f"Throughput delivered to Python receivers (dotted: fan-out)\n{subtitle}", fontsize=10)
        fig.tight_layout()
        path = os.path.join(img_dir, "compare-throughput.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
        return written


def _per_cpu_second(cell: dict[str, Any] | None) -> float | None:
    """Messages the publisher sent per second of its own CPU time."""
    if cell is None or cell.get("status") != "ok" or not cell.get("publisher_cpu_util"):
        return None
    return float(cell["sent_per_s"]) / float(cell["publisher_cpu_util"])


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.0f} %"


def _loss(lost: int, sent: int) -> str:
    if lost == 0:
        return "none lost"
    return f"{100 * lost / sent:.1f} % lost" if sent else f"{lost} lost"


def insert_section(path: str, section: str) -> None:
    """Replaces what is between the markers in *path* (appending the markers if absent)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = "# Benchmarks\n"
    block = f"{BEGIN_MARK}\n{section}{END_MARK}"
    begin, end = text.find(BEGIN_MARK), text.find(END_MARK)
    if begin != -1 and end > begin:
        text = text[:begin] + block + text[end + len(END_MARK) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_outputs(data: dict[str, Any], out: str, command: str, note: str | None, plots: bool) -> list[str]:
    os.makedirs(out, exist_ok=True)
    report = Report(data)
    written = []
    if plots:
        written = report.plots(os.path.join(out, "img"))
        if not written:
            note = (
                (note + " ") if note else ""
            ) + "(Plots skipped: matplotlib is missing: pip install matplotlib.)"
    json_path = os.path.join(out, "benchmarks-compare.json")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
        f.write("\n")
    md_path = os.path.join(out, "benchmarks.md")
    insert_section(md_path, report.markdown(command, note))
    return [json_path, md_path, *written]


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="short cells (0.5 s each): about 75 s on 2 cores"
    )
    parser.add_argument(
        "--sizes", type=lambda s: [parse_size(x) for x in s.split(",")], help="e.g. 64,4K,64K,1M"
    )
    parser.add_argument(
        "--out", default="docs", help="where benchmarks.md, the JSON and img/ go (default: ./docs)"
    )
    parser.add_argument("--budget", type=float, help="seconds measured per cell (default 2, quick 0.5)")
    parser.add_argument("--only", help="comma-separated transports: " + ",".join(TRANSPORTS))
    parser.add_argument("--workloads", default="latency,throughput,fanout")
    parser.add_argument("--fanout", type=int, default=4, help="receivers in the fan-out workload")
    parser.add_argument("--repeat", type=int, default=1, help="run everything N times; keep each cell's best")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin two-process cells (default: sender CPU 0, receiver CPU 1)",
    )
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--note", help="a line printed in bold at the top of the markdown")
    args = parser.parse_args(argv)
    only = None if args.only is None else tuple(k.strip() for k in args.only.split(","))
    unknown = [k for k in only or () if k not in TRANSPORTS]
    if unknown:
        parser.error(f"unknown transports {unknown}; known: {list(TRANSPORTS)}")
    workloads = tuple(w.strip() for w in args.workloads.split(","))
    if set(workloads) - {"latency", "throughput", "fanout"}:
        parser.error("workloads are latency, throughput, fanout")
    budget = args.budget if args.budget is not None else (0.5 if args.quick else 2.0)
    opts = Options(
        sizes=args.sizes or list(DEFAULT_SIZES),
        budget=budget,
        warmup=min(0.2, max(0.02, budget / 5)),
        fanout=args.fanout,
        pin=not args.no_pin and len(os.sched_getaffinity(0)) >= 2,
        workloads=workloads,
        only=only,
        repeat=max(1, args.repeat),
    )
    command = " ".join(["python benchmarks/compare.py", *(sys.argv[1:] if argv is None else argv)])
    data = run(opts)
    for path in write_outputs(data, os.path.normpath(args.out), command, args.note, not args.no_plots):
        print(f"wrote {path}")
    failed = [c for c in data["results"] if c["status"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
