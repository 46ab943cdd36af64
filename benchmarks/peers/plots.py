"""The two PNGs of the report (img/compare-latency.png, img/compare-throughput.png), drawn from
the same data as the tables.

Every transport has its own colour and its own marker, and a receive path its own line style,
so that each line can be told from the others in colour and in grey; the legend stands outside
the axes, and the title names the machine and the date of the run.
"""

from __future__ import annotations

import os
from typing import Any

from .report import Report, fmt_size

# Ten colours that stay apart (matplotlib's tab10), and markers that differ in shape.
_COLOURS = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"]
_MARKERS = ["o", "s", "^", "v", "D", "P", "X", "*", "h", "<"]
_STYLES = ["-", "--", ":", "-."]


def _look(report: Report, transport: str, mode: str, linestyle: str) -> dict[str, Any]:
    """One colour and one marker per transport; shmpubsub drawn thicker."""
    index = list(report.transports).index(transport)
    return {
        "color": _COLOURS[index % len(_COLOURS)],
        "marker": _MARKERS[index % len(_MARKERS)],
        "markersize": 9 if _MARKERS[index % len(_MARKERS)] == "*" else 6,
        "linestyle": linestyle,
        "linewidth": 2.5 if transport == "shmpubsub" else 1.4,
    }


def _mode_style(report: Report, transport: str, mode: str) -> str:
    """Throughput: a line style per receive path of the transport, in the order it lists them."""
    info = report.transports[transport]
    modes = list(info["throughput_modes"])
    modes += [m for m in info["latency_modes"] if m not in modes]
    return _STYLES[modes.index(mode) % len(_STYLES)]


def _subtitle(report: Report) -> str:
    meta = report.data["meta"]
    return (
        f"run of {meta['date']}; {meta['nproc']} CPUs, {meta['cpu_model']}, Linux {meta['kernel']}, "
        f"Python {meta['python']}"
    )


def _series(
    report: Report, workload: str, transport: str, mode: str
) -> tuple[list[int], list[dict[str, Any]]]:
    xs, cells = [], []
    for size in report.sizes:
        cell = report.cells.get((workload, transport, mode, size))
        if cell is not None and cell["status"] == "ok":
            xs.append(size)
            cells.append(cell)
    return xs, cells


def _size_axis(ax: Any, report: Report) -> None:
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(report.sizes, [fmt_size(s) for s in report.sizes])
    ax.set_xlabel("message size")
    ax.grid(True, which="both", alpha=0.3)


def write(report: Report, img_dir: str) -> list[str]:
    """Writes the two PNGs; returns their paths ([] if matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    os.makedirs(img_dir, exist_ok=True)
    return [_latency(report, plt, img_dir), _throughput(report, plt, img_dir)]


def _latency(report: Report, plt: Any, img_dir: str) -> str:
    fig, ax = plt.subplots(figsize=(12, 6.5))
    for transport, mode in report.rows("latency"):
        xs, cells = _series(report, "latency", transport, mode)
        if xs:
            kind = "spins" if report.is_spin(transport, mode) else "blocks"
            style = "-" if kind == "spins" else "--"
            ax.plot(
                xs,
                [c["one_way_us"]["median"] for c in cells],
                label=f"{report.label(transport, mode)} ({kind})",
                **_look(report, transport, mode, style),
            )
    _size_axis(ax, report)
    ax.set_ylabel("one-way latency, median (µs)")
    ax.set_title(f"One-way latency (solid: spinning, dashed: blocking)\n{_subtitle(report)}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    path = os.path.join(img_dir, "compare-latency.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _throughput(report: Report, plt: Any, img_dir: str) -> str:
    """Messages and bytes per second, 1→1 above and fan-out (its slowest receiver) below, each
    panel with its own lines: one legend for all four, beside them."""
    fanout = report.data["options"]["fanout"]
    panels = [("throughput", "1→1")]
    if report.rows("fanout"):
        panels.append(("fanout", f"fan-out 1→{fanout}, slowest receiver"))
    fig, axes = plt.subplots(len(panels), 2, figsize=(14, 5.2 * len(panels) + 0.8), squeeze=False)
    labelled: dict[str, Any] = {}
    for (workload, what), (left, right) in zip(panels, axes, strict=True):
        for transport, mode in report.rows(workload):
            xs, cells = _series(report, workload, transport, mode)
            if not xs:
                continue
            look = _look(report, transport, mode, _mode_style(report, transport, mode))
            label = report.label(transport, mode)
            (line,) = left.plot(xs, [c["delivered_per_s"] for c in cells], label=label, **look)
            right.plot(xs, [c["delivered_per_s"] * s / 1e9 for c, s in zip(cells, xs, strict=True)], **look)
            labelled.setdefault(label, line)
        for ax, ylabel in ((left, "messages delivered per second"), (right, "payload delivered, GB/s")):
            _size_axis(ax, report)
            ax.set_ylabel(ylabel)
            ax.set_title(what, fontsize=10)
    fig.suptitle(f"Throughput delivered to Python receivers\n{_subtitle(report)}", fontsize=10)
    fig.tight_layout(rect=(0.0, 0.0, 0.8, 1.0))
    fig.legend(
        list(labelled.values()),
        list(labelled),
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(0.805, 0.93),
        borderaxespad=0.0,
    )
    path = os.path.join(img_dir, "compare-throughput.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
