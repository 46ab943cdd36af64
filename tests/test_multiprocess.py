"""Multi-process tests: one publisher, subscribers in other processes, every payload self-checking.

Every message carries its own sequence number, its total length and a CRC-32, and its body is
derived deterministically from its sequence number, so a subscriber can tell an intact message
from a torn one (bytes of two different messages), a stale one or a misnumbered one without any
help from the library. ``payloads.check`` is that checker; every test here runs the same one.

The negative control (validation turned off with ``Reader._skip_validation_for_test``) proves the
checker really catches torn reads; its positive twin runs the same workload with validation on and
must see none.

Helpers used by child processes live at module top level: the "spawn" start method pickles them by
reference. The publisher always lives in the test process, so its ``with`` block removes the
segment whatever happens to the children; children are killed if they overstay (at once if the
test fails), before the publisher closes.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from payloads import VARIANTS, WORD_COPY_MAX, check, loan_back_to_front, make_payload, shape

from shmpubsub import Publisher, Subscriber


def test_checker_itself() -> None:
    """The checker accepts every well-formed message and rejects splices, stale copies and bit flips."""
    for variant in VARIANTS:
        for seq in (0, 1, 7, 996, 997, 123456789):
            good = make_payload(seq, variant)
            lo, hi = VARIANTS[variant]
            assert lo <= len(good) <= hi
            assert check(good, seq, variant) is None
            assert check(good, seq + 1, variant) is not None  # stale/misnumbered
            other = make_payload(seq + 1, variant)
            n = min(len(good), len(other))
            for cut in (8, 12, 64, n // 2, n - 4):  # a torn copy: head of one, tail of another
                torn = good[:cut] + other[cut:n] + good[n:]
                assert check(torn, seq, variant) is not None, (variant, seq, cut)
            flipped = bytearray(good)
            flipped[len(good) // 2] ^= 0x10
            assert check(bytes(flipped), seq, variant) is not None
    sizes = [shape(s, "mixed")[0] for s in range(2000)]
    assert any(s <= WORD_COPY_MAX for s in sizes) and any(s > WORD_COPY_MAX for s in sizes)


# --------------------------------------------------------------------------------------------
# Child-process bodies (top level: spawn pickles them by reference)
# --------------------------------------------------------------------------------------------


def _drain(
    sub: Subscriber,
    variant: str,
    *,
    slow_sleep: float = 0.0,
    enough: Any = None,
    enough_corrupt: int = 0,
    time_limit: float = 30.0,
) -> dict[str, Any]:
    """Takes every message with try_receive() until the publisher has closed and nothing is left,
    checking each one. Returns the counts."""
    received = corrupt = order_errors = empties = 0
    last_seq = -1
    reasons: Counter[str] = Counter()
    timed_out = False
    deadline = time.monotonic() + time_limit
    while True:
        closed = sub.publisher_closed  # read BEFORE polling: then None means "all taken"
        msg = sub.try_receive()
        if msg is None:
            if closed:
                break
            empties += 1
            if empties & 31 == 0:  # spin on the ring, yield now and then
                time.sleep(0)
                if time.monotonic() > deadline:
                    timed_out = True
                    break
            continue
        received += 1
        if msg.seq <= last_seq:
            order_errors += 1
        last_seq = msg.seq
        reason = check(msg.data, msg.seq, variant)
        if reason is not None:
            corrupt += 1
            reasons[reason] += 1
            if enough is not None and corrupt >= enough_corrupt:
                enough.set()
        if slow_sleep:
            time.sleep(slow_sleep)
        if received & 1023 == 0 and time.monotonic() > deadline:
            timed_out = True
            break
    return {
        "received": received,
        "lost": sub.lost,
        "corrupt": corrupt,
        "last_seq": last_seq,
        "order_errors": order_errors,
        "reasons": dict(reasons),
        "timed_out": timed_out,
    }


def _subscriber_main(
    topic: str,
    idx: int,
    variant: str,
    results: Any,
    slow_sleep: float = 0.0,
    skip_validation: bool = False,
    enough: Any = None,
    enough_corrupt: int = 0,
    cpu: int | None = None,
) -> None:
    try:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        with Subscriber(topic) as sub:
            if skip_validation:
                sub._reader._skip_validation_for_test()
            results.put(("ready", idx, None))
            stats = _drain(sub, variant, slow_sleep=slow_sleep, enough=enough, enough_corrupt=enough_corrupt)
        results.put(("result", idx, stats))
    except BaseException:
        results.put(("error", idx, traceback.format_exc()))


def _latest_main(topic: str, variant: str, results: Any, done: Any, duration: float) -> None:
    """Calls latest() over and over for *duration* seconds once the first state is visible."""
    try:
        with Subscriber(topic) as sub:
            results.put(("ready", 0, None))
            calls = corrupt = backwards = 0
            distinct = 0
            last = -1
            first_seq = None
            reasons: Counter[str] = Counter()
            give_up = time.monotonic() + 20.0
            while sub.latest() is None:  # the publisher has not published yet
                if time.monotonic() > give_up:
                    raise TimeoutError("latest() saw nothing for 20 s")
                time.sleep(0)
            end = time.monotonic() + duration
            unavailable = 0
            while True:
                msg = sub.latest()
                if msg is None:
                    # Only a one-slot ring has moments with no complete message at all: while the
                    # writer is preempted in the middle of overwriting its only slot.
                    assert sub.slots == 1, "latest() found nothing though the ring holds a message"
                    unavailable += 1
                    continue
                calls += 1
                if first_seq is None:
                    first_seq = msg.seq
                if msg.seq < last:
                    backwards += 1
                elif msg.seq > last:
                    distinct += 1
                last = max(last, msg.seq)
                reason = check(msg.data, msg.seq, variant)
                if reason is not None:
                    corrupt += 1
                    reasons[reason] += 1
                if calls & 255 == 0:
                    if time.monotonic() > end:
                        break
                    time.sleep(0)
            stats = {
                "calls": calls,
                "corrupt": corrupt,
                "backwards": backwards,
                "distinct": distinct,
                "first_seq": first_seq,
                "last_seq": last,
                "reasons": dict(reasons),
                "next_seq": sub.next_seq,
                "lost": sub.lost,
            }
        done.set()
        results.put(("result", 0, stats))
    except BaseException:
        done.set()
        results.put(("error", 0, traceback.format_exc()))


def _late_joiner_main(topic: str, variant: str, results: Any) -> None:
    """Attaches with start="oldest" and takes everything the ring still holds."""
    try:
        with Subscriber(topic, start="oldest") as sub:
            got = []
            while True:
                msg = sub.try_receive()
                if msg is None:
                    break
                got.append((msg.seq, check(msg.data, msg.seq, variant)))
            stats = {"got": got, "lost": sub.lost, "again": sub.try_receive() is None}
        results.put(("result", 0, stats))
    except BaseException:
        results.put(("error", 0, traceback.format_exc()))


# --------------------------------------------------------------------------------------------
# Parent-side helpers
# --------------------------------------------------------------------------------------------


@contextmanager
def _children(ctx: Any) -> Iterator[list[Any]]:
    """A list to put started processes in. On exit they get 10 s to finish, then are killed; if
    the block raised, they are killed at once. Use it inside the Publisher's with-block, so the
    children are gone before the publisher closes and sweeps their wake-up sockets."""
    procs: list[Any] = []
    try:
        yield procs
    except BaseException:
        for p in procs:  # the test failed: nobody will tell them to stop
            if p.is_alive():
                p.kill()
        raise
    finally:
        deadline = time.monotonic() + 10.0
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5.0)


def _await(results: Any, procs: list[Any], kind: str, count: int, timeout: float) -> dict[int, Any]:
    """Waits for *count* messages of *kind* ("ready" or "result") from the children; fails the
    test clearly if a child reports an error, dies silently, or the time runs out."""
    got: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    while len(got) < count:
        try:
            what, idx, value = results.get(timeout=0.1)
        except queue.Empty:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"timed out after {timeout} s waiting for {kind} from children "
                    f"(have {sorted(got)}; exit codes {[p.exitcode for p in procs]})"
                )
            # A child that reports an error exits with 0; one that crashed or was killed does not.
            crashed = [p for p in procs if p.exitcode not in (None, 0)]
            if (crashed or all(not p.is_alive() for p in procs)) and results.empty():
                time.sleep(0.2)  # let the queue's feeder flush
                if results.empty():
                    pytest.fail(
                        f"children exited without reporting {kind} "
                        f"(have {sorted(got)}; exit codes {[p.exitcode for p in procs]})"
                    )
            continue
        if what == "error":
            pytest.fail(f"child {idx} failed:\n{value}")
        if what == kind:
            got[idx] = value
        elif what == "result" and kind == "ready":  # pragma: no cover - a child never got ready
            pytest.fail(f"child {idx} reported a result before being ready: {value}")
    return got


def _join_all(procs: list[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    stuck = [p.pid for p in procs if p.is_alive()]
    assert not stuck, f"child processes {stuck} did not exit within {timeout} s"
    bad = [(p.pid, p.exitcode) for p in procs if p.exitcode != 0]
    assert not bad, f"child processes exited abnormally: {bad}"


# --------------------------------------------------------------------------------------------
# 1. One publisher, four subscribers in their own processes, a small ring: exact accounting
# --------------------------------------------------------------------------------------------

_STREAM_LEN = 30_000
_SLOW = 3  # index of the subscriber that sleeps after each message


@pytest.mark.parametrize("variant", ["small", "mixed"])
@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_stream_to_four_subscriber_processes(topic: str, method: str, variant: str) -> None:
    """Four subscriber processes (one slow) attach, then 30k self-checking messages go through an
    8-slot ring. Each subscriber stops once it saw publisher_closed and then found nothing, so its
    count is final: nothing corrupt, seqs strictly increasing, received + lost == published exactly,
    and the last message (never overwritten) received by all. The slow one must have been lapped."""
    ctx: Any = multiprocessing.get_context(method)
    results = ctx.Queue()
    slots = 8
    slot_size = VARIANTS[variant][1]
    started = time.monotonic()
    with Publisher(topic, slots=slots, slot_size=slot_size) as pub, _children(ctx) as procs:
        for i in range(4):
            slow = 0.001 if i == _SLOW else 0.0  # ~1 ms a message: 30 s to take them all
            procs.append(ctx.Process(target=_subscriber_main, args=(topic, i, variant, results, slow)))
            procs[-1].start()
        _await(results, procs, "ready", 4, timeout=30.0)

        for seq in range(_STREAM_LEN):
            assert pub.publish(make_payload(seq, variant)) == seq
        published = pub.published
        pub.close()  # subscribers see publisher_closed; their mappings stay valid

        stats = _await(results, procs, "result", 4, timeout=30.0)
        _join_all(procs, timeout=10.0)
    elapsed = time.monotonic() - started

    assert published == _STREAM_LEN
    print(f"\n[{method}/{variant}] {elapsed:.2f}s", {i: (s["received"], s["lost"]) for i, s in stats.items()})
    for i, s in sorted(stats.items()):
        assert not s["timed_out"], f"subscriber {i} ran out of time: {s}"
        assert s["corrupt"] == 0, f"subscriber {i} received corrupt messages: {s}"
        assert s["order_errors"] == 0, f"subscriber {i} saw sequence numbers go backwards: {s}"
        assert s["received"] + s["lost"] == published, f"subscriber {i}: accounting is off: {s}"
        # the final message is never overwritten, so every subscriber ends on it
        assert s["last_seq"] == published - 1, f"subscriber {i} did not reach the end: {s}"
    assert sum(s["received"] for s in stats.values()) > 4
    assert stats[_SLOW]["lost"] > 0, f"the slow subscriber was never lapped: {stats[_SLOW]}"


# --------------------------------------------------------------------------------------------
# 2. Negative control: with validation off, torn reads get through, and the checker sees them.
#    Positive twin: the same workload with validation on delivers none.
# --------------------------------------------------------------------------------------------

_TORN_BUDGET = 5.0  # seconds the negative control may publish before it counts as a failure
_TORN_WANTED = 20  # stop early once this many torn reads were caught
_TWIN_DURATION = 1.5


def _hammer(pub: Publisher, variant: str, seconds: float, enough: Any = None, writer: str = "publish") -> int:
    """Publishes as fast as possible for *seconds* (or until *enough* is set); returns the count."""
    deadline = time.monotonic() + seconds
    seq = 0
    while True:
        if writer.startswith("publish"):
            pub.publish(make_payload(seq, variant))
        else:
            loan_back_to_front(pub, seq, variant)
        seq += 1
        if seq & 31 == 0 and (time.monotonic() > deadline or (enough is not None and enough.is_set())):
            return seq


@contextmanager
def _pinned(cpu: int | None) -> Iterator[None]:
    """Runs the block with this process pinned to *cpu* (None: unpinned)."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _run_hammered_subscriber(
    topic: str, variant: str, skip_validation: bool, seconds: float, slots: int, writer: str = "publish"
) -> tuple[dict[str, Any], int, float]:
    """One subscriber process against a publisher (this process) writing flat out for *seconds*.

    The two are pinned to different CPUs when there are two. A torn read needs the writer to run
    *while* the reader copies; left to the scheduler on a busy 2-core machine, the pair sometimes
    shares one CPU for seconds, and then the reader is almost never preempted mid-copy (it spends
    its time slices polling an unchanged slot), so torn reads stop (measured: no torn read for up
    to 3.8 s while another test suite ran). Pinned apart, they overlap whenever both get their CPU.
    """
    cpus = sorted(os.sched_getaffinity(0))
    writer_cpu, reader_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    enough = ctx.Event()
    with (
        Publisher(topic, slots=slots, slot_size=VARIANTS[variant][1]) as pub,
        _children(ctx) as procs,
    ):
        procs.append(
            ctx.Process(
                target=_subscriber_main,
                args=(topic, 0, variant, results, 0.0, skip_validation, enough, _TORN_WANTED, reader_cpu),
            )
        )
        procs[0].start()
        _await(results, procs, "ready", 1, timeout=30.0)
        if writer == "publish-streaming":
            pub._writer._stream_copies_for_test()
        with _pinned(writer_cpu):
            began = time.monotonic()
            published = _hammer(pub, variant, seconds, enough if skip_validation else None, writer)
            took = time.monotonic() - began
        pub.close()
        stats = _await(results, procs, "result", 1, timeout=30.0)[0]
        _join_all(procs, timeout=10.0)
    return stats, published, took


