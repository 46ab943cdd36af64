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
import os
from collections.abc import AsyncIterator
from types import TracebackType

from . import publisher, subscriber
from .errors import PublisherGone, ReceiveTimeout
from .message import Message
from .waiting import check_timeout


class Publisher(publisher.Publisher):
    """The synchronous :class:`shmpubsub.Publisher` (publishing never waits), usable with
    ``async with``."""

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Subscriber(subscriber.SubscriberBase):
    """Like :class:`shmpubsub.Subscriber`, with ``await receive()`` and ``async for``.

    Takes the same arguments, but for ``wait`` (waiting for the topic would block the event
    loop). The calls that never wait (``try_receive``, ``try_receive_many``,
    ``receive_into``, ``latest``) and the state (``lost``, ``end_reason``, ...) are the
    synchronous ones.

    Attributes:
        topic (str): The topic's name (for a subscriber by ``path=``, the name the file records).
        header (HeaderInfo): The ring's header as validated when attaching (its ``write_seq``
            and ``closed`` as they were then).
    """

    def __init__(
        self,
        topic: str | None = None,
        *,
        start: str = "next",
        lapped: str = "oldest",
        spin_us: float = 50.0,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        self._waiters: set[asyncio.Future[None]] = set()
        self._watching: asyncio.AbstractEventLoop | None = None  # the loop watching our fd
        super().__init__(topic, start=start, lapped=lapped, spin_us=spin_us, path=path)
        try:
            self._fd = self.fileno()  # selectable mode: an empty try_receive arms a wake-up
        except BaseException:
            super().close()  # a passive subscriber (no wake-ups) cannot wait in an event loop
            raise

    async def receive(self, timeout: float | None = None) -> Message:
        """The next message, waiting up to *timeout* seconds (None: for ever) without blocking
        the loop. Raises ReceiveTimeout, or PublisherGone once the publisher is gone and
        everything it published has been received. Cancellation is safe: no message is lost."""
        timeout = check_timeout(timeout)
        loop = asyncio.get_running_loop()
        deadline = math.inf if timeout is None else loop.time() + timeout
        while True:
            message = self.try_receive()
            if message is not None:
                return message
            reason = self.end_reason
            if reason is not None:
                message = self.try_receive()  # published just before the end (see Subscriber)
                if message is not None:
                    return message
                raise PublisherGone(self.topic, reason)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ReceiveTimeout(f"no message on topic {self.topic!r} within {timeout} s")
            remaining = self._waiter.poll_limit(remaining)  # how long before a look at its liveness
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

    def close(self) -> None:
        """Closes the subscriber; tasks waiting in receive() get ClosedError."""
        if os.getpid() == self._pid:  # a fork child's copy of the loop is not ours to touch
            self._stop_watching()  # before the descriptor goes
            self._on_readable()
        super().close()

    async def __aenter__(self) -> Subscriber:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<shmpubsub.aio.Subscriber {self.topic!r} closed={self.closed}>"
