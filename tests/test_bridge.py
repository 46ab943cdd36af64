"""The ZeroMQ bridge, both ends on this machine over loopback: ordering, large messages, loss
accounting when the far side is slow, restart of either side, the command line, and the
supervisor that leaves nothing behind when a bridge or the supervisor itself is killed."""

from __future__ import annotations

import contextlib
import glob
import multiprocessing
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import Children, get_result, time_limit

from shmpubsub import (
    InvalidArgument,
    InvalidSegment,
    InvalidType,
    Message,
    Publisher,
    PublisherGone,
    ReceiveTimeout,
    Subscriber,
    TopicNotFound,
    _proc,
    admin,
    cli,
)
from shmpubsub.names import CONTROL_SUFFIX, PREFIX, SHM_DIR, socket_name
from shmpubsub.wakeup import socket_dir

zmq = pytest.importorskip("zmq")

from shmpubsub import bridge  # noqa: E402
from shmpubsub.bridge import BridgeIn, BridgeOut, SupervisedBridge  # noqa: E402

INDEX = struct.Struct("<Q")
WARM = b"warm"
# How soon what a killed process left must be gone, and a bridge whose supervisor died must end.
CLEANUP_BOUND = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def out_child(topic: str, bind: str, hwm: int, stop: Any, results: Any) -> None:
    try:
        with BridgeOut(topic, bind, hwm=hwm) as b:
            b.run(stop_event=stop)
            results.put(b.stats())
    except BaseException:
        results.put(("error", traceback.format_exc()))


def in_child(topic: str, connect: str, local: str, hwm: int, stop: Any, results: Any) -> None:
    try:
        with BridgeIn(topic, connect, local_name=local, hwm=hwm) as b:
            b.run(stop_event=stop)
            results.put(b.stats())
    except BaseException:
        results.put(("error", traceback.format_exc()))


def wait_for(condition: Callable[[], bool], timeout: float, what: str, tick: Callable[[], Any]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout} s")
        tick()
        time.sleep(0.02)


