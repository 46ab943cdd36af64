"""Typed wrappers over the compiled C core: the only module that touches ``lib``.

Each wrapper checks arguments in Python, calls C once, and turns C status
codes into exceptions from :mod:`shmpubsub.errors`. The calls made once per message
(publish one, take one, take a batch) go through ``_fastpath``, a CPython-API wrapper over
the same functions of ``lib``: a cffi call and the Python objects built around it cost more
than the message (docs/architecture.md, "Two bindings").
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from . import _fastpath
from ._ffi import ffi, lib
from .errors import (
    ClosedError,
    InvalidArgument,
    InvalidSegment,
    InvalidType,
    LoanError,
    MessageTooLarge,
    SegmentError,
    ShmPubSubError,
)
from .message import Batch, Message

#: The layout version this Python package speaks; the extension must agree.
LAYOUT_VERSION: Final = 2

if lib.SPS_LAYOUT_VERSION != LAYOUT_VERSION:  # pragma: no cover - only with a stale build
    raise ImportError(
        f"shmpubsub's compiled core speaks layout version {lib.SPS_LAYOUT_VERSION} but the Python "
        f"package expects {LAYOUT_VERSION}: the extension is stale, reinstall shmpubsub"
    )


def _address(cdata: Any) -> int:
    return int(ffi.cast("uintptr_t", cdata))


_fastpath.bind(
    *(
        _address(ffi.addressof(lib, f))
        for f in (
            *("sps_publish_waking", "sps_take", "sps_take_wait", "sps_take_many", "sps_sleep_take"),
            *("sps_view_begin", "sps_view_end"),
        )
    )
)

HEADER_SIZE: Final[int] = lib.SPS_HEADER_SIZE
MAX_SLOT_COUNT: Final[int] = lib.SPS_MAX_SLOT_COUNT
MAX_SLOT_SIZE: Final[int] = lib.SPS_MAX_SLOT_SIZE
MAX_SUBSCRIBERS: Final[int] = lib.SPS_MAX_SUBSCRIBERS
MAX_SEQ: Final[int] = lib.SPS_MAX_SEQ
SOCKET_DIR_MAX: Final[int] = lib.SPS_SOCKET_DIR_MAX

START_MODES: Final = {
    "next": lib.SPS_START_NEXT,
    "latest": lib.SPS_START_LATEST,
    "oldest": lib.SPS_START_OLDEST,
}
RESYNC_MODES: Final = {"oldest": lib.SPS_RESYNC_OLDEST, "latest": lib.SPS_RESYNC_LATEST}


def lap_margin(slot_count: int) -> int:
    """How far past the oldest message a subscriber lapped with ``lapped="oldest"`` resumes."""
    return slot_count // int(lib.SPS_LAP_MARGIN_DIVISOR)


# A bytes-like object: anything that exports a contiguous buffer (collections.abc.Buffer from 3.12 on).
Buffer = Any

_EMPTY: Final[int] = lib.SPS_EMPTY
_BUSY: Final[int] = lib.SPS_BUSY
_WAKE: Final[int] = lib.SPS_WAKE
# A C read gives up after 1000 attempts against a writer that keeps overwriting the slot
# being copied (or is preempted in the middle of writing the only slot of a one-slot ring).
# Python calls again for up to this long, then reports "nothing" rather than hang.
_BUSY_BUDGET: Final = 0.02


def _busy_deadline() -> float:
    return time.monotonic() + _BUSY_BUDGET


@dataclass(frozen=True)
class HeaderInfo:
    """A validated segment header."""

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


class HeaderNotReady(InvalidSegment):
    """The segment exists but its creator has not finished writing the header (or died first)."""


class ForeignSegment(InvalidSegment):
    """The segment does not carry shmpubsub's magic number."""


class FileBackedTopic(InvalidSegment):
    """The segment is a file-backed topic's stub: the ring is in the file it names (read_stub)."""


_HEADER_ERRORS: Final = {
    lib.SPS_E_SIZE: "is smaller than a segment header",
    lib.SPS_E_HEADER_SIZE: "has a corrupt header (wrong header size)",
    lib.SPS_E_GEOMETRY: "has a corrupt header (slot count or slot size out of range)",
    lib.SPS_E_TOTAL: "is truncated or corrupt (its size disagrees with its header)",
    lib.SPS_E_SOCKET_DIR: "has a corrupt header (socket directory)",
    lib.SPS_E_PID: "has a corrupt header (publisher pid out of range)",
    lib.SPS_E_SEQ: "has a corrupt header (write_seq out of range)",
}


