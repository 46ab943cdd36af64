"""What bounds the figures on this machine, measured without the library: C programs for the
cache-line hand-off between two processes, a blocking wake-up, what naming a datagram's
receiver by its path costs, and a 1 MiB copy into rings of several sizes; the cost of a call
from Python (cffi against the bare CPython API); and what the comparison's receiving loop costs
per message with no transport at all.

    python benchmarks/floors.py

Needs gcc (and cffi, which the library itself needs). Prints a markdown table."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tempfile
import time
import timeit
from pathlib import Path

HERE = Path(__file__).parent / "floors"
CFLAGS = ["-std=gnu11", "-O2", "-Wall", "-Wextra"]


def run_c(name: str, build: Path) -> list[list[str]]:
    exe = build / name
    subprocess.run(["gcc", *CFLAGS, "-I", str(HERE), str(HERE / f"{name}.c"), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def call_costs(build: Path) -> dict[str, float]:
    """ns per call of a one-argument function that does nothing, best of 5 runs of 2 M calls."""
    import cffi

    ext = build / ("floor_calls" + sysconfig.get_config_var("EXT_SUFFIX"))
    include = sysconfig.get_paths()["include"]
    subprocess.run(
        ["gcc", *CFLAGS, "-shared", "-fPIC", "-I", include, str(HERE / "calls.c"), "-o", str(ext)], check=True
    )
    ffi = cffi.FFI()
    ffi.cdef("int floor_nothing(void *);")
    nothing = "static volatile long sink; int floor_nothing(void *p) { (void)p; return (int)sink++; }"
    ffi.set_source("floor_cffi", nothing)
    ffi.compile(tmpdir=str(build), verbose=False)
    sys.path.insert(0, str(build))
    import floor_calls  # type: ignore[import-not-found]
    import floor_cffi  # type: ignore[import-not-found]

    def per_call(f: object, arg: object) -> float:
        timer = timeit.Timer("f(a)", globals={"f": f, "a": arg})
        return min(timer.repeat(5, 2_000_000)) / 2_000_000 * 1e9

    return {
        "CPython API, GIL kept": per_call(floor_calls.keep_gil, None),
        "CPython API, GIL released and re-taken": per_call(floor_calls.release_gil, None),
        "cffi (releases the GIL, saves errno)": per_call(floor_cffi.lib.floor_nothing, floor_cffi.ffi.NULL),
    }


def touch_loop_ns(batch_size: int = 256, batches: int = 4000) -> float:
    """ns per 64-byte message of the comparison's batch receiving loop (benchmarks/peers: the
    number unpacked, length and order checked), over ready-made lists of bytes: what any
    transport's batch throughput is bounded by, however fast it delivers."""
    from peers import roles, wire  # benchmarks/ is on sys.path when this file runs

    ready = [
        [bytes(wire.payload_for(b * batch_size + i, 64)) for i in range(batch_size)] for b in range(batches)
    ]
    ready.append([wire.END_MSG])

    class Ready:
        def __init__(self) -> None:
            self.recv_batch = iter(ready).__next__

    best = float("inf")
    for _ in range(5):
        t = time.perf_counter_ns()
        tally = roles.receive_batches(Ready(), 64, t)  # type: ignore[arg-type]
        best = min(best, time.perf_counter_ns() - t)
        assert tally.count == batch_size * batches and tally.out_of_order == 0
    return best / (batch_size * batches)


def copy_out_us(slots: int) -> float:
    """µs to copy 1 MiB out of a written mapping of *slots* MiB into new bytes (what a copying
    receiver of 1 MiB messages does), cycling through the slots; best of 5 runs of 256."""
    import mmap

    with mmap.mmap(-1, slots << 20) as mapping:
        view = memoryview(mapping)
        view[:] = b"\x01" * (slots << 20)
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter_ns()
            for i in range(256):
                at = (i % slots) << 20
                view[at : at + (1 << 20)].tobytes()
            best = min(best, (time.perf_counter_ns() - t) / 256 / 1e3)
        view.release()
    return best


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        build = Path(tmp)
        print(f"CPUs: {len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.2f}\n")
        print("| floor | one way, median | p99 |\n|---|---|---|")
        for name in ("handoff", "wakeup"):
            for what, median, p99 in run_c(name, build):
                print(f"| {what} | {float(median):.2f} µs | {float(p99):.2f} µs |")
        print("\n| a wake-up datagram sent and taken back, one process | ns |\n|---|---|")
        for what, ns in run_c("sendpath", build):
            print(f"| {what} | {ns} |")
        print("\n| 1 MiB copy into a ring of | memcpy | streaming stores |\n|---|---|---|")
        copies: dict[str, dict[str, str]] = {}
        for how, slots, us in run_c("copy1m", build):
            copies.setdefault(slots, {})[how] = us
        for slots, by in copies.items():
            print(f"| {slots} slots of 1 MiB | {by['memcpy']} µs | {by['streaming']} µs |")
        print("\n| 1 MiB copied out into new bytes, cycling through a mapping of | µs |\n|---|---|")
        for slots in (1, 8, 64):
            print(f"| {slots} MiB | {copy_out_us(slots):.0f} |")
        print("\n| an empty one-argument call from Python | ns |\n|---|---|")
        for what, ns in call_costs(build).items():
            print(f"| {what} | {ns:.0f} |")
        ns = touch_loop_ns()
        print(f"\nThe comparison's batch receiving loop alone: {ns:.0f} ns per 64-byte message")
        print(f"(so at most {1e3 / ns:.2f} M messages/s, whatever delivers them)")


if __name__ == "__main__":
    main()
