"""Records the library hands out: what a segment's header, a subscriber's control entry and
the reopening of a ring file say. Plain frozen dataclasses, built by the binding layer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HeaderInfo:
    """A validated segment header (``Subscriber.header``).

    ``slot_count`` and ``slot_size`` are the ring's geometry (``slot_stride`` the bytes each
    slot takes, header included; ``total_size`` the segment's); ``epoch`` changes each time the
    topic is re-created; ``publisher_pid`` and ``publisher_start_time`` name the process that
    created it; ``created_ns`` is when (``time.time_ns()``); ``write_seq`` how many messages
    were published when the header was read; ``closed`` whether the publisher had closed it.
    """

    layout_version: int
    slot_count: int
    slot_size: int
    slot_stride: int
    total_size: int
    epoch: int
    publisher_pid: int
    publisher_start_time: int
    created_ns: int
    write_seq: int
    closed: bool


@dataclass(frozen=True)
class SubscriberInfo:
    """One attached subscriber, as its control entry describes it (``Publisher.subscribers``).

    The values are written by the subscriber, so they are untrusted: ``index`` is its entry,
    ``token`` names its wake-up socket, ``pid`` and ``start_time`` its process, ``read_pos``
    the next message it will read (reported on each read: 0 before its first), ``lost`` how
    many messages it missed, ``asleep`` whether it waits for a wake-up.
    """

    index: int
    token: int
    pid: int
    start_time: int
    read_pos: int
    lost: int
    asleep: bool


@dataclass(frozen=True)
class Recovery:
    """What reopening a ring file found (``Publisher.recovery``): where numbering continues
    (``next``), the slots kept intact, found half-written (``torn``), complete but not holding
    what their checksum says (``corrupt``: pages of two messages mixed by a power cut, or
    damaged on disk), dropped because they were not known to be on disk (``unflushed``), and
    rewritten (``repaired``: as skip markers, which subscribers count lost)."""

    next: int
    kept: int
    torn: int
    corrupt: int
    unflushed: int
    repaired: int


@dataclass(frozen=True)
class FileHeaderInfo:
    """The file block of a ring's header: zero for /dev/shm rings."""

    flushed: int
    boot_id: bytes
    topic: str
    format: int


@dataclass(frozen=True)
class StubInfo:
    """A file-backed topic's stub: the file holding its ring, and that ring's epoch and publisher."""

    path: str
    epoch: int
    publisher_pid: int
