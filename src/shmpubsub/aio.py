"""asyncio: the same classes, with awaitable receives::

    import shmpubsub.aio

    async with shmpubsub.aio.Subscriber("prices") as sub:
        msg = await sub.receive(timeout=1.0)
        async for msg in sub:
            ...

A subscriber waits by registering its descriptor with the running loop (``add_reader``):
no thread, no busy-polling, and any number of subscribers can share one loop.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

from . import subscriber as _sync
from .errors import PublisherGone, ReceiveTimeout
from .message import Message
from .publisher import Publisher as _SyncPublisher


class Publisher(_SyncPublisher):
    """The synchronous :class:`shmpubsub.Publisher` (publishing never waits), usable with
    ``async with``."""

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Subscriber:
    """Like :class:`shmpubsub.Subscriber`, with ``await receive()`` and ``async for``.

    Takes the same arguments. Non-blocking calls (``try_receive``, ``receive_into``,
    ``latest``) and the state (``lost``, ``end_reason``, ...) are the synchronous ones.
    """

    def __init__(self, topic: str | None = None, **options: Any) -> None:
        self._sub = _sync.Subscriber(topic, **options)
        try:
            self._fd = self._sub.fileno()  # selectable mode: an empty try_receive arms a wake-up
        except BaseException:
            self._sub.close()  # a passive subscriber (no wake-ups) cannot wait in an event loop
            raise
        self._waiters: set[asyncio.Future[None]] = set()
        self._watching: asyncio.AbstractEventLoop | None = None  # the loop watching our fd

    async def receive(self, timeout: float | None = None) -> Message:
        """The next message, waiting up to *timeout* seconds (None: for ever) without blocking
        the loop. Raises ReceiveTimeout, or PublisherGone once the publisher is gone and
        everything it published has been received. Cancellation is safe: no message is lost."""
        timeout = _sync.check_timeout(timeout)
        loop = asyncio.get_running_loop()
        deadline = math.inf if timeout is None else loop.time() + timeout
        while True:
            message = self._sub.try_receive()
            if message is not None:
                return message
            reason = self._sub.end_reason
            if reason is not None:
                message = self._sub.try_receive()  # published just before the end (see Subscriber)
                if message is not None:
                    return message
                raise PublisherGone(self.topic, reason)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ReceiveTimeout(f"no message on topic {self.topic!r} within {timeout} s")
            if self._sub._pidfd is None:  # no pidfd: look at the publisher's lock now and then
                remaining = min(remaining, _sync._LIVENESS_POLL)
            await self._readable(loop, None if math.isinf(remaining) else remaining)

    async def _readable(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> None:
        """Waits until the descriptor is readable (or *timeout*). Several tasks may wait on one
        subscriber: the loop watches the descriptor once for all of them."""
        ready: asyncio.Future[None] = loop.create_future()
        if self._watching is None:
            loop.add_reader(self._fd, self._on_readable)
            self._watching = loop
        self._waiters.add(ready)
        try:
            await asyncio.wait_for(ready, timeout)
        except asyncio.TimeoutError:
            pass  # the caller re-checks and raises ReceiveTimeout
        finally:
            self._waiters.discard(ready)
            if not self._waiters:
                self._stop_watching()

    def _stop_watching(self) -> None:
        if self._watching is not None:
            self._watching.remove_reader(self._fd)
            self._watching = None

    def _on_readable(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except PublisherGone:
            raise StopAsyncIteration from None

    # -- the synchronous rest ------------------------------------------------------

    def try_receive(self) -> Message | None:
        """The next message, or None if there is none yet; never waits
        (:meth:`shmpubsub.Subscriber.try_receive`)."""
        return self._sub.try_receive()

    def receive_into(self, buffer: Any) -> int | None:
        """Copies the next message into *buffer*; never waits (:meth:`shmpubsub.Subscriber.receive_into`)."""
        return self._sub.receive_into(buffer)

    def latest(self) -> Message | None:
        """The newest complete message, or None (:meth:`shmpubsub.Subscriber.latest`)."""
        return self._sub.latest()

    def fileno(self) -> int:
        """The descriptor the loop watches (:meth:`shmpubsub.Subscriber.fileno`)."""
        return self._fd

    @property
    def topic(self) -> str:
        """The topic's name."""
        return self._sub.topic

    @property
    def lost(self) -> int:
        """Messages missed (:attr:`shmpubsub.Subscriber.lost`)."""
        return self._sub.lost

    @property
    def last_seq(self) -> int:
        """Sequence number of the message most recently received."""
        return self._sub.last_seq

    @property
    def end_reason(self) -> str | None:
        """None while the publisher lives, then ``"closed"`` or ``"crashed"``
        (:attr:`shmpubsub.Subscriber.end_reason`)."""
        return self._sub.end_reason

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._sub.closed

    def close(self) -> None:
        """Closes the subscriber; tasks waiting in receive() get ClosedError."""
        self._stop_watching()  # before the descriptor goes
        self._on_readable()
        self._sub.close()

    async def __aenter__(self) -> Subscriber:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<shmpubsub.aio.Subscriber {self.topic!r} closed={self.closed}>"
