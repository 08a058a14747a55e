"""bench/many_processes.py's figures from recorded samples: the capacity-halving row measures after the cut, and a
run that leaves no window is a failed row with its reason (it used to print a negative window and -1e11 records/s).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("many_processes", ROOT / "bench" / "many_processes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class FakeEmulator:
    """The emulator's counters: 100 answered 200 per second until ``halved``, 50 after; 1 answered 429 per second."""

    def __init__(self, bench, halved: float) -> None:
        self.samples = [(t, 100 * min(t, halved) + 50 * max(0, t - halved), t) for t in range(0, 200)]
        self._bench = bench

    def at(self, t: float):
        return self._bench._interp([(s[0], (s[1], s[2])) for s in self.samples], t)


def _child(bench, name: str, records: int, first: float, rate: float):
    child = bench.Child(name, records, "a", Path("gate"), Path("trace"), Path("out"))
    child.samples = [(first + k, min(records, int(rate * k)), 0, 1.0, 1) for k in range(0, 200)]
    return child


def _args() -> argparse.Namespace:
    return argparse.Namespace(capacity_rps=100.0, warmup_s=10.0)


def test_halving_row_measures_after_the_cut():
    bench = _bench()
    emu = FakeEmulator(bench, halved=30.0)
    children = [_child(bench, f"p{i}", 600, first=1.0, rate=10.0) for i in range(2)]
    row = bench._figures(_args(), emu, children, "halve", 2, {"halved": 30.0}, {"by_status": {}})
    assert "failed" not in row
    assert row["window_s"] == 29.0  # from 2 s after the cut (32 s) to the first finish (61 s)
    assert row["capacity_fraction"] == 1.0  # 50 per second over the halved capacity
    assert row["before"]["window_s"] == 18.0  # from --warmup_s after the last first answer (2 s + 10 s) to the cut
    assert row["before"]["capacity_fraction"] == 1.0


def test_a_process_that_finishes_before_the_cut_fails_the_row_instead_of_a_negative_window():
    bench = _bench()
    emu = FakeEmulator(bench, halved=30.0)
    children = [_child(bench, "fast", 150, first=1.0, rate=10.0), _child(bench, "slow", 600, first=1.0, rate=10.0)]
    row = bench._figures(_args(), emu, children, "halve", 2, {"halved": 30.0}, {"by_status": {}})
    assert "halving" in row["failed"] and "window_s" not in row


def test_steady_row_leaves_out_start_up():
    bench = _bench()
    emu = FakeEmulator(bench, halved=1e9)
    children = [_child(bench, f"p{i}", 600, first=1.0 + i, rate=10.0) for i in range(2)]
    row = bench._figures(_args(), emu, children, "steady", 2, {}, {"by_status": {}})
    # from --warmup_s after the last first answer (3 s + 10 s) to the first finish (61 s)
    assert row["window_s"] == 48.0


def test_steady_run_whose_first_finish_precedes_the_last_start_is_a_failed_row():
    bench = _bench()
    emu = FakeEmulator(bench, halved=1e9)
    children = [_child(bench, "early", 50, first=0.0, rate=10.0), _child(bench, "late", 500, first=20.0, rate=10.0)]
    with pytest.raises(bench._NoWindow, match="before it starts"):
        bench._figures(_args(), emu, children, "steady", 2, {}, {"by_status": {}})


def test_churn_row_compares_shares_from_the_join_and_again_once_the_joiners_settled():
    bench = _bench()
    emu = FakeEmulator(bench, halved=1e9)
    longs = [_child(bench, f"long{i}", 1000, first=1.0, rate=10.0) for i in range(2)]
    joiner = _child(bench, "join0", 1000, first=40.0, rate=10.0)
    joiner.group = "b"
    # the joiner gets 2 records/s for its first 15 s, then its fair 10/s
    joiner.samples = [(40.0 + k, 2 * k if k <= 15 else 30 + 10 * (k - 15), 0, 1.0, 1) for k in range(0, 200)]
    args = argparse.Namespace(capacity_rps=100.0, settle_s=15.0)
    row = bench._figures(args, emu, [*longs, joiner], "churn", 3, {}, {"by_status": {}})
    assert row["join_window_s"] == 60.0  # from the joiner's first answer (41 s) to the first finish (101 s)
    assert row["min_share"] < 0.9  # the slow start of the joiner is in the whole window...
    assert row["settled"]["window_s"] == 45.0 and row["settled"]["min_share"] == 1.0  # ...not once settled
