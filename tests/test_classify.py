"""The lifecycle module's one classification of a segment, which publishers, subscribers and
the admin tools share; Segment.mapped(); and the claim of a topic, in /dev/shm or on a file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import remove_topic, shm_path, write_raw

import shmpubsub as sps
from shmpubsub import lifecycle
from shmpubsub._core.header import FileBackedTopic, ForeignSegment, HeaderNotReady
from shmpubsub.segment import Segment


def _look(topic: str) -> lifecycle.Look:
    with Segment.open(topic) as segment:
        return lifecycle.classify(segment)


def test_a_live_ring_is_ok_with_its_header(topic: str) -> None:
    with sps.Publisher(topic, slots=8, slot_size=64) as pub:
        pub.publish(b"x")
        look = _look(topic)
        assert look.kind == "ok" and look.error is None and look.problem is None
        assert look.header is not None and look.header.write_seq == 1 and look.header.epoch == pub.epoch
        assert look.file is None  # a /dev/shm ring has no file block


@pytest.mark.parametrize(
    ("content", "kind", "error"),
    [
        (b"", "unready", HeaderNotReady),  # never sized
        (bytes(8192), "unready", HeaderNotReady),  # sized, its magic not yet written
        (b"not ours" * 1024, "foreign", ForeignSegment),
        (b"\x00" * 4, "foreign", ForeignSegment),  # shorter than any header
    ],
)
def test_what_is_not_a_ring_is_classified_with_the_error_to_raise(
    topic: str, content: bytes, kind: str, error: type[Exception]
) -> None:
    write_raw(shm_path(topic), content)
    try:
        look = _look(topic)
        assert look.kind == kind and look.header is None
        assert isinstance(look.error, error) and look.problem == str(look.error)
    finally:
        remove_topic(topic)


def test_another_layout_version_is_invalid(topic: str) -> None:
    with sps.Publisher(topic, slots=8, slot_size=64), open(shm_path(topic), "rb") as f:
        data = bytearray(f.read())
    data[8:12] = (99).to_bytes(4, "little")  # the layout version follows the 8-byte magic
    write_raw(shm_path(topic), bytes(data))
    try:
        look = _look(topic)
        assert look.kind == "invalid" and "layout version 99" in (look.problem or "")
    finally:
        remove_topic(topic)


def test_a_file_backed_topic_is_its_stub_and_a_copied_stub_is_no_ring(topic: str, tmp_path: Path) -> None:
    ring = tmp_path / "ring"
    with sps.Publisher(topic, slots=8, slot_size=64, path=ring) as pub:
        look = _look(topic)
        assert look.kind == "stub" and isinstance(look.error, FileBackedTopic)
        assert look.stub is not None and look.stub.path == str(ring) and look.stub.epoch == pub.epoch
        copy = tmp_path / "stub-copy"
        copy.write_bytes(Path(shm_path(topic)).read_bytes())
        with Segment.open_file(str(copy)) as as_file:
            assert lifecycle.classify(as_file).kind == "invalid"
        with Segment.open_file(str(ring)) as file:
            look = lifecycle.classify(file)
            assert look.kind == "ok" and look.file is not None and look.file.topic == topic


def test_classify_leaves_nothing_mapped_and_names_the_segment_as_asked(topic: str) -> None:
    write_raw(shm_path(topic), b"not ours" * 1024)
    try:
        with Segment.open(topic) as segment:
            look = lifecycle.classify(segment, what="the segment")
            assert str(look.error).startswith("the segment is not a shmpubsub segment")
            with pytest.raises(sps.ShmPubSubError, match="not mapped"):
                _ = segment.mapping
    finally:
        remove_topic(topic)


def test_mapped_releases_and_unmaps_also_when_the_block_raises(topic: str) -> None:
    """An mmap with a buffer still exported cannot close: a mapping found closed after the block
    shows that the C pointer into it was released too."""
    with Segment.create(topic) as segment:
        try:
            segment.size(4096)
            with segment.mapped(writable=True) as (base, size):
                assert size == 4096
                base[0] = 7
                inside = segment.mapping
            with pytest.raises(ValueError, match="closed"):
                len(inside)
            with pytest.raises(RuntimeError, match="raised"), segment.mapped() as (base, size):
                assert base[0] == 7
                inside = segment.mapping
                raise RuntimeError("raised inside the block")
            with pytest.raises(ValueError, match="closed"):
                len(inside)
        finally:
            segment.remove()


def test_mapped_leaves_a_mapping_made_before_it_alone(topic: str) -> None:
    with Segment.create(topic) as segment:
        try:
            segment.size(4096)
            kept = segment.map()
            with segment.mapped() as (_base, size):
                assert size == 4096
            assert segment.mapping is kept and len(kept) == 4096
        finally:
            segment.remove()


def test_a_ring_file_created_but_locked_by_another_at_once_is_refused(
    topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Segment, "lock_new", lambda self, grace: False)
    path = str(tmp_path / "ring")
    with pytest.raises(sps.TopicExists, match="created by another publisher at the same moment"):
        lifecycle.claim(topic, 0o600, path)


def test_claim_takes_over_a_dead_publishers_ring_and_refuses_a_live_one(topic: str) -> None:
    segment, created = lifecycle.claim(topic, 0o600)
    try:
        assert created
        with pytest.raises(sps.TopicExists, match="already has a live publisher"):
            lifecycle.claim(topic, 0o600)
    finally:
        segment.close()  # releases the lock: the owner is gone, the segment stays (never sized)
    taken, created = lifecycle.claim(topic, 0o600)  # unready past the grace: a dead creator's
    try:
        assert created and os.fstat(taken.fileno()).st_size == 0
    finally:
        taken.remove()
        taken.close()


def test_claim_of_a_ring_file_returns_it_as_found_for_reopening(topic: str, tmp_path: Path) -> None:
    path = str(tmp_path / "ring")
    segment, created = lifecycle.claim(topic, 0o600, path)
    try:
        assert created
        segment.size(4096)
        with pytest.raises(sps.TopicExists, match="in use by another publisher"):
            lifecycle.claim(topic, 0o600, path)
    finally:
        segment.close()
    again, created = lifecycle.claim(topic, 0o600, path)
    try:
        assert not created and again.nbytes == 4096  # kept, not re-created
    finally:
        again.close()


def test_claim_refuses_a_foreign_object_under_the_name_and_leaves_it(topic: str) -> None:
    write_raw(shm_path(topic), b"not ours" * 1024)
    try:
        with pytest.raises(sps.InvalidSegment, match="not a shmpubsub segment; it was left alone"):
            lifecycle.claim(topic, 0o600)
        assert os.path.exists(shm_path(topic))
    finally:
        remove_topic(topic)
