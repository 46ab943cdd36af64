"""The command line (``python -m shmpubsub ...``, run as a subprocess) and the library module under it,
shmpubsub.admin: listing, inspecting, following and measuring topics, live and dead (publishers
killed with SIGKILL), and garbage collection that removes exactly what dead processes left.

Garbage collection looks at all of /dev/shm: run this module with a private /dev/shm (as CI
does) if other test runs share the machine, or it may clean up their dead topics too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import shm_path, time_limit, unique_topic

import shmpubsub as sps
from shmpubsub import admin, cli, wakeup
from shmpubsub._core.header import HEADER_SIZE, geometry
from shmpubsub._core.lib import LAYOUT_VERSION
from shmpubsub.names import CONTROL_SUFFIX, PREFIX

TIMES = "\N{MULTIPLICATION SIGN}"
TIMEOUT = 30  # seconds any one command may take before the test fails

PUBLISH_AND_WAIT = textwrap.dedent(
    """
    import sys, time
    import shmpubsub as sps
    topic, count = sys.argv[1], int(sys.argv[2])
    pub = sps.Publisher(topic, slots=8, slot_size=64, max_subscribers=4)
    for i in range(count):
        pub.publish(b"message %d" % i)
    print("ready", flush=True)
    time.sleep(60)  # until killed
    """
)

SUBSCRIBE_AND_WAIT = textwrap.dedent(
    """
    import sys, time
    import shmpubsub as sps
    sub = sps.Subscriber(sys.argv[1])
    print("ready", flush=True)
    time.sleep(60)  # until killed
    """
)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shmpubsub", *args], capture_output=True, text=True, timeout=TIMEOUT
    )


class Running:
    """A child process whose output is read without Python-side buffering, so that reading a
    line at a time and then the rest cannot lose anything in between."""

    def __init__(self, args: list[str], stderr: bool = True) -> None:
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE if stderr else None, bufsize=0
        )
        self.pending = b""

    def line(self, timeout: float = TIMEOUT) -> str:
        """The next line it prints; fails the test if none comes in time."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self.proc.stdout.fileno(), 65536) if ready else b""
            if not chunk:
                pytest.fail(f"{self.proc.args} printed no line within {timeout} s (or exited)")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line.decode()

    def finish(self) -> tuple[int, str, str]:
        """Waits for it to exit: (exit code, the rest of stdout, stderr)."""
        try:
            out, err = self.proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            pytest.fail(f"{self.proc.args} did not finish within {TIMEOUT} s")
        rest, self.pending = self.pending + out, b""
        return self.proc.returncode, rest.decode(), (err or b"").decode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=TIMEOUT)


@contextlib.contextmanager
def start_cli(*args: str) -> Iterator[Running]:
    """A command running in the background; killed if still running when the block ends."""
    running = Running([sys.executable, "-m", "shmpubsub", *args])
    try:
        yield running
    finally:
        running.kill()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.01)


@contextlib.contextmanager
def child(script: str, *args: str) -> Iterator[Running]:
    """A Python child that prints "ready" once set up; killed with SIGKILL when the block ends."""
    running = Running([sys.executable, "-c", script, *args], stderr=False)
    try:
        assert running.line() == "ready"
        yield running
    finally:
        running.kill()


@pytest.fixture
def dead_topic(topic: str) -> Iterator[str]:
    """A topic whose publisher (8 slots of 64 bytes, 5 messages published) was killed with SIGKILL,
    leaving its segments behind. Removed afterwards by taking it over, if the test did not."""
    dead = topic + "-dead"
    with child(PUBLISH_AND_WAIT, dead, "5"):
        pass
    try:
        yield dead
    finally:
        if os.path.exists(shm_path(dead)):
            sps.Publisher(dead).close()


@pytest.fixture
def live() -> Iterator[sps.Publisher]:
    """A live topic published from this process: 8 slots of 64 bytes, nothing published yet."""
    with sps.Publisher(unique_topic("live"), slots=8, slot_size=64) as pub:
        yield pub


def ours(items: list[str], *names: str) -> list[str]:
    """The items of a gc report that concern the given topics (other garbage may exist)."""
    return [i for i in items if any(f"{PREFIX}{n}" in i or f"topic {n!r}" in i for n in names)]


# -- admin: looking --------------------------------------------------------------------


