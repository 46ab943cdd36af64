"""Segment lifecycle (create, size, map, unmap, remove), the single-writer rule and takeover after a
crash, validation of corrupt / truncated / foreign segments, bad arguments, use after close, garbage
collection and fork."""

from __future__ import annotations

import errno
import fcntl
import gc
import os
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress

import pytest
from helpers import live_segment_bytes, remove_topic, shm_path, time_limit, write_raw, write_topic
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import shmpubsub as sps
from shmpubsub._core.header import MAX_SEQ, MAX_SLOT_COUNT, MAX_SLOT_SIZE, geometry, init_header
from shmpubsub._core.lib import pointer_to, release
from shmpubsub.names import CONTROL_SUFFIX, PREFIX, SHM_DIR

# Offsets in the header (csrc/layout.h, struct sps_identity and struct sps_progress).
MAGIC, VERSION, HEADER_SIZE_FIELD, SLOT_COUNT, SLOT_SIZE, SLOT_STRIDE, TOTAL_SIZE = 0, 8, 12, 16, 24, 32, 40
EPOCH, PID = 48, 56
WRITE_SEQ, CLOSED = 128, 136
HEADER = 4096

# The small geometry most tests use: 4 slots of 64 bytes -> stride 128, 4096 + 512 bytes.
SLOTS, SLOT_BYTES = 4, 64
STRIDE, TOTAL = 128, 4096 + 4 * 128


def control_path(topic: str) -> str:
    return shm_path(topic, CONTROL_SUFFIX)


def patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


Raw = Callable[..., str]


@pytest.fixture
def raw(topic: str) -> Iterator[Raw]:
    """raw(data, control=None) writes the topic's segments by hand; whatever is left of them is
    removed after the test."""

    def write(data: bytes, control: bytes | None = None) -> str:
        return write_topic(topic, data, control)

    yield write
    remove_topic(topic)


@pytest.fixture(scope="module")
def template() -> tuple[bytes, bytes]:
    topic = f"test-template-{uuid.uuid4().hex[:12]}"
    data, control = live_segment_bytes(topic, slots=SLOTS, slot_size=SLOT_BYTES)
    assert len(data) == TOTAL
    return data, control


@pytest.fixture(scope="module")
def valid_bytes(template: tuple[bytes, bytes]) -> bytes:
    return template[0]


@pytest.fixture(scope="module")
def control_bytes(template: tuple[bytes, bytes]) -> bytes:
    return template[1]


def run_python(code: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )


# -- the five steps, with Segment ------------------------------------------------------------------


