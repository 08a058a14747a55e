"""Cost and time of one nightly job three ways: online at Standard PayGo, online at Flex PayGo, and a Vertex batch
prediction job — the same records, against the local emulator (and the GCS emulator for batch staging).

    python bench/cost_and_time.py                                   # 5,000 records, the defaults below
    python bench/cost_and_time.py --records 1000 --variants standard,batch --repeat 3

Each variant runs the real job (``python -m pipelines.extract``) in its own process against one emulator started
here (``python -m emulator``, stats reset in between) and prints a table: records answered, errors, wall seconds,
HTTP requests the emulator received (chat calls; for batch: the job API calls — create, polls, list — plus the
lines answered inside the job), requests answered 429, the estimated cost from the run summary (dated price table,
client/prices.json) and that cost relative to online-standard.

What the emulator is told (all guesses about Google, configurable): 300 ms per answer, a shared pool of 100
requests/s, flex answers 3× slower and admitted only up to half the pool, a batch job queues 10 s and runs 60 s.
So batch's wall time here is whatever ``--batch_duration_s`` says: Vertex promises only "up to 24 hours". What the
bench measures for real is the pipeline's own behaviour: requests sent, 429s, retries, records accounted for, and
the cost arithmetic at each tier's prices.

The GCS emulator comes from ``.venv-gcp-emulators`` (``scripts/start_gcp_emulators.sh --install``) or
``$CHATBEAM_GCP_EMULATORS_PYTHON``; without it the batch variant is skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipelines.local_emulator import LocalEmulator  # noqa: E402

VARIANTS = ("standard", "flex", "batch")
SCHEMAS = (None, None, "Sentiment", "CalendarEvent")


def _gcp_emulators():
    spec = importlib.util.spec_from_file_location("chatbeam_gcp_emulators", ROOT / "tests" / "gcp" / "emulators.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _records(path: Path, n: int) -> None:
    with path.open("w") as fh:
        for i in range(n):
            record: dict[str, Any] = {"id": f"r{i}", "prompt": f"Record {i}: summarise the order of customer {i % 97} "
                                                                  f"placed on day {i % 28 + 1} with {i % 7 + 1} items."}
            if SCHEMAS[i % len(SCHEMAS)]:
                record["schema"] = SCHEMAS[i % len(SCHEMAS)]
            fh.write(json.dumps(record) + "\n")


def _stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/emulator/stats?fingerprints=0", timeout=10) as resp:
        return json.loads(resp.read())


def _reset(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{url}/emulator/reset", method="POST"), timeout=10).read()


def _variant_args(variant: str, bucket: str | None, run: str) -> list[str]:
    if variant == "flex":
        return ["--service_tier", "flex", "--vertex_location", "global"]
    if variant == "batch":
        return ["--mode", "batch", "--batch_staging", f"gs://{bucket}/bench-{run}", "--batch_poll_interval_s", "2"]
    return []


def _run(variant: str, args: argparse.Namespace, url: str, work: Path, bucket: str | None, run: int,
         env: dict[str, str]) -> dict[str, Any]:
    out = work / f"{variant}-{run}"
    argv = [sys.executable, "-m", "pipelines.extract", "--input", str(work / "records.jsonl"),
            "--output", str(out / "results"), "--emulator_url", url, "--max_concurrency", str(args.max_concurrency),
            "--progress_interval_s", "0", *_variant_args(variant, bucket, f"{variant}{run}")]
    _reset(url)
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout_s)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    summary = json.loads((out / "results-summary.json").read_text())
    stats = _stats(url)
    lines = stats["batch"]["lines"]
    return {"variant": variant, "results": summary["results"], "errors": summary["errors"], "wall_s": wall,
            "job_wall_s": summary["wall_seconds"], "http_requests": stats["requests"], "batch_lines": lines,
            "status_429": stats["by_status"].get("429", 0), "cost_usd": summary["estimated_cost_usd"],
            "tiers": summary.get("tiers"), "batch": summary.get("batch")}


def _table(rows: list[dict[str, Any]]) -> str:
    base = next((r["cost_usd"] for r in rows if r["variant"] == "standard"), None)
    out = ["| variant | results | errors | wall s (median) | HTTP requests | lines in batch jobs | answered 429 | "
           "est. cost | vs standard |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['cost_usd'] / base:.2f}×" if base else "—"
        out.append(f"| {r['variant']} | {r['results']:,} | {r['errors']:,} | {r['wall_s']:.1f} | "
                   f"{r['http_requests']:,} | {r['batch_lines']:,} | {r['status_429']:,} | ${r['cost_usd']:.4f} | "
                   f"{ratio} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=5000)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--repeat", type=int, default=1, help="runs per variant; the table shows the median wall time")
    p.add_argument("--max_concurrency", type=int, default=64)
    p.add_argument("--latency_ms", type=float, default=300.0)
    p.add_argument("--capacity_rps", type=float, default=100.0)
    p.add_argument("--flex_latency_factor", type=float, default=3.0)
    p.add_argument("--flex_capacity_share", type=float, default=0.5)
    p.add_argument("--batch_queue_s", type=float, default=10.0)
    p.add_argument("--batch_duration_s", type=float, default=60.0)
    p.add_argument("--timeout_s", type=float, default=3600.0)
    p.add_argument("--json", dest="json_out")
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    work = Path(tempfile.mkdtemp(prefix="chatbeam-cost-bench-"))
    _records(work / "records.jsonl", args.records)
    env, gcs, bucket = dict(os.environ), None, None
    if "batch" in variants:
        emulators = _gcp_emulators()
        try:
            gcs = emulators.GcsEmulator(name="gcs", log_path=work / "gcs.log", data_dir=work / "gcs").start()
        except emulators.EmulatorUnavailable as exc:
            print(f"batch skipped: {exc}", file=sys.stderr)
            variants.remove("batch")
        else:
            bucket = gcs.bucket
            env.update(emulators.client_environment(gcs, None, emulators.write_placeholder_adc(work / "adc.json")))
            os.environ.update(env)  # the emulator subprocess reads and writes the job files on GCS too
    emulator_args = (f"--latency_ms {args.latency_ms} --capacity_rps {args.capacity_rps} "
                     f"--flex_latency_factor {args.flex_latency_factor} --flex_capacity_share "
                     f"{args.flex_capacity_share} --batch_queue_s {args.batch_queue_s} "
                     f"--batch_duration_s {args.batch_duration_s}")
    rows = []
    try:
        with LocalEmulator(emulator_args) as emu:
            for variant in variants:
                runs = [_run(variant, args, emu.url, work, bucket, i, env) for i in range(args.repeat)]
                row = dict(runs[-1], wall_s=statistics.median(r["wall_s"] for r in runs))
                rows.append(row)
                print(f"{variant}: {row['results']:,} results in {row['wall_s']:.1f} s, ${row['cost_usd']:.4f}",
                      file=sys.stderr, flush=True)
    finally:
        if gcs is not None:
            gcs.stop()
    print(f"{args.records:,} records; emulator: {emulator_args}; load average {os.getloadavg()[0]:.1f}")
    print(_table(rows))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
