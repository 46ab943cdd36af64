"""The peer comparison (benchmarks/compare.py, its harness the package benchmarks/peers/) works
end to end: its shmpubsub adapter and an always-available peer (multiprocessing.Pipe) over a
tiny workload, and a peer that cannot be imported is reported as missing. Needs none of the
[bench] extra."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.path.isdir("/dev/shm"), reason="needs Linux and /dev/shm"
)


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def compare() -> SimpleNamespace:
    """The harness, imported from benchmarks/ (it is not part of the installed package).
    benchmarks/ stays on sys.path: the spawned children import the harness by name."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    cli = importlib.import_module("peers.cli")
    harness = importlib.import_module("peers.harness")
    report = importlib.import_module("peers.report")
    return SimpleNamespace(
        TRANSPORTS=cli.TRANSPORTS,
        Options=harness.Options,
        plan=harness.plan,
        main=cli.main,
        insert_section=report.insert_section,
    )


def test_missing_peer_is_reported_not_dropped(
    compare: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = compare.TRANSPORTS["faster-fifo"]
    monkeypatch.setattr(transport, "module", "no_such_module_for_compare_test")
    rows, skipped = compare.plan(compare.Options(only=None))
    assert skipped["faster-fifo"].startswith("missing (pip install faster-fifo)")
    assert not [r for r in rows if r.transport == "faster-fifo"]
    assert [r for r in rows if r.transport == "mp-pipe"]


@pytest.mark.creates_topics("cmp-*")
def test_harness_shmpubsub_and_pipe(compare: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "docs"
    out.mkdir()
    (out / "benchmarks.md").write_text("# Benchmarks\n\nhand-written text stays\n")
    argv = ["--only", "shmpubsub,mp-pipe", "--sizes", "64", "--budget", "0.05", "--fanout", "2"]
    rc = compare.main([*argv, "--out", str(out), "--no-plots"])
    data = json.loads((out / "benchmarks-compare.json").read_text())
    failed = [c for c in data["results"] if c["status"] != "ok"]
    assert rc == 0 and not failed, failed

    cells = {(c["workload"], c["transport"], c["mode"]): c for c in data["results"]}
    assert set(cells) == {
        ("latency", "shmpubsub", "spin"),
        ("latency", "shmpubsub", "block"),
        ("latency", "mp-pipe", "block"),
        *(("throughput", "shmpubsub", mode) for mode in ("default", "batch", "view")),
        ("throughput", "mp-pipe", "block"),
        # A Pipe does not broadcast: no fan-out row.
        *(("fanout", "shmpubsub", mode) for mode in ("default", "batch", "view")),
    }
    for key, cell in cells.items():
        assert cell["verified"], key
        if key[0] == "latency":
            assert cell["round_trips"] > 0 and cell["mismatched"] == 0
            assert 0 < cell["one_way_us"]["median"] <= cell["one_way_us"]["p99"]
        else:
            assert cell["sent"] > 0
            assert len(cell["receivers"]) == (2 if key[0] == "fanout" else 1)
            for r in cell["receivers"]:
                assert r["delivered"] > 0 and r["lost"] >= 0
                assert r["out_of_order"] == 0 and r["bad_length"] == 0
    assert cells["throughput", "mp-pipe", "block"]["lost"] == 0  # lossless: nothing may go missing
    assert data["transports"]["iceoryx2"]["status"] == "not selected (--only)"

    text = (out / "benchmarks.md").read_text()
    assert text.startswith("# Benchmarks\n\nhand-written text stays\n")
    assert text.count("<!-- compare:begin -->") == 1 and text.count("<!-- compare:end -->") == 1
    assert "| shmpubsub | spin (spins) |" in text
    assert "point-to-point" in text  # the Pipe's fan-out is N/A, said so

    # A second run replaces the section instead of appending another.
    compare.insert_section(str(out / "benchmarks.md"), "replaced\n")
    text = (out / "benchmarks.md").read_text()
    assert text.count("<!-- compare:begin -->") == 1 and "replaced\n<!-- compare:end -->" in text


def test_entry_point_runs_from_anywhere(tmp_path: Path) -> None:
    """`python benchmarks/compare.py` finds its harness next to it, whatever the directory."""
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "compare.py"), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: python benchmarks/compare.py" in result.stdout
    assert "--quick" in result.stdout and "--replot" in result.stdout


def test_replot_redraws_the_plots_from_a_saved_run(compare: SimpleNamespace, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    saved = BENCHMARKS.parent / "docs" / "benchmarks-compare.json"
    assert compare.main(["--replot", str(saved), "--out", str(tmp_path)]) == 0
    for name in ("compare-latency.png", "compare-throughput.png"):
        assert (tmp_path / "img" / name).read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img"]  # the plots only


# What an interrupted run left: the run's shmpubsub objects (its topics are named cmp-RUNID-...)
# and the wake-up sockets in the run's own socket directory.
_RUN = """
import sys
sys.path.insert(0, {benchmarks!r})
from peers import cli, harness
harness.new_run_id = lambda: {run_id!r}
sys.exit(cli.main(sys.argv[1:]))
"""


def _left_by(run_id: str, runtime: str) -> list[str]:
    left = [
        os.path.join("/dev/shm", n)
        for n in os.listdir("/dev/shm")
        if n.startswith(f"shmpubsub.cmp-{run_id}-")
    ]
    return left + [os.path.join(runtime, n) for n in os.listdir(runtime)]


def test_interrupted_run_leaves_nothing(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the process group) at any moment: while the children start, while they
    open their sides, while they measure, while they close. Every run's shmpubsub objects and
    wake-up sockets are gone once the harness has exited."""
    runtime = tempfile.mkdtemp(prefix="sps-cmp-")  # short: socket paths must fit sockaddr_un
    argv = ["--only", "shmpubsub,mp-pipe", "--sizes", "64,4K", "--budget", "0.1", "--fanout", "2"]
    argv += ["--out", str(tmp_path), "--no-plots"]
    # None: a fixed moment after the start (the children are starting); a number: that long
    # after the run's first shared-memory object appeared.
    moments: list[float | None] = [None, 0.0, 0.01, 0.03, 0.08, 0.15, 0.3, 0.6, 1.0, 1.6]
    interrupted = 0
    try:
        for n, moment in enumerate(moments):
            run_id = f"t{uuid.uuid4().hex[:7]}"
            code = _RUN.format(benchmarks=str(BENCHMARKS), run_id=run_id)
            env = {**os.environ, "SHMPUBSUB_RUNTIME_DIR": runtime}
            log = tmp_path / f"run{n}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-c", code, *argv],
                    stdout=out,
                    stderr=out,
                    env=env,
                    start_new_session=True,
                )
                try:
                    if moment is None:
                        time.sleep(0.3)
                    else:
                        deadline = time.monotonic() + 15
                        while not _left_by(run_id, runtime) and proc.poll() is None:
                            assert time.monotonic() < deadline, "the run created nothing in 15 s"
                            time.sleep(0.002)
                        time.sleep(moment)
                    if proc.poll() is None:
                        interrupted += 1
                        os.killpg(proc.pid, signal.SIGINT)
                    proc.wait(30)
                finally:
                    if proc.poll() is None:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
            left = _left_by(run_id, runtime)
            assert not left, f"interrupted at {moment}: left {left}\n{log.read_text()[-3000:]}"
        assert interrupted >= len(moments) - 1, "the runs ended before they could be interrupted"
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
