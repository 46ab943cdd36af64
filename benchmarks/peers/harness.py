"""The harness: runs every row (a transport, a receive path, a workload) in its own set of
child processes, collects what they report, and returns everything the report needs."""

from __future__ import annotations

import contextlib
import datetime
import multiprocessing as mp
import multiprocessing.connection
import os
import platform
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .roles import Chan, Side, child_main
from .transports import TRANSPORTS, RunEnv, Transport
from .wire import DEFAULT_SIZES, depth_for


@dataclass
class Options:
    sizes: list[int] = field(default_factory=lambda: list(DEFAULT_SIZES))
    budget: float = 2.0  # seconds measured per cell
    warmup: float = 0.2
    fanout: int = 4
    pin: bool = True
    workloads: tuple[str, ...] = ("latency", "throughput", "fanout")
    only: tuple[str, ...] | None = None
    max_rounds: int = 1_000_000
    max_messages: int = 20_000_000
    repeat: int = 1  # runs of every row; each cell keeps its best run
    quiet: bool = False


@dataclass
class Row:
    workload: str  # latency | throughput | fanout
    transport: str
    mode: str

    @property
    def label(self) -> str:
        return f"{TRANSPORTS[self.transport].title} ({self.mode})"


def _log(opts: Options, text: str) -> None:
    if not opts.quiet:
        print(text, file=sys.stderr, flush=True)


class _Child:
    """A child process, and its start time: with the pid, what tells it apart from a later
    process with the same pid (what admin.clean_up_after needs to know what it created)."""

    def __init__(self, proc: Any) -> None:
        self.proc = proc
        self.start_time: int | None = None

    def note_start_time(self) -> None:
        # /proc/PID/stat stays readable until the child is reaped (joined), even once it is a
        # zombie: read before any join.
        if self.start_time is None and self.proc.pid is not None:
            self.start_time = _start_time(self.proc.pid)


def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: the start time in clock ticks since boot (None if gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ')'.
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


def _stop(children: Sequence[_Child], grace: float, interrupt: bool = False) -> None:
    """Waits up to *grace* seconds for the children to end (they release what they created
    after their last result), then kills what is left. With *interrupt*, first asks them to
    stop as Ctrl-C does (a child takes one SIGINT, so one that Ctrl-C reached already keeps
    closing what it opened undisturbed)."""
    started = [c for c in children if c.proc.pid is not None]
    for child in started:
        child.note_start_time()
    if interrupt:
        for child in started:
            if child.proc.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.proc.pid, signal.SIGINT)
    deadline = time.monotonic() + grace
    for child in started:
        child.proc.join(max(0.0, deadline - time.monotonic()))
    for child in started:
        if child.proc.is_alive():
            child.proc.kill()
            child.proc.join(5)


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Ignores Ctrl-C while cleaning up (a second one would leave the run's objects behind);
    only the main thread may change signal handlers, elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_row(row: Row, opts: Options, env: RunEnv) -> list[dict[str, Any]]:
    """Runs one transport/mode of one workload over every size, in one set of processes.
    Returns one result per size."""
    transport = TRANSPORTS[row.transport]
    ctx = mp.get_context("spawn")
    sizes = opts.sizes
    receivers = opts.fanout if row.workload == "fanout" else 1
    chans: list[list[Chan]] = []

    def chan(n_receivers: int) -> list[Chan]:
        made = [
            Chan(
                transport.channel(ctx, env, size, n_receivers),
                [ctx.Event() for _ in range(n_receivers)],
                [ctx.Event() for _ in range(n_receivers)],
            )
            for size in sizes
        ]
        chans.append(made)
        return made

    common = {
        "transport": row.transport,
        "mode": row.mode,
        "sizes": sizes,
        "budget": opts.budget,
        "warmup": opts.warmup,
    }
    sides: list[Side] = []
    children: list[_Child] = []
    conns: list[Any] = []
    try:
        if row.workload == "latency":
            ab, ba = chan(1), chan(1)
            barrier = ctx.Barrier(2, timeout=60)
            for role, out, inp, cpu in (("ping", ab, ba, 0), ("echo", ba, ab, 1)):
                sides.append(
                    Side(
                        role=role,
                        out=out,
                        inp=inp,
                        index=0,
                        receivers=1,
                        barrier=barrier,
                        max_rounds=opts.max_rounds,
                        cpu=cpu if opts.pin else None,
                        **common,  # type: ignore[arg-type]
                    )
                )
        else:
            stream = chan(receivers)
            barrier = ctx.Barrier(receivers + 1, timeout=60)
            pin = opts.pin and receivers == 1
            sides.append(
                Side(
                    role="pub",
                    out=stream,
                    inp=None,
                    index=0,
                    receivers=receivers,
                    barrier=barrier,
                    max_rounds=opts.max_messages,
                    cpu=0 if pin else None,
                    **common,  # type: ignore[arg-type]
                )
            )
            for index in range(receivers):
                sides.append(
                    Side(
                        role="sub",
                        out=None,
                        inp=stream,
                        index=index,
                        receivers=receivers,
                        barrier=barrier,
                        max_rounds=opts.max_messages,
                        cpu=1 if pin else None,
                        **common,  # type: ignore[arg-type]
                    )
                )
        for side in sides:
            reader, writer = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=child_main, args=(side, writer), daemon=True, name=f"compare-{side.role}"
            )
            children.append(_Child(proc))
            proc.start()
            children[-1].note_start_time()
            writer.close()
            conns.append(reader)
        got = _collect(conns, sides, opts)
        failed = any(status != "ok" for per_side in got for status, _ in per_side.values())
        _stop(children, 3.0 if failed else 30.0)
    except KeyboardInterrupt:
        with _uninterrupted():
            _stop(children, 5.0, interrupt=True)
        raise
    finally:
        with _uninterrupted():
            _stop(children, 0.0)
            for conn in conns:
                conn.close()
            _clean_up_after(transport, children, [c.spec for made in chans for c in made])
    return [_combine(row, size, [got[s].get(size) for s in range(len(sides))], sides) for size in sizes]


