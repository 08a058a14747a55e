"""A job-wide budget across worker processes: what the emulator billed against the cap, and how much was used.

    python bench/job_budget.py                                # 4 workers, 4,000 records in 8 files, 20,000 tokens
    python bench/job_budget.py --workers 4 --cap 20000 --repeat 3 --latency_ms 50
    python bench/job_budget.py --repo /path/to/an/older/checkout       # the same run on other code

Runs chatbeam (the CLI, as a user does) on DirectRunner ``--direct_running_mode multi_processing`` against one
emulator, with ``--max_total_tokens CAP``, and prints a table: tokens billed (the emulator's own count of prompt +
completion tokens it served), % over the cap, % of the cap used, results, budget_exhausted errors, records
accounted for (every record must be in exactly one of results or errors), leases, and wall time.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emulator import EmulatorConfig, FaultConfig, serve_in_thread  # noqa: E402


def write_inputs(folder: Path, files: int, records: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    per_file = records // files
    for f in range(files):
        with open(folder / f"part-{f}.jsonl", "w") as fh:
            for i in range(per_file):
                ids.append(f"f{f}-{i}")
                fh.write(json.dumps({"id": ids[-1], "prompt": f"Question {f}-{i} about shared budgets"}) + "\n")
    return ids


def read_jsonl(prefix: str) -> list[dict]:
    return [json.loads(line) for path in sorted(glob.glob(f"{prefix}-*.jsonl")) for line in open(path) if line.strip()]


def run_once(url: str, inputs: Path, out: Path, args: argparse.Namespace, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "pipelines.extract", "--input", str(inputs / "*.jsonl"),
           "--output", str(out / "results"), "--errors", str(out / "errors"), "--emulator_url", url,
           "--max_total_tokens", str(args.cap), "--progress_interval_s", "0",
           "--direct_running_mode", "multi_processing", "--direct_num_workers", str(args.workers), *extra]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=args.repo,
                          env={**os.environ, "PYTHONPATH": args.repo})
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"chatbeam failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "results-summary.json").read_text())
    return {"wall": wall, "summary": summary, "results": read_jsonl(str(out / "results")),
            "errors": read_jsonl(str(out / "errors"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--cap", type=int, default=20_000)
    parser.add_argument("--latency_ms", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--extra", default="", help="more chatbeam flags")
    parser.add_argument("--repo", default=str(ROOT),
                        help="the chatbeam checkout to run (e.g. an older one, to compare)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="chatbeam-job-budget-") as tmp, \
            serve_in_thread(EmulatorConfig(seed=7, faults=FaultConfig(latency_ms=args.latency_ms))) as emu:
        ids = write_inputs(Path(tmp) / "in", args.files, args.records)
        for n in range(args.repeat):
            emu.reset()
            got = run_once(emu.url, Path(tmp) / "in", Path(tmp) / f"out{n}", args, args.extra.split())
            tokens = emu.stats(fingerprints=False)["tokens"]
            billed = tokens["prompt"] + tokens["completion"]
            seen = sorted(r["id"] for r in got["results"] + got["errors"])
            exhausted = sum(1 for e in got["errors"] if e["error_type"] == "budget_exhausted")
            budget = got["summary"].get("budget", {})
            rows.append({"billed": billed, "over": 100.0 * (billed - args.cap) / args.cap,
                         "used": 100.0 * min(billed, args.cap) / args.cap, "results": len(got["results"]),
                         "exhausted": exhausted, "exactly_once": seen == sorted(ids),
                         "leases": budget.get("leases"), "wall": got["wall"]})
    print(f"{args.workers} worker processes, {args.records:,} records in {args.files} files, "
          f"--max_total_tokens {args.cap:,}, emulator latency {args.latency_ms} ms")
    print("| run | billed tokens | over the cap | cap used | results | budget_exhausted | every record once "
          "| leases | wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows, 1):
        print(f"| {i} | {r['billed']:,} | {r['over']:+.1f} % | {r['used']:.1f} % | {r['results']:,} | "
              f"{r['exhausted']:,} | {r['exactly_once']} | {r['leases']} | {r['wall']:.1f} |")
    if len(rows) > 1:
        print(f"| median | {statistics.median(r['billed'] for r in rows):,.0f} | "
              f"{statistics.median(r['over'] for r in rows):+.1f} % | "
              f"{statistics.median(r['used'] for r in rows):.1f} % | | | | | "
              f"{statistics.median(r['wall'] for r in rows):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