def _header_error(rc: int, what: str, version: int, file_format: int = 0) -> InvalidSegment:
    if rc == lib.SPS_E_UNINITIALISED:
        return HeaderNotReady(f"{what} is not initialised (its creator is still starting, or died)")
    if rc == lib.SPS_E_MAGIC:
        return ForeignSegment(f"{what} is not a shmpubsub segment (bad magic number)")
    if rc == lib.SPS_E_FILE_BACKED:
        return FileBackedTopic(f"{what} is file-backed: its ring is in the file its stub names")
    if rc == lib.SPS_E_VERSION:
        return InvalidSegment(
            f"{what} has layout version {version}; this shmpubsub speaks version "
            f"{LAYOUT_VERSION} (publisher and subscriber must run compatible versions)"
        )
    if rc == lib.SPS_E_FILE_FORMAT:
        written = (
            "an older shmpubsub, whose slots carry no checksums"
            if file_format == 0
            else f"an incompatible shmpubsub (ring file format {file_format})"
        )
        return InvalidSegment(
            f"{what} is a ring file written by {written}; this shmpubsub reads and writes ring file "
            f"format {FILE_FORMAT}"
        )
    return InvalidSegment(f"{what} {_HEADER_ERRORS.get(rc, f'is invalid (code {rc})')}")


def geometry(slot_count: int, slot_size: int, ring_file: bool = False) -> tuple[int, int]:
    """(slot stride, total segment size) for a ring, in /dev/shm or, with *ring_file*, in a file
    (whose slots have room for a checksum); InvalidArgument if out of range."""
    if not isinstance(slot_count, int) or not isinstance(slot_size, int):
        raise InvalidType("slots and slot_size must be integers")
    if not 1 <= slot_count <= MAX_SLOT_COUNT or slot_count & (slot_count - 1):
        raise InvalidArgument(
            f"slots must be a power of two between 1 and {MAX_SLOT_COUNT}, not {slot_count}"
        )
    if not 0 <= slot_size <= MAX_SLOT_SIZE:
        raise InvalidArgument(f"slot_size must be between 0 and {MAX_SLOT_SIZE} bytes, not {slot_size}")
    stride = ffi.new("uint64_t *")
    total = ffi.new("uint64_t *")
    layout = lib.sps_file_geometry if ring_file else lib.sps_geometry
    if layout(slot_count, slot_size, stride, total) != lib.SPS_OK:  # pragma: no cover
        raise InvalidArgument(f"no ring of {slot_count} slots of {slot_size} bytes")
    return int(stride[0]), int(total[0])


def pointer_to(mapping: Any, writable: bool) -> Any:
    """A C pointer to the start of a mapping; release it with :func:`release` before unmapping."""
    return ffi.from_buffer("unsigned char[]", mapping, require_writable=writable)


def release(pointer: Any) -> None:
    ffi.release(pointer)


def init_header(
    base: Any,
    size: int,
    slot_count: int,
    slot_size: int,
    *,
    epoch: int,
    pid: int,
    start_time: int,
    created_ns: int,
) -> None:
    rc = lib.sps_header_init(base, size, slot_count, slot_size, epoch, pid, start_time, created_ns)
    if rc != lib.SPS_OK:  # pragma: no cover - geometry was checked by the caller
        raise InvalidArgument(f"cannot lay out {slot_count} slots of {slot_size} bytes in {size} bytes")


def read_header(base: Any, size: int, what: str) -> HeaderInfo:
    """Validates the header of a mapping of *size* bytes; *what* names it in errors."""
    info = ffi.new("struct sps_header_info *")
    rc = lib.sps_header_read(base, size, info)
    if rc != lib.SPS_OK:
        raise _header_error(rc, what, info.layout_version, info.file_format)
    return _header_info(info)


def _header_info(info: Any) -> HeaderInfo:
    return HeaderInfo(
        layout_version=info.layout_version,
        slot_count=info.slot_count,
        slot_size=info.slot_size,
        slot_stride=info.slot_stride,
        total_size=info.total_size,
        epoch=info.epoch,
        publisher_pid=info.publisher_pid,
        publisher_start_time=info.publisher_start_time,
        created_ns=info.created_ns,
        write_seq=info.write_seq,
        closed=bool(info.closed),
    )


def lock_take(fd: int) -> bool:
    """Takes the single-writer lock on *fd*: True if taken, False if another holder has it."""
    err = lib.sps_lock_take(fd)
    if err == 0:
        return True
    if err in (errno.EAGAIN, errno.EACCES):  # held by someone else
        return False
    raise OSError(err, f"cannot lock the segment: {os.strerror(err)}")


def lock_held(fd: int) -> bool:
    """True if any other open file description holds the single-writer lock on *fd*."""
    rc = lib.sps_lock_probe(fd)
    if rc < 0:
        raise OSError(-rc, f"cannot probe the segment lock: {os.strerror(-rc)}")
    return bool(rc)


@dataclass(frozen=True)
class SubscriberInfo:
    """One attached subscriber, as its control entry describes it (values its subscriber
    wrote: untrusted). ``index`` is the entry's number, ``token`` the random number naming its
    wake-up socket, ``pid`` and ``start_time`` its process, ``read_pos`` the sequence number it
    reads next (0 before its first read), ``lost`` what it missed, ``asleep`` whether it waits
    for a wake-up."""

    index: int
    token: int
    pid: int
    start_time: int
    read_pos: int
    lost: int
    asleep: bool


def control_geometry(max_subscribers: int) -> int:
    """Total size of a control segment; InvalidArgument if out of range."""
    if not isinstance(max_subscribers, int) or not 1 <= max_subscribers <= MAX_SUBSCRIBERS:
        raise InvalidArgument(
            f"max_subscribers must be between 1 and {MAX_SUBSCRIBERS}, not {max_subscribers!r}"
        )
    total = ffi.new("uint64_t *")
    lib.sps_control_geometry(max_subscribers, total)
    return int(total[0])