def _clean_up_after(transport: Transport, children: Sequence[_Child], specs: list[Any]) -> None:
    """Once every child has ended: what a child left in the channels because it was killed or
    interrupted halfway through opening its side, then the channels themselves."""
    for child in children:
        if child.proc.pid is not None and child.start_time is not None:
            try:
                transport.clean_up_after(child.proc.pid, child.start_time, specs)
            except Exception as exc:
                print(f"cleaning up after {child.proc.name}: {exc}", file=sys.stderr)
    for spec in specs:
        with contextlib.suppress(Exception):
            transport.close_channel(spec)


def _collect(conns: list[Any], sides: list[Side], opts: Options) -> list[dict[int, tuple[str, Any]]]:
    """Reads each child's per-size results, giving up on a cell that makes no progress."""
    per_size = 45.0 + 4 * (opts.budget + opts.warmup)
    got: list[dict[int, tuple[str, Any]]] = [{} for _ in sides]
    open_conns = {conn: k for k, conn in enumerate(conns)}
    deadline = time.monotonic() + per_size + 30  # spawning and importing
    while open_conns:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            for k in open_conns.values():
                for size in sides[k].sizes:
                    got[k].setdefault(size, ("error", f"timed out (no progress for {per_size:.0f} s)"))
            break
        ready: list[Any] = mp.connection.wait(list(open_conns), remaining)
        for conn in ready:
            k = open_conns[conn]
            try:
                status, size, payload = conn.recv()
            except (EOFError, OSError):
                del open_conns[conn]
                for size in sides[k].sizes:
                    got[k].setdefault(size, ("error", "the process ended without a result"))
                continue
            got[k][size] = (status, payload)
            deadline = time.monotonic() + per_size
            if status == "error":
                # The others are stuck waiting for this one: give them a moment, then stop them.
                deadline = min(deadline, time.monotonic() + 3)
    return got


def _combine(row: Row, size: int, parts: list[tuple[str, Any] | None], sides: list[Side]) -> dict[str, Any]:
    base: dict[str, Any] = {
        "workload": row.workload,
        "transport": row.transport,
        "mode": row.mode,
        "size": size,
    }
    errors = [f"{sides[k].role}: {p[1]}" for k, p in enumerate(parts) if p is not None and p[0] == "error"]
    if errors or any(p is None for p in parts):
        tail = errors[0].strip().splitlines()[-1] if errors else "no result"
        return {**base, "status": "error", "error": tail, "detail": errors}
    values = [p[1] for p in parts if p is not None]
    if row.workload == "latency":
        ping, echo = values
        return {
            **base,
            "status": "ok",
            **ping,
            "cpu_util": {"ping": ping["cpu_util"], "echo": echo["cpu_util"]},
        }
    pub, subs = values[0], values[1:]
    seconds = (pub["t1"] - pub["t0"]) / 1e9
    receivers = []
    for sub in subs:
        window = (sub["t_end"] - pub["t0"]) / 1e9
        receivers.append(
            {
                "delivered": sub["delivered"],
                "lost": pub["sent"] - sub["delivered"],
                "delivered_per_s": sub["delivered"] / window,
                "seconds": window,
                "verified": sub["verified"],
                "out_of_order": sub["out_of_order"],
                "bad_length": sub["bad_length"],
                "transport_lost": sub["transport_lost"],
                "cpu_util": sub["cpu_util"],
            }
        )
    return {
        **base,
        "status": "ok",
        "sent": pub["sent"],
        "sent_per_s": pub["sent"] / seconds,
        "seconds": seconds,
        "publisher_cpu_util": pub["cpu_util"],
        "receivers": receivers,
        "delivered_per_s": min(r["delivered_per_s"] for r in receivers),
        "delivered_per_s_mean": sum(r["delivered_per_s"] for r in receivers) / len(receivers),
        "lost": max(r["lost"] for r in receivers),
        "verified": all(r["verified"] for r in receivers),
    }


