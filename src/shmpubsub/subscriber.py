"""The subscribing side of a topic: a read-only mapping and a private read position."""

from __future__ import annotations

import time
import warnings
from types import TracebackType

from . import _core
from .errors import InvalidArgument, InvalidSegment
from .message import Message
from .names import validate_topic
from .segment import Segment

# How long attaching waits for a publisher that is still creating its segment.
_ATTACH_WAIT = 5.0
# ...and how long for one whose segment is unlocked: a creator locks within microseconds.
_ORPHAN_GRACE = 0.2


class Subscriber:
    """A reader of a topic. It maps the segment read-only: nothing it does can corrupt the ring.

    ``start`` picks the first message: ``"next"`` (published after attaching), ``"latest"``
    (the newest already published) or ``"oldest"`` (the oldest the ring still holds).
    ``lapped`` picks where a subscriber that fell a whole ring behind resumes: ``"oldest"``
    (the oldest message still intact, losing as few as possible) or ``"latest"``. Either way
    :attr:`lost` grows by exactly the number of messages skipped.

    Raises TopicNotFound if no publisher has created the topic, InvalidSegment if the
    segment is corrupt, foreign or of an incompatible version.
    """

    def __init__(self, topic: str, *, start: str = "next", lapped: str = "oldest") -> None:
        self._closed = True  # until fully built
        self.topic = validate_topic(topic)
        if start not in _core.START_MODES:
            raise InvalidArgument(f"start must be one of {sorted(_core.START_MODES)}, not {start!r}")
        if lapped not in _core.RESYNC_MODES:
            raise InvalidArgument(f"lapped must be one of {sorted(_core.RESYNC_MODES)}, not {lapped!r}")
        self._segment = Segment.open(self.topic, writable=False)
        try:
            self._base, self.header = _attach(self._segment)
            self._reader = _core.Reader(
                self._base,
                self.header.total_size,
                self.topic,
                _core.START_MODES[start],
                _core.RESYNC_MODES[lapped],
            )
        except BaseException:
            self._segment.close()
            raise
        self._closed = False

    # -- receiving -------------------------------------------------------------

    def try_receive(self) -> Message | None:
        """The next message, or None if there is none yet. Never blocks.

        A message is returned only after its copy was validated (never torn). Costs one C
        call, one copy into a private buffer and one into the returned bytes.
        """
        got = self._reader.read()
        return None if got is None else Message(*got)

    def receive_into(self, buffer: _core.Buffer) -> int | None:
        """Copies the next message into a writable buffer (one copy, no allocation).

        Returns its length (its sequence number is then :attr:`last_seq`), or None if there
        is none yet. Raises MessageTooLarge, leaving the message unread, if it does not fit.
        """
        return self._reader.read_into(buffer)

    def latest(self) -> Message | None:
        """The newest complete message, or None if nothing was published. Does not move the
        stream: :meth:`try_receive` continues where it was."""
        got = self._reader.read_latest()
        return None if got is None else Message(*got)

    # -- state -------------------------------------------------------------------

    @property
    def lost(self) -> int:
        """Total number of messages this subscriber missed because the publisher lapped it."""
        return self._reader.lost

    @property
    def last_seq(self) -> int:
        """Sequence number of the message most recently received."""
        return self._reader.last_seq

    @property
    def next_seq(self) -> int:
        """Sequence number of the message this subscriber will receive next."""
        return self._reader.next_seq

    @property
    def pending(self) -> int:
        """How many messages have been published that this subscriber has not yet taken
        (some may be lost to lapping by the time it gets there)."""
        return max(0, self._reader.write_seq - self._reader.next_seq)

    @property
    def publisher_closed(self) -> bool:
        """True once the publisher has closed the topic (messages may remain to be read)."""
        return self._reader.topic_closed

    @property
    def slots(self) -> int:
        return self.header.slot_count

    @property
    def slot_size(self) -> int:
        return self.header.slot_size

    @property
    def epoch(self) -> int:
        """Changes each time the topic is re-created."""
        return self.header.epoch

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Unmaps the segment (it stays the publisher's to remove). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._reader.close()
        _core.release(self._base)
        self._segment.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self, stacklevel=2)
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"next_seq={self.next_seq} lost={self.lost}"
        return f"<shmpubsub.Subscriber {self.topic!r} {state}>"


def _attach(segment: Segment) -> tuple[object, _core.HeaderInfo]:
    """Maps a segment and validates its header, waiting briefly for a publisher that is still
    creating it. Returns (C pointer to the mapping, header)."""
    what = f"topic {segment.topic!r}"
    began = time.monotonic()
    delay = 0.0005
    while True:
        if segment.nbytes >= _core.HEADER_SIZE:
            mapping = segment.map()
            base = _core.pointer_to(mapping, writable=False)
            try:
                return base, _core.read_header(base, len(mapping), what)
            except _core.HeaderNotReady:
                _core.release(base)
                segment.unmap()
            except BaseException:
                _core.release(base)
                raise
        waited = time.monotonic() - began
        if waited > _ATTACH_WAIT or (waited > _ORPHAN_GRACE and not segment.lock_held()):
            raise InvalidSegment(
                f"{what} exists but was never initialised (its publisher died while creating it, "
                "or is stuck); a new publisher on the topic will replace it"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
