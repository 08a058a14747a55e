"""CPU per record of the client alone (``ChatCaller.complete``, no Beam) at zero latency, two versions side by side.

    python bench/caller_cpu.py --tree before=/tmp/chatbeam-before --tree after=. --repeat 5

The same emulator as bench/cpu_per_record.py (``--latency_ms 0 --capacity_rps 0``, its own process, never counted).
Each run is a fresh process with the tree's code first on PYTHONPATH: one ChatCaller (aiohttp's pool, the default
limiter, ``--max_concurrency``), a warm-up of 200 records, then ``--records`` records in flight together; the
process CPU time (``time.process_time``) of those records, divided by their number. Without the pipeline around it
this is steadier than the job's marginal figure on a shared machine, and shows what the client's changes did alone.
Trees alternate within a repeat; the table shows medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "google/gemini-2.0-flash-001"
WARMUP = 200


async def _child(url: str, records: int, max_concurrency: int) -> dict:
    from client.caller import ChatCaller
    from client.config import ClientConfig, Target
    from schemas.records import InputRecord, ResultRecord

    config = ClientConfig(target=Target(url + "/v1", "none"), model=MODEL, max_concurrency=max_concurrency)
    caller = ChatCaller(config)
    inputs = [InputRecord(id=f"r{i}", prompt=f"Write one sentence about item {i}.") for i in range(WARMUP + records)]
    await asyncio.gather(*[caller.complete(r) for r in inputs[:WARMUP]])
    started = time.process_time()
    outputs = await asyncio.gather(*[caller.complete(r) for r in inputs[WARMUP:]])
    cpu = time.process_time() - started
    await caller.aclose()
    results = sum(isinstance(o, ResultRecord) for o in outputs)
    return {"ms": 1000 * cpu / records, "results": results}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", action="append", default=[], help="label=path of a checkout (repeatable)")
    p.add_argument("--records", type=int, default=3000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--max_concurrency", type=int, default=64)
    p.add_argument("--_run", nargs=3, metavar=("URL", "RECORDS", "MAX_CONCURRENCY"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._run:
        print(json.dumps(asyncio.run(_child(args._run[0], int(args._run[1]), int(args._run[2])))), flush=True)
        return 0
    sys.path.insert(0, str(ROOT))
    from pipelines.local_emulator import LocalEmulator

    trees = [(t.partition("=")[0], Path(t.partition("=")[2]).resolve()) for t in args.tree] or [("this", ROOT)]
    rows: dict[str, list[float]] = {label: [] for label, _ in trees}
    loads: list[float] = []
    with LocalEmulator("--latency_ms 0 --capacity_rps 0", ready_timeout_s=60) as emu:
        for _ in range(args.repeat):
            for label, tree in trees:
                proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_run", emu.url,
                                       str(args.records), str(args.max_concurrency)], cwd=tree,
                                      env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True,
                                      timeout=600)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
                if proc.returncode != 0 or not lines:
                    raise SystemExit(f"bench: run failed in {tree}: {proc.stderr.strip()[-1500:]}")
                run = json.loads(lines[-1])
                if run["results"] != args.records:
                    raise SystemExit(f"bench: {label}: {run['results']} results of {args.records}")
                rows[label].append(run["ms"])
                loads.append(os.getloadavg()[0])
    print(f"\nClient CPU per record at zero latency, {args.records} records, max_concurrency {args.max_concurrency}; "
          f"medians of {args.repeat} (load average {min(loads):.1f}-{max(loads):.1f})\n")
    head = f"{'tree':<10}{'ms/record':>11}   runs"
    print(head)
    print("-" * len(head))
    for label, vals in rows.items():
        print(f"{label:<10}{statistics.median(vals):>11.3f}   " + " ".join(f"{v:.3f}" for v in vals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
