"""The report: Markdown tables (a section of benchmarks.md between markers) and the JSON, from
what the harness returns."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

TIMES = "\u00d7"  # the multiplication sign, for ratios
BEGIN_MARK = "<!-- compare:begin -->"
END_MARK = "<!-- compare:end -->"


def fmt_size(size: int) -> str:
    if size >= 1 << 20 and size % (1 << 20) == 0:
        return f"{size >> 20} MiB"
    if size >= 1024 and size % 1024 == 0:
        return f"{size >> 10} KiB"
    return f"{size} B"


def fmt_us(us: float) -> str:
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.1f} µs" if us < 100 else f"{us:.0f} µs"


def fmt_rate(per_s: float) -> str:
    if per_s >= 1e6:
        return f"{per_s / 1e6:.2f} M/s"
    if per_s >= 1e3:
        return f"{per_s / 1e3:.1f} k/s"
    return f"{per_s:.0f}/s"


def fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return ""
    return f" ({TIMES}{ratio:.2f})" if ratio < 10 else f" ({TIMES}{ratio:.0f})"


class Report:
    """Turns run() output into markdown (and plots)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.sizes: list[int] = data["options"]["sizes"]
        self.transports: dict[str, Any] = data["transports"]
        self.cells: dict[tuple[str, str, str, int], dict[str, Any]] = {
            (c["workload"], c["transport"], c["mode"], c["size"]): c for c in data["results"]
        }

    def rows(self, workload: str) -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        for c in self.data["results"]:
            if c["workload"] == workload and (c["transport"], c["mode"]) not in seen:
                seen.append((c["transport"], c["mode"]))
        return seen

    def label(self, transport: str, mode: str) -> str:
        return f"{self.transports[transport]['title']} | {mode}"

    def is_spin(self, transport: str, mode: str) -> bool:
        return mode in self.transports[transport]["spin_modes"]

    def reference(self, workload: str, transport: str, mode: str, size: int) -> dict[str, Any] | None:
        """The shmpubsub cell a peer's cell is compared with: same workload and size; for
        latency, the same kind of path (spinning or blocking)."""
        if workload == "latency":
            ref_mode = "spin" if self.is_spin(transport, mode) else "block"
        else:
            ref_mode = "default"
        cell = self.cells.get((workload, "shmpubsub", ref_mode, size))
        return cell if cell is not None and cell["status"] == "ok" else None

    def latency_ratio(self, cell: dict[str, Any], key: str = "median") -> float | None:
        ref = self.reference("latency", cell["transport"], cell["mode"], cell["size"])
        if ref is None or cell["status"] != "ok":
            return None
        return float(cell["one_way_us"][key]) / float(ref["one_way_us"][key])

    def rate_ratio(self, cell: dict[str, Any]) -> float | None:
        ref = self.reference(cell["workload"], cell["transport"], cell["mode"], cell["size"])
        if ref is None or cell["status"] != "ok" or ref["delivered_per_s"] == 0:
            return None
        return float(cell["delivered_per_s"]) / float(ref["delivered_per_s"])

    @staticmethod
    def failed(cell: dict[str, Any] | None) -> str | None:
        if cell is None:
            return "not run"
        if cell["status"] != "ok":
            return f"error: {cell['error'][:80]}"
        return None

    # -- sections --

    def markdown(self, command: str, note: str | None) -> str:
        meta, opts = self.data["meta"], self.data["options"]
        out: list[str] = []
        w = out.append
        w("## Side by side with the alternatives")
        w("")
        w(f"Written by `{command}` on {meta['date']} (the run took {meta['duration_s']:.0f} s).")
        if note:
            w("")
            w(f"**{note}**")
        w("")
        w(
            f"- Machine: {meta['nproc']} CPUs ({meta['usable_cpus']} usable), {meta['cpu_model']}, "
            f"Linux {meta['kernel']}, Python {meta['python']}. Load average (1/5/15 min) "
            f"{'/'.join(map(str, meta['loadavg_before']))} before the run and "
            f"{'/'.join(map(str, meta['loadavg_after']))} after it. Of the "
            f"{meta['cpu_seconds_available']:.0f} CPU-seconds the machine had during the run, the "
            f"benchmark's processes used {meta['cpu_seconds_ours']:.0f}, other processes "
            f"{meta['cpu_seconds_others']:.0f}, and the hypervisor stole {meta['cpu_seconds_stolen']:.0f}."
        )
        versions = ", ".join(
            f"{t['title']} {t['version']}"
            for t in self.transports.values()
            if t["status"] == "ok" and t["version"] is not None
        )
        w(f"- Versions: {versions}.")
        w(
            "- Cores: every side runs in its own process (multiprocessing 'spawn'); the harness process only "
            "waits. "
            + (
                "Two-process cells are pinned with `os.sched_setaffinity`, sender (ping) to CPU 0 and "
                "receiver (echo) to CPU 1; fan-out cells are not pinned. "
                if opts["pinned"]
                else "Nothing is pinned: the kernel places the processes. "
            )
            + "Spinning/polling latency cells: both processes busy-poll, one per core. Blocking cells: both "
            "sleep whenever they wait. Throughput 1→1: the publisher and the receiver have a core each, "
            "busy as far as the transport lets them (the CPU columns say how busy: process CPU time over "
            "wall time, 100 % = one core). "
            f"Fan-out 1→{opts['fanout']}: {opts['fanout'] + 1} processes share the {meta['nproc']} cores, "
            "so a receiver that spins takes time from the publisher and from the other receivers. Any other "
            "process on the machine (see the CPU-seconds above) takes time from a pinned process, which "
            "cannot move to the other core."
        )
        w(
            f"- Each cell is measured for {opts['budget_s']} s after {opts['warmup_s']} s of warm-up "
            "(latency) or until the publisher's time budget runs out (throughput)"
            + (
                f"; everything ran {opts['repeat']} times, and each cell shows its best run (lowest median "
                "latency, most delivered per second; all runs are in the JSON). "
                if opts.get("repeat", 1) > 1
                else ". "
            )
            + "Every message carries "
            "its sequence number in its first 8 bytes; receivers call `len()` on every message, read that "
            "number, and compare the last message byte for byte with what was sent (*verified*). Where a "
            "transport has a buffer size to set, it gets the same number of messages per receiver: "
            + ", ".join(f"{fmt_size(int(s))}: {d}" for s, d in opts["buffer_depth"].items())
            + " (shmpubsub slots, iceoryx2 subscriber buffer, zmq high-water marks, Queue `maxsize`, "
            "faster-fifo bytes); pipes and sockets have the kernel's buffers."
        )
        w(
            "- Ratios in parentheses are the peer's figure divided by shmpubsub's for the same size and "
            "workload (latency: its spinning path against spinning peers, its blocking path against "
            "blocking ones). Latency: above 1 means slower than shmpubsub. Throughput: below 1 means fewer "
            "messages delivered per second than shmpubsub."
        )
        w("")
        self._latency_64(w)
        self._latency_sizes(w)
        self._throughput(w)
        self._fanout(w)
        self._notes(w)
        return "\n".join(out).rstrip() + "\n"

    def _latency_64(self, w: Callable[[str], None]) -> None:
        rows = self.rows("latency")
        if not rows:
            return
        size = self.sizes[0]
        w(f"### One-way latency, {fmt_size(size)}")
        w("")
        w("Ping-pong through two channels between two processes; one-way = round trip / 2.")
        w("")
        w("| transport | receive path | median | p99 | median vs shmpubsub | CPU ping / echo |")
        w("|---|---|---|---|---|---|")
        for transport, mode in rows:
            cell = self.cells.get(("latency", transport, mode, size))
            kind = "spins" if self.is_spin(transport, mode) else "blocks"
            name = f"{self.transports[transport]['title']} | {mode} ({kind})"
            why = self.failed(cell)
            if why is not None or cell is None:
                w(f"| {name} | {why} | | | | |")
                continue
            lat = cell["one_way_us"]
            ratio = self.latency_ratio(cell)
            cpu = cell["cpu_util"]
            flag = "" if cell["verified"] and not cell["mismatched"] else " ⚠ unverified"
            versus = "" if ratio is None else f"{TIMES}{ratio:.2f}"
            w(
                f"| {name} | {fmt_us(lat['median'])}{flag} | {fmt_us(lat['p99'])} | {versus} | "
                f"{_pct(cpu['ping'])} / {_pct(cpu['echo'])} |"
            )
        w("")

    def _latency_sizes(self, w: Callable[[str], None]) -> None:
        rows = self.rows("latency")
        if not rows or len(self.sizes) < 2:
            return
        w("### One-way latency by message size (median; p99 in the JSON)")
        w("")
        w("| transport | path | " + " | ".join(fmt_size(s) for s in self.sizes) + " |")
        w("|---|---|" + "---|" * len(self.sizes))
        for transport, mode in rows:
            line = []
            for size in self.sizes:
                cell = self.cells.get(("latency", transport, mode, size))
                why = self.failed(cell)
                if why is not None or cell is None:
                    line.append(why or "")
                else:
                    line.append(fmt_us(cell["one_way_us"]["median"]) + fmt_ratio(self.latency_ratio(cell)))
            w(f"| {self.label(transport, mode)} | " + " | ".join(line) + " |")
        w("")
        w("![one-way latency against message size](img/compare-latency.png)")
        w("")

    def _throughput(self, w: Callable[[str], None]) -> None:
        rows = self.rows("throughput")
        if not rows:
            return
        w("### Throughput 1→1: messages delivered per second")
        w("")
        w(
            "One publisher sends for the time budget as fast as the transport lets it; one receiver takes "
            "every message it can get. Delivered per second = messages received ÷ (last one received - "
            "first one sent). Lossy transports never make the publisher wait: what the receiver cannot keep "
            "up with is lost, and shown below."
        )
        w("")
        w("| transport | receive path | " + " | ".join(fmt_size(s) for s in self.sizes) + " |")
        w("|---|---|" + "---|" * len(self.sizes))
        for transport, mode in rows:
            line = []
            for size in self.sizes:
                cell = self.cells.get(("throughput", transport, mode, size))
                why = self.failed(cell)
                if why is not None or cell is None:
                    line.append(why or "")
                    continue
                flag = "" if cell["verified"] else " ⚠ unverified"
                line.append(fmt_rate(cell["delivered_per_s"]) + fmt_ratio(self.rate_ratio(cell)) + flag)
            w(f"| {self.label(transport, mode)} | " + " | ".join(line) + " |")
        w("")
        w(
            "Sent by the publisher per second; lost (share of what was sent); CPU time of the publisher / "
            "of the receiver, as a share of one core:"
        )
        w("")
        w("| transport | receive path | " + " | ".join(fmt_size(s) for s in self.sizes) + " |")
        w("|---|---|" + "---|" * len(self.sizes))
        for transport, mode in rows:
            line = []
            for size in self.sizes:
                cell = self.cells.get(("throughput", transport, mode, size))
                if cell is None or cell["status"] != "ok":
                    line.append("")
                    continue
                cpu = f"{_pct(cell['publisher_cpu_util'])} / {_pct(cell['receivers'][0]['cpu_util'])}"
                line.append(f"{fmt_rate(cell['sent_per_s'])}, {_loss(cell['lost'], cell['sent'])}, CPU {cpu}")
            w(f"| {self.label(transport, mode)} | " + " | ".join(line) + " |")
        w("")
        w("![throughput against message size](img/compare-throughput.png)")
        w("")

    def _fanout(self, w: Callable[[str], None]) -> None:
        if "fanout" not in self.data["options"]["workloads"]:
            return
        n = self.data["options"]["fanout"]
        rows = self.rows("fanout")
        w(f"### Fan-out 1→{n}")
        w("")
        w(
            f"One publisher, {n} receivers, each in its own process ({n + 1} processes on "
            f"{self.data['meta']['nproc']} cores). Per "
            "receiver: messages delivered per second (slowest to fastest) and the most any receiver lost. "
            "The ratio compares the slowest receiver with shmpubsub's slowest. With more processes "
            "than cores, the publisher's wall-clock rate falls with the CPU time the receivers take "
            "from it; *per CPU-second* (messages sent per second of the publisher's own CPU time) "
            "shows what the receivers cost it otherwise, against the same in the 1→1 run."
        )
        w("")
        w(
            "| transport | receive path | size | publisher sent | per CPU-second (vs 1→1) "
            "| delivered per receiver | most lost |"
        )
        w("|---|---|---|---|---|---|---|")
        for transport, mode in rows:
            for size in self.sizes:
                cell = self.cells.get(("fanout", transport, mode, size))
                why = self.failed(cell)
                if why is not None or cell is None:
                    w(f"| {self.label(transport, mode)} | {fmt_size(size)} | {why} | | | |")
                    continue
                rates = [r["delivered_per_s"] for r in cell["receivers"]]
                flag = "" if cell["verified"] else " ⚠ unverified"
                per_cpu = _per_cpu_second(cell)
                alone = _per_cpu_second(self.cells.get(("throughput", transport, mode, size)))
                versus = f" ({_pct(per_cpu / alone)})" if per_cpu and alone else ""
                w(
                    f"| {self.label(transport, mode)} | {fmt_size(size)} | {fmt_rate(cell['sent_per_s'])} "
                    f"(CPU {_pct(cell['publisher_cpu_util'])}) | "
                    f"{fmt_rate(per_cpu) if per_cpu else 'n/a'}{versus} | "
                    f"{fmt_rate(min(rates))} to {fmt_rate(max(rates))}"
                    f"{fmt_ratio(self.rate_ratio(cell))}{flag} | {_loss(cell['lost'], cell['sent'])} |"
                )
        for t in self.transports.values():
            if t["status"] == "ok" and not t["broadcast"]:
                no_fanout = "point-to-point: one message, one receiver (no broadcast)"
                w(f"| {t['title']} | N/A | | {no_fanout} | | | |")
        w("")

    def _notes(self, w: Callable[[str], None]) -> None:
        w("### How each transport is driven")
        w("")
        for key, t in self.transports.items():
            if t["status"] != "ok":
                continue
            paths = "; ".join(f"*{m}*: {d}" for m, d in (t["latency_modes"] | t["throughput_modes"]).items())
            w(f"- **{t['title']}** ({key}): sends with {t['sender']}. Receive paths: {paths}.")
        w("")
        missing = {k: t for k, t in self.transports.items() if t["status"] != "ok"}
        failed = [c for c in self.data["results"] if c["status"] != "ok"]
        if missing or failed:
            w("### Not measured")
            w("")
            for key, t in missing.items():
                w(f"- **{t['title']}** ({key}): {t['status']}")
            for c in failed:
                where = f"{c['workload']} {self.label(c['transport'], c['mode'])} {fmt_size(c['size'])}"
                w(f"- {where}: {c['error']}")
            w("")


def _per_cpu_second(cell: dict[str, Any] | None) -> float | None:
    """Messages the publisher sent per second of its own CPU time."""
    if cell is None or cell.get("status") != "ok" or not cell.get("publisher_cpu_util"):
        return None
    return float(cell["sent_per_s"]) / float(cell["publisher_cpu_util"])


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.0f} %"


def _loss(lost: int, sent: int) -> str:
    if lost == 0:
        return "none lost"
    return f"{100 * lost / sent:.1f} % lost" if sent else f"{lost} lost"


def insert_section(path: str, section: str) -> None:
    """Replaces what is between the markers in *path* (appending the markers if absent)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = "# Benchmarks\n"
    block = f"{BEGIN_MARK}\n{section}{END_MARK}"
    begin, end = text.find(BEGIN_MARK), text.find(END_MARK)
    if begin != -1 and end > begin:
        text = text[:begin] + block + text[end + len(END_MARK) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