# The workloads of the negative control and its twin: (payload variant, how the publisher writes).
# All use a one-slot ring, so every publish rewrites the slot a reader may be copying, and the
# reader and the writer are pinned to different CPUs (see _run_hammered_subscriber).
#
# Measured on the 2-core machine, validation off, pinned, while another test suite and two CPU
# hogs also ran: torn reads per second about 500-1,000 for "large"/publish, 20-100 for
# "word512"/publish (the atomic-word copy path: the reader's copy lasts some tens of nanoseconds,
# so overlaps are rarer but still plentiful), 1,000-2,500 for "large"/back-to-front loan. The
# first torn read came within 0.25 s in each of ~50 runs; the 5 s budget is a wide margin.
# Unpinned, the same workloads sometimes went 2-4 s without a single torn read: the scheduler had
# put both processes on one CPU, where a reader is almost never preempted mid-copy (it spends its
# time slices polling an unchanged slot), which is why they are pinned.
_TORN_WORKLOADS = [
    ("large", "publish"),  # 16-64 KiB: memcpy on both sides
    ("large", "publish-streaming"),  # the streaming stores large rings use, forced on this small one
    ("word512", "publish"),  # 512 B: relaxed atomic words on both sides
    ("large", "loan-back-to-front"),  # loan/commit, written tail first
]


