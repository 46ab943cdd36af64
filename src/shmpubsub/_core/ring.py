"""The ring (csrc/ring.c): the publishing and the reading end of a mapped ring."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from typing import Any, Final

from ..errors import (
    ClosedError,
    InvalidArgument,
    InvalidSegment,
    InvalidType,
    LoanError,
    MessageTooLarge,
    ShmPubSubError,
)
from ..message import Batch, Message
from .control import Control
from .lib import BUSY, EMPTY, WAKE, Buffer, address, as_buffer, fastpath, ffi, lib
from .wake import WakeSender

START_MODES: Final = {
    "next": lib.SPS_START_NEXT,
    "latest": lib.SPS_START_LATEST,
    "oldest": lib.SPS_START_OLDEST,
}
RESYNC_MODES: Final = {"oldest": lib.SPS_RESYNC_OLDEST, "latest": lib.SPS_RESYNC_LATEST}


def lap_margin(slot_count: int) -> int:
    """How far past the oldest message a subscriber lapped with ``lapped="oldest"`` resumes."""
    return slot_count // int(lib.SPS_LAP_MARGIN_DIVISOR)


# A C read gives up after 1000 attempts against a writer that keeps overwriting the slot
# being copied (or is preempted in the middle of writing the only slot of a one-slot ring).
# Python calls again for up to this long, then reports "nothing" rather than hang.
_BUSY_BUDGET: Final = 0.02


def _busy_deadline() -> float:
    return time.monotonic() + _BUSY_BUDGET


_BYTE_SIZED: Final = frozenset({bytes, bytearray})


class Writer:
    """The publishing end of a mapped ring."""

    __slots__ = ("_bad", "_base", "_sender", "_topic", "_w", "_wake", "publish")

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
        #: publish(data): publishes one message in one C call and returns its sequence
        #: number; every other outcome (a refusal, sleepers left to wake, an object that is
        #: not a plain buffer) goes through _slow_path.
        self.publish: Callable[[Buffer], int] = fastpath.Publish(self._w, address(self._w), self._slow_path)

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
        lib.sps_writer_bind(self._w, control.struct, sender.struct)
        self._sender = sender
        self._wake = wake

    def _slow_path(self, code: int | None, data: Buffer) -> int:
        if code is None:  # not a contiguous buffer of bytes: as_buffer says why, in our terms
            view = as_buffer(data)
            code = lib.sps_publish_waking(self._w, view, len(view))
            if code >= 0:
                return code
        if code == WAKE:  # published; a sleeper is left to Python (no sender, or a send failed)
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
        if first == WAKE:
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
        if rc == WAKE:
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
        if lib.sps_writer_close(self._w) == WAKE and self._wake is not None:
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
        owner, where = (r, self._scratch, self._ends), address(r)
        #: The next message, or None if there is none yet (or if the writer overwrote every
        #: message while it was being copied, for 20 ms on end).
        self.read: Callable[[], Message | None] = fastpath.Take(
            owner, where, Message, self._read_slow, "read"
        )
        #: read_wait(spin_ns): read(), having spun up to spin_ns (in C, the GIL released) for one.
        self.read_wait: Callable[[int], Message | None] = fastpath.Take(
            owner, where, Message, self._read_slow, "read_wait"
        )
        #: read_many(max_messages): up to that many consecutive messages at once (at most
        #: MAX_BATCH); an empty batch if there is none yet.
        self.read_many: Callable[[int], Batch] = fastpath.Take(
            owner, where, Batch, self._read_many_slow, "read_many"
        )
        #: sleep_read(timeout_ms): for an armed reader with nothing to read, sleeps on the
        #: descriptors given to watch() until woken or timeout_ms pass (-1: no limit), then
        #: read(); woke says what ended the sleep.
        self.sleep_read: Callable[[int], Message | None] = fastpath.Take(
            owner, where, Message, self._read_slow, "sleep_read"
        )
        #: view(): the next message read in place, as (a read-only memoryview of its payload,
        #: a slice of *mapping*; its sequence number), or None if there is none yet. Must be
        #: followed by view_end().
        self.view: Callable[[], tuple[memoryview, int] | None] = fastpath.Take(
            owner, where, None, self._view_slow, "view", mapping
        )
        #: view_end(): True if the viewed message was intact throughout (it is then consumed);
        #: False if it was overwritten meanwhile (the reader has resynchronised and counted the
        #: loss); None if messages were taken since view() (that read took the viewed one).
        self.view_end: Callable[[], bool | None] = fastpath.Take(
            owner, where, None, self._view_end_slow, "view_end"
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
        lib.sps_reader_bind(self._r, control.struct, index)

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
            elif n == EMPTY:
                return None
            elif n != BUSY:
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
            if n == BUSY:
                deadline = deadline or _busy_deadline()
                if time.monotonic() < deadline:
                    continue
            if n in (EMPTY, BUSY):
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
            if n == BUSY:
                deadline = deadline or _busy_deadline()
                if time.monotonic() < deadline:
                    continue
            if n in (EMPTY, BUSY):
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
            if n == BUSY:
                deadline = deadline or _busy_deadline()
                if time.monotonic() < deadline:
                    continue
            if n in (EMPTY, BUSY):
                return None
            raise self._refusal(n)

    def _view_slow(self, n: int) -> tuple[memoryview, int] | None:
        """view()'s other outcomes: nothing, a refusal, or a writer too fast to locate from."""
        if n == BUSY:
            located = self.view_begin()  # tries again for a while
            if located is None:
                return None
            offset, length = located
            try:
                return self._mapping[offset : offset + length], int(self._r.view_next)
            except ValueError:  # released: another thread closed the subscriber just now
                raise self._refusal(lib.SPS_CLOSED) from None
        if n == EMPTY:
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