def init_control(base: Any, size: int, max_subscribers: int, epoch: int, socket_dir: str) -> None:
    encoded = socket_dir.encode()
    if len(encoded) >= SOCKET_DIR_MAX:  # pragma: no cover - socket_dir() keeps it short
        raise InvalidArgument(f"socket directory {socket_dir!r} is too long")
    rc = lib.sps_control_init(base, size, max_subscribers, epoch, encoded)
    if rc != lib.SPS_OK:  # pragma: no cover
        raise InvalidArgument(f"cannot initialise a control segment (code {rc})")


class Control:
    """A validated control segment: subscriber entries and the sleepers bitmap."""

    __slots__ = ("_c", "epoch", "max_subscribers", "socket_dir")

    def __init__(self, base: Any, size: int, what: str) -> None:
        self._c = ffi.new("struct sps_control *")
        info = ffi.new("struct sps_control_info *")
        rc = lib.sps_control_open(self._c, base, size, info)
        if rc != lib.SPS_OK:
            raise _header_error(rc, what, info.layout_version)
        self.epoch = int(info.epoch)
        self.max_subscribers = int(info.max_subscribers)
        self.socket_dir = ffi.string(info.socket_dir).decode(errors="replace")

    def claim(self, token: int, pid: int, start_time: int) -> int | None:
        """Takes a free entry for *token* (odd): its index, or None if all are taken."""
        index: int = lib.sps_control_claim(self._c, token, pid, start_time)
        if index == lib.SPS_CLOSED:
            raise ClosedError("the control segment is closed")
        return None if index == lib.SPS_FULL else index

    def release(self, index: int, token: int, owner: bool) -> bool:
        """Frees entry *index* if it still belongs to *token*; the *owner* also withdraws its
        sleep request (a reclaimer must not: the bit may already be a new owner's)."""
        return bool(lib.sps_control_release(self._c, index, token, int(owner)))

    def close(self) -> None:
        """Refuses further calls and waits for those in flight in other threads."""
        lib.sps_control_close(self._c)

    def entry(self, index: int) -> SubscriberInfo | None:
        info = ffi.new("struct sps_entry_info *")
        if lib.sps_control_entry(self._c, index, info) != lib.SPS_OK:
            return None
        return SubscriberInfo(
            index, info.token, info.pid, info.start_time, info.read_pos, info.lost, bool(info.asleep)
        )

    def abandoned_claims(self) -> list[tuple[int, int]]:
        """(index, pid) of each entry being claimed: a claim under way, or a claimer that died
        in the middle of it (then :meth:`abandon` frees it)."""
        info = ffi.new("struct sps_entry_info *")
        found = []
        for index in range(self.max_subscribers):
            if lib.sps_control_entry(self._c, index, info) == lib.SPS_CLAIMING:
                found.append((index, int(info.pid)))
        return found

    def abandon(self, index: int, pid: int) -> bool:
        """Frees entry *index* if *pid* (dead) is still claiming it."""
        return bool(lib.sps_control_abandon(self._c, index, pid))

    def entries(self) -> list[SubscriberInfo]:
        """Every taken entry."""
        found = (self.entry(i) for i in range(self.max_subscribers))
        return [e for e in found if e is not None]


class WakeSender:
    """The publisher's wake-up sender (csrc/wake.c): after a publish that finds sleepers, the
    writer sends each a datagram itself, in the same C call. Sends that fail come back here."""

    __slots__ = ("_control", "_k")

    def __init__(self, control: Control, fd: int, prefix: str, max_links: int) -> None:
        if not 0 <= max_links <= 2**32 - 1:
            raise InvalidArgument(f"max_links must be from 0 to 2**32 - 1, not {max_links}")
        self._control = control  # its struct must outlive ours, which points to it
        self._k = ffi.new("struct sps_waker *")
        if lib.sps_waker_init(self._k, control._c, fd, prefix.encode(), max_links) != lib.SPS_OK:
            raise InvalidArgument(f"socket path prefix {prefix!r} leaves no room for a token")

    @property
    def links(self) -> int:
        """Sockets kept connected to a subscriber each."""
        return int(self._k.links_open)

    def close(self) -> None:
        """Closes the connected sockets; only once the control handle is closed (no wake-up
        can then be in flight)."""
        lib.sps_waker_close(self._k)

    @property
    def sent(self) -> int:
        return int(self._k.sent)

    @property
    def failed(self) -> int:
        return int(self._k.failed)

    def wake(self) -> list[tuple[int, int, int]]:
        """Wakes the sleepers; (entry index, token, errno) of each send that failed, here or
        in an earlier publish, each reported once."""
        count = lib.sps_wake(self._k)
        failures = [(int(f.index), int(f.token), int(f.error)) for f in self._k.failures[0:count]]
        self._k.failure_count = 0
        return failures


def drain(fd: int) -> int:
    """Discards the datagrams waiting in a socket: their count."""
    count: int = lib.sps_drain(fd)
    if count < 0:
        raise OSError(-count, os.strerror(-count))
    return count


