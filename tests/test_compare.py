"""The peer comparison (shmpubsub.bench: `shmpubsub bench`, benchmarks/compare.py) works end to
end: its shmpubsub adapter and an always-available peer
(multiprocessing.Pipe) over a tiny workload, and a peer that cannot be imported is reported as
missing. Needs none of the [bench] extra."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.path.isdir("/dev/shm"), reason="needs Linux and /dev/shm"
)


@pytest.fixture(scope="module")
def compare() -> ModuleType:
    return importlib.import_module("shmpubsub.bench")


def test_missing_peer_is_reported_not_dropped(compare: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    transport = compare.TRANSPORTS["faster-fifo"]
    monkeypatch.setattr(transport, "module", "no_such_module_for_compare_test")
    rows, skipped = compare.plan(compare.Options(only=None))
    assert skipped["faster-fifo"].startswith("missing (pip install faster-fifo)")
    assert not [r for r in rows if r.transport == "faster-fifo"]
    assert [r for r in rows if r.transport == "mp-pipe"]


@pytest.mark.creates_topics("cmp-*")
def test_harness_shmpubsub_and_pipe(compare: ModuleType, tmp_path: Path) -> None:
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