def test_segment_steps(topic: str) -> None:
    path = shm_path(topic)
    seg = sps.Segment.create(topic)
    try:
        # 1. create
        assert os.path.exists(path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert seg.writable and not seg.closed
        assert seg.name == "/" + PREFIX + topic
        assert seg.nbytes == 0
        # 2. size: the kernel's size, and the memory reserved now (posix_fallocate)
        seg.size(3 * 4096)
        assert seg.nbytes == 3 * 4096 == os.stat(path).st_size
        assert os.stat(path).st_blocks * 512 >= 3 * 4096
        # 3. map: read-write for the creator
        mem = seg.map()
        assert seg.map() is mem and seg.mapping is mem
        assert len(mem) == 3 * 4096
        mem[0:5] = b"hello"
        mem[-3:] = b"end"
        with open(path, "rb") as f:
            content = f.read()
        assert content[:5] == b"hello" and content[-3:] == b"end"
        # ... and read-only for everyone else
        reader = sps.Segment.open(topic)
        try:
            assert not reader.writable
            flags = fcntl.fcntl(reader.fileno(), fcntl.F_GETFL)
            assert flags & os.O_ACCMODE == os.O_RDONLY
            view = reader.map()
            assert view[:5] == b"hello" and view[-3:] == b"end"
            with pytest.raises(TypeError):
                view[0:1] = b"X"
            mem[5:6] = b"!"
            assert view[:6] == b"hello!"  # one shared object
        finally:
            reader.close()
        # 4. unmap: the view goes, the segment stays
        seg.unmap()
        with pytest.raises(sps.ShmPubSubError):
            _ = seg.mapping
        assert mem.closed
        assert os.path.exists(path)
        again = sps.Segment.open(topic)
        try:
            assert again.map()[:6] == b"hello!"
        finally:
            again.close()
        # 5. remove
        seg.remove()
        assert not os.path.exists(path)
        seg.remove()  # already gone: nothing to do
        with pytest.raises(sps.TopicNotFound) as info:
            sps.Segment.open(topic)
        assert isinstance(info.value, FileNotFoundError)
    finally:
        seg.close()
        remove_topic(topic)  # only does something if the test failed half-way
    assert seg.closed
    seg.close()  # idempotent
    with pytest.raises(sps.ShmPubSubError):
        seg.fileno()


def test_segment_create_exists_and_open_missing(topic: str) -> None:
    with pytest.raises(sps.TopicNotFound):
        sps.Segment.open(topic)
    seg = sps.Segment.create(topic)
    try:
        with pytest.raises(sps.TopicExists) as info:
            sps.Segment.create(topic)
        assert isinstance(info.value, FileExistsError)
        assert info.value.errno == errno.EEXIST
        assert topic in str(info.value)
    finally:
        seg.remove()
        seg.close()


@pytest.mark.parametrize(("umask", "mode"), [(0o077, 0o640), (0o022, 0o666), (0o000, 0o600), (0o777, 0o604)])
def test_segment_mode_ignores_umask(topic: str, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        seg = sps.Segment.create(topic, mode=mode)
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.stat(shm_path(topic)).st_mode) == mode
    finally:
        seg.remove()
        seg.close()


def test_publisher_mode_ignores_umask(topic: str) -> None:
    old = os.umask(0o077)
    try:
        pub = sps.Publisher(topic, slots=2, slot_size=8, mode=0o640)
    finally:
        os.umask(old)
    with pub:
        assert stat.S_IMODE(os.stat(shm_path(topic)).st_mode) == 0o640
    with sps.Publisher(topic, slots=2, slot_size=8):
        assert stat.S_IMODE(os.stat(shm_path(topic)).st_mode) == 0o600


def test_remove_spares_a_successor_under_the_same_name(topic: str) -> None:
    first = sps.Segment.create(topic)
    first.size(4096)
    os.unlink(shm_path(topic))  # someone else removed it ...
    second = sps.Segment.create(topic)  # ... and created a new one under the name
    try:
        assert not first.still_named()
        assert second.still_named()
        first.remove()
        assert os.path.exists(shm_path(topic))
        assert second.still_named()
    finally:
        first.close()
        second.remove()
        second.close()
    assert not os.path.exists(shm_path(topic))


def test_segment_lock_is_exclusive_and_dies_with_the_descriptor(topic: str) -> None:
    owner = sps.Segment.create(topic)
    other = sps.Segment.open(topic, writable=True)
    try:
        assert owner.lock()
        assert owner.lock()  # re-taking our own lock is fine
        assert not owner.lock_held()  # only *other* holders count
        assert not other.lock()
        assert other.lock_held()
        reader = sps.Segment.open(topic)
        try:
            assert reader.lock_held()  # probing works on a read-only descriptor
        finally:
            reader.close()
        owner.close()  # the kernel drops the lock with the last descriptor
        assert not other.lock_held()
        assert other.lock()
    finally:
        owner.close()
        other.remove()
        other.close()


# -- no space --------------------------------------------------------------------------------------


def too_big() -> int:
    vfs = os.statvfs(SHM_DIR)
    return vfs.f_blocks * vfs.f_frsize * 2


def test_size_beyond_dev_shm_raises_no_space(topic: str) -> None:
    seg = sps.Segment.create(topic)
    try:
        t0 = time.monotonic()
        with pytest.raises(sps.NoSpace) as info:
            seg.size(too_big())
        assert time.monotonic() - t0 < 2
        assert isinstance(info.value, OSError)
        assert isinstance(info.value, sps.SegmentError)
        assert info.value.errno == errno.ENOSPC
        assert topic in str(info.value)
    finally:
        seg.remove()
        seg.close()


def test_publisher_beyond_dev_shm_raises_no_space_and_leaves_nothing(topic: str) -> None:
    slot_size = MAX_SLOT_SIZE
    slots = 1 << (too_big() // slot_size).bit_length()
    assert slots * slot_size > too_big() and slots <= MAX_SLOT_COUNT
    with pytest.raises(sps.NoSpace) as info:
        sps.Publisher(topic, slots=slots, slot_size=slot_size)
    assert info.value.errno == errno.ENOSPC
    assert not os.path.exists(shm_path(topic))
    with sps.Publisher(topic, slots=2, slot_size=8) as pub:  # and the name is free again
        assert pub.publish(b"ok") == 0


# -- bad arguments ---------------------------------------------------------------------------------

BAD_NAMES = [
    "",
    "a" * 65,
    "/",
    " ",
    "a b",
    "../x",
    "x/..",
    "a/b",
    "/abs",
    "tab\t",
    "nl\n",
    "nul\0",
    "é",
    "a:b",
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_topic_names(name: str) -> None:
    for make in (sps.Publisher, sps.Subscriber, sps.Segment.create, sps.Segment.open):
        with pytest.raises(sps.InvalidArgument) as info:
            make(name)
        assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", [b"bytes", 5, None, ["x"]], ids=repr)
def test_non_str_topic_names(name: object) -> None:
    for make in (sps.Publisher, sps.Subscriber, sps.Segment.create, sps.Segment.open):
        with pytest.raises((sps.InvalidArgument, sps.InvalidType)) as info:
            make(name)  # type: ignore[arg-type]
        assert isinstance(info.value, (ValueError, TypeError))
        assert "str" in str(info.value)


def test_good_topic_names(topic: str) -> None:
    names = [(topic + "-" + "x" * 64)[:64], f"{topic}.a_b-c", f"..{topic}..", f"_{topic}", f"-{topic}"]
    for name in names:
        with sps.Publisher(name, slots=2, slot_size=64) as pub, sps.Subscriber(name, start="oldest") as sub:
            assert os.path.exists(shm_path(name))
            pub.publish(name.encode())
            assert sub.try_receive() == sps.Message(name.encode(), 0)
        assert not os.path.exists(shm_path(name))


@pytest.mark.parametrize("slots", [0, -1, -4, 3, 6, 1000, 2**31, 2**64])
def test_bad_slot_counts(topic: str, slots: int) -> None:
    with pytest.raises(sps.InvalidArgument) as info:
        sps.Publisher(topic, slots=slots, slot_size=8)
    assert isinstance(info.value, ValueError)
    assert str(slots) in str(info.value)


@pytest.mark.parametrize("slot_size", [-1, -4096, 2**31 + 1, 2**64])
def test_bad_slot_sizes(topic: str, slot_size: int) -> None:
    with pytest.raises(sps.InvalidArgument) as info:
        sps.Publisher(topic, slots=4, slot_size=slot_size)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("slots", "slot_size"), [(4.0, 8), ("4", 8), (4, 8.0), (4, None)])
def test_non_int_geometry(topic: str, slots: object, slot_size: object) -> None:
    with pytest.raises(sps.InvalidType) as info:
        sps.Publisher(topic, slots=slots, slot_size=slot_size)  # type: ignore[arg-type]
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize("mode", [-1, 0o1000, 0o4755, "0600", 1.5, None])
def test_bad_modes(topic: str, mode: object) -> None:
    with pytest.raises(sps.InvalidArgument) as info:
        sps.Publisher(topic, slots=2, slot_size=8, mode=mode)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("start", "lapped"),
    [
        ("bogus", "oldest"),
        ("", "oldest"),
        ("NEXT", "oldest"),
        ("next", "bogus"),
        ("next", "next"),
        ("next", None),
    ],
)
def test_bad_start_and_lapped(topic: str, start: object, lapped: object) -> None:
    with pytest.raises(sps.InvalidArgument) as info:
        sps.Subscriber(topic, start=start, lapped=lapped)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    with sps.Publisher(topic, slots=2, slot_size=8), pytest.raises(sps.InvalidArgument):
        sps.Subscriber(topic, start=start, lapped=lapped)  # type: ignore[arg-type]


def test_subscriber_without_publisher(topic: str) -> None:
    with pytest.raises(sps.TopicNotFound) as info:
        sps.Subscriber(topic)
    assert isinstance(info.value, FileNotFoundError)
    assert topic in str(info.value)


# -- single writer ---------------------------------------------------------------------------------


def test_second_publisher_is_refused_with_owner_pid(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=8) as pub:
        pub.publish(b"one")
        with pytest.raises(sps.TopicExists) as info:
            sps.Publisher(topic, slots=4, slot_size=8)
        assert isinstance(info.value, FileExistsError)
        assert str(os.getpid()) in str(info.value)
        assert topic in str(info.value)
        with pytest.raises(sps.TopicExists):
            sps.Publisher(topic, slots=8, slot_size=64)  # another geometry changes nothing
        # The refused attempt left the owner and its segment alone.
        assert pub.publish(b"two") == 1
        with sps.Subscriber(topic, start="oldest") as sub:
            assert [m.data for m in (sub.try_receive(), sub.try_receive())] == [b"one", b"two"]  # type: ignore[union-attr]
        first_epoch = pub.epoch
    with sps.Publisher(topic, slots=4, slot_size=8) as again:
        assert again.epoch != first_epoch
        assert again.publish(b"fresh") == 0


def test_takeover_after_kill_9(topic: str) -> None:
    code = f"""
        import time
        import shmpubsub as sps
        pub = sps.Publisher({topic!r}, slots=8, slot_size=64)
        for i in range(3):
            pub.publish(b"old %d" % i)
        print("ready", flush=True)
        time.sleep(60)
    """
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            check_takeover(topic, child)
        finally:
            if child.poll() is None:
                child.kill()
                remove_topic(topic)
    assert not os.path.exists(shm_path(topic))


def check_takeover(topic: str, child: subprocess.Popen[str]) -> None:
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    with sps.Subscriber(topic, start="oldest") as old:
        old_epoch = old.epoch
        assert old.header.publisher_pid == child.pid
        assert [old.try_receive().data for _ in range(3)] == [b"old 0", b"old 1", b"old 2"]  # type: ignore[union-attr]
        with pytest.raises(sps.TopicExists) as info:
            sps.Publisher(topic, slots=8, slot_size=64)
        assert str(child.pid) in str(info.value)

        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
        assert os.path.exists(shm_path(topic))  # a crash removes nothing

        with sps.Publisher(topic, slots=4, slot_size=32) as new:
            assert new.epoch != old_epoch
            with sps.Subscriber(topic, start="oldest") as sub:
                assert sub.epoch == new.epoch != old_epoch
                assert sub.header.publisher_pid == os.getpid()
                assert (sub.slots, sub.slot_size) == (4, 32)
                assert sub.try_receive() is None and sub.latest() is None
                assert new.publish(b"new 0") == 0
                assert sub.try_receive() == sps.Message(b"new 0", 0)
            # The old subscriber keeps its (now nameless) segment and sees nothing new.
            assert old.try_receive() is None
            assert old.latest() == sps.Message(b"old 2", 2)
            assert os.path.exists(control_path(topic))
    assert not os.path.exists(control_path(topic))


def test_orphan_without_header_is_refused_then_taken_over(topic: str) -> None:
    """Its creator died between sizing and writing the header: no lock, no magic."""
    _, total = geometry(SLOTS, SLOT_BYTES)
    seg = sps.Segment.create(topic)
    seg.size(total)
    seg.close()  # the descriptor goes, and with it any lock; the name stays
    assert os.path.exists(shm_path(topic))
    try:
        t0 = time.monotonic()
        with pytest.raises(sps.InvalidSegment) as info:
            sps.Subscriber(topic)
        assert time.monotonic() - t0 < 1.0
        assert isinstance(info.value, ValueError)
        assert "initialised" in str(info.value)
        with sps.Publisher(topic, slots=SLOTS, slot_size=SLOT_BYTES) as pub, sps.Subscriber(topic) as sub:
            pub.publish(b"alive")
            assert sub.try_receive() == sps.Message(b"alive", 0)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(shm_path(topic))


def test_orphan_never_sized_is_taken_over(topic: str) -> None:
    sps.Segment.create(topic).close()  # died between create and size
    try:
        with pytest.raises(sps.InvalidSegment):
            sps.Subscriber(topic)
        with sps.Publisher(topic, slots=2, slot_size=8) as pub:
            assert pub.publish(b"x") == 0
        assert not os.path.exists(shm_path(topic))
    finally:
        with suppress(FileNotFoundError):
            os.unlink(shm_path(topic))


def test_subscriber_waits_for_a_creator_that_holds_the_lock(
    topic: str, valid_bytes: bytes, control_bytes: bytes
) -> None:
    """A locked, uninitialised segment belongs to a creator still starting: the subscriber waits
    past the orphan grace (0.2 s) for its header instead of refusing it."""
    _, total = geometry(SLOTS, SLOT_BYTES)
    epoch = struct.unpack_from("<Q", valid_bytes, EPOCH)[0]  # the epoch control_bytes carries
    seg = sps.Segment.create(topic)
    try:
        assert seg.lock()
        seg.size(total)
        write_raw(control_path(topic), control_bytes)
        mapping = seg.map()
        base = pointer_to(mapping, writable=True)

        def finish_creating() -> None:
            time.sleep(0.5)
            init_header(
                base, total, SLOTS, SLOT_BYTES, epoch=epoch, pid=os.getpid(), start_time=0, created_ns=0
            )

        creator = threading.Thread(target=finish_creating)
        t0 = time.monotonic()
        creator.start()
        try:
            with sps.Subscriber(topic) as sub:
                waited = time.monotonic() - t0
                assert sub.epoch == epoch
                assert (sub.slots, sub.slot_size) == (SLOTS, SLOT_BYTES)
        finally:
            creator.join()
        assert 0.4 < waited < 3
        release(base)
    finally:
        seg.remove()
        seg.close()
        remove_topic(topic)


# -- corrupt, truncated and foreign segments -------------------------------------------------------

CORRUPTIONS = [
    ("magic", MAGIC, "<Q", 0x4F4F4F4F4F4F4F4F, "not a shmpubsub segment"),
    ("magic-one-bit", MAGIC, "<Q", 0x3150425553504D52, "not a shmpubsub segment"),
    ("version-7", VERSION, "<I", 7, "layout version 7"),
    ("version-0", VERSION, "<I", 0, "layout version 0"),
    ("version-max", VERSION, "<I", 2**32 - 1, f"layout version {2**32 - 1}"),
    ("header-size", HEADER_SIZE_FIELD, "<I", 8192, "header size"),
    ("header-size-0", HEADER_SIZE_FIELD, "<I", 0, "header size"),
    ("slot-count-3", SLOT_COUNT, "<Q", 3, "slot count"),
    ("slot-count-0", SLOT_COUNT, "<Q", 0, "slot count"),
    ("slot-count-2^31", SLOT_COUNT, "<Q", 2**31, "slot count"),
    ("slot-count-2^63", SLOT_COUNT, "<Q", 2**63, "slot count"),
    ("slot-count-8", SLOT_COUNT, "<Q", 8, "truncated or corrupt"),
    ("slot-count-2", SLOT_COUNT, "<Q", 2, "truncated or corrupt"),
    ("slot-size-huge", SLOT_SIZE, "<Q", 2**40, "slot size"),
    ("slot-size-max", SLOT_SIZE, "<Q", 2**64 - 1, "slot size"),
    ("slot-size-stride-mismatch", SLOT_SIZE, "<Q", 200, "slot size"),
    ("stride", SLOT_STRIDE, "<Q", 256, "slot size"),
    ("stride-0", SLOT_STRIDE, "<Q", 0, "slot size"),
    ("total-plus-64", TOTAL_SIZE, "<Q", TOTAL + 64, "truncated or corrupt"),
    ("total-minus-128", TOTAL_SIZE, "<Q", TOTAL - 128, "truncated or corrupt"),
    ("total-0", TOTAL_SIZE, "<Q", 0, "truncated or corrupt"),
]


@pytest.mark.parametrize(
    ("what", "offset", "fmt", "value", "expected"), CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS]
)
def test_corrupt_header_is_refused(
    topic: str,
    raw: Raw,
    valid_bytes: bytes,
    control_bytes: bytes,
    what: str,
    offset: int,
    fmt: str,
    value: int,
    expected: str,
) -> None:
    raw(patched(valid_bytes, offset, fmt, value), control_bytes)
    t0 = time.monotonic()
    with pytest.raises(sps.InvalidSegment) as info:
        sps.Subscriber(topic, start="oldest")
    assert time.monotonic() - t0 < 0.15  # refused at once: a bad header is no reason to wait
    assert isinstance(info.value, ValueError)
    assert expected in str(info.value)
    assert topic in str(info.value)


