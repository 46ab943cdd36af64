"""pyzmq over ipc://: PUSH/PULL (point to point, blocks at the high-water mark) and PUB/SUB
(broadcast, drops at the high-water mark)."""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Any, ClassVar

from ..wire import depth_for
from .base import Receiver, RunEnv, Sender, Transport


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
