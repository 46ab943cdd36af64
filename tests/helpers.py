"""Helpers shared by the test modules: this run's topic names, child processes that cannot outlive
a test, results from children, time limits on calls that must not hang, waiting, the wake-up
layer's bounds and probes, ring and batch payloads with a model ring, and segments written by
hand. The child-process bodies the wake-up tests share are in children.py."""

from __future__ import annotations

import faulthandler
import json
import os
import queue
import random
import secrets
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import pytest
from hypothesis import strategies as st

import shmpubsub as sps
from shmpubsub import Publisher, Subscriber, wakeup
from shmpubsub._core.control import Control
from shmpubsub._core.lib import pointer_to, release
from shmpubsub._core.ring import Reader, lap_margin
from shmpubsub.names import CONTROL_SUFFIX, PREFIX, SHM_DIR, socket_name
from shmpubsub.segment import Segment

# Every name this test run gives a topic carries RUN_MARKER, so that the leak checks (conftest.py)
# judge only this run's objects in /dev/shm and never those of another program using shmpubsub on
# the machine. Children, forked or spawned, and subprocesses inherit it through the environment.
RUN_MARKER_ENV = "SHMPUBSUB_TEST_RUN"
RUN_MARKER = os.environ.setdefault(RUN_MARKER_ENV, "run" + secrets.token_hex(4))


def unique_topic(kind: str = "test") -> str:
    """A topic name no other test, test run or program uses: *kind*, this run's marker, a uuid."""
    return f"{kind}-{RUN_MARKER}-{uuid.uuid4().hex[:12]}"


class Hang(Exception):
    """A call did not return within its time limit."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raises Hang in the main thread if the block runs longer than *seconds*.

    Works for the library's retry loops because they return to Python between C calls."""

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def get_result(results: Any, timeout: float, what: str) -> Any:
    """The next result from a child; fails the test on a time-out or if the child reported an error."""
    try:
        item = results.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"no result from {what} within {timeout} s")
    if isinstance(item, tuple) and item and item[0] == "error":
        pytest.fail(f"{what} failed:\n{item[1]}")
    return item


def kill_and_await_death(pid: int, timeout: float = 10) -> float:
    """SIGKILLs *pid* and returns the monotonic time at which the kernel reports it dead.

    Crash-detection bounds are timed from here, not from the kill: the kernel tears down the
    process's address space before anyone can see it dead, and on a loaded host that alone has
    taken 200 ms. What the library adds after that moment is what the bounds are about. The
    process's pidfd says so at once; without pidfds (valgrind lacks them) /proc is polled."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while not dead_or_zombie(pid):
            if time.monotonic() > deadline:
                pytest.fail(f"process {pid} still alive {timeout} s after SIGKILL")
            time.sleep(0.001)
        return time.monotonic()
    try:
        os.kill(pid, signal.SIGKILL)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(timeout * 1000):
            pytest.fail(f"process {pid} still alive {timeout} s after SIGKILL")
        return time.monotonic()
    finally:
        os.close(pidfd)


def process_state(pid: int) -> bytes | None:
    """The state letter of *pid* in /proc/PID/stat (b"Z": a zombie), or None once it is reaped."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    # The command name (field 2) may hold spaces and parentheses: the state follows its last ')'.
    state: bytes = data[data.rindex(b")") + 2 :].split()[0]
    return state


def dead_or_zombie(pid: int) -> bool:
    """True once *pid* has exited, reaped or not."""
    return process_state(pid) in (None, b"Z", b"X")


def check_drained(got: list[int], k: int) -> None:
    """Every one of messages 0..k-1 arrived, in order."""
    assert got == list(range(k)), got