def as_buffer(data: Buffer) -> Any:
    """A C view of any bytes-like object, without copying."""
    try:
        return ffi.from_buffer(data)
    except TypeError:
        raise InvalidType(f"expected a bytes-like object, not {type(data).__name__}") from None
    except (ValueError, BufferError) as e:  # not C-contiguous
        raise InvalidArgument(f"the buffer must be contiguous: {e}") from None


_BYTE_SIZED: Final = frozenset({bytes, bytearray})


class Writer:
    """The publishing end of a mapped ring."""

    __slots__ = ("_bad", "_base", "_publish_one", "_sender", "_topic", "_w", "_wake", "send")

    def __init__(self, base: Any, size: int, topic: str) -> None:
        self._w = ffi.new("struct sps_writer *")
        self._bad = ffi.new("uint64_t *")
        self._base = base
        self._topic = topic
        self._wake: Callable[[], None] | None = None
        self._sender: WakeSender | None = None  # kept alive: the writer points to it
        rc = lib.sps_writer_init(self._w, base, size)
        if rc != lib.SPS_OK:  # pragma: no cover - the segment was just created and validated
            raise InvalidSegment(f"topic {topic!r}: cannot attach a writer (code {rc})")
        # publish(data) in one C call. Sequence numbers come straight back; every other
        # outcome goes through _slow_path.
        self._publish_one = _fastpath.Publish(self._w, _address(self._w), self._slow_path)
        #: What Publisher.publish is bound to: the C call itself, unless a subclass adds to it.
        self.send: Callable[[Buffer], int] = self._publish_one

    @property
    def capacity(self) -> int:
        return int(self._w.ring.slot_capacity)

    @property
    def next_seq(self) -> int:
        return int(self._w.next)

    @property
    def streams_from(self) -> int | None:
        """Payloads this long or longer are written with cache-bypassing stores (None: never;
        only rings larger than the caches use them, see csrc/ring.c)."""
        n = int(self._w.stream_from)
        return None if n == 2**64 - 1 else n

    def _stream_copies_for_test(self) -> None:
        """Writes every payload with streaming stores, whatever the ring's size. Only for the
        tests that hammer that path on a one-slot ring."""
        self._w.stream_from = 0

    def bind(self, control: Control, sender: WakeSender, wake: Callable[[], None]) -> None:
        """Watches *control*'s sleepers after each publish. publish() wakes them through
        *sender* itself; every other call, or a send that failed, calls *wake*."""
        lib.sps_writer_bind(self._w, control._c, sender._k)
        self._sender = sender
        self._wake = wake

    def publish(self, data: Buffer) -> int:
        return self._publish_one(data)

    def _slow_path(self, code: int | None, data: Buffer) -> int:
        if code is None:  # not a contiguous buffer of bytes: as_buffer says why, in our terms
            view = as_buffer(data)
            code = lib.sps_publish_waking(self._w, view, len(view))
            if code >= 0:
                return code
        if code == _WAKE:  # published; a sleeper is left to Python (no sender, or a send failed)
            if self._wake is not None:
                self._wake()
            return int(self._w.next) - 1
        raise self._refusal(code, len(data) if type(data) is bytes else len(as_buffer(data)))

    def publish_many(self, messages: Any, size: int | None) -> int:
        """Publishes a batch (see Publisher.publish_many): the first message's number."""
        if size is None:
            if isinstance(messages, (bytes, bytearray, memoryview)):
                raise InvalidType(
                    "publish_many takes an iterable of messages; for one buffer of fixed-size messages "
                    "pass size="
                )
            if not isinstance(messages, (list, tuple)):
                try:
                    items = iter(messages)
                except TypeError:
                    raise InvalidType(
                        f"publish_many takes an iterable of messages, not {type(messages).__name__}"
                    ) from None
                messages = list(items)
            if set(map(type, messages)) <= _BYTE_SIZED:  # their len() counts bytes
                lengths = list(map(len, messages))
            else:
                lengths = [len(as_buffer(m)) for m in messages]
            try:
                data = b"".join(messages)
            except (TypeError, BufferError) as e:
                raise InvalidType(f"publish_many takes bytes-like messages: {e}") from None
            count, record = len(lengths), 0
        else:
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise InvalidArgument(f"size must be an int >= 1, not {size!r}")
            data = as_buffer(messages)
            count, rest = divmod(len(data), size)
            if rest:
                raise InvalidArgument(
                    f"a buffer of {len(data)} bytes does not hold a whole number of {size}-byte messages"
                )
            lengths, record = None, size
        bad = self._bad
        first: int = lib.sps_publish_many(self._w, data, lengths or ffi.NULL, count, record, bad)
        if first >= 0:
            return first
        if first == _WAKE:
            if self._wake is not None:
                self._wake()
            return int(self._w.next) - count
        if first == lib.SPS_TOO_LARGE and lengths:
            raise MessageTooLarge(
                f"message {bad[0]} of the batch has {lengths[bad[0]]} bytes: it does not fit topic "
                f"{self._topic!r} (slot_size={self.capacity}); nothing was published"
            )
        raise self._refusal(first, record)

    def loan(self, size: int) -> int:
        """Opens a loan; returns the payload's offset in the mapping."""
        if not isinstance(size, int) or size < 0:
            raise InvalidArgument(f"loan size must be a non-negative integer, not {size!r}")
        offset = ffi.new("uint64_t *")
        rc = lib.sps_loan(self._w, size, offset)
        if rc != lib.SPS_OK:
            raise self._refusal(rc, size)
        return int(offset[0])

    def skip(self, count: int) -> None:
        """Marks the next *count* sequence numbers as lost (see Publisher.skip)."""
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise InvalidArgument(f"the number of messages to skip must be an int >= 0, not {count!r}")
        rc = lib.sps_skip(self._w, count)
        if rc == _WAKE:
            if self._wake is not None:
                self._wake()
        elif rc == lib.SPS_TOO_LARGE:
            raise InvalidArgument(
                f"topic {self._topic!r}: cannot skip {count} messages: sequence numbers would pass "
                f"2**62 (the next is {self.next_seq})"
            )
        elif rc != lib.SPS_OK:
            raise self._refusal(rc, count)

    def commit(self) -> int:
        seq: int = lib.sps_commit(self._w)
        if seq < 0:
            return self._slow_path(seq, b"")
        return seq

    def abort(self) -> None:
        rc = lib.sps_abort(self._w)
        if rc != lib.SPS_OK:
            raise self._refusal(rc, 0)

    def close(self) -> None:
        """Marks the topic closed in shared memory, waking sleepers; further calls raise
        ClosedError. Waits for calls in flight in other threads."""
        if lib.sps_writer_close(self._w) == _WAKE and self._wake is not None:
            self._wake()

    def forked(self) -> None:
        """Disables this copy of the writer (it was inherited by a fork child)."""
        lib.sps_writer_forked(self._w)

    def _refusal(self, code: int, size: int) -> ShmPubSubError:
        if code == lib.SPS_TOO_LARGE:
            return MessageTooLarge(
                f"a message of {size} bytes does not fit topic {self._topic!r} (slot_size={self.capacity})"
            )
        if code == lib.SPS_LOAN_ACTIVE:
            return LoanError(f"topic {self._topic!r}: a loan is open; leave its with-block first")
        if code == lib.SPS_NO_LOAN:
            return LoanError(f"topic {self._topic!r}: no loan is open")
        if code == lib.SPS_FORKED:
            return ClosedError(
                f"topic {self._topic!r}: this publisher was inherited through fork(); only the process "
                "that created it may publish"
            )
        return ClosedError(f"topic {self._topic!r}: the publisher is closed")


