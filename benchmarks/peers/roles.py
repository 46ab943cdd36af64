"""What the child processes do: one side of a cell each (ping and echo for latency; a publisher
and its receivers for throughput and fan-out), over every message size in turn."""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import time
import traceback
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .transports import TRANSPORTS, Receiver, Sender, Transport
from .wire import END, END_MSG, HDR, PROBE, PROBE_MSG, batch_for, payload_for


@dataclass
class Chan:
    """One channel of one cell: the transport's spec, and per receiver an event it sets once it
    has seen a probe (ack) and one it sets once it has seen the end (done)."""

    spec: Any
    acks: list[Any]
    done: list[Any]


@dataclass
class Side:
    """What one child process does, for each size in turn."""

    role: str  # ping | echo | pub | sub
    transport: str
    mode: str
    sizes: list[int]
    out: list[Chan] | None
    inp: list[Chan] | None
    index: int
    receivers: int
    barrier: Any
    budget: float
    warmup: float
    max_rounds: int
    cpu: int | None


def child_main(side: Side, results: Any) -> None:
    signal.signal(signal.SIGINT, _interrupted)
    transport = TRANSPORTS[side.transport]
    try:
        if side.cpu is not None:
            os.sched_setaffinity(0, {side.cpu})
        role = _ROLES[side.role]
        for i, size in enumerate(side.sizes):
            try:
                results.send(("ok", size, role(transport, side, i, size)))
            except Exception:
                side.barrier.abort()
                results.send(("error", size, traceback.format_exc()))
                break
    except KeyboardInterrupt:
        pass  # the roles closed what they opened on the way out; the harness reports the rest
    finally:
        with contextlib.suppress(Exception):
            transport.finish_process()
        results.close()