def test_topics_describes_a_live_topic(live: sps.Publisher) -> None:
    with sps.Subscriber(live.topic) as sub:
        for i in range(3):
            live.publish(b"m%d" % i)
        info = next(t for t in admin.topics() if t.name == live.topic)
        assert (info.state, info.publisher_alive, info.problem) == ("alive", True, None)
        assert (info.slots, info.slot_size, info.publisher_pid) == (8, 64, os.getpid())
        assert (info.subscribers, info.max_subscribers, info.published, info.closed) == (1, 64, 3, False)
        assert info.epoch == sub.epoch
        assert (
            info.size
            == os.stat(shm_path(live.topic)).st_size + os.stat(shm_path(live.topic, CONTROL_SUFFIX)).st_size
        )
        assert abs(info.created_ns - time.time_ns()) < 60e9  # type: ignore[operator]
        assert info.subscriber_details is None  # only topic_info() gathers them


def test_topic_info_details_each_subscriber(live: sps.Publisher) -> None:
    with sps.Subscriber(live.topic) as reader, sps.Subscriber(live.topic) as lapped:
        for i in range(3):
            live.publish(b"m%d" % i)
        while reader.try_receive() is not None:
            pass
        lapped.try_receive()
        for i in range(20):  # laps both (8 slots)
            live.publish(b"n%d" % i)
        while reader.try_receive() is not None:
            pass
        lapped.try_receive()
        assert lapped.lost > 0
        info = admin.topic_info(live.topic)
        assert info.subscriber_details is not None
        first, second = sorted(info.subscriber_details, key=lambda s: s.index)  # in attaching order
        assert (first.pid, first.alive, first.lag, first.lost, first.asleep) == (
            os.getpid(),
            True,
            0,
            reader.lost,
            False,
        )
        assert (second.read_pos, second.lost) == (lapped.next_seq, lapped.lost)
        assert second.lag == live.published - lapped.next_seq > 0


def test_topic_info_sees_a_sleeping_subscriber(live: sps.Publisher) -> None:
    with sps.Subscriber(live.topic, spin_us=0) as sub:
        got: list[sps.Message] = []
        sleeper = threading.Thread(target=lambda: got.append(sub.receive(timeout=TIMEOUT)))
        sleeper.start()
        try:
            wait_until(
                lambda: any(s.asleep for s in admin.topic_info(live.topic).subscriber_details or ()),
                "the subscriber sleeps",
            )
        finally:
            live.publish(b"wake up")
            sleeper.join(TIMEOUT)
        assert [m.data for m in got] == [b"wake up"]


def test_topic_info_raises_for_a_missing_topic_or_a_bad_name(topic: str) -> None:
    with pytest.raises(sps.TopicNotFound, match="no topic"):
        admin.topic_info(topic)
    with pytest.raises(sps.InvalidArgument):
        admin.topic_info("no spaces allowed")


