"""What every transport adapter provides.

An adapter makes channels in the harness process (names, or objects that travel to the
children as Process arguments) and, in the children, senders and receivers with one interface:

  Sender.send(data)      copies one bytes-like message into the transport
  Receiver.recv()        the next message as a bytes-like object (blocking or spinning, by
                         mode); it stays valid until the call after the next one
  Receiver.try_recv()    the same, or None at once (used only to connect, never timed)
  Receiver.lost()        losses the transport itself reports, or None
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar


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

    def clean_up_after(self, pid: int, start_time: int, specs: Sequence[Any]) -> None:
        """Removes what child process *pid* (started at *start_time*, in clock ticks since boot)
        left in the channels *specs* if it ended without closing its side (killed, or
        interrupted halfway through opening it). The harness calls it for every child, once
        the child has ended."""