@pytest.mark.parametrize(("variant", "writer"), _TORN_WORKLOADS)
def test_negative_control_torn_reads_are_caught_without_validation(
    topic: str, variant: str, writer: str
) -> None:
    """With the seqlock's re-check turned off, the checker must see torn reads: proof that it
    would see one if the library ever delivered it. No torn read within the budget fails."""
    stats, published, took = _run_hammered_subscriber(topic, variant, True, _TORN_BUDGET, 1, writer)
    print(f"\n[negative control {variant}, {writer}] {took:.2f}s published={published}", stats)
    assert not stats["timed_out"], stats
    assert stats["received"] > 0, f"the subscriber received nothing: {stats}"
    assert stats["corrupt"] > 0, (
        f"no torn read in {took:.1f} s with validation off ({published} messages published): "
        f"this test could not prove that the checker catches torn reads: {stats}"
    )


@pytest.mark.parametrize(("variant", "writer"), _TORN_WORKLOADS)
def test_positive_twin_no_torn_reads_with_validation(topic: str, variant: str, writer: str) -> None:
    """The negative control's workloads with validation on: nothing torn, exact accounting."""
    stats, published, took = _run_hammered_subscriber(topic, variant, False, _TWIN_DURATION, 1, writer)
    print(f"\n[positive twin {variant}, {writer}] {took:.2f}s published={published}", stats)
    assert not stats["timed_out"], stats
    assert stats["corrupt"] == 0, f"a torn or wrong message was delivered with validation on: {stats}"
    assert stats["order_errors"] == 0, stats
    assert stats["received"] > 0, stats
    assert stats["received"] + stats["lost"] == published, stats
    assert stats["last_seq"] == published - 1, stats


