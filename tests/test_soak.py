"""The crash soak (tests/soak.py), a few rounds of it, and its checker fed doctored records."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import soak

SOAK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "soak.py")


def test_a_few_rounds_of_the_soak_pass_and_cover_every_kill() -> None:
    rounds = len(soak.EVENTS)  # one round per kind of kill, at least
    run = subprocess.run(
        [sys.executable, SOAK, "--rounds", str(rounds), "--seed", "6", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    kills = dict(re.findall(r"(\w+-[\w-]+) (\d+)", run.stdout.split("kills:")[1].splitlines()[0]))
    assert set(kills) == set(soak.EVENTS) and all(int(n) > 0 for n in kills.values()), run.stdout
    assert "corrupt payloads delivered: 0;" in run.stdout
    assert f"rounds: {rounds} in" in run.stdout and ", 0 with violations" in run.stdout


# -- the checker -------------------------------------------------------------------------------------

EPOCH, DEAD = 11, 22


def span(
    pid: int, epoch: int, reason: str, first: int, end: int, received: int, **more: Any
) -> dict[str, Any]:
    return {
        "event": "span",
        "pid": pid,
        "epoch": epoch,
        "reason": reason,
        "at": 100.001,
        "first": first,
        "end": end,
        "lost": end - first - received,
        "pending": 0,
        "received": received,
        **more,
    }


def good_record() -> soak.RoundRecord:
    """A round in which publisher DEAD was killed after 50 messages while subscribers 1 and 2
    slept, and publisher EPOCH then closed after 80."""
    return soak.RoundRecord(
        reports=[
            {"event": "attached", "pid": 1, "epoch": DEAD, "first": 0},
            span(1, DEAD, "crashed", 0, 50, 50),
            span(2, DEAD, "crashed", 10, 50, 30),
            span(1, EPOCH, "closed", 0, 80, 70, views=5, overwritten=1, torn=1),
            span(2, EPOCH, "closed", 3, 80, 77),
        ],
        final=(EPOCH, 80),
        killed_epochs={DEAD: 50},
        sleeper_kills=[(DEAD, 100.0, [1, 2])],
        bound=0.5,
    )


def _set(index: int, key: str, value: Any) -> Callable[[soak.RoundRecord], None]:
    def change(record: soak.RoundRecord) -> None:
        record.reports[index][key] = value

    return change


BROKEN: dict[str, Callable[[soak.RoundRecord], None]] = {
    "a corrupt payload": lambda r: r.reports.append({"event": "corrupt", "pid": 1, "epoch": EPOCH, "seq": 7}),
    "out of order": lambda r: r.reports.append({"event": "out-of-order", "pid": 1, "seq": 3, "after": 5}),
    "a child failed": lambda r: r.reports.append({"event": "error", "pid": 2, "trace": "boom"}),
    "a hang": lambda r: r.reports.append({"event": "hang", "pid": 0, "waiting for": "x"}),
    "one message neither received nor lost": _set(3, "received", 69),
    "one message both received and lost": _set(4, "lost", 1),
    "something left pending": _set(4, "pending", 1),
    "a crash reported as a close": _set(1, "reason", "closed"),
    "a close reported as a crash": _set(3, "reason", "crashed"),
    "a span ending early": lambda r: r.reports.__setitem__(4, span(2, EPOCH, "closed", 3, 79, 76)),
    "an incarnation nobody made": lambda r: r.reports.append(span(3, 33, "closed", 0, 0, 0)),
    "a sleeper that never saw the kill": lambda r: r.reports.pop(2),
    "a sleeper that saw it too late": _set(1, "at", 100.6),
    "a leftover": lambda r: r.leftovers.append("/dev/shm/shmpubsub.soak-1-1"),
}


def test_the_checker_passes_a_good_round() -> None:
    assert soak.check_round(good_record()) == []


@pytest.mark.parametrize("how", BROKEN)
def test_the_checker_catches(how: str) -> None:
    record = copy.deepcopy(good_record())
    BROKEN[how](record)
    assert soak.check_round(record) != [], how
