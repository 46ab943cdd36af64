"""The exception hierarchy.

Every error the library raises derives from :class:`ShmPubSubError`, and also
from the builtin a caller would naturally catch (``FileExistsError``,
``ValueError``, ...), so both ``except sps.TopicExists`` and
``except FileExistsError`` work.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Iterator
from contextlib import contextmanager


class ShmPubSubError(Exception):
    """Base class of every shmpubsub error."""


class TopicExists(ShmPubSubError, FileExistsError):
    """A live publisher already owns the topic."""


class TopicNotFound(ShmPubSubError, FileNotFoundError):
    """No topic of that name exists (no publisher has created it)."""


class MessageTooLarge(ShmPubSubError, ValueError):
    """The message does not fit in a slot (or in the caller's buffer)."""


class InvalidSegment(ShmPubSubError, ValueError):
    """A segment exists under the name but is corrupt, truncated, foreign or of another layout version."""


class InvalidArgument(ShmPubSubError, ValueError):
    """A bad argument value: a topic name, a geometry, a start mode, ..."""


class InvalidType(ShmPubSubError, TypeError):
    """An argument of the wrong type, such as a message that is not a bytes-like object."""


class ClosedError(ShmPubSubError, ValueError):
    """The handle was closed (or, for a publisher, inherited through fork)."""


class LoanError(ShmPubSubError, RuntimeError):
    """A loan or a view is misused: publishing while a loan is open, committing none, or reading the
    stream of a subscriber while one of its views is open."""


class NotAnArray(ShmPubSubError, ValueError):
    """A message read as a numpy array does not carry an array header (or carries a corrupt one)."""


class MessageOverwritten(ShmPubSubError, RuntimeError):
    """The publisher overwrote a message while it was being read in place (a zero-copy view).

    Whatever was read from it must be discarded. The subscriber has already moved on (the
    message counts in ``lost``); ``seq`` is the number of the message that was overwritten.

    Attributes:
        topic (str): The topic's name.
        seq (int): The sequence number of the message that was overwritten.
    """

    def __init__(self, topic: str, seq: int) -> None:
        super().__init__(
            f"topic {topic!r}: message {seq} was overwritten while being read in place; "
            "discard what was read from it"
        )
        self.topic = topic
        self.seq = seq


class MissingDependency(ShmPubSubError, ModuleNotFoundError):
    """An optional package a call needs is not installed (numpy, for the array calls)."""


class SegmentError(ShmPubSubError, OSError):
    """The operating system refused a shared-memory operation."""


class PermissionDenied(SegmentError, PermissionError):
    """The process may not open or create the segment."""


class TooManySubscribers(SegmentError):
    """Every subscriber entry of the topic is taken (see ``Publisher(max_subscribers=...)``)."""

    def __init__(self, topic: str, limit: int) -> None:
        super().__init__(
            _errno.EUSERS, f"topic {topic!r} already has its maximum of {limit} subscribers attached"
        )


class PublisherGone(ShmPubSubError, EOFError):
    """The publisher is gone and every message it published has been received.

    ``reason`` is ``"closed"`` (it closed the topic) or ``"crashed"`` (it died without closing).

    Attributes:
        topic (str): The topic's name.
        reason (str): ``"closed"`` or ``"crashed"``.
    """

    def __init__(self, topic: str, reason: str) -> None:
        how = "closed the topic" if reason == "closed" else "died without closing the topic"
        super().__init__(f"the publisher of topic {topic!r} {how}")
        self.topic = topic
        self.reason = reason


class ReceiveTimeout(ShmPubSubError, TimeoutError):
    """No message arrived within the time-out."""


class NoSpace(SegmentError):
    """There is not enough shared memory (``/dev/shm`` is full), or disk space for a file-backed ring."""

    def __init__(self, topic: str, size: int, path: str | None = None) -> None:
        where = "shared memory" if path is None else f"space on the file system of {path}"
        full = "/dev/shm" if path is None else "it"
        super().__init__(
            _errno.ENOSPC,
            f"not enough {where} for topic {topic!r}: {size} bytes could not be reserved (is {full} full?)",
        )


class ReadOnlySegment(ShmPubSubError, TypeError):
    """A write through a read-only mapping (``Segment.map_file(..., writable=False)``, or a
    subscriber's): the protection of a mapping never exceeds what its file was opened with."""


class NotFileBacked(ShmPubSubError, ValueError):
    """A call that needs a file-backed topic (``Publisher(..., path=...)``), such as ``flush()``,
    on a topic that lives in memory only."""


class TooManyOpenFiles(ShmPubSubError, OSError):
    """The process (``EMFILE``: see ``ulimit -n``) or the whole system (``ENFILE``) has run out of
    file descriptors. Nothing half-made is left behind; handles already open keep working."""

    def __init__(self, code: int, what: str) -> None:
        whose = "this process" if code == _errno.EMFILE else "the system"
        super().__init__(code, f"{what}: {whose} has no file descriptor left ({_errno.errorcode[code]})")


#: The errnos of running out of file descriptors.
def one_line(error: Exception) -> str:
    """*error* as one line for a person, without the "[Errno N]" that str() gives OSErrors."""
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        return where + error.strerror
    return str(error)


OUT_OF_DESCRIPTORS = (_errno.EMFILE, _errno.ENFILE)


@contextmanager
def descriptors_needed(what: str) -> Iterator[None]:
    """Turns running out of file descriptors inside the block into TooManyOpenFiles, saying
    *what* could not be done."""
    try:
        yield
    except OSError as e:
        if e.errno not in OUT_OF_DESCRIPTORS or isinstance(e, ShmPubSubError):
            raise
        raise TooManyOpenFiles(e.errno, what) from None