def plan(opts: Options) -> tuple[list[Row], dict[str, str]]:
    """The rows to run, and the transports that will not run (key -> why)."""
    skipped: dict[str, str] = {}
    rows: list[Row] = []
    for key, transport in TRANSPORTS.items():
        if opts.only is not None and key not in opts.only:
            skipped[key] = "not selected (--only)"
            continue
        why = transport.missing()
        if why is not None:
            skipped[key] = why
            continue
        if "latency" in opts.workloads:
            rows += [Row("latency", key, mode) for mode in transport.latency_modes]
        if "throughput" in opts.workloads:
            rows += [Row("throughput", key, mode) for mode in transport.throughput_modes]
        if "fanout" in opts.workloads and transport.broadcast:
            rows += [Row("fanout", key, mode) for mode in transport.throughput_modes]
    return rows, skipped


def new_run_id() -> str:
    """The id every name the run creates carries."""
    return uuid.uuid4().hex[:8]


def run(opts: Options) -> dict[str, Any]:
    """Runs every row; returns everything the reports need."""
    started = time.time()
    load_before = os.getloadavg()
    machine_before = _machine_cpu()
    rows, skipped = plan(opts)
    env = RunEnv(uid=new_run_id(), workdir=tempfile.mkdtemp(prefix="sps-compare-"))
    runs: list[list[list[dict[str, Any]]]] = [[] for _ in rows]  # row -> attempt -> size
    try:
        for attempt in range(opts.repeat):
            for n, row in enumerate(rows):
                t0 = time.monotonic()
                cells = run_row(row, opts, env)
                runs[n].append(cells)
                bad = [c for c in cells if c["status"] != "ok"]
                note = f"; {len(bad)} failed: {bad[0]['error']}" if bad else ""
                count = f"[{attempt * len(rows) + n + 1}/{opts.repeat * len(rows)}]"
                what = f"{count} {row.workload:<10} {row.label:<40}"
                _log(opts, f"{what} {time.monotonic() - t0:5.1f} s{note}")
    finally:
        with _uninterrupted():
            _cleanup(env)
    results = [_best(list(attempts)) for row_runs in runs for attempts in zip(*row_runs, strict=True)]
    return {
        "meta": machine_info()
        | _sharing(machine_before, time.time() - started)
        | {
            "date": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).strftime(
                "%Y-%m-%d %H:%M UTC"
            ),
            "duration_s": round(time.time() - started, 1),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "options": {
            "sizes": opts.sizes,
            "budget_s": opts.budget,
            "warmup_s": opts.warmup,
            "fanout": opts.fanout,
            "pinned": opts.pin,
            "workloads": list(opts.workloads),
            "repeat": opts.repeat,
            "buffer_depth": {str(s): depth_for(s) for s in opts.sizes},
        },
        "transports": {
            key: {
                "title": t.title,
                "version": None if key in skipped else t.version(),
                "status": skipped.get(key, "ok"),
                "broadcast": t.broadcast,
                "lossy": t.lossy,
                "latency_modes": t.latency_modes,
                "throughput_modes": t.throughput_modes,
                "spin_modes": sorted(t.spin_modes),
                "sender": t.sender_note,
            }
            for key, t in TRANSPORTS.items()
        },
        "results": results,
    }


def _best(attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """Of several runs of one cell, the best (lowest median latency, most delivered per second):
    other work on the machine only ever makes a run worse. The others are kept, summarised."""
    ok = [c for c in attempts if c["status"] == "ok"]
    if not ok:
        return attempts[-1]
    if ok[0]["workload"] == "latency":
        best = min(ok, key=lambda c: float(c["one_way_us"]["median"]))
        summary = [c["one_way_us"]["median"] if c["status"] == "ok" else None for c in attempts]
    else:
        best = max(ok, key=lambda c: float(c["delivered_per_s"]))
        summary = [c["delivered_per_s"] if c["status"] == "ok" else None for c in attempts]
    return best if len(attempts) == 1 else {**best, "attempts": summary}


def _cleanup(env: RunEnv) -> None:
    """Removes what the run's peers may leave behind: iceoryx2's files (its own prefix and root
    directory) and zmq's socket files (in the run's directory)."""
    shutil.rmtree(env.workdir, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir("/dev/shm"):
            if name.startswith(env.iox_prefix):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join("/dev/shm", name))


def _machine_cpu() -> tuple[float, float, float]:
    """CPU-seconds so far: (the whole machine busy, stolen by the hypervisor, ours: this process
    and every child it waited for)."""
    ours = sum(
        r.ru_utime + r.ru_stime
        for r in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return (0.0, 0.0, ours)
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return ((user + nice + system + irq + softirq) / tick, steal / tick, ours)


def _sharing(before: tuple[float, float, float], wall: float) -> dict[str, Any]:
    """How much of the machine others used during the run: its busy CPU time minus ours."""
    after = _machine_cpu()
    ours = after[2] - before[2]
    return {
        "cpu_seconds_available": round(wall * (os.cpu_count() or 1), 1),
        "cpu_seconds_ours": round(ours, 1),
        "cpu_seconds_others": round(max(0.0, after[0] - before[0] - ours), 1),
        "cpu_seconds_stolen": round(after[1] - before[1], 1),
    }


def machine_info() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
