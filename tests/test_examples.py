"""The examples run with one command each, finish cleanly and print what they promise."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, f"{script} exited with {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.mark.creates_topics("frames-*")
@pytest.mark.parametrize("mode", [[], ["--copy"]], ids=["view", "copy"])
def test_frames(mode: list[str]) -> None:
    stdout = run("frames.py", "--frames", "30", "--workers", "2", "--fps", "100", *mode)
    assert "published 30 frames of 480x640x3 uint8" in stdout
    workers = re.findall(r"worker (\d): received (\d+), lost (\d+) .* bad (\d+)", stdout)
    assert [w[0] for w in workers] == ["0", "1"], stdout
    for _, received, lost, bad in workers:
        assert int(received) + int(lost) == 30, stdout  # every frame received or counted lost
        assert int(received) > 0 and bad == "0", stdout


@pytest.mark.creates_topics("state-board-*")
def test_state_board() -> None:
    stdout = run("state_board.py", "--seconds", "0.5", "--rate", "40", "--readers", "2")
    assert "board: published 20 states (last tick 19)" in stdout
    for reader in ("0", "1"):
        assert re.search(rf"^reader {reader}: tick +\d+ +temperature", stdout, re.M), stdout
        # latest() after the publisher closed still shows the newest state: the last one
        assert re.search(rf"^reader {reader}: publisher closed after \d+ looks; final tick 19$", stdout, re.M)