#: Messages up to this size are copied out through the reader's scratch buffer (two copies,
#: one C call); larger ones straight from the slot into the returned bytes (one copy, two C
#: calls), where the second copy would cost more than the call.
SCRATCH_COPY_MAX: Final = 4096
#: The scratch buffer that batches of small messages are copied into, and the most
#: messages one batch holds.
BATCH_BYTES: Final = 65536
MAX_BATCH: Final = 4096


class Reader:
    """The reading end of a mapped ring: copies messages out and validates them."""

    __slots__ = (
        *("_ends", "_mapping", "_r", "_scratch", "_seq_out", "_topic"),
        *("read", "read_many", "read_wait", "sleep_read", "view", "view_end"),  # _fastpath's calls
    )

    def __init__(
        self, base: Any, size: int, mapping: memoryview, topic: str, start: int, resync: int
    ) -> None:
        """*base* points at the start of *mapping* (a view of the segment), which holds the ring's
        *size* bytes."""
        self._r = ffi.new("struct sps_reader *")
        self._topic = topic
        self._mapping = mapping
        rc = lib.sps_reader_init(self._r, base, size, start, resync)
        if rc != lib.SPS_OK:  # pragma: no cover - validated just before
            raise InvalidSegment(f"topic {topic!r}: cannot attach a reader (code {rc})")
        self._scratch = ffi.new("char[]", BATCH_BYTES)
        self._ends = ffi.new("uint64_t[]", MAX_BATCH)
        self._seq_out = ffi.new("uint64_t *")
        r = self._r
        r.scratch = self._scratch
        r.take_cap = min(int(r.ring.slot_capacity), SCRATCH_COPY_MAX)
        r.batch_cap = BATCH_BYTES
        r.ends = self._ends
        r.batch_max = MAX_BATCH  # the size of ends: _fastpath's read_many never asks for more
        r.spin_ns = 0
        # One C call each (see _fastpath); nothing, an error or a large message go the slow way.
        owner, address = (r, self._scratch, self._ends), _address(r)
        #: The next message, or None if there is none yet (or if the writer overwrote every
        #: message while it was being copied, for 20 ms on end).
        self.read: Callable[[], Message | None] = _fastpath.Take(
            owner, address, Message, self._read_slow, "read"
        )
        #: read_wait(spin_ns): read(), having spun up to spin_ns (in C, the GIL released) for one.
        self.read_wait: Callable[[int], Message | None] = _fastpath.Take(
            owner, address, Message, self._read_slow, "read_wait"
        )
        #: read_many(max_messages): up to that many consecutive messages at once (at most
        #: MAX_BATCH); an empty batch if there is none yet.
        self.read_many: Callable[[int], Batch] = _fastpath.Take(
            owner, address, Batch, self._read_many_slow, "read_many"
        )
        #: sleep_read(timeout_ms): for an armed reader with nothing to read, sleeps on the
        #: descriptors given to watch() until woken or timeout_ms pass (-1: no limit), then
        #: read(); woke says what ended the sleep.
        self.sleep_read: Callable[[int], Message | None] = _fastpath.Take(
            owner, address, Message, self._read_slow, "sleep_read"
        )
        #: view(): the next message read in place, as (a read-only memoryview of its payload,
        #: a slice of *mapping*; its sequence number), or None if there is none yet. Must be
        #: followed by view_end().
        self.view: Callable[[], tuple[memoryview, int] | None] = _fastpath.Take(
            owner, address, None, self._view_slow, "view", mapping
        )
        #: view_end(): True if the viewed message was intact throughout (it is then consumed);
        #: False if it was overwritten meanwhile (the reader has resynchronised and counted the
        #: loss); None if messages were taken since view() (that read took the viewed one).
        self.view_end: Callable[[], bool | None] = _fastpath.Take(
            owner, address, None, self._view_end_slow, "view_end"
        )

    @property
    def lost(self) -> int:
        return int(self._r.lost)

    @property
    def next_seq(self) -> int:
        return int(self._r.next)

    @property
    def last_seq(self) -> int:
        return int(self._r.last_seq)

    @property
    def write_seq(self) -> int:
        seq: int = lib.sps_reader_write_seq(self._r)
        if seq < 0:
            raise self._refusal(seq)
        return seq

    @property
    def topic_closed(self) -> bool:
        rc: int = lib.sps_reader_topic_closed(self._r)
        if rc < 0:
            raise self._refusal(rc)
        return bool(rc)

    def bind(self, control: Control, index: int) -> None:
        """Ties this reader to its control entry (position reports, sleepers bit)."""
        lib.sps_reader_bind(self._r, control._c, index)

    def watch(self, epoll_fd: int, wake_fd: int) -> None:
        """Where sleep_read sleeps: *epoll_fd*, which watches the wake-up socket *wake_fd* (and
        the publisher's pidfd) with each descriptor as its event's data, as select.epoll does."""
        self._r.sleep_fd = epoll_fd
        self._r.wake_fd = wake_fd

    @property
    def woke(self) -> tuple[bool, bool]:
        """What ended the last sleep_read: (the wake-up socket is readable, the other descriptor
        is: the publisher ended). Both False after a time-out or a signal."""
        woke = int(self._r.woke)
        if woke < 0 and woke != -errno.EINTR:
            raise OSError(-woke, f"cannot sleep on topic {self._topic!r}: {os.strerror(-woke)}")
        return woke > 0 and bool(woke & lib.SPS_WOKE_SOCKET), woke > 0 and bool(woke & lib.SPS_WOKE_OTHER)

    def arm(self) -> bool:
        """Asks for a wake-up; True if the caller must not sleep (a message is there, or the topic
        closed). The check after arming is what makes wake-ups impossible to lose."""
        return bool(lib.sps_arm(self._r))

    def disarm(self) -> None:
        lib.sps_disarm(self._r)

    def spin(self, seconds: float) -> int:
        """Busy-waits in C (the GIL released) for up to *seconds*: 1 when a message is there,
        2 when the topic closed, 0 on time-out."""
        return int(lib.sps_spin(self._r, int(seconds * 1e9)))

    def _read_slow(self, n: int) -> Message | None:
        """read()'s other outcomes: a large message, nothing, or a writer too fast to copy from."""
        deadline = 0.0
        while n < 0:
            if n == lib.SPS_BUFFER_TOO_SMALL:
                got = self._copy_from_slot()
                if got is not None:
                    return got  # else it was overwritten while copied (counted lost): go on
            elif n == _EMPTY:
                return None
            elif n != _BUSY:
                raise self._refusal(n)
            deadline = deadline or _busy_deadline()
            if time.monotonic() >= deadline:
                return None
            n = lib.sps_take(self._r)
        return Message(ffi.unpack(self._scratch, n), self._r.last_seq)

    def _copy_from_slot(self) -> Message | None:
        """Copies the next message straight out of its slot into new bytes, then validates the
        copy (as a view would be): None if it was overwritten meanwhile (counted lost)."""
        located = self.view_begin()
        if located is None:
            return None
        offset, n = located
        seq = int(self._r.next)
        data = self._mapping[offset : offset + n].tobytes()
        return Message(data, seq) if self.view_end() else None

    def _read_many_slow(self, code: int) -> Batch:
        """read_many()'s other outcomes: a message larger than the scratch buffer, or nothing."""
        got = self._read_slow(code)
        return Batch([], self.next_seq) if got is None else Batch([got.data], got.seq)

    def read_into(self, buffer: Buffer) -> int | None:
        """Copies the next message into *buffer*; its length, or None if there is none yet."""
        try:
            dst = ffi.from_buffer(buffer, require_writable=True)
        except (TypeError, BufferError):
            raise InvalidType(f"expected a writable bytes-like object, not {type(buffer).__name__}") from None
        except ValueError as e:
            raise InvalidArgument(f"the buffer must be contiguous: {e}") from None
        deadline = 0.0
        while True:
            n: int = lib.sps_read(self._r, dst, len(dst))
            if n >= 0:
                return n
            if n == _BUSY:
                deadline = deadline or _busy_deadline()
                if time.monotonic() < deadline:
                    continue
            if n in (_EMPTY, _BUSY):
                return None
            if n == lib.SPS_BUFFER_TOO_SMALL:
                raise MessageTooLarge(
                    f"topic {self._topic!r}: message {self._r.next} has {self._r.last_len} bytes but the "
                    f"buffer holds {len(dst)}; it stays unread"
                )
            raise self._refusal(n)

    def read_latest(self) -> Message | None:
        buffer, size = self._scratch, BATCH_BYTES
        deadline = 0.0
        while True:
            n: int = lib.sps_read_latest(self._r, buffer, size, self._seq_out)
            if n >= 0:
                return Message(ffi.unpack(buffer, n), int(self._seq_out[0]))
            if n == lib.SPS_BUFFER_TOO_SMALL:  # larger than the scratch buffer: a buffer of its size
                size = int(self._r.last_len)
                buffer = ffi.new("char[]", size)
                continue
            if n == _BUSY:
                deadline = deadline or _busy_deadline()
                if time.monotonic() < deadline:
                    continue
            if n in (_EMPTY, _BUSY):
                return None
            raise self._refusal(n)

    def view_begin(self) -> tuple[int, int] | None:
        """Locates the next message for a zero-copy read: (offset in the mapping, length), or
        None if there is none yet. Must be followed by :meth:`view_end`."""
        deadline = 0.0
        while True:
            n: int = lib.sps_view_begin(self._r)
            if n >= 0:
                return self._r.view_offset, n
            if n == _BUSY:
                deadline = deadline or _busy_deadline()
                if time.monotonic() < deadline:
                    continue
            if n in (_EMPTY, _BUSY):
                return None
            raise self._refusal(n)

    def _view_slow(self, n: int) -> tuple[memoryview, int] | None:
        """view()'s other outcomes: nothing, a refusal, or a writer too fast to locate from."""
        if n == _BUSY:
            located = self.view_begin()  # tries again for a while
            if located is None:
                return None
            offset, length = located
            try:
                return self._mapping[offset : offset + length], int(self._r.view_next)
            except ValueError:  # released: another thread closed the subscriber just now
                raise self._refusal(lib.SPS_CLOSED) from None
        if n == _EMPTY:
            return None
        raise self._refusal(n)

    def _view_end_slow(self, rc: int) -> bool | None:
        if rc == lib.SPS_OVERWRITTEN:
            return False
        if rc == lib.SPS_MOVED:
            return None
        raise self._refusal(rc)

    def close(self) -> None:
        """Refuses further calls and waits for those in flight in other threads (each is
        bounded in time): afterwards the mapping may be unmapped."""
        lib.sps_reader_close(self._r)

    def _refusal(self, code: int) -> ShmPubSubError:
        if code == lib.SPS_CLOSED:
            return ClosedError(f"topic {self._topic!r}: the subscriber is closed")
        return ShmPubSubError(
            f"topic {self._topic!r}: unexpected status {code} from the ring"
        )  # pragma: no cover

    def _skip_validation_for_test(self) -> None:
        """Turns off torn-read detection. Only for the test that proves the checker catches torn reads."""
        self._r.validate = 0


