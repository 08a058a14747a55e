"""--deadline with two worker processes: records sent per tier when the job (not each process) meets the deadline.

    python bench/deadline_processes.py [--runs 3]

The scenario of tests/e2e/test_tiers.py (emulator; flex 125 ms x 4 per answer, 2 in flight per process, two
DirectRunner multi_processing workers, 320 records in two files, deadline 75 s after launch): the job does about
8 records/s (about 40 s of calls); one process alone projects 4/s against the job's 320 records (80 s) and, before
the processes shared their progress, escalated. Prints one row per run: records per tier, wall seconds.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import logging
import tempfile
import time
from pathlib import Path

from pipelines.extract import run
from tests.conftest import read_jsonl


def one_run(tmp: Path) -> tuple[dict[str, int], float]:
    for f in range(2):
        (tmp / f"in-{f}.jsonl").write_text("".join(
            json.dumps({"id": f"r{i}", "prompt": f"summarise item {i}"}) + "\n" for i in range(160 * f, 160 * f + 160)))
    started = time.monotonic()
    deadline = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=75)).isoformat()
    run(["--input", str(tmp / "in-*.jsonl"), "--output", str(tmp / "results"), "--emulator",
         "--emulator_args", "--latency_ms 125 --flex_latency_factor 4", "--vertex_location", "global",
         "--service_tier", "flex", "--deadline", deadline, "--max_concurrency", "2", "--no_adaptive_throttling",
         "--progress_interval_s", "0", "--direct_running_mode", "multi_processing", "--direct_num_workers", "2"])
    results = read_jsonl(str(tmp / "results"))
    return dict(collections.Counter(r["service_tier"] for r in results)), time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    rows = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(one_run(Path(tmp)))
    print("| run | flex | standard | priority | wall s (deadline 75) |")
    print("|---|---|---|---|---|")
    for i, (tiers, wall) in enumerate(rows, 1):
        counts = " | ".join(str(tiers.get(t, 0)) for t in ("flex", "standard", "priority"))
        print(f"| {i} | {counts} | {wall:.1f} |")


if __name__ == "__main__":
    main()
