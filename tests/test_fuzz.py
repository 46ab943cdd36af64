"""Fuzzing through the Python API: random and mutated data and control segments written into
/dev/shm, and hostile writers that change a segment after it was validated. Every outcome must be
a working topic or a clear ShmPubSubError: never a crash, a hang, or a message longer than a slot.

fuzz/ holds the C-level fuzz target for the same validation; CI's sanitizer phase runs this module
under ASan+UBSan as part of the suite."""

from __future__ import annotations

import functools
import mmap
import os
import struct
from collections.abc import Callable, Iterator

import pytest
from helpers import live_segment_bytes, remove_topic, shm_path, time_limit, unique_topic, write_topic
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import shmpubsub as sps
from shmpubsub import admin
from shmpubsub._core.header import MAX_SEQ
from shmpubsub.names import CONTROL_SUFFIX

HEADER = 4096
# Data header fields (csrc/layout.h: struct sps_identity, struct sps_progress) and slot header.
DATA_FIELDS = [(0, "<Q"), (8, "<I"), (12, "<I"), (16, "<Q"), (24, "<Q"), (32, "<Q"), (40, "<Q"), (48, "<Q"),
               (56, "<q"), (64, "<Q"), (72, "<Q"), (128, "<Q"), (136, "<I")]  # fmt: skip
SLOT_FIELDS = [(0, "<Q"), (8, "<I"), (12, "<I")]
# Control header (struct sps_control_identity), the sleepers bitmap, and entry fields.
CONTROL_FIELDS = [(0, "<Q"), (8, "<I"), (12, "<I"), (16, "<I"), (20, "<I"), (24, "<Q"), (32, "<Q"),
                  *((256 + 8 * i, "<Q") for i in range(16))]  # fmt: skip
CONTROL_ENTRIES, ENTRY_SIZE = 512, 128
ENTRY_FIELDS = [(0, "<Q"), (8, "<q"), (16, "<Q"), (24, "<Q"), (32, "<Q")]

# (slots, slot_size, max_subscribers): both payload copies (words, and memcpy above 1 KiB).
GEOMETRIES = [(1, 0, 1), (2, 13, 2), (4, 64, 4), (2, 1100, 65)]

BOUNDARY = [0, 1, 2, 3, 7, 8, 63, 64, 4095, 4096, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1,
            2**63, 2**64 - 1]  # fmt: skip
values = st.one_of(st.sampled_from(BOUNDARY), st.integers(0, 2**64 - 1))

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@functools.cache
def template(geometry: int) -> tuple[bytes, bytes]:
    """Real data and control segments of a geometry, with a few messages: where mutation starts.
    (A function, not a fixture: hypothesis would print all of it with every failing example.)"""
    return live_segment_bytes(unique_topic("test-fuzz"), 3, *GEOMETRIES[geometry])


def pack(data: bytearray | mmap.mmap, offset: int, fmt: str, value: int) -> None:
    """Stores value (wrapped to the field's width) at offset, if the field fits."""
    size = struct.calcsize(fmt)
    if offset + size <= len(data):
        value %= 1 << (8 * size)
        if fmt.endswith("q") and value >= 1 << 63:
            value -= 1 << 64
        struct.pack_into(fmt, data, offset, value)


@st.composite
def field_writes(
    draw: st.DrawFn, fields: list[tuple[int, str]], repeat: tuple[int, int, int] = (0, 0, 0)
) -> tuple:
    """(offset, fmt, value): a header field, or a field of one of `count` records of `stride`
    bytes from `base` (slot headers, control entries)."""
    base, stride, count = repeat
    if count and draw(st.booleans()):
        offset, fmt = draw(st.sampled_from(SLOT_FIELDS if fields is DATA_FIELDS else ENTRY_FIELDS))
        offset += base + stride * draw(st.integers(0, count - 1))
    else:
        offset, fmt = draw(st.sampled_from(fields))
    return offset, fmt, draw(values)