# --------------------------------------------------------------------------------------------
# 3. latest() across processes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("slots", [1, 8])
def test_latest_across_processes_is_never_torn_and_never_goes_back(topic: str, slots: int) -> None:
    """A publisher rewrites a "state" at full speed; a subscriber process calls latest() for 2 s:
    never a corrupt state, never an older one than before, and the stream position untouched."""
    variant = "mixed"
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    done = ctx.Event()
    with (
        Publisher(topic, slots=slots, slot_size=VARIANTS[variant][1]) as pub,
        _children(ctx) as procs,
    ):
        procs.append(ctx.Process(target=_latest_main, args=(topic, variant, results, done, 2.0)))
        procs[0].start()
        _await(results, procs, "ready", 1, timeout=30.0)
        published = _hammer(pub, variant, 25.0, done)
        stats = _await(results, procs, "result", 1, timeout=30.0)[0]
        _join_all(procs, timeout=10.0)
    print(f"\n[latest slots={slots}] published={published}", stats)
    assert stats["corrupt"] == 0, f"latest() returned a corrupt state: {stats}"
    assert stats["backwards"] == 0, f"latest() went backwards: {stats}"
    assert stats["distinct"] > 10, f"latest() hardly saw the state change: {stats}"
    assert stats["last_seq"] < published
    assert stats["next_seq"] == 0 and stats["lost"] == 0, f"latest() moved the stream: {stats}"


# --------------------------------------------------------------------------------------------
# 4. A late joiner in a spawned process, start="oldest"
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [5, 16, 37])
def test_late_joiner_with_start_oldest_gets_what_the_ring_holds(topic: str, k: int) -> None:
    """k messages are published, then a spawned subscriber attaches with start="oldest": it gets
    exactly what the 16-slot ring still holds (all k when k <= 16, else the last 16), intact."""
    variant = "mixed"
    slots = 16
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    with (
        Publisher(topic, slots=slots, slot_size=VARIANTS[variant][1]) as pub,
        _children(ctx) as procs,
    ):
        for seq in range(k):
            pub.publish(make_payload(seq, variant))
        procs.append(ctx.Process(target=_late_joiner_main, args=(topic, variant, results)))
        procs[0].start()
        stats = _await(results, procs, "result", 1, timeout=30.0)[0]
        _join_all(procs, timeout=10.0)
    expected = list(range(max(0, k - slots), k))
    assert [seq for seq, _ in stats["got"]] == expected
    assert [reason for _, reason in stats["got"]] == [None] * len(expected)
    assert stats["lost"] == 0
    assert stats["again"]
