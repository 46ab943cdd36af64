"""iceoryx2: a Slice[c_uint8] publish-subscribe service, read in place; optionally an event
service to sleep on."""

from __future__ import annotations

import ctypes
import gc
import importlib
import os
import uuid
from typing import Any, ClassVar

from ..wire import depth_for
from .base import Receiver, RunEnv, Sender, Transport

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