def test_valid_template_attaches(topic: str, raw: Raw, valid_bytes: bytes, control_bytes: bytes) -> None:
    """The control case for the corruption tests: the untouched bytes are a working topic."""
    raw(valid_bytes, control_bytes)
    with sps.Subscriber(topic, start="oldest") as sub:
        assert (sub.slots, sub.slot_size) == (SLOTS, SLOT_BYTES)
        assert sub.publisher_closed is False
        assert [m.data for m in iter(sub.try_receive, None)] == [b"message 0", b"message 1", b"message 2"]
        assert sub.latest() == sps.Message(b"message 2", 2)


def test_closed_flag_in_header_means_end_of_stream(
    topic: str, raw: Raw, valid_bytes: bytes, control_bytes: bytes
) -> None:
    raw(patched(valid_bytes, CLOSED, "<I", 1), control_bytes)
    with sps.Subscriber(topic, start="oldest") as sub:
        assert sub.publisher_closed
        assert sub.end_reason == "closed"
        assert [m.seq for m in iter(sub.try_receive, None)] == [0, 1, 2]  # what is left can be read


def test_forged_consistent_header_bigger_than_the_file(
    topic: str, raw: Raw, valid_bytes: bytes, control_bytes: bytes
) -> None:
    """A self-consistent header for 64 slots in a file that holds 4: the fstat size decides."""
    forged = patched(valid_bytes, SLOT_COUNT, "<Q", 64)
    forged = patched(forged, TOTAL_SIZE, "<Q", HEADER + 64 * STRIDE)
    raw(forged, control_bytes)
    with pytest.raises(sps.InvalidSegment, match="truncated or corrupt"):
        sps.Subscriber(topic)


