"""The standard library's choices: multiprocessing.Queue, multiprocessing.Pipe and a raw
socket.socketpair."""

from __future__ import annotations

import queue
import select
import socket
import struct
from typing import Any, ClassVar

from ..wire import MIN_SIZE, depth_for
from .base import Receiver, RunEnv, Sender, Transport


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
