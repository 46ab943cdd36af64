"""Segment, the five steps (create, size, map, unmap, remove), its mode, lock and removal, and a
size beyond /dev/shm.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time

import pytest
from helpers import remove_topic, shm_path

import shmpubsub as sps
from shmpubsub._core.header import MAX_SLOT_COUNT, MAX_SLOT_SIZE
from shmpubsub.names import PREFIX, SHM_DIR

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