@pytest.mark.parametrize("keep", [TOTAL - 64, TOTAL - 1, HEADER + 1, HEADER, TOTAL + 64])
def test_truncated_or_extended_copy_is_refused(
    topic: str, raw: Raw, valid_bytes: bytes, control_bytes: bytes, keep: int
) -> None:
    raw(valid_bytes[:keep].ljust(keep, b"\0"), control_bytes)
    t0 = time.monotonic()
    with pytest.raises(sps.InvalidSegment, match="truncated or corrupt"):
        sps.Subscriber(topic)
    assert time.monotonic() - t0 < 0.15


@pytest.mark.parametrize(
    "data",
    [b"", b"\0" * 100, b"\0" * HEADER, b"\0" * TOTAL, b"GARBAGE!" * 12],
    ids=["empty", "zeros-100", "zeros-header", "zeros-total", "garbage-96"],
)
def test_uninitialised_or_short_file_is_refused_after_the_grace(topic: str, raw: Raw, data: bytes) -> None:
    raw(data)
    t0 = time.monotonic()
    with pytest.raises(sps.InvalidSegment) as info:
        sps.Subscriber(topic)
    assert time.monotonic() - t0 < 1.0
    assert isinstance(info.value, ValueError)


def test_publisher_refuses_and_spares_a_foreign_segment(topic: str, raw: Raw) -> None:
    foreign = (b"NOT-OURS" + bytes(range(256)) * 20)[:TOTAL]
    path = raw(foreign)
    with pytest.raises(sps.InvalidSegment) as info:
        sps.Publisher(topic, slots=SLOTS, slot_size=SLOT_BYTES)
    assert isinstance(info.value, ValueError)
    assert "not a shmpubsub segment" in str(info.value)
    with open(path, "rb") as f:
        assert f.read() == foreign
    with pytest.raises(sps.InvalidSegment, match="not a shmpubsub segment"):
        sps.Subscriber(topic)


