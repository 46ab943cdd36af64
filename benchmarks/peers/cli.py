"""The command line of the comparison (``python benchmarks/compare.py``): runs it and writes
the JSON, the Markdown section and the plots, or redraws the plots from a saved JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import __doc__ as package_doc
from . import harness, plots
from .report import Report, insert_section
from .transports import TRANSPORTS
from .wire import DEFAULT_SIZES, MIN_SIZE

#: The checkout's docs/, where the figures of docs/benchmarks.md come from.
DOCS = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs"))


def parse_size(text: str) -> int:
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    scale = {"k": 1 << 10, "m": 1 << 20}.get(t[-1:], 1)
    value = int(t[:-1] if scale > 1 else t) * scale
    if value < MIN_SIZE:
        raise argparse.ArgumentTypeError(f"sizes start at {MIN_SIZE} bytes (the sequence number needs 8)")
    return value


def write_outputs(data: dict[str, Any], out: str, command: str, note: str | None, plots: bool) -> list[str]:
    os.makedirs(out, exist_ok=True)
    report = Report(data)
    written = []
    if plots:
        written = draw(report, out)
        if not written:
            note = (
                (note + " ") if note else ""
            ) + "(Plots skipped: matplotlib is missing: pip install matplotlib.)"
    json_path = os.path.join(out, "benchmarks-compare.json")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
        f.write("\n")
    md_path = os.path.join(out, "benchmarks.md")
    insert_section(md_path, report.markdown(command, note))
    return [json_path, md_path, *written]


def draw(report: Report, out: str) -> list[str]:
    return plots.write(report, os.path.join(out, "img"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/compare.py", description=(package_doc or "").split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="short cells (0.5 s each)")
    parser.add_argument(
        "--sizes", type=lambda s: [parse_size(x) for x in s.split(",")], help="e.g. 64,4K,64K,1M"
    )
    parser.add_argument(
        "--out",
        default=DOCS,
        help="where benchmarks.md, the JSON and img/ go (default: this checkout's docs/)",
    )
    parser.add_argument("--budget", type=float, help="seconds measured per cell (default 2, quick 0.5)")
    parser.add_argument("--only", help="comma-separated transports: " + ",".join(TRANSPORTS))
    parser.add_argument("--workloads", default="latency,throughput,fanout")
    parser.add_argument("--fanout", type=int, default=4, help="receivers in the fan-out workload")
    parser.add_argument("--repeat", type=int, default=1, help="run everything N times; keep each cell's best")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin two-process cells (default: sender CPU 0, receiver CPU 1)",
    )
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--note", help="a line printed in bold at the top of the markdown")
    parser.add_argument(
        "--replot",
        metavar="JSON",
        help="run nothing: redraw OUT/img/compare-*.png from a saved benchmarks-compare.json",
    )
    args = parser.parse_args(argv)
    out = os.path.normpath(args.out)
    if args.replot is not None:
        with open(args.replot, encoding="utf-8") as f:
            written = draw(Report(json.load(f)), out)
        if not written:
            parser.error("--replot needs matplotlib: pip install matplotlib")
        for path in written:
            print(f"wrote {path}")
        return 0
    only = None if args.only is None else tuple(k.strip() for k in args.only.split(","))
    unknown = [k for k in only or () if k not in TRANSPORTS]
    if unknown:
        parser.error(f"unknown transports {unknown}; known: {list(TRANSPORTS)}")
    workloads = tuple(w.strip() for w in args.workloads.split(","))
    if set(workloads) - {"latency", "throughput", "fanout"}:
        parser.error("workloads are latency, throughput, fanout")
    budget = args.budget if args.budget is not None else (0.5 if args.quick else 2.0)
    opts = harness.Options(
        sizes=args.sizes or list(DEFAULT_SIZES),
        budget=budget,
        warmup=min(0.2, max(0.02, budget / 5)),
        fanout=args.fanout,
        pin=not args.no_pin and len(os.sched_getaffinity(0)) >= 2,
        workloads=workloads,
        only=only,
        repeat=max(1, args.repeat),
    )
    command = " ".join(["python benchmarks/compare.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        data = harness.run(opts)
    except KeyboardInterrupt:
        print("interrupted: nothing written", file=sys.stderr)
        return 130
    for path in write_outputs(data, out, command, args.note, not args.no_plots):
        print(f"wrote {path}")
    failed = [c for c in data["results"] if c["status"] != "ok"]
    return 1 if failed else 0