@st.composite
def mutated(
    draw: st.DrawFn, template: bytes, fields: list[tuple[int, str]], repeat: tuple[int, int, int]
) -> bytes:
    """The template with field writes, byte writes, and maybe truncated or extended."""
    data = bytearray(template)
    for offset, fmt, value in draw(st.lists(field_writes(fields, repeat), max_size=4)):
        pack(data, offset, fmt, value)
    for offset, value in draw(
        st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), max_size=4)
    ):
        data[offset] = value
    resize = draw(st.sampled_from(["keep", "keep", "keep", "truncate", "extend"]))
    if resize == "truncate":
        del data[draw(st.integers(0, len(data) - 1)) :]
    elif resize == "extend":
        data += bytes(draw(st.integers(1, 4200)))
    return bytes(data)


def data_layout(template: bytes) -> tuple[int, int, int]:
    slots, _, stride = struct.unpack_from("<QQQ", template, 16)
    return HEADER, stride, slots


def control_layout(template: bytes) -> tuple[int, int, int]:
    return CONTROL_ENTRIES, ENTRY_SIZE, struct.unpack_from("<I", template, 16)[0]


def exercise(sub: sps.Subscriber) -> None:
    """Every kind of read, a bounded number of times: whatever comes back fits a slot."""
    limit = sub.slot_size
    with time_limit(5.0):
        for _ in range(2 * sub.slots + 2):
            msg = sub.try_receive()
            if msg is None:
                break
            assert len(msg.data) <= limit
        latest = sub.latest()
        assert latest is None or len(latest.data) <= limit
        n = sub.receive_into(bytearray(limit + 4096))  # larger than any slot
        assert n is None or n <= limit
        try:
            with sub.view(timeout=0) as view:
                assert len(view.data) <= limit
                bytes(view.data)
        except (sps.ReceiveTimeout, sps.MessageOverwritten, sps.PublisherGone):
            pass
        assert sub.lost >= 0


def attach_or_refuse(topic: str, start: str = "oldest") -> None:
    """A subscriber attaches and reads within bounds, or is refused with a clear error (a control
    segment may name a socket directory that is not ours, PermissionDenied, or none at all,
    SegmentError); the admin view of the topic never raises for a bad segment."""
    try:
        sub = sps.Subscriber(topic, start=start)
    except (sps.InvalidSegment, sps.TooManySubscribers, sps.PermissionDenied, sps.SegmentError) as e:
        assert str(e)
        event(f"refused: {type(e).__name__}")
    else:
        event("attached")
        with sub:
            exercise(sub)
    with time_limit(5.0):
        info = admin.topic_info(topic)
    assert info.name == topic


Topics = Callable[[], str]


@pytest.fixture
def fuzz_topic() -> Iterator[Topics]:
    """A fresh topic name per call (hypothesis runs many examples in one test); whatever is left
    of their segments is removed afterwards."""
    names: list[str] = []

    def fresh() -> str:
        names.append(unique_topic("test-fuzz"))
        return names[-1]

    yield fresh
    for name in names:
        remove_topic(name)


@FUZZ
@given(
    geometry=st.integers(0, len(GEOMETRIES) - 1), data=st.data(), start=st.sampled_from(["next", "oldest"])
)
def test_mutated_data_segment_is_refused_or_harmless(
    fuzz_topic: Topics,
    geometry: int,
    data: st.DataObject,
    start: str,
) -> None:
    good, control = template(geometry)
    segment = data.draw(mutated(good, DATA_FIELDS, data_layout(good)))
    topic = fuzz_topic()
    write_topic(topic, segment, control)
    attach_or_refuse(topic, start)


@FUZZ
@given(noise=st.binary(min_size=8, max_size=6000), keep_magic=st.booleans(), geometry=st.integers(0, 3))
def test_random_bytes_are_refused(
    fuzz_topic: Topics,
    noise: bytes,
    keep_magic: bool,
    geometry: int,
) -> None:
    """Noise, or noise behind a valid magic number and layout version, never attaches."""
    good, control = template(geometry)
    segment = (good[:12] + noise[12:]) if keep_magic else noise
    topic = fuzz_topic()
    write_topic(topic, segment, control)
    with pytest.raises(sps.InvalidSegment):
        sps.Subscriber(topic)
    assert admin.topic_info(topic).problem