def test_publisher_spares_a_short_foreign_file(topic: str, raw: Raw) -> None:
    foreign = b"GARBAGE!" * 12
    path = raw(foreign)
    try:
        with pytest.raises(sps.InvalidSegment):
            sps.Publisher(topic, slots=2, slot_size=8).close()
    finally:
        assert os.path.exists(path)
        with open(path, "rb") as f:
            assert f.read() == foreign


@pytest.mark.parametrize(
    "make",
    [
        lambda good: patched(good, VERSION, "<I", 7),
        lambda good: good[: TOTAL - 64],
        lambda good: b"\0" * HEADER,
    ],
    ids=["other-version", "truncated", "zeros"],
)
def test_publisher_takes_over_a_dead_publishers_segment(
    topic: str, raw: Raw, valid_bytes: bytes, make: Callable[[bytes], bytes]
) -> None:
    """Magic present (or nothing written yet) and no lock: a dead publisher's, safe to replace."""
    path = raw(make(valid_bytes))
    before = os.stat(path).st_ino
    with sps.Publisher(topic, slots=2, slot_size=16) as pub:
        assert os.stat(path).st_ino != before
        assert os.stat(path).st_size == geometry(2, 16)[1]
        with sps.Subscriber(topic) as sub:
            pub.publish(b"mine")
            assert sub.try_receive() == sps.Message(b"mine", 0)
    assert not os.path.exists(path)