def attach(
    name: str,
    timeout: float,
    tick: Callable[[], Any],
    not_epoch: int | None = None,
    results: Any = None,
    bridge_process: Any = None,
    children: Children | None = None,
) -> Subscriber:
    """A subscriber of local topic *name* once the inbound bridge created it (publishing warm-up
    messages meanwhile, so that the bridge receives something). *results*: the bridges' result
    queue, whose errors fail the test at once; on a time-out, *bridge_process*'s exit code and
    the stacks of *children* still running are reported."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        tick()
        try:
            sub = Subscriber(name)
        except TopicNotFound:
            sub = None
        except InvalidSegment as e:  # being (re-)created by the bridge just now: attach again
            sub, last = None, e
        if sub is not None:
            if sub.epoch != not_epoch:
                return sub
            sub.close()
        if time.monotonic() > deadline:
            state = "" if bridge_process is None else f", bridge process exit code {bridge_process.exitcode}"
            stacks = "" if children is None else children.stacks()
            what = f"local topic {name!r} not created within {timeout} s"
            pytest.fail(f"{what} (last error: {last}{state}){stacks}")
        if results is not None and not results.empty():
            get_result(results, 1, "a bridge")  # fails the test with the child's error
        time.sleep(0.02)


def receive_indexes(sub: Subscriber, until: int, timeout: float) -> list[int]:
    """Indexes of the non-warm-up messages received until index *until* (inclusive)."""
    got: list[int] = []
    deadline = time.monotonic() + timeout
    while not got or got[-1] < until:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"received {len(got)} messages, last {got[-1:]}, waiting for {until}")
        try:
            msg = sub.receive(timeout=remaining)
        except ReceiveTimeout:
            continue
        if msg.data != WARM:
            got.append(INDEX.unpack_from(msg.data)[0])
    return got


def test_frame_round_trip() -> None:
    header = bridge.encode_header(seq=7, lost=3, slots=16, slot_size=256, epoch=99)
    frame = bridge.decode([b"t", header, b"data"])
    assert (frame.topic, frame.seq, frame.lost, frame.slots, frame.slot_size, frame.epoch, frame.data) == (
        "t",
        7,
        3,
        16,
        256,
        99,
        b"data",
    )
    with pytest.raises(ValueError):
        bridge.decode([b"t", b"short", b""])


def test_ordering_end_to_end(topic: str) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    ctx = multiprocessing.get_context("spawn")
    stop, results = ctx.Event(), ctx.Queue()
    n = 5000
    with Children() as children, Publisher(topic, slots=8192, slot_size=64) as pub:
        out = children.start(ctx, out_child, topic, address, 100_000, stop, results)
        with BridgeIn(topic, address, local_name=topic + "-in") as inbound:
            inbound.start()
            with attach(topic + "-in", 20, lambda: pub.publish(WARM), children=children) as sub:
                for i in range(n):
                    pub.publish(INDEX.pack(i))
                    if i % 500 == 499:
                        time.sleep(0.002)  # let the bridge keep up: no local lapping
                got = receive_indexes(sub, n - 1, 20)
                assert got == list(range(n))
                assert sub.lost == 0
            assert inbound.lost == 0
            assert inbound.received >= n
        stop.set()
        stats = get_result(results, 10, "the outbound bridge")
        children.join(out, 10)
    assert stats["lost_local"] == 0
    assert stats["forwarded"] >= n


def test_large_messages(topic: str) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    size = 1 << 20
    with Publisher(topic, slots=8, slot_size=size) as pub, BridgeOut(topic, address) as out:
        out.start()
        with BridgeIn(topic, address, local_name=topic + "-in") as inbound:
            inbound.start()
            with attach(topic + "-in", 20, lambda: pub.publish(WARM)) as sub:
                assert (sub.slots, sub.slot_size) == (8, size)
                for i in range(20):
                    payload = INDEX.pack(i) + bytes([i]) * (size - INDEX.size)
                    pub.publish(payload)
                    with time_limit(10):
                        while True:
                            msg = sub.receive(timeout=10)
                            if msg.data != WARM:
                                break
                    assert msg.data == payload
            assert inbound.lost == 0


def test_loss_accounting_when_far_side_is_slow(topic: str) -> None:
    """The inbound bridge stops reading: ZeroMQ queues fill and drop, and the gaps it leaves
    are counted exactly."""
    address = f"tcp://127.0.0.1:{free_port()}"
    ctx = multiprocessing.get_context("spawn")
    stop, results = ctx.Event(), ctx.Queue()
    n = 30_000
    with Children() as children, Publisher(topic, slots=65536, slot_size=1024) as pub:
        out = children.start(ctx, out_child, topic, address, 10, stop, results)
        with BridgeIn(topic, address, local_name=topic + "-in", hwm=10) as inbound:

            def tick() -> None:
                pub.publish(WARM)
                inbound.run(duration=0.02)

            with attach(topic + "-in", 20, tick, children=children) as sub:
                inbound.run(duration=0.3)  # drain the warm-up
                while sub.try_receive() is not None:
                    pass
                assert inbound.lost == 0
                payload = bytes(1024 - INDEX.size)
                for i in range(n):  # nobody reads on the far side meanwhile
                    pub.publish(INDEX.pack(i) + payload)
                    if i % 1000 == 999:
                        time.sleep(0.002)
                # Now the far side reads again. Markers n, n+1, ... follow until one gets through
                # (under load the queues may still be full, and drop them too). The bridge runs
                # in this thread, so once it stops, its counters and the subscriber's agree.
                got: list[int] = []
                marker = n
                deadline = time.monotonic() + 30
                while not got or got[-1] < n:
                    if time.monotonic() > deadline:
                        pytest.fail(f"received {len(got)} messages, last {got[-1:]}, no marker from {n} on")
                    pub.publish(INDEX.pack(marker))
                    marker += 1
                    inbound.run(duration=0.05)
                    while (msg := sub.try_receive()) is not None:
                        if msg.data != WARM:
                            got.append(INDEX.unpack_from(msg.data)[0])
                # What the network lost, local subscribers count as lost (Publisher.skip).
                assert sub.lost == inbound.lost > 0
        stop.set()
        stats = get_result(results, 10, "the outbound bridge")
        children.join(out, 10)
    assert got == sorted(set(got))
    missing = got[-1] - got[0] + 1 - len(got)
    assert missing > 0, "nothing was dropped: the test did not overflow the queues"
    assert inbound.lost == missing + got[0]  # before the first one received, too
    assert inbound.lost_remote == stats["lost_local"]
    assert inbound.lost_network > 0


def test_restart_of_the_outbound_bridge(topic: str) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    ctx = multiprocessing.get_context("spawn")
    stop, results = ctx.Event(), ctx.Queue()
    with Children() as children, Publisher(topic, slots=1024, slot_size=64) as pub:
        doomed_stop = ctx.Event()  # its own: see test_restart_of_the_inbound_bridge
        out = children.start(ctx, out_child, topic, address, 1000, doomed_stop, results)
        with BridgeIn(topic, address, local_name=topic + "-in") as inbound:
            inbound.start()
            with attach(topic + "-in", 20, lambda: pub.publish(WARM), children=children) as sub:
                pub.publish(INDEX.pack(0))
                assert receive_indexes(sub, 0, 10) == [0]
                children.kill(out)  # kill -9
                for i in range(1, 101):  # published while the bridge is down: lost on the way
                    pub.publish(INDEX.pack(i))
                out = children.start(ctx, out_child, topic, address, 1000, stop, results)
                i = 101
                got: list[int] = []
                deadline = time.monotonic() + 20
                while not got:  # until the new bridge and the reconnection are up
                    assert time.monotonic() < deadline, "no message after the outbound bridge restarted"
                    pub.publish(INDEX.pack(i))
                    i += 1
                    try:
                        msg = sub.receive(timeout=0.05)
                    except ReceiveTimeout:
                        continue
                    if msg.data != WARM:
                        got.append(INDEX.unpack_from(msg.data)[0])
                first = got[0]
                assert first > 100
                pub.publish(INDEX.pack(i))
                got += receive_indexes(sub, i, 10)[:]
                assert got == list(range(first, i + 1))
                assert inbound.lost_network == first - 1  # everything between 0 and first
                assert sub.lost == first - 1
        stop.set()
        get_result(results, 10, "the restarted outbound bridge")
        children.join(out, 10)


def test_restart_of_the_inbound_bridge(topic: str) -> None:
    """Killed with -9, the inbound bridge leaves its local topic behind; the next one takes it
    over, and closing it leaves nothing."""
    address = f"tcp://127.0.0.1:{free_port()}"
    local = topic + "-in"
    ctx = multiprocessing.get_context("spawn")
    stop, results = ctx.Event(), ctx.Queue()
    with Children() as children, Publisher(topic, slots=1024, slot_size=64) as pub:
        out = children.start(ctx, out_child, topic, address, 1000, stop, results)
        # The bridge to be killed gets a stop event of its own: killed inside is_set(), which
        # holds the event's lock (a semaphore shared by all its users), it would leave the
        # others blocked in their next is_set() for ever.
        doomed_stop = ctx.Event()
        inbound = children.start(ctx, in_child, topic, address, local, 1000, doomed_stop, results)
        with attach(local, 20, lambda: pub.publish(WARM), children=children) as sub:
            epoch = sub.epoch
            pub.publish(INDEX.pack(0))
            assert receive_indexes(sub, 0, 10) == [0]
            children.kill(inbound)
            with time_limit(10), pytest.raises(PublisherGone) as gone:
                while True:
                    sub.receive(timeout=5)
            assert gone.value.reason == "crashed"
        inbound = children.start(ctx, in_child, topic, address, local, 1000, stop, results)
        with attach(
            local,
            20,
            lambda: pub.publish(WARM),
            not_epoch=epoch,
            results=results,
            bridge_process=inbound,
            children=children,
        ) as sub:
            pub.publish(INDEX.pack(1))
            assert receive_indexes(sub, 1, 10)[-1] == 1
            stop.set()
            with time_limit(10), pytest.raises(PublisherGone) as gone:
                while True:
                    sub.receive(timeout=5)
            assert gone.value.reason == "closed"
        reports = [get_result(results, 10, "a bridge") for _ in range(2)]
        assert sorted("lost_network" in r for r in reports) == [False, True]  # one of each side
        children.join(inbound, 10)
        children.join(out, 10)


def test_inbound_ignores_topics_sharing_a_prefix(topic: str) -> None:
    """ZeroMQ subscriptions match prefixes: topic "x" must not receive "x2"."""
    address = f"tcp://127.0.0.1:{free_port()}"
    with Publisher(topic + "2", slots=16, slot_size=64) as pub, BridgeOut(topic + "2", address) as out:
        out.start()
        with BridgeIn(topic, address, local_name=topic + "-in") as inbound:
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                pub.publish(b"other")
                inbound.run(duration=0.05)
            assert inbound.received == 0 and inbound.publisher is None


def test_close_from_another_thread_stops_run(topic: str) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    with BridgeOut(topic, address) as out:  # the topic does not exist: it waits for it
        thread = out.start()
        time.sleep(0.2)
        out.close()
        thread.join(5)
        assert not thread.is_alive()
    stop = threading.Event()
    with BridgeIn(topic, address) as inbound:
        threading.Timer(0.2, stop.set).start()
        with time_limit(5):
            inbound.run(stop_event=stop)


class EndlessStream:
    """Wraps the outbound bridge's subscriber: there is always one more message, as when the
    publisher outpaces the bridge, until *ended* is set."""

    def __init__(self, inner: Subscriber) -> None:
        self._inner = inner
        self._seq = 0
        self.ended = threading.Event()

    def try_receive(self) -> Message | None:
        if self.ended.is_set():
            return None
        self._seq += 1
        return Message(b"x", self._seq)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_run_returns_on_its_stop_event_under_a_continuous_stream(topic: str) -> None:
    """The outbound bridge forwards in bounded bursts: a stream that never pauses cannot keep
    run() from seeing its stop event (the command line stops the bridge that way)."""
    address = f"tcp://127.0.0.1:{free_port()}"
    stop = threading.Event()
    with Publisher(topic, slots=16, slot_size=64) as pub, BridgeOut(topic, address) as out:
        with time_limit(10):
            while out.forwarded == 0:  # until it attached and forwards
                pub.publish(b"x")
                out.run(duration=0.05)
        stream = EndlessStream(out._sub)  # type: ignore[arg-type]
        out._sub = stream  # type: ignore[assignment]
        runner = threading.Thread(target=out.run, args=(stop,))
        runner.start()
        try:
            wait_for(lambda: out.forwarded > 10_000, 20, "no burst forwarded", lambda: None)
            stop.set()
            runner.join(2)
            assert not runner.is_alive(), "run() missed its stop event while messages kept coming"
        finally:
            stream.ended.set()
            runner.join(10)


def test_cli_without_pyzmq(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "zmq", None)
    assert cli.main(["bridge", "out", "x", "--bind", "tcp://127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert "pip install 'shmpubsub[bridge]'" in err
    assert len(err.strip().splitlines()) == 1


def test_cli_bridge_out_and_in(topic: str) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    local = topic + "-in"
    command = [sys.executable, "-m", "shmpubsub", "bridge"]
    with Publisher(topic, slots=64, slot_size=64) as pub:
        procs = [
            subprocess.Popen([*command, "out", topic, "--bind", address], stderr=subprocess.PIPE, text=True),
            subprocess.Popen(
                [*command, "in", topic, "--connect", address, "--as", local],
                stderr=subprocess.PIPE,
                text=True,
            ),
        ]
        try:
            with attach(local, 30, lambda: pub.publish(WARM)) as sub:
                pub.publish(b"hello")
                with time_limit(10):
                    while sub.receive(timeout=10).data != b"hello":
                        pass
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            outputs = [proc.communicate(timeout=10)[1] for proc in procs]
            assert [proc.returncode for proc in procs] == [0, 0], outputs
            assert "forwarded" in outputs[0] and "received" in outputs[1]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
    assert not os.path.exists(f"/dev/shm/shmpubsub.{local}")


@pytest.fixture
def two_hosts() -> Iterator[tuple[list[str], list[str], str]]:
    """Two network namespaces joined by a veth pair: two hosts on one machine (skipped where
    the test may not create them). Yields the command prefixes that run a program on host A
    and on host B, and host A's address."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to create network namespaces")
    tag = uuid.uuid4().hex[:6]
    host_a, host_b = f"sps-a-{tag}", f"sps-b-{tag}"
    setup = [
        ["ip", "netns", "add", host_a],
        ["ip", "netns", "add", host_b],
        [
            "ip",
            "link",
            "add",
            f"va{tag}",
            "netns",
            host_a,
            "type",
            "veth",
            "peer",
            "name",
            f"vb{tag}",
            "netns",
            host_b,
        ],
        ["ip", "-n", host_a, "addr", "add", "10.231.7.1/30", "dev", f"va{tag}"],
        ["ip", "-n", host_b, "addr", "add", "10.231.7.2/30", "dev", f"vb{tag}"],
        ["ip", "-n", host_a, "link", "set", f"va{tag}", "up"],
        ["ip", "-n", host_b, "link", "set", f"vb{tag}", "up"],
        ["ip", "-n", host_a, "link", "set", "lo", "up"],
        ["ip", "-n", host_b, "link", "set", "lo", "up"],
    ]
    try:
        for step in setup:
            done = subprocess.run(step, capture_output=True, text=True, timeout=10)
            if done.returncode != 0:
                pytest.skip(f"cannot create the test hosts: {' '.join(step)}: {done.stderr.strip()}")
        yield ["ip", "netns", "exec", host_a], ["ip", "netns", "exec", host_b], "10.231.7.1"
    finally:
        for host in (host_a, host_b):  # deleting a namespace deletes its end of the veth pair
            subprocess.run(["ip", "netns", "del", host], capture_output=True, timeout=10)


