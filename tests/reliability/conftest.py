"""Shared by the reliability tests: exact accounting against the emulator's stats, and the per-fault table.

    out = run_job(records, "--max_attempts", "8")
    stats = settled_stats(vertex_emulator)
    assert_each_id_once(records, out)
    row = account("10% 500/503", records, out, stats, wall_s)   # also checks sum(attempts) == requests
    assert row["retries"] == by_status["500"] + by_status["503"]

The table (records in, results, errors, requests, retries) is printed in the terminal summary and, with
``CHATBEAM_RELIABILITY_REPORT=path.json``, written to a file (docs/reliability.md quotes it).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

ROWS: list[dict[str, Any]] = []


def settled_stats(emulator, timeout_s: float = 10.0) -> dict[str, Any]:
    """The emulator's stats once nothing is in flight (a hang's cancellation is counted when the client leaves)."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = emulator.stats(fingerprints=False)
        if stats["in_flight"] == 0 or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


def assert_each_id_once(records: list[dict], out) -> None:
    """results + errors == inputs, by id: nothing dropped, nothing doubled."""
    got = sorted([r["id"] for r in out.results] + [e["id"] for e in out.errors])
    want = sorted(r["id"] for r in records)
    assert len(got) == len(want), f"{len(got)} outputs for {len(want)} inputs"
    assert got == want, "every input id exactly once in results + errors"


def account(fault: str, records: list[dict], out, stats: dict[str, Any], wall_s: float,
            settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """One table row; checks that every request the emulator saw is an attempt some record reports."""
    assert stats["in_flight"] == 0, "requests still in flight after the run (a hang the emulator did not free)"
    attempts = sum(r["attempts"] for r in out.results) + sum(e["attempts"] for e in out.errors)
    assert attempts == stats["requests"], (
        f"records report {attempts} attempts but the emulator received {stats['requests']} requests")
    row = {"fault": fault, "settings": settings or {}, "records": len(records), "results": len(out.results),
           "errors": len(out.errors), "requests": stats["requests"], "retries": stats["requests"] - len(records),
           "by_status": stats["by_status"], "faults": stats["faults"], "duplicate_ok": stats["duplicate_ok"],
           "wall_s": round(wall_s, 2)}
    ROWS.append(row)
    return row


def pytest_terminal_summary(terminalreporter):
    if not ROWS:
        return
    terminalreporter.section("reliability: per-fault accounting")
    head = f"{'fault':<58} {'in':>7} {'results':>8} {'errors':>7} {'requests':>9} {'retries':>8} {'wall s':>7}"
    terminalreporter.write_line(head)
    for r in ROWS:
        terminalreporter.write_line(f"{r['fault']:<58} {r['records']:>7} {r['results']:>8} {r['errors']:>7} "
                                    f"{r['requests']:>9} {r['retries']:>8} {r['wall_s']:>7}")
    path = os.environ.get("CHATBEAM_RELIABILITY_REPORT")
    if path:
        Path(path).write_text(json.dumps(ROWS, indent=1) + "\n")


@pytest.fixture
def timed_job(run_job):
    """run_job that also returns its wall time."""

    def _run(records, *args, **kwargs):
        started = time.monotonic()
        out = run_job(records, *args, **kwargs)
        return out, time.monotonic() - started

    return _run