@pytest.mark.parametrize("write_seq", [5, 100, 2**62 - 5, MAX_SEQ])
def test_corrupt_write_seq_latest_returns(
    topic: str, raw: Raw, valid_bytes: bytes, control_bytes: bytes, write_seq: int
) -> None:
    """write_seq points at slots that do not hold its messages: latest() finds nothing, and says so
    (it used to spin for ever)."""
    raw(patched(valid_bytes, WRITE_SEQ, "<Q", write_seq), control_bytes)
    with sps.Subscriber(topic) as sub, time_limit(2.0):
        assert sub.latest() is None


@pytest.mark.parametrize("write_seq", [MAX_SEQ + 1, 2**63 - 1, 2**63, 2**64 - 1])
def test_write_seq_past_the_limit_is_refused(
    topic: str, raw: Raw, valid_bytes: bytes, control_bytes: bytes, write_seq: int
) -> None:
    """From 2**63 on, 2n+2 wraps and an unwritten slot (sequence word 0) passed for message n: a
    phantom message. No publisher gets past 2**62, so a header that claims to is corrupt."""
    raw(patched(valid_bytes, WRITE_SEQ, "<Q", write_seq), control_bytes)
    with pytest.raises(sps.InvalidSegment, match="write_seq out of range"):
        sps.Subscriber(topic)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    write_seq=st.one_of(st.integers(0, 40), st.integers(0, 2**64 - 1), st.integers(2**64 - 40, 2**64 - 1)),
    start=st.sampled_from(["next", "latest", "oldest"]),
    lapped=st.sampled_from(["oldest", "latest"]),
)
def test_corrupt_write_seq_never_traps_try_receive(
    valid_bytes: bytes, control_bytes: bytes, write_seq: int, start: str, lapped: str
) -> None:
    """A forged write_seq may yield nonsense sequence numbers, but try_receive() always returns and
    never hands out more than a slot holds."""
    topic = f"test-ws-{uuid.uuid4().hex[:12]}"
    write_topic(topic, patched(valid_bytes, WRITE_SEQ, "<Q", write_seq), control_bytes)
    try:
        if write_seq > MAX_SEQ:
            with pytest.raises(sps.InvalidSegment, match="write_seq out of range"):
                sps.Subscriber(topic, start=start, lapped=lapped)
            return
        with sps.Subscriber(topic, start=start, lapped=lapped) as sub, time_limit(2.0):
            for _ in range(2 * SLOTS + 2):
                msg = sub.try_receive()
                if msg is None:
                    break
                assert len(msg.data) <= SLOT_BYTES
    finally:
        remove_topic(topic)


