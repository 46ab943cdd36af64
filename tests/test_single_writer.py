"""The single-writer rule: a second publisher is refused; after a crash the topic is taken over."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import suppress

import pytest
from helpers import EPOCH, SLOT_BYTES, SLOTS, control_path, remove_topic, shm_path, write_raw

import shmpubsub as sps
from shmpubsub._core.header import geometry, init_header
from shmpubsub._core.lib import pointer_to, release

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
