"""CPU per record of the real job at zero latency (bench/throughput.py's zero-latency scenario), two versions side by side.

    python bench/cpu_per_record.py                                   # this checkout only
    python bench/cpu_per_record.py --tree before=/tmp/chatbeam-before --tree after=. --repeat 5
    git archive <commit> | tar -x -C /tmp/chatbeam-before            # a "before" tree to compare with

One emulator (``python -m emulator --latency_ms 0 --capacity_rps 0``, its own process, never counted) answers every
run. Each run is the job on DirectRunner (``pipelines.extract.run``, as ``chatbeam`` runs it) in a fresh process,
with the tree's code first on PYTHONPATH; the process's CPU time (user + system, getrusage of the process and its
children) is read when the job returns. Start-up (imports, pipeline construction, the runner's fixed work) costs
seconds of CPU whatever the input size, so each repeat runs every tree on ``--small`` and ``--large`` records and
reports the marginal cost: ``(cpu(large) - cpu(small)) / (large - small)`` ms per record, plus the whole large run's
CPU / records. Trees alternate within a repeat, so machine load hits them alike; the table shows medians.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "google/gemini-2.0-flash-001"


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", action="append", default=[],
                   help="label=path of a checkout to measure (repeatable; default: this checkout as 'this')")
    p.add_argument("--small", type=int, default=1000, help="records in the small run (default 1000)")
    p.add_argument("--large", type=int, default=5000, help="records in the large run (default 5000)")
    p.add_argument("--repeat", type=int, default=3, help="repeats; the table shows medians (default 3)")
    p.add_argument("--max_concurrency", type=int, default=64)
    p.add_argument("--chatbeam_args", default="", help="extra chatbeam flags for every run")
    p.add_argument("--json", dest="json_out", help="also write the raw runs to this file")
    p.add_argument("--_run", nargs=4, metavar=("URL", "INPUT", "OUT", "EXTRA"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not 0 < args.small < args.large:
        p.error("need 0 < --small < --large")
    return args


def _child(url: str, inp: str, out: str, extra: str) -> int:
    """One job in this process; prints its CPU seconds (the whole process: imports and start-up included)."""
    import shlex

    from pipelines.extract import run

    started = time.monotonic()
    run(["--input", inp, "--output", f"{out}/results", "--errors", f"{out}/errors", "--base_url", url + "/v1",
         "--model", MODEL, "--runner", "DirectRunner", *shlex.split(extra)])
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    results = sum(sum(1 for _ in f.open()) for f in Path(out).glob("results-*-of-*"))
    print(json.dumps({"cpu_s": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
                      "wall_s": time.monotonic() - started, "results": results}), flush=True)
    return 0


def _one(tree: Path, url: str, inp: Path, work: Path, extra: str) -> dict:
    out = Path(tempfile.mkdtemp(dir=work))
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_run", url, str(inp), str(out), extra],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=1800)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"bench: run failed in {tree}: {proc.stderr.strip()[-1500:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args._run:
        return _child(*args._run)
    sys.path.insert(0, str(ROOT))
    from pipelines.local_emulator import LocalEmulator

    trees = [(t.partition("=")[0], Path(t.partition("=")[2]).resolve()) for t in args.tree] or [("this", ROOT)]
    work = Path(tempfile.mkdtemp(prefix="chatbeam-cpu-"))
    inputs = {}
    for n in (args.small, args.large):
        inputs[n] = work / f"input-{n}.jsonl"
        with inputs[n].open("w") as fh:
            for i in range(n):
                fh.write(json.dumps({"id": f"r{i:07d}", "prompt": f"Write one sentence about item {i}."}) + "\n")
    rows: dict[str, list[dict]] = {label: [] for label, _ in trees}
    with LocalEmulator("--latency_ms 0 --capacity_rps 0", ready_timeout_s=60) as emu:
        for rep in range(args.repeat):
            for label, tree in trees:
                extra = f"--max_concurrency {args.max_concurrency} {args.chatbeam_args}"
                small = _one(tree, emu.url, inputs[args.small], work, extra)
                large = _one(tree, emu.url, inputs[args.large], work, extra)
                if small["results"] != args.small or large["results"] != args.large:
                    raise SystemExit(f"bench: {label}: expected {args.small}/{args.large} results, got "
                                     f"{small['results']}/{large['results']}")
                row = {"marginal_ms": 1000 * (large["cpu_s"] - small["cpu_s"]) / (args.large - args.small),
                       "whole_ms": 1000 * large["cpu_s"] / args.large, "large_wall_s": large["wall_s"],
                       "small_cpu_s": small["cpu_s"], "large_cpu_s": large["cpu_s"], "load": os.getloadavg()[0]}
                rows[label].append(row)
                print(f"bench: repeat {rep + 1}/{args.repeat} {label}: {json.dumps(row)}", file=sys.stderr,
                      flush=True)
    subprocess.run(["rm", "-rf", str(work)], check=False)
    print(f"\nCPU per record at zero latency, {args.small} vs {args.large} records, max_concurrency "
          f"{args.max_concurrency}; medians of {args.repeat} (load average during the runs: "
          f"{min(r['load'] for v in rows.values() for r in v):.1f}-{max(r['load'] for v in rows.values() for r in v):.1f})\n")
    head = f"{'tree':<10}{'marginal ms/rec':>17}{'whole-run ms/rec':>18}{'large run wall s':>18}   runs (marginal)"
    print(head)
    print("-" * len(head))
    for label, vals in rows.items():
        print(f"{label:<10}{statistics.median(r['marginal_ms'] for r in vals):>17.2f}"
              f"{statistics.median(r['whole_ms'] for r in vals):>18.2f}"
              f"{statistics.median(r['large_wall_s'] for r in vals):>18.1f}   "
              + " ".join(f"{r['marginal_ms']:.2f}" for r in vals))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"args": vars(args), "runs": rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