def _interrupted(signum: int, frame: Any) -> None:
    """Ctrl-C: raises KeyboardInterrupt once, then ignores SIGINT, so that a second one (the
    harness passes Ctrl-C on to children it did not reach) cannot cut short the closing the
    first one started."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _sync(
    tx: Sender | None, acks: Sequence[Any], rx: Receiver | None, my_ack: Any, timeout: float = 30.0
) -> None:
    """Sends probes until every receiver of *tx* has seen one, and reads *rx* until it has.
    Late-joining transports (PUB/SUB, a subscriber attaching "next") need this before data."""
    deadline = time.monotonic() + timeout
    seen = rx is None
    while True:
        pending = tx is not None and not all(e.is_set() for e in acks)
        if pending:
            tx.send(PROBE_MSG)  # type: ignore[union-attr]
        if not seen:
            data = rx.try_recv()  # type: ignore[union-attr]
            while data is not None:
                if HDR.unpack_from(data)[0] == PROBE:
                    seen = True
                    my_ack.set()
                    break
                data = rx.try_recv()  # type: ignore[union-attr]
        if seen and not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"could not connect within {timeout} s (probes seen: {seen})")
        time.sleep(0.0005)


def _finish(tx: Sender, done: Sequence[Any], lossy: bool, timeout: float = 60.0) -> None:
    """Ends the stream. A lossy transport may drop the end mark, so it is repeated until every
    receiver has seen it, at growing intervals (each repeat may push a lagging receiver's last
    messages out); a lossless one gets it once (more could block a full channel)."""
    deadline = time.monotonic() + timeout
    tx.send(END_MSG)
    interval = 0.01
    for event in done:
        while not event.wait(interval):
            if time.monotonic() > deadline:
                raise TimeoutError(f"a receiver did not see the end within {timeout} s")
            if lossy:
                tx.send(END_MSG)
                interval = min(2 * interval, 0.2)


def _percentile(sorted_values: Sequence[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def _pingpong(tx: Sender, rx: Receiver, size: int, side: Side) -> dict[str, Any]:
    buf = payload_for(0, size)
    pack, unpack = HDR.pack_into, HDR.unpack_from
    send, recv, now = tx.send, rx.recv, time.perf_counter_ns
    seq = 0
    warm_until = now() + int(side.warmup * 1e9)
    while seq < 20 or now() < warm_until:  # warm-up; also swallows any stray probe
        pack(buf, 0, seq)
        send(buf)
        data = recv()
        while unpack(data)[0] == PROBE:
            data = recv()
        seq += 1
    samples = array("q", bytes(8 * side.max_rounds))
    mismatched = bad_length = 0
    cpu0 = time.process_time()
    start = now()
    deadline = start + int(side.budget * 1e9)
    n = 0
    data = b""
    while n < side.max_rounds:
        pack(buf, 0, seq)
        t0 = now()
        send(buf)
        data = recv()
        t1 = now()
        if unpack(data)[0] != seq:
            mismatched += 1
        if len(data) != size:
            bad_length += 1
        samples[n] = t1 - t0
        n += 1
        seq += 1
        if t1 >= deadline:
            break
    wall = (now() - start) / 1e9
    cpu = time.process_time() - cpu0
    verified = bytes(data) == bytes(payload_for(seq - 1, size))
    rtts = sorted(samples[:n])
    return {
        "round_trips": n,
        "one_way_us": {
            "min": rtts[0] / 2000,
            "median": statistics.median(rtts) / 2000,
            "p90": _percentile(rtts, 0.90) / 2000,
            "p99": _percentile(rtts, 0.99) / 2000,
            "p999": _percentile(rtts, 0.999) / 2000,
            "max": rtts[-1] / 2000,
            "mean": sum(rtts) / n / 2000,
        },
        "mismatched": mismatched,
        "bad_length": bad_length,
        "verified": verified,
        "cpu_util": cpu / wall if wall > 0 else None,
    }


def _open_pair(transport: Transport, side: Side, i: int, size: int) -> tuple[Sender, Receiver]:
    assert side.out is not None and side.inp is not None
    tx = transport.sender(side.out[i].spec, side.mode, size, 1)
    try:
        side.barrier.wait()
        rx = transport.receiver(side.inp[i].spec, 0, side.mode, size)
    except BaseException:
        tx.close()
        raise
    return tx, rx


def _role_ping(transport: Transport, side: Side, i: int, size: int) -> dict[str, Any]:
    assert side.out is not None and side.inp is not None
    tx, rx = _open_pair(transport, side, i, size)
    try:
        side.barrier.wait()
        _sync(tx, side.out[i].acks, rx, side.inp[i].acks[0])
        result = _pingpong(tx, rx, size, side)
        _finish(tx, side.out[i].done, transport.lossy)
        return result
    finally:
        rx.close()
        tx.close()


def _role_echo(transport: Transport, side: Side, i: int, size: int) -> dict[str, Any]:
    assert side.out is not None and side.inp is not None
    tx, rx = _open_pair(transport, side, i, size)
    try:
        side.barrier.wait()
        _sync(tx, side.out[i].acks, rx, side.inp[i].acks[0])
        pong = payload_for(0, size)
        pack, unpack = HDR.pack_into, HDR.unpack_from
        send, recv = tx.send, rx.recv
        cpu0, wall0 = time.process_time(), time.perf_counter()
        while True:
            seq = unpack(recv())[0]
            if seq >= END:
                if seq == END:
                    break
                continue
            pack(pong, 0, seq)
            send(pong)
        wall = time.perf_counter() - wall0
        side.inp[i].done[0].set()
        return {"cpu_util": (time.process_time() - cpu0) / wall if wall > 0 else None}
    finally:
        rx.close()
        tx.close()


def _role_pub(transport: Transport, side: Side, i: int, size: int) -> dict[str, Any]:
    assert side.out is not None
    chan = side.out[i]
    tx = transport.sender(chan.spec, side.mode, size, side.receivers)
    try:
        side.barrier.wait()  # the sender exists
        side.barrier.wait()  # so do the receivers
        _sync(tx, chan.acks, None, None)
        now = time.perf_counter_ns
        cpu0 = time.process_time()
        t0 = now()
        deadline = t0 + int(side.budget * 1e9)
        if side.mode in transport.batch_modes:
            seq = _send_batches(tx, size, side.max_rounds, deadline)
        else:
            seq = _send_each(tx, size, side.max_rounds, deadline)
        t1 = now()
        cpu = time.process_time() - cpu0
        _finish(tx, chan.done, transport.lossy)
        return {"sent": seq, "t0": t0, "t1": t1, "cpu_util": cpu / ((t1 - t0) / 1e9)}
    finally:
        tx.close()


def _send_each(tx: Sender, size: int, max_messages: int, deadline: int) -> int:
    """Sends messages 0, 1, ... one call each until the deadline; returns how many."""
    buf = payload_for(0, size)
    pack, send, now = HDR.pack_into, tx.send, time.perf_counter_ns
    mask = 63 if size <= 4096 else 0
    seq = 0
    while seq < max_messages:
        pack(buf, 0, seq)
        send(buf)
        seq += 1
        if not seq & mask and now() >= deadline:
            break
    return seq


def _send_batches(tx: Sender, size: int, max_messages: int, deadline: int) -> int:
    """The same in batches: the messages lie end to end in one buffer, each stamped with its
    number (one strided store per batch)."""
    per_batch = batch_for(size)
    records = payload_for(0, size) * per_batch
    numbers = memoryview(records).cast("Q")[:: size // 8]
    send_batch, now = tx.send_batch, time.perf_counter_ns
    seq = 0
    while seq < max_messages:
        numbers[:] = array("Q", range(seq, seq + per_batch))
        send_batch(records, size)
        seq += per_batch
        if now() >= deadline:
            break
    return seq


def _role_sub(transport: Transport, side: Side, i: int, size: int) -> dict[str, Any]:
    assert side.inp is not None
    chan = side.inp[i]
    side.barrier.wait()
    rx = transport.receiver(chan.spec, side.index, side.mode, size)
    try:
        side.barrier.wait()
        _sync(None, (), rx, chan.acks[side.index])
        cpu0, wall0 = time.process_time(), time.perf_counter_ns()
        receive = receive_batches if side.mode in transport.batch_modes else receive_each
        tally = receive(rx, size, wall0)
        cpu_util = (time.process_time() - cpu0) / max(1e-9, (time.perf_counter_ns() - wall0) / 1e9)
        verified = _verify(rx.sample(), tally, size)
        retracted = rx.retracted()
        chan.done[side.index].set()
        return {
            "delivered": tally.count,
            "retracted": retracted,
            "last_seq": tally.last,
            "t_end": tally.t_last,
            "cpu_util": cpu_util,
            "verified": verified,
            "out_of_order": tally.out_of_order,
            "bad_length": tally.bad_length,
            "transport_lost": rx.lost(),
        }
    finally:
        rx.close()


def _verify(sample: bytes | None, tally: _Tally, size: int) -> bool:
    """The sample (zero-copy modes), or else the last message, byte for byte."""
    if sample is not None:
        return sample == bytes(payload_for(HDR.unpack_from(sample)[0], size))
    try:
        return tally.previous is not None and bytes(tally.previous) == bytes(payload_for(tally.last, size))
    except ValueError:  # a released view
        return False


@dataclass
class _Tally:
    """What a receiver saw: messages, the last number and payload, and anomalies."""

    count: int
    last: int
    out_of_order: int
    bad_length: int
    previous: Any
    t_last: int  # when the last message came


def receive_each(rx: Receiver, size: int, t_start: int) -> _Tally:
    """Receives one message per call until the end mark, touching each: len() and its number."""
    recv, unpack, now = rx.recv, HDR.unpack_from, time.perf_counter_ns
    count = out_of_order = bad_length = 0
    last = -1
    previous: Any = None
    t_last = t_start
    while True:
        data = recv()
        t = now()  # the time of the last message, whenever the end mark comes
        seq = unpack(data)[0]
        if seq >= END:
            if seq == END:
                break
            continue
        t_last = t
        if len(data) != size:
            bad_length += 1
        if seq <= last:
            out_of_order += 1
        last = seq
        count += 1
        previous = data
    return _Tally(count, last, out_of_order, bad_length, previous, t_last)


def receive_batches(rx: Receiver, size: int, t_start: int) -> _Tally:
    """The same, a batch per call; every message is touched just the same."""
    recv_batch, unpack, now = rx.recv_batch, HDR.unpack_from, time.perf_counter_ns
    count = out_of_order = bad_length = 0
    last = -1
    previous: Any = None
    t_last = t_start
    ended = False
    while not ended:
        batch = recv_batch()
        t = now()
        for data in batch:
            seq = unpack(data)[0]
            if seq >= END:
                ended = ended or seq == END
                continue
            t_last = t
            if len(data) != size:
                bad_length += 1
            if seq <= last:
                out_of_order += 1
            last = seq
            count += 1
            previous = data
    return _Tally(count, last, out_of_order, bad_length, previous, t_last)


_ROLES: dict[str, Callable[[Transport, Side, int, int], dict[str, Any]]] = {
    "ping": _role_ping,
    "echo": _role_echo,
    "pub": _role_pub,
    "sub": _role_sub,
}
