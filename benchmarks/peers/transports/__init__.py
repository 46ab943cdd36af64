"""Every transport the comparison knows, by key (the order of the report)."""

from __future__ import annotations

from .base import Receiver, RunEnv, Sender, Transport
from .fifo import FasterFifo
from .iceoryx import Iceoryx2
from .pyzmq import Zmq
from .shm import ShmPubSub
from .stdlib import MpPipe, MpQueue, SocketPair

__all__ = ["TRANSPORTS", "Receiver", "RunEnv", "Sender", "Transport"]

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