class Children:
    """Starts child processes and guarantees none outlives the test: join() fails the test if a
    child overstays (after killing it), and leaving the block kills whatever still runs. When
    the block fails, the children still running first print their threads' stacks to stderr,
    so that a hang in a child shows where it was; stacks() gives them for a failure message."""

    def __init__(self) -> None:
        self.procs: list[Any] = []
        self._stacks_dir = tempfile.mkdtemp(prefix="child-stacks-")

    def __enter__(self) -> Children:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            running = [proc for proc in self.procs if proc.exitcode is None]
            if exc_type is not None and running:
                sys.stderr.write(self.stacks())
            for proc in running:
                proc.kill()
            for proc in self.procs:
                proc.join(10)
        finally:
            shutil.rmtree(self._stacks_dir, ignore_errors=True)

    def start(self, ctx: Any, target: Callable[..., Any], *args: Any) -> Any:
        name = target.__name__
        stacks = os.path.join(self._stacks_dir, f"{name}-{len(self.procs)}")
        proc = ctx.Process(target=_traceable, args=(stacks, target, *args), daemon=True, name=name)
        proc.start()
        proc.stacks_path = stacks
        self.procs.append(proc)
        return proc

    def stacks(self) -> str:
        """The threads' stacks of every child still running, as faulthandler prints them."""
        running = [proc for proc in self.procs if proc.exitcode is None]
        for proc in running:
            os.kill(proc.pid, signal.SIGUSR1)
        time.sleep(0.5)
        text = ""
        for proc in running:
            try:
                with open(proc.stacks_path) as f:
                    dump = f.read()
            except FileNotFoundError:
                dump = "(it has not started its stack dumper yet)\n"
            text += f"\n--- stacks of child {proc.name} (pid {proc.pid}) ---\n{dump}"
        return text

    @staticmethod
    def join(proc: Any, timeout: float, exitcode: int | None = 0) -> None:
        proc.join(timeout)
        if proc.exitcode is None:
            proc.kill()
            proc.join(10)
            pytest.fail(f"child {proc.name} did not finish within {timeout} s (killed)")
        if exitcode is not None:
            assert proc.exitcode == exitcode, f"child {proc.name} exited with {proc.exitcode}"

    @staticmethod
    def kill(proc: Any) -> None:
        proc.kill()
        proc.join(10)


def _traceable(stacks_path: str, target: Callable[..., Any], *args: Any) -> Any:
    """Runs *target* in a child that writes all its threads' stacks to *stacks_path* on SIGUSR1
    (a file of its own: a forked child's sys.stderr may be pytest's in-memory capture, and
    the parent reads the file into its failure report)."""
    stacks = open(stacks_path, "w")  # noqa: SIM115 - faulthandler writes to it until the end
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    return target(*args)


class ArmHook:
    """Wraps a Subscriber's private C reader: runs *action* once, right after the subscriber's
    first arm() (which found nothing), to force one legal interleaving with the publisher."""

    def __init__(self, inner: Any, action: Callable[[], None]) -> None:
        self._inner = inner
        self._action: Callable[[], None] | None = action

    def arm(self) -> bool:
        ready = bool(self._inner.arm())
        if self._action is not None:
            action, self._action = self._action, None
            action()
        return ready

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def shm_path(topic: str, suffix: str = "") -> str:
    return os.path.join(SHM_DIR, PREFIX + topic + suffix)


def write_raw(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def write_topic(topic: str, data: bytes, control: bytes | None) -> str:
    """Writes a topic by hand: its data segment and (if given) its control segment."""
    write_raw(shm_path(topic), data)
    if control is not None:
        write_raw(shm_path(topic, CONTROL_SUFFIX), control)
    return shm_path(topic)


def remove_topic(topic: str) -> None:
    for path in (shm_path(topic), shm_path(topic, CONTROL_SUFFIX)):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def live_segment_bytes(
    topic: str, messages: int = 3, slots: int = 4, slot_size: int = 64, max_subscribers: int = 4
) -> tuple[bytes, bytes]:
    """The bytes of a real data segment holding a few messages, and of its control segment (no
    subscriber attached), read while the publisher lives."""
    with sps.Publisher(topic, slots=slots, slot_size=slot_size, max_subscribers=max_subscribers) as pub:
        for i in range(messages):
            pub.publish((b"message %d" % i)[:slot_size])
        with open(shm_path(topic), "rb") as f:
            data = f.read()
        with open(shm_path(topic, CONTROL_SUFFIX), "rb") as f:
            control = f.read()
    assert not os.path.exists(shm_path(topic))
    return data, control


# -- waiting -------------------------------------------------------------------------------------
def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Polls *predicate* until it returns something true; fails the test after *timeout* s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.002)