def test_bridge_between_two_hosts(topic: str, two_hosts: tuple[list[str], list[str], str]) -> None:
    """The outbound bridge runs on host A, the inbound one on host B, over a veth link: every
    message arrives in order. (Both hosts share this machine's /dev/shm, hence the --as name.)"""
    on_a, on_b, address_a = two_hosts
    address = f"tcp://{address_a}:{free_port()}"
    local = topic + "-b"
    command = [sys.executable, "-m", "shmpubsub", "bridge"]
    with Publisher(topic, slots=1024, slot_size=256) as pub:
        procs = [
            subprocess.Popen(
                [*on_a, *command, "out", topic, "--bind", address], stderr=subprocess.PIPE, text=True
            ),
            subprocess.Popen(
                [*on_b, *command, "in", topic, "--connect", address, "--as", local],
                stderr=subprocess.PIPE,
                text=True,
            ),
        ]
        try:
            with attach(local, 30, lambda: pub.publish(WARM)) as sub:
                for i in range(500):
                    pub.publish(INDEX.pack(i) + bytes(100))
                assert receive_indexes(sub, 499, 20) == list(range(500))
                assert sub.lost == 0
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            outputs = [proc.communicate(timeout=10)[1] for proc in procs]
            assert [proc.returncode for proc in procs] == [0, 0], outputs
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
    assert not os.path.exists(f"/dev/shm/shmpubsub.{local}")