# -- file-backed rings --------------------------------------------------------------------

TOPIC_MAX: Final[int] = lib.SPS_TOPIC_MAX
BOOT_ID_SIZE: Final[int] = lib.SPS_BOOT_ID_SIZE
STUB_SIZE: Final[int] = lib.SPS_STUB_SIZE
PATH_MAX: Final[int] = lib.SPS_PATH_MAX
#: Trust every complete message when reopening a ring (see reopen).
TRUST_ALL: Final = 2**64 - 1
#: The format of ring files this build writes (slots with checksums) and reopens.
FILE_FORMAT: Final[int] = lib.SPS_FILE_FORMAT


@dataclass(frozen=True)
class FileHeaderInfo:
    """The file block of a ring's header: zero for /dev/shm rings."""

    flushed: int
    boot_id: bytes
    topic: str
    format: int


@dataclass(frozen=True)
class Recovery:
    """What reopening a ring file found: where numbering continues (``next``), the slots kept
    intact, found half-written (``torn``), complete but not holding what their checksum says
    (``corrupt``: pages of two messages mixed by a power cut, or damaged on disk), dropped
    because they were not known to be on disk (``unflushed``), and rewritten (``repaired``: as
    skip markers, which subscribers count lost)."""

    next: int
    kept: int
    torn: int
    corrupt: int
    unflushed: int
    repaired: int