@pytest.mark.parametrize("pid", [2**31, 2**40, -(2**40)])
def test_header_pid_out_of_range_is_handled(
    topic: str, raw: Raw, valid_bytes: bytes, control_bytes: bytes, pid: int
) -> None:
    raw(patched(valid_bytes, PID, "<q", pid), control_bytes)
    try:
        sub = sps.Subscriber(topic)
    except sps.InvalidSegment:
        return
    with sub:
        assert sub.try_receive() is None
        assert sub.end_reason == "crashed"  # no such process can be the publisher


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mutations=st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)), min_size=1, max_size=8),
    start=st.sampled_from(["next", "latest", "oldest"]),
)
def test_mutated_header_is_refused_or_harmless(
    valid_bytes: bytes, control_bytes: bytes, mutations: list[tuple[int, int]], start: str
) -> None:
    data = bytearray(valid_bytes)
    for offset, value in mutations:
        data[offset] = value
    topic = f"test-mut-{uuid.uuid4().hex[:12]}"
    write_topic(topic, bytes(data), control_bytes)
    try:
        try:
            sub = sps.Subscriber(topic, start=start)
        except sps.InvalidSegment as e:
            assert str(e)
            event("refused")
            return
        event("attached")
        with sub, time_limit(2.0):
            slot_size = struct.unpack_from("<Q", data, SLOT_SIZE)[0]
            assert sub.slot_size == slot_size
            assert sub.header.total_size == len(data)
            got = []
            for _ in range(2 * SLOTS + 2):
                msg = sub.try_receive()
                if msg is None:
                    break
                got.append(msg)
            latest = sub.latest()
            for msg in [*got, *([latest] if latest else [])]:
                assert len(msg.data) <= slot_size
            assert sub.lost >= 0
    finally:
        remove_topic(topic)


# -- use after close -------------------------------------------------------------------------------


def test_publisher_use_after_close(topic: str) -> None:
    pub = sps.Publisher(topic, slots=4, slot_size=8)
    pub.publish(b"a")
    pub.close()
    assert pub.closed
    assert not os.path.exists(shm_path(topic))
    with pytest.raises(sps.ClosedError) as info:
        pub.publish(b"b")
    assert isinstance(info.value, ValueError)
    with pytest.raises(sps.ClosedError), pub.loan(1) as buf:
        buf[:] = b"x"
    assert pub.published == 1
    pub.close()  # twice is fine
    assert "closed" in repr(pub)


def test_subscriber_use_after_close(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=8) as pub:
        sub = sps.Subscriber(topic)
        pub.publish(b"a")
        sub.close()
        assert sub.closed
        for call in (sub.try_receive, sub.latest, lambda: sub.receive_into(bytearray(8))):
            with pytest.raises(sps.ClosedError) as info:
                call()
            assert isinstance(info.value, ValueError)
        sub.close()  # twice is fine
        assert "closed" in repr(sub)
        assert os.path.exists(shm_path(topic))  # a subscriber never removes the segment


@pytest.mark.parametrize("attribute", ["pending", "publisher_closed", "end_reason"])
def test_subscriber_state_after_close_does_not_crash(topic: str, attribute: str) -> None:
    code = f"""
        import shmpubsub as sps
        with sps.Publisher({topic!r}, slots=4, slot_size=8) as pub:
            sub = sps.Subscriber({topic!r})
            pub.publish(b"a")
            sub.close()
            try:
                print(repr(sub.{attribute}))
            except sps.ClosedError:
                print("ClosedError")
    """
    try:
        result = run_python(code)
    finally:
        remove_topic(topic)  # a crashed child never closed its publisher
    assert result.returncode == 0, f"exit status {result.returncode}: {result.stderr[-500:]}"


def test_context_managers_close(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=8) as pub:
        with sps.Subscriber(topic) as sub:
            pub.publish(b"x")
            assert not sub.closed and not pub.closed
        assert sub.closed
    assert pub.closed
    assert not os.path.exists(shm_path(topic))
    with pytest.raises(ZeroDivisionError), sps.Publisher(topic, slots=4, slot_size=8) as pub2:
        raise ZeroDivisionError
    assert pub2.closed
    assert not os.path.exists(shm_path(topic))