# -- the supervisor: a killed bridge leaves nothing behind ----------------------------------------


def local_segments(name: str) -> list[str]:
    """The data and control segments of local topic *name* that exist."""
    paths = [os.path.join(SHM_DIR, PREFIX + name + suffix) for suffix in ("", CONTROL_SUFFIX)]
    return [path for path in paths if os.path.exists(path)]


def child_of(supervisor: subprocess.Popen[str]) -> int:
    """The pid of the bridge process a supervising ``shmpubsub bridge`` started."""
    deadline = time.monotonic() + 20
    while True:
        children: list[int] = []
        for path in glob.glob(f"/proc/{supervisor.pid}/task/*/children"):
            with contextlib.suppress(OSError), open(path) as f:
                children += [int(pid) for pid in f.read().split()]
        if len(children) == 1:
            return children[0]
        assert len(children) < 2, f"the supervisor has {len(children)} children"
        assert supervisor.poll() is None, f"the supervisor exited: {supervisor.communicate()[1]}"
        if time.monotonic() > deadline:
            pytest.fail("the supervisor started no bridge process within 20 s")
        time.sleep(0.02)


def gone(pid: int, start_time: int) -> Callable[[], bool]:
    return lambda: not _proc.is_alive(pid, start_time)


@contextlib.contextmanager
def supervised_cli(
    direction: str, topic: str, address: str, *options: str
) -> Iterator[subprocess.Popen[str]]:
    """``shmpubsub bridge DIRECTION TOPIC`` running; stopped (then killed) when the block ends."""
    flag = "--bind" if direction == "out" else "--connect"
    command = [sys.executable, "-m", "shmpubsub", "bridge", direction, topic, flag, address, *options]
    # Its own process group, which a test may signal as a terminal does on Ctrl-C.
    supervisor = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        yield supervisor
    finally:
        if supervisor.poll() is None:
            supervisor.terminate()
            try:
                supervisor.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                supervisor.kill()
                supervisor.communicate(timeout=10)