@FUZZ
@given(geometry=st.integers(0, len(GEOMETRIES) - 1), data=st.data())
def test_mutated_control_segment_is_refused_or_harmless(
    fuzz_topic: Topics, geometry: int, data: st.DataObject
) -> None:
    good, control = template(geometry)
    segment = data.draw(mutated(control, CONTROL_FIELDS, control_layout(control)))
    topic = fuzz_topic()
    write_topic(topic, good, segment)
    attach_or_refuse(topic)


@settings(FUZZ, max_examples=40)
@given(geometry=st.integers(0, len(GEOMETRIES) - 1), data=st.data())
def test_publisher_takes_over_or_spares_a_mutated_segment(
    fuzz_topic: Topics, geometry: int, data: st.DataObject
) -> None:
    """Nobody holds the segment: a new publisher replaces it (ours, in any state) or refuses it
    (foreign: left exactly as it was)."""
    good, _ = template(geometry)
    segment = data.draw(mutated(good, DATA_FIELDS, data_layout(good)))
    topic = fuzz_topic()
    path = write_topic(topic, segment, None)
    try:
        with (
            time_limit(5.0),
            sps.Publisher(topic, slots=2, slot_size=16) as pub,
            sps.Subscriber(topic) as sub,
        ):
            pub.publish(b"fresh")
            assert sub.try_receive() == sps.Message(b"fresh", 0)
        event("taken over")
    except sps.InvalidSegment as e:
        assert "not a shmpubsub segment" in str(e)
        with open(path, "rb") as f:
            assert f.read() == segment
        event("refused as foreign")


def hostile_writes(template: bytes) -> st.SearchStrategy[list[tuple[int, str, int]]]:
    """Writes to any header or slot field but the magic: a zeroed magic under a live publisher's
    lock means a publisher still starting, which a new subscriber waits 5 s for."""
    writes = st.lists(field_writes(DATA_FIELDS, data_layout(template)), min_size=1, max_size=8)
    return writes.map(lambda ws: [w for w in ws if w[0] != 0])


def scribble(path: str, writes: list[tuple[int, str, int]]) -> None:
    """What a process with write access to a segment can do to it."""
    fd = os.open(path, os.O_RDWR)
    try:
        with mmap.mmap(fd, os.fstat(fd).st_size) as hostile:
            for offset, fmt, value in writes:
                pack(hostile, offset, fmt, value)
    finally:
        os.close(fd)


@FUZZ
@given(
    geometry=st.integers(0, len(GEOMETRIES) - 1), data=st.data(), lapped=st.sampled_from(["oldest", "latest"])
)
def test_hostile_writer_after_attach_cannot_make_reads_leave_the_slot(
    fuzz_topic: Topics,
    geometry: int,
    data: st.DataObject,
    lapped: str,
) -> None:
    """A process with write access rewrites the header (slot count, sizes, write_seq) and slot
    headers (sequence words, lengths) after the subscriber validated it: the subscriber keeps its
    own copy of the geometry and clamps every length, the publisher keeps publishing."""
    slots, slot_size, _ = GEOMETRIES[geometry]
    writes = data.draw(hostile_writes(template(geometry)[0]))
    topic = fuzz_topic()
    with (
        sps.Publisher(topic, slots=slots, slot_size=slot_size) as pub,
        sps.Subscriber(topic, start="oldest", lapped=lapped) as sub,
    ):
        for i in range(3):
            pub.publish(bytes([i]) * min(i * 5, slot_size))
        scribble(shm_path(topic), writes)
        exercise(sub)
        assert (sub.slots, sub.slot_size) == (slots, slot_size)
        pub.publish(b"x"[:slot_size])
        exercise(sub)
        attach_or_refuse(topic)