@dataclass(frozen=True)
class StubInfo:
    """A file-backed topic's stub: the file holding its ring, and that ring's epoch and publisher."""

    path: str
    epoch: int
    publisher_pid: int


def _file_info(info: Any) -> FileHeaderInfo:
    return FileHeaderInfo(
        flushed=int(info.flushed),
        boot_id=bytes(ffi.buffer(info.boot_id)),
        topic=ffi.string(info.topic).decode(errors="replace"),
        format=int(info.format),
    )


def _boot_id(boot_id: bytes) -> bytes:
    if len(boot_id) != BOOT_ID_SIZE:  # pragma: no cover - _proc.boot_id() gives 16 bytes
        raise InvalidArgument(f"a boot id has {BOOT_ID_SIZE} bytes, not {len(boot_id)}")
    return boot_id


def init_header_file(
    base: Any,
    size: int,
    slot_count: int,
    slot_size: int,
    *,
    epoch: int,
    pid: int,
    start_time: int,
    created_ns: int,
    topic: str,
    boot_id: bytes,
) -> None:
    """Writes a fresh header for a file-backed ring of *topic* (the magic last)."""
    rc = lib.sps_header_init_file(
        base, size, slot_count, slot_size, epoch, pid, start_time, created_ns, topic.encode(),
        _boot_id(boot_id),
    )
    if rc != lib.SPS_OK:  # pragma: no cover - geometry and topic were checked by the caller
        raise InvalidArgument(f"cannot lay out {slot_count} slots of {slot_size} bytes in {size} bytes")