def test_subscriber_outlives_publisher_close(topic: str) -> None:
    pub = sps.Publisher(topic, slots=4, slot_size=8)
    with sps.Subscriber(topic) as sub:
        for i in range(3):
            pub.publish(b"m%d" % i)
        assert not sub.publisher_closed
        pub.close()
        assert not os.path.exists(shm_path(topic))
        assert sub.publisher_closed
        assert [m.data for m in iter(sub.try_receive, None)] == [b"m0", b"m1", b"m2"]
        assert sub.latest() == sps.Message(b"m2", 2)


# -- garbage collection ----------------------------------------------------------------------------


def test_unclosed_publisher_warns_and_removes_its_segment(topic: str) -> None:
    with pytest.warns(ResourceWarning, match="unclosed"):
        pub = sps.Publisher(topic, slots=4, slot_size=8)
        pub.publish(b"x")
        assert os.path.exists(shm_path(topic))
        del pub
        gc.collect()
    assert not os.path.exists(shm_path(topic))


def test_unclosed_subscriber_warns(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=8) as pub:
        with pytest.warns(ResourceWarning, match="unclosed"):
            sub = sps.Subscriber(topic)
            del sub
            gc.collect()
        assert pub.publish(b"fine") == 0
        assert os.path.exists(shm_path(topic))


def test_closed_handles_do_not_warn(topic: str) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        pub = sps.Publisher(topic, slots=4, slot_size=8)
        sub = sps.Subscriber(topic)
        sub.close()
        pub.close()
        del pub, sub
        gc.collect()


# -- fork ------------------------------------------------------------------------------------------


def test_fork_child_cannot_publish_and_does_not_remove(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"before fork")
        pid = os.fork()
        if pid == 0:  # the child: report through the exit status only
            status = 10
            try:
                try:
                    pub.publish(b"from child")
                except sps.ClosedError as e:
                    status = 0 if "fork" in str(e) else 11
                else:
                    status = 12
            finally:
                os._exit(status)
        _, wait_status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(wait_status) == 0
        assert os.path.exists(shm_path(topic))
        assert not pub.closed
        assert pub.publish(b"after fork") == 1
        assert [(m.seq, m.data) for m in iter(sub.try_receive, None)] == [
            (0, b"before fork"),
            (1, b"after fork"),
        ]
        with pytest.raises(sps.TopicExists):  # the parent still holds the single-writer lock
            sps.Publisher(topic, slots=4, slot_size=16)
    assert not os.path.exists(shm_path(topic))


def test_fork_child_does_not_keep_the_lock_alive(topic: str) -> None:
    """The publisher dies; the child it forked lives on. The topic must still be claimable."""
    code = f"""
        import os, sys, time
        import shmpubsub as sps
        pub = sps.Publisher({topic!r}, slots=4, slot_size=16)
        pub.publish(b"x")
        if os.fork() == 0:
            # fork() has returned here, so the at-fork handlers have run: report in.
            print(os.getpid(), flush=True)
            time.sleep(30)
            os._exit(0)
        time.sleep(60)
    """
    grandchild = 0
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True
    ) as parent:
        try:
            assert parent.stdout is not None
            grandchild = int(parent.stdout.readline())
            os.kill(parent.pid, signal.SIGKILL)
            parent.wait(timeout=10)
            os.kill(grandchild, 0)  # still alive, holding whatever it inherited
            with sps.Publisher(topic, slots=4, slot_size=16) as pub:
                assert pub.publish(b"taken over") == 0
        finally:
            if parent.poll() is None:
                parent.kill()
            if grandchild:
                with suppress(ProcessLookupError):
                    os.kill(grandchild, signal.SIGKILL)
            remove_topic(topic)


# -- permissions -----------------------------------------------------------------------------------


def test_segment_open_is_read_only(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=8) as pub:
        pub.publish(b"x")
        seg = sps.Segment.open(topic)
        try:
            assert not seg.writable
            mem = seg.map()
            assert len(mem) == seg.nbytes == geometry(4, 8)[1]
            with pytest.raises(TypeError):
                mem[0] = 0
            assert "ro" in repr(seg)
        finally:
            seg.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another user")
@pytest.mark.parametrize(("mode", "expected"), [(0o600, "denied"), (0o644, "read"), (0o640, "denied")])
def test_other_user_access_follows_mode(topic: str, mode: int, expected: str) -> None:
    nobody = 65534
    with sps.Publisher(topic, slots=4, slot_size=8, mode=mode) as pub:
        pub.publish(b"shared")
        pid = os.fork()
        if pid == 0:
            status = 10
            try:
                os.setgroups([])
                os.setgid(nobody)
                os.setuid(nobody)
                try:
                    with sps.Subscriber(topic, start="oldest") as sub:
                        status = 0 if sub.try_receive() == sps.Message(b"shared", 0) else 11
                except sps.PermissionDenied as e:
                    status = 1 if isinstance(e, PermissionError) else 12
            finally:
                os._exit(status)
        _, wait_status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(wait_status) == (0 if expected == "read" else 1)