@FUZZ
@given(data=st.data())
def test_hostile_subscriber_scribbling_on_the_control_segment_costs_no_message(
    fuzz_topic: Topics, data: st.DataObject
) -> None:
    """A same-user process writes garbage into the control segment (identity, sleepers bitmap,
    other subscribers' entries): the publisher keeps publishing and waking, reclaims forged
    entries, and an honest subscriber still gets every message."""
    topic = fuzz_topic()
    with (
        sps.Publisher(topic, slots=8, slot_size=32, max_subscribers=8) as pub,
        sps.Subscriber(topic) as honest,
    ):
        mine = honest._waiter._wake.index if honest._waiter._wake is not None else -1
        others = [i for i in range(8) if i != mine]
        entry = st.tuples(st.sampled_from(others), st.sampled_from(ENTRY_FIELDS), values).map(
            lambda e: (CONTROL_ENTRIES + ENTRY_SIZE * e[0] + e[1][0], e[1][1], e[2])
        )
        writes = data.draw(st.lists(st.one_of(entry, field_writes(CONTROL_FIELDS)), min_size=1, max_size=10))
        got: list[int] = []
        for i in range(12):  # garbage between publishes, while the publisher wakes and reclaims
            scribble(shm_path(topic, CONTROL_SUFFIX), writes[i % len(writes) :][:1])
            with time_limit(5.0):
                pub.publish(b"message %d" % i)
                assert all(0 <= s.index < 8 for s in pub.subscribers)
                got += [m.seq for m in iter(honest.try_receive, None)]
        assert got == list(range(12)) and honest.lost == 0
        attach_or_refuse(topic)
        with time_limit(5.0):
            info = admin.topic_info(topic)
        assert info.state == "alive"


# -- what the fuzzing found -------------------------------------------------------------------


def test_empty_control_segment_is_refused(fuzz_topic: Topics) -> None:
    """It used to escape as mmap's ValueError("cannot mmap an empty file")."""
    topic = fuzz_topic()
    write_topic(topic, template(2)[0], b"")
    with pytest.raises(sps.InvalidSegment, match="is empty"):
        sps.Subscriber(topic)


def test_control_segment_naming_a_missing_socket_directory_leaves_the_subscriber_passive(
    fuzz_topic: Topics,
) -> None:
    """A socket directory that does not exist here (a container that does not share it, /tmp
    cleaned, a forged control segment) cannot carry wake-ups: the subscriber says so with a
    RuntimeWarning and reads by polling, never a bare FileNotFoundError from os.lstat."""
    good, control = template(2)
    socket_dir = control[40:136].split(b"\0")[0]
    missing = b"/nonexistent-" + socket_dir[-6:]
    topic = fuzz_topic()
    write_topic(topic, good, control[:40] + missing.ljust(96, b"\0") + control[136:])
    with pytest.warns(RuntimeWarning, match=r"socket directory .* does not exist here"):
        sub = sps.Subscriber(topic)
    with sub, pytest.raises(sps.ShmPubSubError, match="cannot register for wake-ups"):
        sub.fileno()


def test_forged_write_seq_after_attach_cannot_wrap_the_position(fuzz_topic: Topics) -> None:
    """A writer that forges write_seq near 2**64 after the subscriber attached (and a sequence word
    saying the slot was lapped) used to carry the subscriber's position round past 2**64 to small
    numbers again: found by the C fuzz target (fuzz/corpus/regress-forged-write-seq-wraps-position)."""
    topic = fuzz_topic()
    with sps.Publisher(topic, slots=1, slot_size=8) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"first")
        assert sub.try_receive() == sps.Message(b"first", 0)
        scribble(shm_path(topic), [(128, "<Q", 2**64 - 2), (HEADER, "<Q", 2**64 - 1)])
        positions = [sub._reader.next_seq]
        with time_limit(5.0):
            for _ in range(5):
                assert sub.try_receive() is None
                positions.append(sub._reader.next_seq)
        assert positions == sorted(positions), positions
        assert MAX_SEQ <= positions[-1] < 2**63  # crept on by one per lapped read, no more
        assert sub.lost == positions[-1] - 1