def test_looking_opens_everything_read_only_and_never_takes_the_lock(
    live: sps.Publisher, dead_topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = sps.Subscriber(live.topic)  # a subscriber opens the control segment writable; we must not
    opened: list[bool] = []
    real_open = sps.Segment.open.__func__  # type: ignore[attr-defined]

    def spy(cls: type[sps.Segment], topic: str, writable: bool = False, suffix: str = "") -> sps.Segment:
        opened.append(writable)
        segment: sps.Segment = real_open(cls, topic, writable, suffix)
        return segment

    def no_lock(self: sps.Segment) -> bool:
        raise AssertionError("inspecting a topic must not take its lock")

    monkeypatch.setattr(sps.Segment, "open", classmethod(spy))
    monkeypatch.setattr(sps.Segment, "lock", no_lock)
    with sub:
        admin.topics()
        assert admin.topic_info(live.topic).subscribers == 1
        admin.topic_info(dead_topic)
        admin.collect_garbage(dry_run=True)
    assert opened and not any(opened)
    live.publish(b"still mine")  # the publisher noticed nothing


def test_a_dead_topic_is_described_as_dead(dead_topic: str) -> None:
    info = admin.topic_info(dead_topic)
    assert (info.state, info.publisher_alive, info.problem) == ("dead", False, None)
    assert (info.published, info.slots, info.subscribers, info.subscriber_details) == (5, 8, 0, ())


def test_invalid_segments_are_listed_with_their_problem_and_gc_leaves_foreign_ones(
    topic: str, live: sps.Publisher, caplog: pytest.LogCaptureFixture
) -> None:
    junk, badname, oldversion, orphan = topic + "-junk", topic + " bad", topic + "-v99", topic + "-orphan"
    with open(shm_path(live.topic), "rb") as f:
        image = bytearray(f.read())
    image[8:12] = (99).to_bytes(4, "little")  # the layout version (struct sps_identity)
    files = {
        shm_path(junk): b"not ours" * 1000,
        shm_path(badname): b"x",
        shm_path(oldversion): bytes(image),
        shm_path(orphan, CONTROL_SUFFIX): b"\0" * 4096,  # an unfinished control segment, alone
    }
    fifo = topic + "-fifo"
    try:
        for path, content in files.items():
            with open(path, "wb") as f:
                f.write(content)
        os.mkfifo(shm_path(fifo))  # opening it would block: it must never be opened
        files[shm_path(fifo)] = b""
        with time_limit(TIMEOUT):
            found = {t.name: t for t in admin.topics()}
        assert found[fifo].problem == "not a shmpubsub segment (not a regular file)"
        assert found[junk].state == "unknown"
        assert "not a shmpubsub segment (bad magic number)" in found[junk].problem  # type: ignore[operator]
        assert "not a valid topic name" in found[badname].problem  # type: ignore[operator]
        assert found[oldversion].state == "dead"
        assert "layout version 99" in found[oldversion].problem  # type: ignore[operator]
        assert "without a data segment" in found[orphan].problem  # type: ignore[operator]
        assert found[live.topic].problem is None
        info = admin.topic_info(junk)
        assert info.problem is not None and info.slots is None

        with caplog.at_level(logging.WARNING, logger="shmpubsub.admin"), time_limit(TIMEOUT):
            removed = admin.collect_garbage()
        # Another layout version nobody holds is a dead publisher's (a new one would take it
        # over); an orphaned control segment is garbage; foreign files are only reported.
        assert sorted(ours(removed, junk, badname, oldversion, orphan, live.topic)) == sorted(
            [
                f"{shm_path(oldversion)} (topic {oldversion!r}: the segment has layout version 99; this "
                f"shmpubsub speaks version {LAYOUT_VERSION} (publisher and subscriber must run "
                "compatible versions); "
                "no publisher holds it)",
                f"{shm_path(orphan, CONTROL_SUFFIX)} (control segment without a data segment)",
            ]
        )
        assert all(os.path.exists(shm_path(name)) for name in (junk, badname, fifo))
        warned = caplog.text
        assert f"{shm_path(junk)}: the segment is not a shmpubsub segment" in warned
        assert f"{shm_path(badname)}: not a shmpubsub segment (not a valid topic name); left alone" in warned
    finally:
        for path in files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


# -- admin: collecting garbage --------------------------------------------------------------


def test_gc_removes_exactly_what_dead_processes_left(live: sps.Publisher, dead_topic: str) -> None:
    with sps.Subscriber(live.topic) as alive_sub:
        live.publish(b"before")
        with child(SUBSCRIBE_AND_WAIT, live.topic):
            wait_until(lambda: len(live.subscribers) == 2, "the child subscribed")
        dead_pid = next(s.pid for s in live.subscribers if s.pid != os.getpid())
        dead_socket = next(
            os.path.join(wakeup.socket_dir(), f"{PREFIX}{s.token:016x}")
            for s in live.subscribers
            if s.pid != os.getpid()
        )
        stray = os.path.join(wakeup.socket_dir(), f"{PREFIX}{'f' * 16}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.bind(stray)  # closed at once: a socket file nobody is bound to
        live_files = {
            p: os.stat(p).st_ino for p in (shm_path(live.topic), shm_path(live.topic, CONTROL_SUFFIX))
        }
        expected = [
            f"{shm_path(dead_topic)} (topic {dead_topic!r}: its publisher, pid ",
            f"{shm_path(dead_topic, CONTROL_SUFFIX)} (control segment of topic {dead_topic!r})",
            f"{shm_path(live.topic, CONTROL_SUFFIX)} entry 1 (subscriber pid {dead_pid} is gone; "
            f"socket {dead_socket})",
            f"{stray} (socket nobody is bound to)",
        ]

        def check(report: list[str]) -> None:
            mine = [i for i in report if any(i.startswith(e.split(" (")[0]) for e in expected)]
            assert len(mine) == len(expected), report
            for item, want in zip(mine, expected, strict=True):
                assert item.startswith(want), (item, want)

        check(admin.collect_garbage(dry_run=True))
        for path in (shm_path(dead_topic), dead_socket, stray):
            assert os.path.exists(path), "a dry run removed something"
        assert len(live.subscribers) == 2

        check(admin.collect_garbage())
        for path in (shm_path(dead_topic), shm_path(dead_topic, CONTROL_SUFFIX), dead_socket, stray):
            assert not os.path.exists(path)
        assert {p: os.stat(p).st_ino for p in live_files} == live_files
        assert [s.pid for s in live.subscribers] == [os.getpid()]
        live.publish(b"after")
        assert [alive_sub.receive(timeout=TIMEOUT).data for _ in range(2)] == [b"before", b"after"]
        assert ours(admin.collect_garbage(), live.topic, dead_topic) == []


def test_gc_removes_a_segment_whose_creator_died_before_initialising_it(topic: str) -> None:
    path = shm_path(topic)
    with open(path, "wb"):
        pass  # what a creator that died between shm_open and ftruncate leaves
    try:
        began = time.monotonic()
        assert admin.topic_info(topic).state == "dead"
        assert ours(admin.collect_garbage(dry_run=True), topic) == [
            f"{path} (topic {topic!r}: never initialised: its creator died while creating it)"
        ]
        assert os.path.exists(path)
        assert len(ours(admin.collect_garbage(), topic)) == 1
        assert not os.path.exists(path)
        assert time.monotonic() - began >= 2 * 0.2  # the start-up grace, each time
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def test_gc_leaves_files_in_the_socket_directory_that_are_not_sockets() -> None:
    path = os.path.join(wakeup.socket_dir(), f"{PREFIX}not-a-socket")
    with open(path, "w"):
        pass
    try:
        assert not [i for i in admin.collect_garbage() if path in i]
        assert os.path.exists(path)
    finally:
        os.unlink(path)


# -- the command line ---------------------------------------------------------------------


def test_ls_shows_live_and_dead_topics(live: sps.Publisher, dead_topic: str) -> None:
    live.publish(b"x")
    result = run_cli("ls")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TOPIC", "SIZE", f"SLOTS{TIMES}SLOT_SIZE", "PUBLISHER", "SUBS", "PUBLISHED"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows[live.topic][3:] == [f"8{TIMES}64", str(os.getpid()), "alive", "0", "1"]
    assert rows[dead_topic][3] == f"8{TIMES}64" and rows[dead_topic][5:] == ["dead", "0", "5"]
    assert "\033[" not in result.stdout  # not a terminal: no colour

    result = run_cli("ls", "--json")
    assert result.returncode == 0
    found = {t["name"]: t for t in json.loads(result.stdout)}
    assert (found[live.topic]["state"], found[live.topic]["published"]) == ("alive", 1)
    assert (found[dead_topic]["state"], found[dead_topic]["publisher_alive"]) == ("dead", False)


def test_info_shows_the_header_and_the_subscribers(live: sps.Publisher, dead_topic: str) -> None:
    with sps.Subscriber(live.topic) as sub:
        for i in range(3):
            live.publish(b"%d" % i)
        sub.try_receive()
        result = run_cli("info", live.topic)
        assert result.returncode == 0, result.stderr
        fields = dict(
            re.split(r"\s{2,}", line, maxsplit=1) for line in result.stdout.split("\n\n")[0].splitlines()
        )
        assert fields["topic"] == live.topic
        assert fields["publisher"] == f"{os.getpid()} alive"
        assert (fields["slots"], fields["slot size"], fields["published"]) == ("8", "64 bytes", "3")
        assert fields["subscribers"] == "1 (of at most 64)"
        table = result.stdout.split("\n\n")[1].splitlines()
        assert table[0].split() == ["ENTRY", "PID", "ALIVE", "LAG", "LOST", "ASLEEP"]
        assert table[1].split() == ["0", str(os.getpid()), "yes", "2", "0", "no"]

        result = run_cli("info", "--json", live.topic)
        assert result.returncode == 0
        info = json.loads(result.stdout)
        assert info["subscriber_details"] == [
            {
                "index": 0,
                "pid": os.getpid(),
                "alive": True,
                "read_pos": 1,
                "lag": 2,
                "lost": 0,
                "asleep": False,
            }
        ]

    result = run_cli("info", dead_topic)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^publisher\s+\d+ dead$", result.stdout, re.M)


def test_gc_command_dry_run_then_for_real(live: sps.Publisher, dead_topic: str) -> None:
    result = run_cli("gc", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"would remove {shm_path(dead_topic)} (topic {dead_topic!r}: its publisher, pid" in result.stdout
    assert f"would remove {shm_path(dead_topic, CONTROL_SUFFIX)} (control" in result.stdout
    assert re.search(r"^would remove \d+ objects? \(dry run\)$", result.stdout, re.M)
    assert live.topic not in result.stdout
    assert os.path.exists(shm_path(dead_topic)) and os.path.exists(shm_path(dead_topic, CONTROL_SUFFIX))

    result = run_cli("gc")
    assert result.returncode == 0, result.stderr
    assert f"removed {shm_path(dead_topic)} (topic" in result.stdout
    assert re.search(r"^removed \d+ objects?$", result.stdout, re.M)
    assert not os.path.exists(shm_path(dead_topic)) and not os.path.exists(
        shm_path(dead_topic, CONTROL_SUFFIX)
    )
    assert os.path.exists(shm_path(live.topic)) and os.path.exists(shm_path(live.topic, CONTROL_SUFFIX))
    live.publish(b"still works")


TEXT_AND_BINARY = [b"hello %d" % i if i % 3 else bytes(range(i, i + 40)) for i in range(20)]


def expected_line(seq: int, data: bytes) -> str:
    if data.startswith(b"hello"):
        return f"{seq} {data.decode()}"
    return f"{seq} <{len(data)} bytes> {data[:32].hex(' ')} …"


@pytest.mark.parametrize("n", [0, 1, 5, 8, 100])
def test_tail_n_prints_exactly_the_last_n_retained_messages(live: sps.Publisher, n: int) -> None:
    for data in TEXT_AND_BINARY:
        live.publish(data)
    result = run_cli("tail", "-n", str(n), live.topic)
    assert (result.returncode, result.stderr) == (0, "")
    last = list(enumerate(TEXT_AND_BINARY))[20 - min(n, 8) :]  # the ring holds 8
    assert result.stdout.splitlines() == [expected_line(seq, data) for seq, data in last]


def test_tail_follows_until_the_publisher_closes(live: sps.Publisher) -> None:
    live.publish(b"before: not shown")
    with start_cli("tail", live.topic) as tail:
        wait_until(lambda: len(live.subscribers) == 1, "tail subscribed")
        for data in TEXT_AND_BINARY[:6]:
            live.publish(data)
        live.close()
        code, out, err = tail.finish()
    assert code == 0
    assert out.splitlines() == [expected_line(seq, data) for seq, data in enumerate(TEXT_AND_BINARY[:6], 1)]
    assert err == f"shmpubsub: the publisher of topic {live.topic!r} closed the topic\n"


@pytest.mark.parametrize("command", ["tail", "hz"])
def test_wait_lets_the_command_start_before_the_topic(topic: str, command: str) -> None:
    with start_cli(command, "--wait", "30", topic) as started:
        time.sleep(0.3)  # the command is waiting by now
        with sps.Publisher(topic, slots=8, slot_size=64) as pub:
            wait_until(lambda: len(pub.subscribers) == 1, f"{command} subscribed")
            pub.publish(b"hello")
            if command == "hz":
                time.sleep(1.2)  # one report
        code, out, err = started.finish()
    assert code == 0, err
    assert ("0 hello" in out.splitlines()) if command == "tail" else ("msg/s" in out), out


def test_wait_gives_up_after_its_time(topic: str) -> None:
    result = run_cli("tail", "--wait", "0.2", topic)
    assert result.returncode == 1
    assert result.stderr == f"shmpubsub: topic {topic!r} did not appear within 0.2 s\n"
    result = run_cli("hz", "--wait", "soon", topic)
    assert result.returncode == 2 and "expected a number of seconds >= 0" in result.stderr


def test_tail_n_f_prints_the_last_n_then_follows(live: sps.Publisher) -> None:
    for i in range(10):
        live.publish(b"old %d" % i)
    with start_cli("tail", "-n", "3", "-f", live.topic) as tail:
        assert [tail.line() for _ in range(3)] == ["7 old 7", "8 old 8", "9 old 9"]
        live.publish(b"new 10")
        live.publish(b"new 11")
        live.close()
        code, out, err = tail.finish()
    assert (code, out) == (0, "10 new 10\n11 new 11\n")
    assert "closed the topic" in err


def test_tail_reports_losses_on_stderr(live: sps.Publisher) -> None:
    for i in range(8):
        live.publish(b"m %d" % i)
    with start_cli("tail", "-n", "8", "-f", live.topic) as tail:
        assert tail.line() == "0 m 0"
        tail.proc.send_signal(signal.SIGSTOP)  # so that the publisher surely laps it
        try:
            for i in range(8, 400):
                live.publish(b"m %d" % i)
        finally:
            tail.proc.send_signal(signal.SIGCONT)
        live.close()
        code, out, err = tail.finish()
    assert code == 0
    printed = [0] + [int(line.split()[0]) for line in out.splitlines()]
    lost = [int(n) for n in re.findall(r"^shmpubsub: lost (\d+) messages before seq \d+ \(lapped", err, re.M)]
    assert lost and all(n > 0 for n in lost)
    assert printed == sorted(set(printed)) and printed[-1] == 399
    assert len(printed) + sum(lost) == 400  # every message printed or counted lost, once


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_tail_stops_quietly_on_ctrl_c_or_sigterm(live: sps.Publisher, sig: signal.Signals) -> None:
    with start_cli("tail", live.topic) as tail:
        wait_until(lambda: len(live.subscribers) == 1, "tail subscribed")
        tail.proc.send_signal(sig)
        assert tail.finish() == (0, "", "")
    assert live.subscribers == []  # it closed its subscriber (and removed its socket: no_leaks checks)


def test_tail_of_a_dead_topic(dead_topic: str) -> None:
    result = run_cli("tail", "-n", "2", dead_topic)
    assert (result.returncode, result.stdout, result.stderr) == (0, "3 message 3\n4 message 4\n", "")
    result = run_cli("tail", dead_topic)
    assert (result.returncode, result.stdout) == (0, "")
    assert (
        result.stderr == f"shmpubsub: the publisher of topic {dead_topic!r} died without closing the topic\n"
    )


def test_hz_prints_rate_lines(live: sps.Publisher) -> None:
    stop = threading.Event()

    def publish() -> None:
        while not stop.is_set():
            live.publish(b"x" * 32)
            time.sleep(0.001)

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        result = run_cli("hz", "--window", "0.3", "--count", "2", live.topic)
    finally:
        stop.set()
        publisher.join(TIMEOUT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        match = re.fullmatch(
            r"\s*([\d.]+) msg/s\s+[\d.]+ \w+/s\s+received (\d+)\s+lost (\d+)\s+in [\d.]+ s", line
        )
        assert match, line
        assert float(match[1]) > 0 and int(match[2]) > 0


def test_hz_ends_when_the_publisher_goes(live: sps.Publisher) -> None:
    with start_cli("hz", live.topic) as hz:
        wait_until(lambda: len(live.subscribers) == 1, "hz subscribed")
        live.publish(b"one")
        live.close()
        code, out, err = hz.finish()
    assert code == 0
    assert "received 1" in out  # the last, partial window
    assert err.splitlines()[-1] == f"shmpubsub: the publisher of topic {live.topic!r} closed the topic"


@pytest.mark.parametrize("command", [["info"], ["tail"], ["tail", "-n", "1"], ["hz"], ["info", "--json"]])
def test_a_missing_topic_is_one_clear_line_and_exit_1(topic: str, command: list[str]) -> None:
    result = run_cli(*command, topic)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"shmpubsub: no topic {topic!r}: no publisher has created it\n"


def test_an_invalid_segment_is_one_clear_line_and_exit_1(topic: str) -> None:
    path = shm_path(topic)
    with open(path, "wb") as f:
        f.write(b"garbage!" * 1000)
    try:
        result = run_cli("info", topic)
        assert result.returncode == 1
        assert (
            result.stderr == f"shmpubsub: {path}: the segment is not a shmpubsub segment (bad magic number)\n"
        )
        assert re.search(r"^publisher\s+- unknown$", result.stdout, re.M)
        result = run_cli("tail", topic)
        assert result.returncode == 1
        assert result.stderr.startswith("shmpubsub: ") and result.stderr.count("\n") == 1
        assert "Traceback" not in result.stderr
        result = run_cli("ls")
        assert result.returncode == 0
        row = next(line for line in result.stdout.splitlines() if line.startswith(topic + " "))
        assert row.endswith("the segment is not a shmpubsub segment (bad magic number)")
    finally:
        os.unlink(path)


@pytest.mark.parametrize(
    "args",
    [[], ["nope"], ["info"], ["info", "bad name"], ["tail", "-n", "-1", "x"], ["hz", "--window", "0", "x"]],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert "usage: shmpubsub" in result.stderr


@pytest.mark.parametrize("command", ["ls", "info", "tail", "hz", "gc", "demo"])
def test_every_subcommand_has_help(command: str) -> None:
    result = run_cli(command, "--help")
    assert result.returncode == 0
    assert f"usage: shmpubsub {command}" in result.stdout and "exit status:" in result.stdout


def test_verbose_logs_what_the_library_does(dead_topic: str) -> None:
    quiet = run_cli("gc", "--dry-run")
    assert (quiet.returncode, quiet.stderr) == (0, "")
    verbose = run_cli("gc", "-v", "--dry-run")  # -v is accepted after the subcommand too
    assert verbose.returncode == 0
    assert f"shmpubsub.admin: would remove {shm_path(dead_topic)} (topic" in verbose.stderr
    assert run_cli("-v", "gc").returncode == 0
    assert not os.path.exists(shm_path(dead_topic))


# -- formatting ---------------------------------------------------------------------------


class FakeTerminal:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_colour_only_on_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert cli.use_colour(FakeTerminal(True))  # type: ignore[arg-type]
    assert not cli.use_colour(FakeTerminal(False))  # type: ignore[arg-type]
    monkeypatch.setenv("NO_COLOR", "1")
    assert not cli.use_colour(FakeTerminal(True))  # type: ignore[arg-type]
    monkeypatch.setenv("NO_COLOR", "")  # empty: not set (no-color.org)
    assert cli.use_colour(FakeTerminal(True))  # type: ignore[arg-type]


def test_message_formatting() -> None:
    plain = cli._Style(FakeTerminal(False))  # type: ignore[arg-type]
    assert cli.format_message(7, b"caf\xc3\xa9 ok", plain) == "7 café ok"
    assert cli.format_message(7, b"two\nlines", plain) == "7 <9 bytes> 74 77 6f 0a 6c 69 6e 65 73"
    assert cli.format_message(7, b"\x1b[31mred", plain).startswith("7 <8 bytes> 1b 5b")  # no escapes
    assert cli.format_message(7, b"", plain) == "7 <0 bytes>"
    assert cli.format_message(7, bytes(33), plain) == "7 <33 bytes> " + " ".join(["00"] * 32) + " …"
    assert cli.format_message(7, b"\xff\xfe", plain) == "7 <2 bytes> ff fe"


def test_human_sizes_and_tables() -> None:
    assert [cli.human_size(n) for n in (0, 1023, 1024, 1536, 5 << 20, 3 << 40)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 KiB",
        "5.0 MiB",
        "3.0 TiB",
    ]
    plain = cli._Style(FakeTerminal(False))  # type: ignore[arg-type]
    table = cli.format_table(
        ["A", "NUM", "LAST"], [["xyz", "1", "t"], ["x", ("100", "32"), "long text"]], "lrl", plain
    )
    assert table.splitlines() == ["A    NUM  LAST", "xyz    1  t", "x    100  long text"]
    coloured = cli._Style(FakeTerminal(True))  # type: ignore[arg-type]
    coloured.enabled = True
    assert "\033[32m100\033[0m" in cli.format_table(["A"], [[("100", "32")]], "r", coloured)


# -- file-backed topics -------------------------------------------------------------------

PUBLISH_TO_FILE_AND_WAIT = textwrap.dedent(
    """
    import sys, time
    import shmpubsub as sps
    topic, path, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    pub = sps.Publisher(topic, slots=8, slot_size=64, path=path)
    for i in range(count):
        pub.publish(b"message %d" % i)
    pub.flush()
    pub.publish(b"not flushed")
    print("ready", flush=True)
    time.sleep(60)  # until killed
    """
)


@pytest.fixture
def dead_file(topic: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A ring file whose publisher (8 slots of 64 bytes; 5 messages flushed, a sixth not) was
    killed with SIGKILL. Its stub and control segment are removed afterwards; the file stays."""
    path = tmp_path / "r.ring"
    with child(PUBLISH_TO_FILE_AND_WAIT, topic, str(path), "5"):
        pass
    try:
        yield topic, path
    finally:
        if os.path.exists(shm_path(topic)):
            sps.Publisher(topic).close()


def test_info_path_tells_a_crash_from_a_clean_close(dead_file: tuple[str, Path]) -> None:
    topic, path = dead_file
    result = run_cli("info", "--path", str(path))
    assert (result.returncode, result.stderr) == (0, "")
    assert re.search(rf"^topic\s+{topic}$", result.stdout, re.M)
    assert re.search(rf"^path\s+{re.escape(str(path))}$", result.stdout, re.M)
    assert re.search(r"^publisher\s+\d+ dead$", result.stdout, re.M)
    assert re.search(r"^closed\s+no$", result.stdout, re.M)
    assert re.search(r"^flushed\s+5 \(messages known to be on disk\)$", result.stdout, re.M)
    assert re.search(r"^ended\s+crashed: its publisher died without closing it", result.stdout, re.M)
    by_name = run_cli("info", topic)  # its stub still names the file
    assert re.search(rf"^ring file\s+{re.escape(str(path))}$", by_name.stdout, re.M)

    sps.Publisher(topic, slots=8, slot_size=64, path=path).close()  # reopened, then closed cleanly
    info = json.loads(run_cli("info", "--json", "--path", str(path)).stdout)
    assert (info["state"], info["closed"], info["published"], info["flushed"]) == ("closed", True, 6, 6)
    assert info["data_file"] == str(path)
    assert "ended" not in run_cli("info", "--path", str(path)).stdout


def test_tail_path_reads_a_file_whose_publisher_is_gone(dead_file: tuple[str, Path]) -> None:
    topic, path = dead_file
    result = run_cli("tail", "-n", "3", "--path", str(path))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "3 message 3\n4 message 4\n5 not flushed\n"
    result = run_cli("tail", "-n", "1", topic, "--path", str(path))  # both: they must agree
    assert (result.returncode, result.stdout) == (0, "5 not flushed\n")
    result = run_cli("tail", "--path", str(path))
    assert (result.returncode, result.stdout) == (0, "")
    assert result.stderr == f"shmpubsub: the publisher of topic {topic!r} died without closing the topic\n"
    result = run_cli("tail", "-n", "1", "other-topic", "--path", str(path))
    assert result.returncode == 1 and f"holds the ring of topic {topic!r}" in result.stderr


def test_tail_path_reads_a_dead_file_as_a_restart_would_keep_it(dead_file: tuple[str, Path]) -> None:
    """A hole (a slot whose page the disk never got) and a damaged message are what recovery
    drops: tail counts them lost instead of printing them (or waiting at the hole for ever);
    the file is left as it was."""
    _, path = dead_file
    stride = geometry(8, 64, ring_file=True)[0]
    image = bytearray(path.read_bytes())
    hole, damaged = HEADER_SIZE + 1 * stride, HEADER_SIZE + 3 * stride
    image[hole : hole + 8] = bytes(8)  # message 1's sequence word: never written
    image[damaged + 16] ^= 1  # the first byte of message 3
    path.write_bytes(image)
    result = run_cli("tail", "-n", "6", "--path", str(path))
    assert result.returncode == 0
    assert result.stdout == "0 message 0\n2 message 2\n4 message 4\n5 not flushed\n"
    assert [line.split(" (")[0] for line in result.stderr.splitlines()] == [
        "shmpubsub: lost 1 messages before seq 2",
        "shmpubsub: lost 1 messages before seq 4",
    ]
    assert path.read_bytes() == image


def test_ls_and_gc_of_a_file_backed_topic_keep_the_file(dead_file: tuple[str, Path]) -> None:
    topic, path = dead_file
    row = next(line for line in run_cli("ls").stdout.splitlines() if line.startswith(topic + " "))
    assert re.search(rf"8{TIMES}64\s+\d+ dead\s+0\s+6$", row), row
    removed = ours(admin.collect_garbage(), topic)
    assert removed == [
        f"{shm_path(topic)} (topic {topic!r}: its publisher, pid {admin.file_info(path).publisher_pid}, "
        "is gone)",
        f"{shm_path(topic, CONTROL_SUFFIX)} (control segment of topic {topic!r})",
    ]
    assert path.exists() and admin.file_info(path).published == 6  # the stub went, not the file


@pytest.mark.parametrize("args", [["info", "x", "--path", "f"], ["info", "--json"], ["tail", "-n", "1"]])
def test_topic_or_path_usage_errors(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2 and "needs" in result.stderr


def test_a_path_that_is_not_a_ring_file_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "junk"
    path.write_bytes(b"junk" * 2000)
    for command in (["info", "--path", str(path)], ["tail", "-n", "1", "--path", str(path)]):
        result = run_cli(*command)
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr == f"shmpubsub: file {path} is not a shmpubsub segment (bad magic number)\n"