def inspect_header(base: Any, size: int, what: str) -> tuple[HeaderInfo, FileHeaderInfo]:
    """Validates a ring's header for the holder of its single-writer lock, who may find the
    magic withdrawn by a writer that died while opening it (sps_header_inspect)."""
    info = ffi.new("struct sps_header_info *")
    file = ffi.new("struct sps_file_header_info *")
    rc = lib.sps_header_inspect(base, size, info, file)
    if rc != lib.SPS_OK:
        raise _header_error(rc, what, info.layout_version, info.file_format)
    return _header_info(info), _file_info(file)


def file_header(base: Any) -> FileHeaderInfo:
    """The file block of a header already validated by read_header."""
    file = ffi.new("struct sps_file_header_info *")
    lib.sps_header_file(base, file)
    return _file_info(file)


def reopen(
    base: Any,
    size: int,
    what: str,
    *,
    trusted_end: int,
    epoch: int,
    pid: int,
    start_time: int,
    boot_id: bytes,
    created_ns: int,
) -> Recovery:
    """Reopens a ring file whose writer ended: repairs its slots, continues its numbering, and
    gives it a new incarnation (sps_file_reopen). The caller holds the single-writer lock."""
    out = ffi.new("struct sps_recovery *")
    boot = _boot_id(boot_id)
    rc = lib.sps_file_reopen(base, size, trusted_end, epoch, pid, start_time, created_ns, boot, out)
    if rc != lib.SPS_OK:
        raise _header_error(rc, what, 0)
    return _recovery(out)


def _recovery(out: Any) -> Recovery:
    return Recovery(
        int(out.next), int(out.kept), int(out.torn), int(out.corrupt), int(out.unflushed), int(out.repaired)
    )


def recover_copy(base: Any, size: int, what: str, *, trusted_end: int) -> Recovery:
    """Repairs a private copy-on-write mapping of a ring file whose publisher is gone, as
    :func:`reopen` would repair the file; the file is untouched (sps_file_recover_copy)."""
    out = ffi.new("struct sps_recovery *")
    rc = lib.sps_file_recover_copy(base, size, trusted_end, out)
    if rc != lib.SPS_OK:
        raise _header_error(rc, what, 0)
    return _recovery(out)


def flush(base: Any, size: int, what: str, only_if_new: bool = False) -> int:
    """msync(MS_SYNC) of a ring's whole mapping (with *only_if_new*, only if something was
    published since the last flush); returns how many messages are now on disk. Releases the
    GIL while the disk works."""
    flushed = ffi.new("uint64_t *")
    rc = lib.sps_file_flush(base, size, int(only_if_new), flushed)
    if rc != lib.SPS_OK:
        raise SegmentError(-rc, f"{what}: cannot write it to disk: {os.strerror(-rc)}")
    return int(flushed[0])


def init_stub(base: Any, size: int, path: str, epoch: int, pid: int) -> None:
    encoded = os.fsencode(path)
    if len(encoded) >= PATH_MAX:  # pragma: no cover - checked by the caller
        raise InvalidArgument(f"path {path!r} is too long")
    rc = lib.sps_stub_init(base, size, encoded, epoch, pid)
    if rc != lib.SPS_OK:  # pragma: no cover
        raise InvalidArgument(f"cannot write a stub for {path!r} (code {rc})")


def read_stub(base: Any, size: int, what: str) -> StubInfo:
    """Validates a file-backed topic's stub."""
    info = ffi.new("struct sps_stub_info *")
    rc = lib.sps_stub_read(base, size, info)
    if rc != lib.SPS_OK:
        raise _header_error(rc, f"{what} (a file-backed topic's stub)", LAYOUT_VERSION)
    return StubInfo(os.fsdecode(ffi.string(info.path)), int(info.epoch), int(info.publisher_pid))
