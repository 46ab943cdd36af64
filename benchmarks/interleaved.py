"""Timing for the one-process scripts (hop.py, wakeup_path.py): each statement's best time per
run, the statements taken in turn, so that load from elsewhere hits all of them alike."""

from __future__ import annotations

import timeit
from typing import Any


def best_times(
    statements: dict[str, str], names: dict[str, Any], turns: int = 15, number: int = 2000
) -> dict[str, float]:
    """Seconds per run of each statement: the best of *turns* x 3 x *number* runs."""
    best = dict.fromkeys(statements, float("inf"))
    for _ in range(turns):
        for name, statement in statements.items():
            took = min(timeit.repeat(statement, number=number, repeat=3, globals=names)) / number
            best[name] = min(best[name], took)
    return best


def report(best: dict[str, float], width: int) -> None:
    for name, seconds in best.items():
        print(f"{name:{width}s} {seconds * 1e9:7.0f} ns")