@contextlib.contextmanager
def outbound_thread(topic: str, address: str) -> Iterator[BridgeOut]:
    """An outbound bridge in a thread of this process, to feed an inbound one under test."""
    with BridgeOut(topic, address) as out:
        out.start()
        yield out


def entry_of(pub: Publisher, pid: int) -> Any:
    """The control entry of subscriber process *pid*, or None."""
    return next((e for e in pub.subscribers if e.pid == pid), None)


@pytest.mark.parametrize("direction", ["in", "out"])
def test_cli_bridge_killed_leaves_nothing(topic: str, direction: str) -> None:
    """SIGKILL the bridge process: its supervisor removes what it left (the inbound bridge's
    local topic; the outbound bridge's subscriber entry and socket) at once, and exits 137."""
    address = f"tcp://127.0.0.1:{free_port()}"
    local = topic + "-in"
    with contextlib.ExitStack() as stack:
        pub = stack.enter_context(Publisher(topic, slots=64, slot_size=64))
        if direction == "in":
            stack.enter_context(outbound_thread(topic, address))
            supervisor = stack.enter_context(supervised_cli("in", topic, address, "--as", local))
            sub = stack.enter_context(attach(local, 30, lambda: pub.publish(WARM)))
            bridge_pid = child_of(supervisor)
            assert sub.header.publisher_pid == bridge_pid
        else:
            supervisor = stack.enter_context(supervised_cli("out", topic, address))
            bridge_pid = child_of(supervisor)
            wait_for(lambda: entry_of(pub, bridge_pid) is not None, 30, "no subscriber entry", lambda: None)
            token = entry_of(pub, bridge_pid).token
            socket_path = os.path.join(socket_dir(), socket_name(token))
            assert os.path.exists(socket_path)
        started = _proc.start_time(bridge_pid) or 0
        os.kill(bridge_pid, signal.SIGKILL)
        _, err = supervisor.communicate(timeout=CLEANUP_BOUND)
        # Nothing published meanwhile: the local publisher had no chance to reap the entry itself.
        assert supervisor.returncode == 128 + signal.SIGKILL, err
        assert "killed by SIGKILL" in err
        if direction == "in":
            assert local_segments(local) == []
            assert "removed /dev/shm/shmpubsub." + local in err
            with time_limit(10), pytest.raises(PublisherGone) as ended:
                while True:
                    sub.receive(timeout=5)
            assert ended.value.reason == "crashed"
        else:
            assert entry_of(pub, bridge_pid) is None
            assert not os.path.exists(socket_path)
        assert gone(bridge_pid, started)()


