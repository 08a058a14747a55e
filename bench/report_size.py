"""The run report at scale: page size, build time and the time Chromium takes to draw it, for synthetic runs of
1,000 and 100,000 records (results, 1 % errors of four types, two worker processes' engine samples, a 30-minute
span). Prints a table of medians.

    python bench/report_size.py                       # 1,000 and 100,000 records, 3 repeats
    python bench/report_size.py --records 100000 --repeat 5 --no_browser

The build time is what a waited run adds at its end (read both sinks, aggregate, draw); the load time is
Chromium's navigation start to every chart drawn (tests/report/browser.py, Debian's chromium).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from client.caller import utc_iso  # noqa: E402
from client.telemetry import SAMPLE_FIELDS  # noqa: E402

T0 = 1_767_225_600.0
SPAN_S = 1800.0
ERROR_TYPES = ["rate_limited", "server_error", "schema_validation", "invalid_json"]


def write_run(directory: Path, records: int, seed: int = 1) -> str:
    """A run's outputs as the job writes them: results and errors shards, telemetry, run info."""
    rng = random.Random(seed)
    prefix = directory / "results"
    (directory / "results-telemetry").mkdir(parents=True)
    with open(f"{prefix}-00000-of-00001.jsonl", "w") as results, \
            open(directory / "errors-00000-of-00001.jsonl", "w") as errors:
        for i in range(records):
            start = T0 + SPAN_S * i / records
            latency = rng.lognormvariate(6.5, 0.5) / 1000
            if i % 100 == 7:
                error_type = ERROR_TYPES[i % 4]
                rec = {"id": f"rec-{i}", "request_key": f"{i:032x}", "stage": "read" if error_type == "invalid_json"
                       else "request", "error_type": error_type, "status_code": 429 if error_type == "rate_limited"
                       else None, "status": None, "message": f"{error_type}: something went wrong with record {i}",
                       "retryable": error_type != "schema_validation", "attempts": 6, "record": {"prompt": "x" * 200},
                       "raw": None, "response_text": None, "metadata": None}
                if error_type != "invalid_json":
                    rec.update(started_at=utc_iso(start), finished_at=utc_iso(start + latency))
                errors.write(json.dumps(rec) + "\n")
                continue
            usage = {"prompt_tokens": rng.randint(80, 400), "completion_tokens": rng.randint(10, 120),
                     "reasoning_tokens": 0, "cached_tokens": 0}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            results.write(json.dumps({
                "id": f"rec-{i}", "request_key": f"{i:032x}", "model": "google/gemini-2.0-flash-001",
                "content": "word " * 60, "thoughts": None, "parsed": None, "finish_reason": "stop", "usage": usage,
                "attempts": 1 + (rng.random() < 0.05), "latency_ms": round(latency * 1000, 3), "alternatives": None,
                "metadata": {"row": i}, "started_at": utc_iso(start), "finished_at": utc_iso(start + latency)}) + "\n")
    for pid in (1, 2):
        samples = []
        for s in range(int(SPAN_S)):
            done = records * s / SPAN_S / 2
            samples.append([T0 + s] + [float(v) for v in (done, done, 0, 30 + pid, 32, done * 1.02, s // 20,
                                                          s // 25, done * 300, done * 1e5)])
        (directory / "results-telemetry" / f"run1-host-{pid}.json").write_text(json.dumps(
            {"run_id": "run1", "fields": list(SAMPLE_FIELDS), "samples": samples}))
    return str(prefix)


def measure(records: int, repeat: int, browser: bool) -> dict:
    from pipelines.report import build_report

    sizes, builds, loads, output_mb = [], [], [], 0.0
    for r in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            prefix = write_run(Path(tmp), records, seed=r)
            output_mb = sum(p.stat().st_size for p in Path(tmp).glob("*.jsonl")) / 1e6
            started = time.monotonic()
            page, _ = build_report(prefix, f"{tmp}/errors")
            builds.append(time.monotonic() - started)
            sizes.append(Path(page).stat().st_size)
            if browser:
                from tests.report.browser import open_report

                seen = open_report(page)
                assert not seen.problems and all(v > 0 for v in seen.chart_ink.values()), seen
                loads.append(seen.load_s)
    return {"records": records, "outputs_mb": output_mb, "page_mb": statistics.median(sizes) / 1e6,
            "build_s": statistics.median(builds), "load_s": statistics.median(loads) if loads else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no_browser", action="store_true")
    args = parser.parse_args()
    rows = [measure(n, args.repeat, not args.no_browser) for n in args.records]
    print(f"\nmedians of {args.repeat} runs")
    print("| records | outputs (MB) | page (MB) | build (s) | Chromium load (s) |")
    print("|---|---|---|---|---|")
    for row in rows:
        load = f"{row['load_s']:.2f}" if row["load_s"] is not None else "–"
        print(f"| {row['records']:,} | {row['outputs_mb']:.1f} | {row['page_mb']:.2f} | {row['build_s']:.2f} | {load} |")


if __name__ == "__main__":
    main()