def busy_wait(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@contextmanager
def threads(*targets: Callable[[], None]) -> Iterator[list[threading.Thread]]:
    """Runs daemon threads; on leaving, joins them (bounded) and fails if one is stuck."""
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in threads:
        t.start()
    try:
        yield threads
    finally:
        for t in threads:
            t.join(10)
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"threads still blocked after 10 s: {stuck}"


# -- the wake-up layer ---------------------------------------------------------------------------

# Wake-up latency bounds asked of the library (generous for a loaded 2-core machine: a healthy
# wake-up takes tens of microseconds). SHMPUBSUB_TEST_TIME_SCALE stretches them for runs that
# check memory rather than speed: everything is 20-50 times slower under valgrind.
TIME_SCALE = float(os.environ.get("SHMPUBSUB_TEST_TIME_SCALE", "1"))
# close of the publisher, or its death as the kernel reports it (helpers.kill_and_await_death),
# -> PublisherGone in a blocked subscriber
DETECT_BOUND = 0.100 * TIME_SCALE
CTRL_C_BOUND = 2.0 * TIME_SCALE  # SIGINT -> KeyboardInterrupt in a blocked receive()


def numbered(i: int) -> bytes:
    """Message i's body: its number, repeated 1-4 times (so lengths vary too)."""
    return i.to_bytes(8, "little") * (1 + i % 4)


def take(sub: Subscriber) -> sps.Message:
    """try_receive(), which must find a message."""
    msg = sub.try_receive()
    assert msg is not None, "expected a message"
    return msg


def socket_path(token: int) -> str:
    return os.path.join(wakeup.socket_dir(), socket_name(token))


def segment_paths(topic: str) -> list[str]:
    return [os.path.join(SHM_DIR, PREFIX + topic), os.path.join(SHM_DIR, PREFIX + topic + CONTROL_SUFFIX)]


def control_entries(topic: str) -> list[sps.SubscriberInfo]:
    """The topic's subscriber entries, read from its control segment (for a publisher that lives
    in another process; a local one has ``pub.subscribers``)."""
    segment = Segment.open(topic, writable=False, suffix=CONTROL_SUFFIX)
    try:
        mapping = segment.map()
        base = pointer_to(mapping, writable=False)
        try:
            return Control(base, len(mapping), f"control of {topic!r}").entries()
        finally:
            release(base)
    finally:
        segment.close()


def take_over_and_remove(topic: str) -> None:
    """After a SIGKILLed publisher its segments stay in /dev/shm; a new publisher on the topic
    removes them (takeover) and its close removes its own. Nothing of the topic may remain."""
    Publisher(topic).close()
    left = [p for p in segment_paths(topic) if os.path.exists(p)]
    assert not left, f"takeover + close left {left} behind"


# -- rings: payloads, draining, aborted loans and a model ------------------------------------------


def payload(seq: int, size: int) -> bytes:
    """A deterministic payload that differs from message to message in every byte position."""
    return bytes((seq * 131 + i * 7 + 1) % 256 for i in range(size))


def drain(sub: sps.Subscriber, limit: int = 100_000) -> list[sps.Message]:
    """Every message try_receive() returns until it returns None."""
    out: list[sps.Message] = []
    for _ in range(limit):
        msg = sub.try_receive()
        if msg is None:
            return out
        out.append(msg)
    raise AssertionError(f"try_receive() never ran dry after {limit} messages")


class Boom(Exception):
    pass


def abort_loan(pub: sps.Publisher, size: int, scribble: bytes = b"") -> None:
    """Opens a loan, writes *scribble* into it, then leaves the block with an exception."""
    with pytest.raises(Boom), pub.loan(size) as buf:
        buf[: len(scribble)] = scribble
        raise Boom


@dataclass
class ModelReader:
    """What a subscriber should be doing, derived from ring.c's rules."""

    lapped: str
    next: int
    lost: int = 0
    last_seq: int = 0


@dataclass
class ModelRing:
    """A pure-Python ring. Slot n % slots holds the newest message number written there, whether
    complete (its data) or not (an aborted loan: data None)."""

    slots: int
    slot_size: int
    write_seq: int = 0
    held: dict[int, tuple[int, bytes | None]] = field(default_factory=dict)

    def publish(self, data: bytes) -> int:
        n = self.write_seq
        self.held[n % self.slots] = (n, data)
        self.write_seq = n + 1
        return n

    def abort(self) -> None:
        n = self.write_seq
        self.held[n % self.slots] = (n, None)

    def start(self, mode: str) -> int:
        w = self.write_seq
        if mode == "next":
            return w
        if mode == "latest":
            return max(w - 1, 0)
        return max(w - self.slots, 0)

    def find(self, r: ModelReader) -> tuple[int, bytes] | None:
        """Moves *r* over lapped messages; the message it can take now, or None. Does not consume."""
        while True:
            held_n, data = self.held.get(r.next % self.slots, (-1, None))
            if held_n < r.next or (held_n == r.next and data is None):
                return None
            if held_n == r.next:
                assert data is not None
                return r.next, data
            self.resync(r, held_n)

    def resync(self, r: ModelReader, held_n: int) -> None:
        """Moves *r*, lapped (slot r.next holds message *held_n*), where the C core resumes, and
        counts what it skipped."""
        # Messages 0..started-1 exist or are being written (an aborted loan counts).
        started = max(self.write_seq, held_n + 1)
        if r.lapped == "oldest":
            target = started - self.slots + lap_margin(self.slots) if started > self.slots else 0
        else:
            target = max(self.write_seq - 1, 0)
        target = max(target, r.next + 1)
        r.lost += target - r.next
        r.next = target

    def take(self, r: ModelReader) -> tuple[int, bytes] | None:
        got = self.find(r)
        if got is not None:
            r.last_seq = got[0]
            r.next = got[0] + 1
        return got

    def latest(self) -> tuple[int, bytes] | None:
        if self.write_seq == 0:
            return None
        n = self.write_seq - 1
        held_n, data = self.held[n % self.slots]
        if held_n != n or data is None:
            return None  # destroyed: only possible with one slot and an aborted loan
        return n, data


START = st.sampled_from(["next", "latest", "oldest"])
LAPPED = st.sampled_from(["oldest", "latest"])


# -- batches -------------------------------------------------------------------------------------

BATCH_BYTES = 65536  # payload bytes a batch holds at most (but one larger message comes alone)
MAX_BATCH = 4096  # messages a batch holds at most
SCRATCH_COPY_MAX = 4096  # larger messages are copied straight from the slot


def take_batches(sub: sps.Subscriber, max_messages: int = 256, limit: int = 100_000) -> list[sps.Batch]:
    """Every batch try_receive_many() returns until it returns an empty one."""
    out: list[sps.Batch] = []
    for _ in range(limit):
        batch = sub.try_receive_many(max_messages)
        if not batch:
            return out
        out.append(batch)
    raise AssertionError(f"try_receive_many() never ran dry after {limit} batches")


def flat(batches: list[sps.Batch]) -> list[tuple[int, bytes]]:
    return [(seq, data) for b in batches for seq, data in zip(b.seqs, b.payloads, strict=True)]


def check_batch_shape(batch: sps.Batch, max_messages: int = 256) -> None:
    """The limits every batch obeys."""
    assert 1 <= len(batch) <= min(max_messages, MAX_BATCH), batch
    total = sum(map(len, batch.payloads))
    assert total <= BATCH_BYTES or len(batch) == 1, (batch, total)
    assert all(type(p) is bytes for p in batch.payloads)


_BLOB = random.Random(0xB10B).randbytes(1 << 21)


def blob(tag: int, size: int) -> bytes:
    """A cheap pseudo-random payload of *size* bytes (up to 1 MiB), different for every tag."""
    offset = (tag * 7919) % (len(_BLOB) - size + 1)
    return _BLOB[offset : offset + size]


def as_uint8(data: bytes) -> Any:
    # numpy is imported here, not at the top: every child that Children starts imports this
    # module, and with numpy (and its threads) loaded in the child,
    # test_max_subscribers_reclaims_killed_but_unreaped_subscriber failed 3 runs in 5: the
    # killed child showed as a zombie before its entry could be reclaimed.
    import numpy as np

    return np.frombuffer(data, dtype=np.uint8)


def hooked_reader(sub: sps.Subscriber, after_locate: Callable[[], None]) -> None:
    """Runs *after_locate* once, right after the subscriber's reader located a large message for
    its one-copy read and before it copies it: forces the publisher to overwrite it meanwhile."""

    class Hooked(Reader):
        __slots__ = ()
        pending: list[Callable[[], None]] = [after_locate]  # noqa: RUF012

        def view_begin(self) -> tuple[int, int] | None:
            got = super().view_begin()
            if got is not None and self.pending:
                self.pending.pop()()
            return got

    sub._reader.__class__ = Hooked


# -- segments written by hand: header offsets, a small geometry ----------------------------------

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


Raw = Callable[..., str]  # the conftest fixture raw: raw(data, control=None) -> the data segment's path


# -- processes that report as JSON lines (other namespaces, where queues do not reach) ------


def stop_process(proc: subprocess.Popen[str]) -> None:
    """Kills *proc* if it still runs, reaps it, and closes its pipes."""
    proc.kill()
    proc.wait(10)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()


def report(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


_REPORT_LINES: dict[int, queue.Queue[str]] = {}


def read_report(proc: subprocess.Popen[str], timeout: float = 30) -> dict[str, Any]:
    """The next line *proc* printed, as JSON; fails the test if none comes within *timeout*."""
    if proc.pid not in _REPORT_LINES:
        lines: queue.Queue[str] = queue.Queue()
        _REPORT_LINES[proc.pid] = lines
        assert proc.stdout is not None
        stdout = proc.stdout
        threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    try:
        line = _REPORT_LINES[proc.pid].get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"no report within {timeout} s (the process's exit status: {proc.poll()})")
    report: dict[str, Any] = json.loads(line)
    return report


TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def unshare_unavailable(*flags: str) -> str | None:
    """Why ``unshare FLAGS true`` cannot run here (the tests of other namespaces need root), or None."""
    if os.geteuid() != 0:
        return f"needs root (unshare {' '.join(flags)})"
    if shutil.which("unshare") is None:
        return "needs unshare (util-linux)"
    probe = subprocess.run(["unshare", *flags, "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"unshare {' '.join(flags)} fails here: {probe.stderr.strip()}"
    return None


def run_function(
    module: str, function: str, *args: Any, prefix: tuple[str, ...] = (), stdin: bool = False
) -> subprocess.Popen[str]:
    """Runs *function* of the test *module* with *args* in a new Python process, after the
    command *prefix* (``unshare ...``), its exit status the function's; its stdout is a pipe
    (read_report), and so is its stdin with *stdin*."""
    code = f"import sys, {module} as t; sys.exit(t.{function}(*{args!r}))"
    return subprocess.Popen(
        [*prefix, sys.executable, "-c", code],
        cwd=TESTS_DIR,
        stdin=subprocess.PIPE if stdin else None,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": TESTS_DIR},
    )