@pytest.mark.parametrize("direction", ["in", "out"])
def test_cli_supervisor_killed_stops_its_bridge_cleanly(topic: str, direction: str) -> None:
    """SIGKILL the supervisor: the bridge sees its pipe end, closes cleanly and exits."""
    address = f"tcp://127.0.0.1:{free_port()}"
    local = topic + "-in"
    with contextlib.ExitStack() as stack:
        pub = stack.enter_context(Publisher(topic, slots=64, slot_size=64))
        if direction == "in":
            stack.enter_context(outbound_thread(topic, address))
            supervisor = stack.enter_context(supervised_cli("in", topic, address, "--as", local))
            with attach(local, 30, lambda: pub.publish(WARM)):
                pass
        else:
            supervisor = stack.enter_context(supervised_cli("out", topic, address))
        bridge_pid = child_of(supervisor)
        started = _proc.start_time(bridge_pid) or 0
        if direction == "out":
            wait_for(lambda: entry_of(pub, bridge_pid) is not None, 30, "no subscriber entry", lambda: None)
        supervisor.kill()
        wait_for(gone(bridge_pid, started), CLEANUP_BOUND, "the bridge outlived its supervisor", lambda: None)
        _, err = supervisor.communicate(timeout=10)  # the bridge wrote to the same pipe
        assert "bridge stopped" in err
        if direction == "in":
            assert local_segments(local) == []
        else:
            assert entry_of(pub, bridge_pid) is None


