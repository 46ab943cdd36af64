"""File-backed rings (``Publisher(..., path=...)``): durability (flush, msync), reopening after a
close, a SIGKILL or a simulated power cut, refusing files that are not valid rings, and
``Segment.map_file`` for existing files and devices.

Ring files live in pytest's tmp_path; the leak check still holds for what the library puts in
/dev/shm and the socket directory (stub, control segment, sockets), while the ring files are
meant to stay.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import platform
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import time_limit

import shmpubsub as sps
from shmpubsub import admin, filebacked
from shmpubsub._core.header import FILE_FORMAT, HEADER_SIZE, geometry
from shmpubsub._ffi import ffi, lib
from shmpubsub.names import PREFIX, SHM_DIR
from shmpubsub.records import Recovery

PAGE = mmap.PAGESIZE
# Where layout.h puts a slot's fields (from the slot's start), and the file block's format.
SEQ, LENGTH, FLAGS, PAYLOAD = 0, 8, 12, lib.SPS_SLOT_HEADER_SIZE
FILE_FORMAT_AT = 256 + 8 + lib.SPS_BOOT_ID_SIZE + lib.SPS_TOPIC_MAX  # after flushed, boot id, topic


def payload(seq: int, size: int = 64) -> bytes:
    """Message *seq*'s bytes: its number over and over, so a torn or stale one shows."""
    return (seq.to_bytes(8, "little") * (size // 8 + 1))[:size]


def drain(sub: sps.Subscriber) -> list[sps.Message]:
    """Every message the subscriber can take now, without waiting."""
    return list(iter(sub.try_receive, None))


def dirty_kib(path: Path) -> int:
    """KiB of this process's mappings of *path* not yet written to disk (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's first line
                inside = line.rstrip().endswith(str(path))
            elif inside and fields[0] in ("Shared_Dirty:", "Private_Dirty:"):
                total += int(fields[1])
    return total


def msync_cleans_pages(directory: Path) -> bool:
    """True if the file system writes pages back on msync (tmpfs, say, keeps them dirty)."""
    probe = directory / "msync-probe"
    fd = os.open(probe, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, PAGE)
        with mmap.mmap(fd, PAGE) as m:
            m[:8] = b"12345678"
            m.flush()
            return dirty_kib(probe) == 0
    finally:
        os.close(fd)
        probe.unlink()


# -- publishing and subscribing ----------------------------------------------------------------


def test_subscribers_attach_by_name_or_by_path(topic: str, tmp_path: Path) -> None:
    path = tmp_path / "prices.ring"
    with sps.Publisher(topic, slots=8, slot_size=64, path=path) as pub:
        assert pub.path == str(path) and pub.recovery is None
        stub = Path(SHM_DIR, PREFIX + topic)
        assert stub.stat().st_size == PAGE  # the name holds a stub; the ring is in the file
        assert path.stat().st_size == geometry(8, 64)[1]
        with sps.Subscriber(topic) as by_name, sps.Subscriber(path=path) as by_path:
            assert by_path.topic == topic
            got: list[bytes] = []
            waiter = threading.Thread(target=lambda: got.append(by_path.receive(timeout=10).data))
            waiter.start()
            time.sleep(0.05)  # asleep on its socket: the file-backed topic wakes it like any other
            pub.publish(b"hello")
            waiter.join(10)
            assert got == [b"hello"]
            assert by_name.receive(timeout=10).data == b"hello"
            assert pub.wakeups_sent >= 1
        with pytest.raises(sps.InvalidArgument, match="holds the ring of topic"):
            sps.Subscriber("another-topic", path=path)


def test_close_keeps_the_file_flushed_and_marked_closed(topic: str, tmp_path: Path) -> None:
    path = tmp_path / "r.ring"
    with sps.Publisher(topic, slots=16, slot_size=64, path=path) as pub:
        for seq in range(20):
            pub.publish(payload(seq))
        info = admin.file_info(path)
        assert (info.state, info.closed, info.published) == ("alive", False, 20)
    info = admin.file_info(path)
    assert (info.state, info.closed, info.published, info.flushed) == ("closed", True, 20, 20)
    assert not Path(SHM_DIR, PREFIX + topic).exists()  # the stub and control segment went
    with sps.Subscriber(path=path, start="oldest") as sub:  # its publisher is gone
        assert [m.seq for m in sub] == list(range(4, 20))
        assert (sub.end_reason, sub.lost) == ("closed", 0)
    with sps.Publisher(topic, slots=16, slot_size=64, path=path) as pub:
        assert pub.recovery == Recovery(next=20, kept=16, torn=0, corrupt=0, unflushed=0, repaired=0)
        assert pub.publish(b"next") == 20


def test_flush_writes_every_dirty_page_and_records_how_far(topic: str, tmp_path: Path) -> None:
    if not msync_cleans_pages(tmp_path):
        pytest.skip(f"the file system of {tmp_path} keeps pages dirty after msync")
    path = tmp_path / "r.ring"
    with sps.Publisher(topic, slots=64, slot_size=1000, path=path) as pub:
        for seq in range(50):
            pub.publish(payload(seq, 1000))
        assert dirty_kib(path) > 0
        assert pub.flush() == 50
        assert dirty_kib(path) == 0  # msync wrote every page and waited for the disk
        assert admin.file_info(path).flushed == 50
        pub.publish(b"one more")
        assert dirty_kib(path) > 0
        assert pub.flush() == 51


def test_flush_every_n_messages(topic: str, tmp_path: Path) -> None:
    path = tmp_path / "r.ring"
    with sps.Publisher(topic, slots=64, slot_size=64, path=path, flush_every=10) as pub:
        for seq in range(9):
            pub.publish(payload(seq))
        assert admin.file_info(path).flushed == 0
        pub.publish(payload(9))  # the tenth
        assert admin.file_info(path).flushed == 10
        with pub.loan(3) as buf:  # loans count
            buf[:] = b"abc"
        pub.skip(9)  # and skipped numbers too
        assert admin.file_info(path).flushed == 20
        for seq in range(21, 30):
            pub.publish(payload(seq))
        assert admin.file_info(path).flushed == 20
        pub.publish_many([payload(29)])  # batches count too: the 30th number flushes
        assert admin.file_info(path).flushed == 30
        pub.publish_many([payload(seq) for seq in range(30, 39)])
        assert admin.file_info(path).flushed == 30
        pub.publish_many(bytes(64 * 3), size=64)  # passes the 40th
        assert admin.file_info(path).flushed == 42


def test_flush_interval_flushes_in_the_background(topic: str, tmp_path: Path) -> None:
    path = tmp_path / "r.ring"
    with sps.Publisher(topic, slots=64, slot_size=64, path=path, flush_interval=0.02) as pub:
        pub.publish(b"x")
        deadline = time.monotonic() + 10
        while admin.file_info(path).flushed != 1:  # without a further publish
            assert time.monotonic() < deadline, "the background flush never came"
            time.sleep(0.01)
        assert any(t.name == f"shmpubsub flush {topic}" for t in threading.enumerate())
    assert not any(t.name == f"shmpubsub flush {topic}" for t in threading.enumerate())


def test_flush_misuse(topic: str, tmp_path: Path) -> None:
    with sps.Publisher(topic, slots=4, slot_size=8) as pub, pytest.raises(sps.NotFileBacked):
        pub.flush()
    for options in ({"flush_every": 10}, {"flush_interval": 1.0}, {"overwrite": True}):
        with pytest.raises(sps.InvalidArgument, match="need a file-backed topic"):
            sps.Publisher(topic, **options)  # type: ignore[arg-type]
    path = tmp_path / "r.ring"
    for options in ({"flush_every": 0}, {"flush_every": 1.5}, {"flush_interval": 0}, {"overwrite": 1}):
        with pytest.raises(sps.InvalidArgument):
            sps.Publisher(topic, path=path, **options)  # type: ignore[arg-type]
    assert not path.exists()
    pub = sps.Publisher(topic, slots=4, slot_size=8, path=path)
    pub.close()
    with pytest.raises(sps.ClosedError):
        pub.flush()
    with pytest.raises(sps.InvalidArgument, match="is a directory"):
        sps.Publisher(topic, path=tmp_path)
    with pytest.raises(sps.SegmentError):
        sps.Publisher(topic, path=tmp_path / "missing" / "r.ring")


def _publish_then_wait_for_sigkill(topic: str, path: str, ready: Any) -> None:
    pub = sps.Publisher(topic, slots=8, slot_size=64, path=path)
    pub.publish(b"from the first")
    ready.set()
    time.sleep(60)


def test_a_publisher_killed_and_at_once_replaced_on_its_ring_file_ends_the_stream(
    topic: str, tmp_path: Path
) -> None:
    """The new publisher holds the file's lock before the subscriber looks: the first one's
    death, which its pidfd reports, must still end the stream (in one PID namespace the pid is
    trusted; the lock would say "alive")."""
    import multiprocessing

    path = str(tmp_path / "r.ring")
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    first = ctx.Process(target=_publish_then_wait_for_sigkill, args=(topic, path, ready), daemon=True)
    first.start()
    try:
        assert ready.wait(30)
        with sps.Subscriber(topic, start="oldest") as sub:
            assert sub.receive(timeout=5).data == b"from the first"
            os.kill(first.pid, signal.SIGKILL)
            first.join(10)
            with sps.Publisher(topic, slots=8, slot_size=64, path=path):  # takes the file over
                with pytest.raises(sps.PublisherGone) as gone:
                    sub.receive(timeout=5)
                assert gone.value.reason == "crashed"
    finally:
        first.kill()
        first.join(10)


def test_a_fork_child_leaves_the_ring_file_to_its_parent(topic: str, tmp_path: Path) -> None:
    path = tmp_path / "r.ring"
    with sps.Publisher(topic, slots=8, slot_size=64, path=path, flush_interval=0.01) as pub:
        pub.publish(b"before")
        with pub._ring_file._lock:  # type: ignore[union-attr]  # as if forked in mid-flush
            pid = os.fork()
            if pid == 0:  # the at-fork handler closed the child's copy: it must not hang
                os._exit(0 if pub.closed else 1)
        deadline = time.monotonic() + 10
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("the fork child hung closing its copy of the publisher")
            time.sleep(0.01)
        assert os.waitstatus_to_exitcode(done[1]) == 0
        pub.publish(b"after")  # the parent's file, mapping and lock are intact
        assert pub.flush() == 2
        with pytest.raises(sps.TopicExists):
            sps.Publisher(topic + "-b", slots=8, slot_size=64, path=path)


# -- crashes and restarts ---------------------------------------------------------------------

KILLED_AFTER = textwrap.dedent(
    """
    import json, os, signal, sys
    import shmpubsub as sps
    sys.path.insert(0, sys.argv[4])
    from test_file_backed import dirty_kib, payload
    topic, path, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    pub = sps.Publisher(topic, slots=64, slot_size=64, path=path)
    for seq in range(count):
        pub.publish(payload(seq))
    report = {"dirty_before": dirty_kib(path), "flushed": pub.flush(), "dirty_after": dirty_kib(path)}
    if sys.argv[5] == "torn":  # the next message half-written when the process dies
        pub._writer.loan(64)
    print(json.dumps(report), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@contextlib.contextmanager
def dead_publisher_of(topic: str) -> Iterator[None]:
    """Takes the name of a topic whose publisher was killed over when the block ends, so that its
    stub and control segment go even if the test failed before a new publisher did it."""
    try:
        yield
    finally:
        if Path(SHM_DIR, PREFIX + topic).exists():
            sps.Publisher(topic, slots=1, slot_size=0).close()


def killed_publisher(topic: str, path: Path, count: int, torn: bool = False) -> dict[str, int]:
    """Runs a publisher in a child that publishes *count* messages, flushes, and is killed with
    SIGKILL at once (with a message half-written if *torn*); returns what it reported."""
    here = os.path.dirname(__file__)
    child = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER, topic, str(path), str(count), here, "torn" if torn else "whole"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    report: dict[str, int] = json.loads(child.stdout)
    return report


def test_durability_across_a_process_killed_right_after_flush(topic: str, tmp_path: Path) -> None:
    with dead_publisher_of(topic):
        check_durability(topic, tmp_path / "r.ring", tmp_path)


def check_durability(topic: str, path: Path, tmp_path: Path) -> None:
    report = killed_publisher(topic, path, 40)
    assert report["flushed"] == 40
    if msync_cleans_pages(tmp_path):
        assert report["dirty_before"] > 0 and report["dirty_after"] == 0, report
    info = admin.file_info(path)
    assert (info.state, info.closed, info.flushed, info.published) == ("dead", False, 40, 40)
    with sps.Subscriber(path=path, start="oldest") as sub, time_limit(10):
        got = list(sub)  # then the end: the publisher crashed
        assert [m.data for m in got] == [payload(seq) for seq in range(40)]
        assert sub.end_reason == "crashed"
    with sps.Subscriber(topic, start="oldest") as sub:  # by name too: its stub outlived it
        assert len(drain(sub)) == 40
    with sps.Publisher(topic, slots=64, slot_size=64, path=path) as pub:  # takes the name over
        assert pub.recovery == Recovery(next=40, kept=40, torn=0, corrupt=0, unflushed=0, repaired=0)
        assert pub.publish(b"after") == 40


def test_replay_order_and_loss_counts_after_a_restart(topic: str, tmp_path: Path) -> None:
    with dead_publisher_of(topic):
        check_replay(topic, tmp_path / "r.ring")


def check_replay(topic: str, path: Path) -> None:
    killed_publisher(topic, path, 100, torn=True)  # message 100 half-written in slot 36
    with sps.Publisher(topic, slots=64, slot_size=64, path=path) as pub:
        recovery = pub.recovery
        assert recovery is not None
        assert (recovery.next, recovery.torn, recovery.repaired, recovery.kept) == (100, 1, 1, 63)
        with sps.Subscriber(topic, start="oldest") as sub:
            got = drain(sub)
            # 36..99 retained; message 36 was being overwritten by the torn 100: lost.
            assert [m.seq for m in got] == list(range(37, 100))
            assert all(m.data == payload(m.seq) for m in got)
            assert sub.lost == 1
            for seq in range(100, 110):  # numbering continues where it stopped
                assert pub.publish(payload(seq)) == seq
            more = drain(sub)
            assert [m.seq for m in more] == list(range(100, 110))
            assert len(got) + len(more) + sub.lost == 110 - 36


def simulated_power_cut(flushed: bytes, current: bytes, from_current: list[bool]) -> bytes:
    """The disk after a power cut: the kernel writes dirty pages back in no particular order, so
    each page is either as the last flush left it or as written since."""
    starts = range(0, len(current), PAGE)
    pages = ((current if new else flushed)[i : i + PAGE] for i, new in zip(starts, from_current, strict=True))
    return b"".join(pages)


@pytest.mark.parametrize("seed", [*range(6), "all-new-but-header"])
def test_a_power_cut_keeps_what_was_flushed(
    topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int | str
) -> None:
    slots, size = 64, 232  # 256-byte slots (with the checksum word): 16 to a page, none straddling two
    path, cut = tmp_path / "r.ring", tmp_path / "after-the-cut.ring"
    with sps.Publisher(topic, slots=slots, slot_size=size, path=path) as pub:
        for seq in range(100):
            pub.publish(payload(seq, size))
        assert pub.flush() == 100
        on_disk = path.read_bytes()
        for seq in range(100, 120):  # overwrite the slots of 36..55, never flushed
            pub.publish(payload(seq, size))
        pub._writer.loan(size)  # and message 120 half-written over 56
        in_memory = path.read_bytes()
        pub._writer.abort()
    pages = len(in_memory) // PAGE
    if seed == "all-new-but-header":
        from_current = [False] + [True] * (pages - 1)
    else:
        rng = random.Random(seed)
        from_current = [rng.random() < 0.5 for _ in range(pages)]
    cut.write_bytes(simulated_power_cut(on_disk, in_memory, from_current))
    monkeypatch.setattr(filebacked._proc, "boot_id", lambda: os.urandom(16))  # the machine rebooted

    with sps.Publisher(topic, slots=slots, slot_size=size, path=cut) as pub:
        recovery = pub.recovery
        assert recovery is not None and 100 <= recovery.next <= 120
        if seed == "all-new-but-header":
            assert recovery.unflushed == 20  # complete, but never flushed: not trusted
        first = recovery.next - slots
        with sps.Subscriber(topic, start="oldest") as sub:
            got = drain(sub)
            seqs = [m.seq for m in got]
            assert seqs == sorted(seqs) and all(first <= s < 100 for s in seqs)  # only flushed ones
            assert all(m.data == payload(m.seq, size) for m in got)  # none torn or stale
            assert set(range(57, 100)) <= set(seqs)  # flushed and never overwritten: all kept
            assert len(got) + sub.lost == slots  # every retained number received or counted lost
            assert pub.publish(b"on") == recovery.next


def test_after_a_crash_in_the_same_boot_everything_complete_is_kept(topic: str, tmp_path: Path) -> None:
    path = tmp_path / "r.ring"
    with sps.Publisher(topic, slots=16, slot_size=64, path=path) as pub:
        for seq in range(30):
            pub.publish(payload(seq))
        pub.flush()
        for seq in range(30, 40):
            pub.publish(payload(seq))
        image = path.read_bytes()  # what the page cache holds when the process dies
    path.write_bytes(image)  # as if the close never happened (it flushed and marked closed)
    with sps.Publisher(topic, slots=16, slot_size=64, path=path) as pub:
        assert pub.recovery == Recovery(next=40, kept=16, torn=0, corrupt=0, unflushed=0, repaired=0)


# -- slot checksums ----------------------------------------------------------------------------


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C by its definition, bit by bit (reflected polynomial 0x82F63B78)."""
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def slot_offset(n: int, slots: int, stride: int) -> int:
    return HEADER_SIZE + (n % slots) * stride


def checksum_at(length: int) -> int:
    """Where a message of *length* bytes has its checksum word, from the slot's start."""
    return PAYLOAD + (length + 7) // 8 * 8


def cpu_has_sse42() -> bool:
    with open("/proc/cpuinfo") as cpuinfo:
        return any(line.startswith("flags") and " sse4_2" in line for line in cpuinfo)


def test_crc32c_in_both_implementations() -> None:
    if platform.machine() == "x86_64" and cpu_has_sse42():  # else the table would pass for both
        assert lib.sps_crc32c_hardware() == 1
    assert lib.sps_crc32c(0, b"123456789", 9) == 0xE3069283  # the standard check value
    data = random.Random(7).randbytes(200)
    buffer = ffi.from_buffer(data)
    for start in range(9):  # every alignment of the 8-byte steps
        for length in [*range(40), 123, 200 - start]:
            expected = crc32c(data[start : start + length])
            assert lib.sps_crc32c(0, buffer + start, length) == expected, (start, length)
            assert lib.sps_crc32c_portable(0, buffer + start, length) == expected, (start, length)
    half = lib.sps_crc32c(0, buffer, 77)
    assert lib.sps_crc32c(half, buffer + 77, 123) == crc32c(data)  # it continues, as zlib.crc32 does


def test_each_slot_of_a_ring_file_carries_the_checksum_of_its_message(topic: str, tmp_path: Path) -> None:
    slots, size = 16, 100
    stride, total = geometry(slots, size, ring_file=True)
    path = tmp_path / "r.ring"
    lengths = [0, 1, 7, 8, 9, 63, 64, 100]
    with sps.Publisher(topic, slots=slots, slot_size=size, path=path) as pub:
        for seq, length in enumerate(lengths):
            pub.publish(payload(seq + 1, length))
        with pub.loan(50) as buf:  # a loan's checksum is taken when it is committed
            buf[:] = payload(9, 50)
        pub.publish_many([payload(seq + 1, 30) for seq in range(9, 12)])
        pub.skip(2)  # markers carry one too
        image = path.read_bytes()
    assert len(image) == total
    lengths += [50, 30, 30, 30, 0, 0]
    for seq, length in enumerate(lengths):
        slot = image[slot_offset(seq, slots, stride) :][:stride]
        head = (2 * seq + 2).to_bytes(8, "little") + length.to_bytes(4, "little") + slot[FLAGS : FLAGS + 4]
        assert slot[:FLAGS] == head[:FLAGS]
        assert int.from_bytes(slot[FLAGS : FLAGS + 4], "little") == (1 if seq >= 12 else 0)  # skipped
        word = int.from_bytes(slot[checksum_at(length) :][:8], "little")
        assert word == crc32c(head + slot[PAYLOAD : PAYLOAD + length]), seq


def test_only_ring_files_pay_for_checksums(topic: str, tmp_path: Path) -> None:
    """/dev/shm rings keep their geometry, and no checksum is written into them."""
    assert geometry(8, 48) == (64, HEADER_SIZE + 8 * 64)  # 16 + 48: one cache line
    assert geometry(8, 48, ring_file=True) == (128, HEADER_SIZE + 8 * 128)  # + the word
    assert geometry(8, 100, ring_file=True) == geometry(8, 100)  # it fits the padding
    with sps.Publisher(topic, slots=8, slot_size=100) as pub:
        for seq in range(8):
            pub.publish(payload(seq + 1, 100 - seq))
        image = Path(SHM_DIR, PREFIX + topic).read_bytes()
    stride = geometry(8, 100)[0]
    for seq in range(8):
        at = slot_offset(seq, 8, stride) + checksum_at(100 - seq)
        assert image[at : at + 8] == bytes(8)


@pytest.mark.parametrize("overwrite", ["complete", "half-written"])
@pytest.mark.parametrize("new_pages", range(8), ids=lambda m: f"new-pages-{m:03b}")
def test_a_power_cut_while_a_flushed_slot_was_overwritten(
    topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overwrite: str, new_pages: int
) -> None:
    """Message 0 was flushed; message 8 was overwriting its slot (three pages) when the power
    went. The disk holds each of those pages either old or new (bit i of *new_pages*: page i
    new; page 0 starts with the sequence word). Recovery must never keep a mix of the two."""
    slots, size = 8, 3 * PAGE - PAYLOAD - 8  # with its checksum word, a slot is three whole pages
    assert geometry(slots, size, ring_file=True)[0] == 3 * PAGE
    path, cut = tmp_path / "r.ring", tmp_path / "after-the-cut.ring"
    with sps.Publisher(topic, slots=slots, slot_size=size, path=path) as pub:
        for seq in range(8):
            pub.publish(payload(seq + 1, size))
        assert pub.flush() == 8
        on_disk = path.read_bytes()
        if overwrite == "complete":
            pub.publish(payload(9, size))
        else:
            offset = pub._writer.loan(size)
            pub._view[offset : offset + size] = payload(9, size)
        in_memory = path.read_bytes()
        if overwrite != "complete":
            pub._writer.abort()
    from_current = [False] * (len(in_memory) // PAGE)  # the header page too: flushed = 8
    for i in range(3):
        from_current[1 + i] = bool(new_pages >> i & 1)
    cut.write_bytes(simulated_power_cut(on_disk, in_memory, from_current))
    monkeypatch.setattr(filebacked._proc, "boot_id", lambda: os.urandom(16))  # the machine rebooted
    with sps.Subscriber(path=cut, start="oldest") as sub:  # before a restart: what it will keep
        before = [(m.seq, m.data) for m in drain(sub)]
        lost_before = sub.lost

    with sps.Publisher(topic, slots=slots, slot_size=size, path=cut) as pub:
        recovery = pub.recovery
        assert recovery is not None
        seq_word_new, mixed = bool(new_pages & 1), new_pages not in (0, 0b111)
        if not seq_word_new:  # message 0 complete, and its own pages or a mix
            expected = {"corrupt": int(mixed), "torn": 0, "unflushed": 0}
        elif overwrite == "complete":  # message 8 complete, and its own pages or a mix
            expected = {"corrupt": int(mixed), "torn": 0, "unflushed": int(not mixed)}
        else:  # message 8 half-written
            expected = {"corrupt": 0, "torn": 1, "unflushed": 0}
        assert {k: getattr(recovery, k) for k in expected} == expected
        assert recovery.kept == 8 - (new_pages != 0)
        with sps.Subscriber(topic, start="oldest") as sub:
            got = drain(sub)
            assert all(m.data == payload(m.seq + 1, size) for m in got)  # never a mix
            assert [m.seq for m in got] == list(range(0 if new_pages == 0 else 1, 8))
            assert len(got) + sub.lost == 8
            assert ([(m.seq, m.data) for m in got], sub.lost) == (before, lost_before)


@pytest.mark.parametrize("where", ["payload-first", "payload-last", "length", "flags", "checksum", "padding"])
def test_a_damaged_slot_in_a_closed_ring_file_is_dropped_and_counted(
    topic: str, tmp_path: Path, where: str
) -> None:
    slots, size, length, victim = 8, 100, 60, 6
    stride = geometry(slots, size, ring_file=True)[0]
    path = tmp_path / "r.ring"
    with sps.Publisher(topic, slots=slots, slot_size=size, path=path) as pub:
        for seq in range(12):
            pub.publish(payload(seq + 1, length))
    image = bytearray(path.read_bytes())
    at = slot_offset(victim, slots, stride) + {
        "payload-first": PAYLOAD,
        "payload-last": PAYLOAD + length - 1,
        "length": LENGTH,
        "flags": FLAGS,  # bit 0 set: it now claims to be a skip marker
        "checksum": checksum_at(length),
        "padding": checksum_at(length) + 8,  # beyond the message and its checksum: harmless
    }[where]
    image[at] ^= 1
    path.write_bytes(image)
    damaged = int(where != "padding")
    expected = [seq for seq in range(4, 12) if not (damaged and seq == victim)]
    with sps.Subscriber(path=path, start="oldest") as sub:  # with no publisher: the same
        assert [m.seq for m in sub] == expected
        assert (sub.lost, sub.end_reason) == (damaged, "closed")
    assert path.read_bytes() == image  # reading repaired a private copy only
    with sps.Publisher(topic, slots=slots, slot_size=size, path=path) as pub:
        assert pub.recovery == Recovery(
            next=12, kept=8 - damaged, torn=0, corrupt=damaged, unflushed=0, repaired=damaged
        )
        with sps.Subscriber(topic, start="oldest") as sub:
            got = drain(sub)
            assert [m.seq for m in got] == expected
            assert all(m.data == payload(m.seq + 1, length) for m in got)
            assert sub.lost == damaged


# -- files that are not valid rings -----------------------------------------------------------


def closed_ring(topic: str, path: Path, count: int = 5) -> bytes:
    with sps.Publisher(topic, slots=8, slot_size=64, path=path) as pub:
        for seq in range(count):
            pub.publish(payload(seq))
    return path.read_bytes()


def refused(topic: str, path: Path, error: type[Exception], match: str, **options: int) -> None:
    """A publisher and a subscriber refuse *path*, leaving it as it was (and nothing behind)."""
    before = path.read_bytes()
    with pytest.raises(error, match=match):
        sps.Publisher(topic, path=path, slots=options.get("slots", 8), slot_size=64)
    assert path.read_bytes() == before
    if error is sps.InvalidSegment:
        with pytest.raises(sps.InvalidSegment):
            sps.Subscriber(path=path)
    with sps.Publisher(topic, path=path, slots=4, slot_size=32, overwrite=True) as pub:
        assert (pub.published, pub.recovery) == (0, None)  # replaced, as asked
    assert admin.file_info(path).slots == 4


def test_a_truncated_file_is_refused(topic: str, tmp_path: Path) -> None:
    path = tmp_path / "r.ring"
    image = closed_ring(topic, path)
    path.write_bytes(image[:-64])  # one slot short
    refused(topic, path, sps.InvalidSegment, "truncated or corrupt.*left unchanged.*overwrite=True")
    path.write_bytes(image[:100])
    refused(topic, path, sps.InvalidSegment, "smaller than a segment header")


@pytest.mark.parametrize(
    "content",
    [b"", bytes(2 * PAGE), b"\x89PNG\r\n\x1a\n" + bytes(5000), b"hello world\n" * 1000, "random"],
    ids=["empty", "zeros", "png", "text", "random"],
)
def test_a_foreign_file_is_refused(topic: str, tmp_path: Path, content: bytes | str) -> None:
    path = tmp_path / "foreign"
    path.write_bytes(os.urandom(3 * PAGE) if content == "random" else content)
    refused(topic, path, sps.InvalidSegment, "(not a shmpubsub|empty|not initialised).*left unchanged")


def test_a_shm_segment_or_a_stub_copied_to_a_file_is_no_ring_file(topic: str, tmp_path: Path) -> None:
    path = tmp_path / "copy"
    with sps.Publisher(topic, slots=8, slot_size=64):
        path.write_bytes(Path(SHM_DIR, PREFIX + topic).read_bytes())
    refused(topic, path, sps.InvalidSegment, "not a ring file")
    with sps.Publisher(topic, slots=8, slot_size=64, path=tmp_path / "r.ring"):
        path.write_bytes(Path(SHM_DIR, PREFIX + topic).read_bytes())
    refused(topic, path, sps.InvalidSegment, "file-backed")


def test_a_ring_file_of_an_older_format_is_refused_for_writing(topic: str, tmp_path: Path) -> None:
    """A ring file written before slots had checksums (format 0; slot_size=64 lays it out the
    same) cannot be recovered: it is refused, and left for subscribers to read."""
    path = tmp_path / "r.ring"
    image = bytearray(closed_ring(topic, path))
    assert int.from_bytes(image[FILE_FORMAT_AT : FILE_FORMAT_AT + 4], "little") == FILE_FORMAT == 1
    image[FILE_FORMAT_AT : FILE_FORMAT_AT + 4] = bytes(4)
    path.write_bytes(image)
    older = r"written by an older shmpubsub, whose slots carry no checksums.*left unchanged"
    with pytest.raises(sps.InvalidSegment, match=older):
        sps.Publisher(topic, path=path, slots=8, slot_size=64)
    assert path.read_bytes() == image
    with sps.Subscriber(path=path, start="oldest") as sub:
        assert [m.data for m in sub] == [payload(seq) for seq in range(5)]
    with sps.Publisher(topic, path=path, slots=8, slot_size=64, overwrite=True) as pub:
        assert (pub.published, pub.recovery) == (0, None)


def test_a_ring_file_of_an_unknown_format_is_refused(topic: str, tmp_path: Path) -> None:
    path = tmp_path / "r.ring"
    image = bytearray(closed_ring(topic, path))
    image[FILE_FORMAT_AT] = 2
    path.write_bytes(image)
    refused(topic, path, sps.InvalidSegment, "incompatible shmpubsub \\(ring file format 2\\).*unchanged")


def test_another_geometry_or_topic_is_refused(topic: str, tmp_path: Path) -> None:
    path = tmp_path / "r.ring"
    closed_ring(topic, path)
    refused(topic, path, sps.InvalidArgument, "8 slots of 64 bytes, not 16 of 64", slots=16)
    path.unlink()
    closed_ring(topic, path)
    refused(topic + "-other", path, sps.InvalidArgument, "holds the ring of topic")


def test_one_publisher_per_file(topic: str, tmp_path: Path) -> None:
    path = tmp_path / "r.ring"
    with sps.Publisher(topic, slots=8, slot_size=64, path=path) as pub:
        with pytest.raises(sps.TopicExists, match=f"in use by another publisher \\(pid {os.getpid()}\\)"):
            sps.Publisher(topic + "-b", slots=8, slot_size=64, path=path)
        with pytest.raises(sps.TopicExists, match=f"pid {os.getpid()}, ring file {path}"):
            sps.Publisher(topic, slots=8, slot_size=64)  # the name is taken, whatever backs it
        pub.publish(b"still fine")
    assert admin.file_info(path).published == 1


# -- Segment.map_file -----------------------------------------------------------------------------


def test_a_read_only_mapping_cannot_be_written_through(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"a" * 3 * PAGE)
    seg = sps.Segment.map_file(path)
    try:
        assert seg.mapping[:3] == b"aaa" and len(seg.mapping) == 3 * PAGE
        with pytest.raises(sps.ReadOnlySegment, match="read-only"):
            seg.write(0, b"b")
        with pytest.raises(TypeError):  # the mmap itself refuses too
            seg.mapping[0:1] = b"b"
        assert os.O_ACCMODE & _fd_flags(seg.fileno()) == os.O_RDONLY
        assert _protection(seg) == "r--s"  # PROT_READ: no write could get through, by any means
    finally:
        seg.close()
    assert path.read_bytes() == b"a" * 3 * PAGE


def _fd_flags(fd: int) -> int:
    with open(f"/proc/self/fdinfo/{fd}") as info:
        return int(next(line for line in info if line.startswith("flags:")).split()[1], 8)


def _protection(seg: sps.Segment) -> str:
    """The permissions /proc/self/maps shows for the segment's mapping."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5] == seg.path and int(fields[2], 16) == seg.offset:
                return fields[1]
    raise AssertionError(f"no mapping of {seg.path} at offset {seg.offset}")


def test_a_writable_mapping_writes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(bytes(2 * PAGE))
    seg = sps.Segment.map_file(path, offset=PAGE, writable=True)
    try:
        assert _protection(seg) == "rw-s"
        seg.write(10, b"hello")
        seg.flush()
        with pytest.raises(sps.InvalidArgument, match="do not fit"):
            seg.write(PAGE - 2, b"abc")
        with pytest.raises(sps.InvalidType):
            seg.write(0, "text")
    finally:
        seg.close()
    assert path.read_bytes()[PAGE + 10 : PAGE + 15] == b"hello"


def test_writable_needs_a_file_that_may_be_opened_for_writing() -> None:
    directory = Path(tempfile.mkdtemp(prefix="sps-perm-"))  # a place another user can reach
    try:
        directory.chmod(0o755)
        path = directory / "data"
        path.write_bytes(bytes(PAGE))
        path.chmod(0o444)
        if os.geteuid() != 0:
            with pytest.raises(sps.PermissionDenied):
                sps.Segment.map_file(path, writable=True)
            return
        pid = os.fork()  # root may write anything: ask as nobody instead
        if pid == 0:
            code = 3
            try:
                os.setgid(65534)
                os.setuid(65534)
                sps.Segment.map_file(path).close()  # reading is allowed
                code = 1
                sps.Segment.map_file(path, writable=True)
            except sps.PermissionDenied:
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        shutil.rmtree(directory)


@pytest.mark.parametrize("offset", [1, 100, PAGE - 1, PAGE + 8, -PAGE])
def test_offsets_that_are_not_page_aligned_are_rejected(tmp_path: Path, offset: int) -> None:
    path = tmp_path / "data"
    path.write_bytes(bytes(3 * PAGE))
    with pytest.raises(sps.InvalidArgument, match=f"not a multiple of the page size \\({PAGE} bytes\\)"):
        sps.Segment.map_file(path, offset=offset)


def test_offsets_and_lengths_within_the_file(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"".join(bytes([i]) * PAGE for i in range(4)))
    seg = sps.Segment.map_file(path, offset=2 * PAGE, length=PAGE)
    with seg:
        assert seg.mapping[:] == bytes([2]) * PAGE
    seg = sps.Segment.map_file(path, offset=PAGE)  # the rest of the file
    with seg:
        assert len(seg.mapping) == 3 * PAGE and seg.mapping[0] == 1
    for offset, length in ((4 * PAGE, None), (0, 5 * PAGE), (3 * PAGE, 2 * PAGE), (0, 0), (0, -1)):
        with pytest.raises(sps.InvalidArgument):
            sps.Segment.map_file(path, offset=offset, length=length)
    for bad in ({"offset": 0.0}, {"length": "1"}, {"offset": True}):
        with pytest.raises(sps.InvalidType):
            sps.Segment.map_file(path, **bad)  # type: ignore[arg-type]
    with pytest.raises(sps.TopicNotFound):
        sps.Segment.map_file(tmp_path / "missing")


def test_devices_and_special_files(tmp_path: Path) -> None:
    with sps.Segment.map_file("/dev/zero", length=PAGE) as seg:  # a character device: give the length
        assert seg.mapping[:] == bytes(PAGE)
    with pytest.raises(sps.InvalidArgument, match="character device"):
        sps.Segment.map_file("/dev/zero")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with time_limit(5), pytest.raises(sps.InvalidArgument, match="neither a regular file nor a device"):
        sps.Segment.map_file(fifo)  # never blocks in open()
    with pytest.raises(sps.InvalidArgument):
        sps.Segment.map_file(tmp_path)


def test_remove_unlinks_the_file_and_the_mapping_lives_on(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"z" * PAGE)
    with sps.Segment.map_file(path) as seg:
        seg.remove()  # step 5: the name goes...
        assert not path.exists()
        assert seg.mapping[:1] == b"z"  # ...the data with the last mapping and descriptor
        seg.unmap()
        assert stat.S_ISREG(os.fstat(seg.fileno()).st_mode)
    with sps.Segment.map_file("/dev/zero", length=PAGE) as seg, pytest.raises(sps.InvalidArgument):
        seg.remove()
