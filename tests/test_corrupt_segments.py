"""Corrupt, truncated and foreign segments are refused (or read harmlessly), never trusted."""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable

import pytest
from helpers import (
    CLOSED,
    HEADER,
    HEADER_SIZE_FIELD,
    MAGIC,
    PID,
    SLOT_BYTES,
    SLOT_COUNT,
    SLOT_SIZE,
    SLOT_STRIDE,
    SLOTS,
    STRIDE,
    TOTAL,
    TOTAL_SIZE,
    VERSION,
    WRITE_SEQ,
    Raw,
    patched,
    remove_topic,
    time_limit,
    unique_topic,
    write_topic,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import shmpubsub as sps
from shmpubsub._core.header import MAX_SEQ, geometry

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
    topic = unique_topic("test-ws")
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
    topic = unique_topic("test-mut")
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