@pytest.mark.parametrize(
    ("direction", "signum", "target"),
    [
        ("in", signal.SIGINT, "supervisor"),
        ("out", signal.SIGINT, "supervisor"),
        ("in", signal.SIGINT, "group"),
        ("out", signal.SIGHUP, "group"),
    ],
)
def test_cli_stop_signals_close_the_bridge(topic: str, direction: str, signum: int, target: str) -> None:
    """SIGINT to the supervisor alone (it tells the bridge), or SIGINT or SIGHUP to both at once
    (Ctrl-C, a closed terminal): the bridge closes cleanly and the command exits 0."""
    address = f"tcp://127.0.0.1:{free_port()}"
    local = topic + "-in"
    with contextlib.ExitStack() as stack:
        pub = stack.enter_context(Publisher(topic, slots=64, slot_size=64))
        if direction == "in":
            stack.enter_context(outbound_thread(topic, address))
            supervisor = stack.enter_context(supervised_cli("in", topic, address, "--as", local))
            with attach(local, 30, lambda: pub.publish(WARM)):
                pass
        else:
            supervisor = stack.enter_context(supervised_cli("out", topic, address))
        bridge_pid = child_of(supervisor)
        started = _proc.start_time(bridge_pid) or 0
        if direction == "out":
            wait_for(lambda: entry_of(pub, bridge_pid) is not None, 30, "no subscriber entry", lambda: None)
        if target == "group":
            os.killpg(supervisor.pid, signum)
        else:
            supervisor.send_signal(signum)
        _, err = supervisor.communicate(timeout=10)
        assert supervisor.returncode == 0, err
        assert "bridge stopped" in err and "removed" not in err  # it closed: nothing to clean up
        assert gone(bridge_pid, started)()
        assert local_segments(local) == []
        assert entry_of(pub, bridge_pid) is None


def test_cli_bridge_passes_on_the_bridge_exit_status(topic: str) -> None:
    """An address ZeroMQ refuses: the bridge process says so and exits 1, and so does the command."""
    done = subprocess.run(
        [sys.executable, "-m", "shmpubsub", "bridge", "out", topic, "--bind", "tcp://no-such-interface:1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("shmpubsub: cannot bind"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_supervised_bridge_api(topic: str) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    local = topic + "-in"
    with Publisher(topic, slots=64, slot_size=64) as pub, outbound_thread(topic, address):
        with SupervisedBridge("in", topic, address, local_name=local, stderr=subprocess.DEVNULL) as killed:
            assert killed.local_topic == local
            with attach(local, 30, lambda: pub.publish(WARM)):
                pass
            assert killed.poll() is None
            os.kill(killed.pid, signal.SIGKILL)
            assert killed.wait() == -signal.SIGKILL
            assert local_segments(local) == []
            assert [item.split(" ")[0] for item in killed.removed] == [
                f"/dev/shm/{PREFIX}{local}",
                f"/dev/shm/{PREFIX}{local}{CONTROL_SUFFIX}",
            ]
        assert killed.closed and killed.returncode == -signal.SIGKILL
        with SupervisedBridge("in", topic, address, local_name=local, stderr=subprocess.DEVNULL) as stopped:
            with attach(local, 30, lambda: pub.publish(WARM)):
                pass
            stopped.close()
            assert (stopped.returncode, stopped.removed) == (0, [])
            assert local_segments(local) == []


@pytest.mark.parametrize(
    ("args", "options"),
    [
        (("sideways", "t", "tcp://127.0.0.1:1"), {}),
        (("out", "bad name", "tcp://127.0.0.1:1"), {}),
        (("out", "t", "tcp://127.0.0.1:1"), {"local_name": "t2"}),
        (("in", "t", "tcp://127.0.0.1:1"), {"local_name": "bad/name"}),
        (("in", "t", ""), {}),
        (("in", "t", "tcp://127.0.0.1:1"), {"hwm": -1}),
        (("in", "t", "tcp://127.0.0.1:1"), {"report": 0}),
        (("in", "t", "tcp://127.0.0.1:1"), {"verbose": -1}),
    ],
)
def test_supervised_bridge_refuses_bad_arguments(args: tuple[str, str, str], options: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        SupervisedBridge(*args, **options)


def test_clean_up_after_removes_only_what_that_process_left(topic: str) -> None:
    """A topic whose publisher was killed is removed for that process (pid and start time), not
    for another (a reused pid), and not once a new publisher took it over."""
    script = (
        "import sys, time, shmpubsub\n"
        "pub = shmpubsub.Publisher(sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)  # until killed"
    )

    def killed_publisher() -> tuple[int, int]:
        proc = subprocess.Popen([sys.executable, "-c", script, topic], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        started = _proc.start_time(proc.pid) or 0
        proc.kill()
        proc.communicate(timeout=10)
        return proc.pid, started

    pid, started = killed_publisher()
    assert admin.clean_up_after(pid, started + 1, [topic]) == []
    assert len(local_segments(topic)) == 2
    assert len(admin.clean_up_after(pid, started, [topic])) == 2
    assert local_segments(topic) == []

    pid, started = killed_publisher()
    with Publisher(topic) as successor:
        assert admin.clean_up_after(pid, started, [topic]) == []
        assert successor.publish(b"still here") == 0

    with open(os.path.join(SHM_DIR, PREFIX + topic), "wb"):
        pass  # what a creator that died between shm_open and its header leaves: no owner named
    assert len(admin.clean_up_after(pid, started, [topic])) == 1  # after the start-up grace
    assert local_segments(topic) == []

    with pytest.raises(InvalidArgument):
        admin.clean_up_after(os.getpid(), _proc.start_time(os.getpid()) or 0, [topic])
    with pytest.raises(InvalidType):
        admin.clean_up_after(pid, started, topic)  # a str is an iterable of names, but not meant as one
