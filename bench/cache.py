"""Response-cache benchmark: what a cached run costs per record, and the incremental-night acceptance scenario.

    python bench/cache.py                                  # 100,000 records, 10,000 for the two nights, 1 run each
    python bench/cache.py --records 100000 --repeat 3      # medians of three (for a quiet machine)
    python bench/cache.py --records 20000 --night_records 2000 --skip_nights     # quicker

It starts the local emulator once (``python -m emulator``, 127.0.0.1, **zero latency**, unlimited capacity), then
runs the real job (``pipelines.extract.run`` on DirectRunner, ``--base_url <emulator>/v1``) in a fresh subprocess
per run, and measures each run's wall time (the job only, imports excluded), records/s and peak RSS (the child's
own ``ru_maxrss`` from ``os.wait4``), plus the requests the emulator received. Side by side, on the same input:

- ``uncached``: the run without ``--cache`` (every record called, at zero latency: the pipeline's own cost);
- ``first night``: ``--cache`` on an empty cache (every record called, and every answer stored);
- ``fully cached``: ``--cache`` on that cache (no record called: the cache's own cost per record).

Then the acceptance scenario (unless ``--skip_nights``): ``--night_records`` rows, a first night with ``--cache``,
a second night where 10 % of the rows changed; checked: the second night sends <= 1.05 x the changed rows, each
record is written once, unchanged rows get results identical to the first night's except ``cached``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import DEFAULT_MODEL, Emulator  # noqa: E402 - the same emulator launcher as bench/throughput.py

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("uncached", "first night", "fully cached")


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=100_000, help="records per run (default 100,000)")
    p.add_argument("--night_records", type=int, default=10_000, help="rows of the two-night scenario (10,000)")
    p.add_argument("--changed", type=float, default=0.10, help="share of rows changed on night two (0.10)")
    p.add_argument("--repeat", type=int, default=1, help="runs per scenario; the table shows medians")
    p.add_argument("--skip_nights", action="store_true", help="only the per-record cost table")
    p.add_argument("--chatbeam_args", default="", help="extra chatbeam flags for every run")
    p.add_argument("--timeout_s", type=float, default=3600.0, help="kill a run after this long")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--_worker", help=argparse.SUPPRESS)  # JSON argv of one job run
    args = p.parse_args(argv)
    if args.records < 1 or args.night_records < 10 or args.repeat < 1 or not 0 < args.changed < 1:
        p.error("need --records >= 1, --night_records >= 10, --repeat >= 1, 0 < --changed < 1")
    return args


def _rows(n: int, changed: set[int] = frozenset()) -> list[dict]:
    return [{"id": f"r{i:07d}", "prompt": f"Write one sentence about item {i}." + (" (edited)" if i in changed else ""),
             "metadata": {"row": i}} for i in range(n)]


def _write(path: Path, rows: list[dict]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def _run(emu: Emulator, src: Path, out: Path, extra: list[str], timeout_s: float) -> dict[str, Any]:
    """One job run in a fresh process: wall, records/s, peak RSS, requests received."""
    argv = ["--input", str(src), "--output", str(out / "results"), "--errors", str(out / "errors"),
            "--base_url", f"{emu.url}/v1", "--model", DEFAULT_MODEL, "--progress_interval_s", "0", *extra]
    emu.fresh()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "stdout.txt", "w+") as stdout, open(out / "stderr.txt", "w+") as stderr:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--_worker", json.dumps(argv)],
                                cwd=ROOT, stdout=stdout, stderr=stderr, text=True)
        deadline = time.monotonic() + timeout_s
        while True:  # os.wait4, not proc.wait: it also returns this child's own peak RSS
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                return {"failed": f"timed out after {timeout_s:.0f}s"}
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        lines = [ln for ln in stdout.read().splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            return {"failed": f"exit {proc.returncode}: {' | '.join(stderr.read().strip().splitlines()[-4:])}"}
    result = json.loads(lines[-1])
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    result["requests"] = emu.stats().get("requests", 0)
    return result


def _worker(argv: list[str]) -> int:
    from pipelines.extract import run

    started = time.monotonic()
    result = run(argv)
    wall = time.monotonic() - started
    s = result.summary
    print(json.dumps({"wall_s": round(wall, 3), "records": s["records_read"], "results": s["results"],
                      "errors": s["errors"], "rps": round(s["records_read"] / wall, 1), "cache": s.get("cache")}),
          flush=True)
    return 0


def _median(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def _per_record_table(args, emu: Emulator, work: Path) -> list[dict]:
    src = _write(work / "input.jsonl", _rows(args.records))
    extra = args.chatbeam_args.split()
    runs: dict[str, list[dict]] = {name: [] for name in SCENARIOS}
    for run_no in range(args.repeat):
        cache = work / f"cache-{run_no}"
        for name, flags in (("uncached", []), ("first night", ["--cache", str(cache)]),
                            ("fully cached", ["--cache", str(cache)])):
            print(f"bench: run {run_no + 1}/{args.repeat}: {name} ...", file=sys.stderr, flush=True)
            result = _run(emu, src, work / f"{name.replace(' ', '-')}-{run_no}", extra + flags, args.timeout_s)
            print(f"bench:   {json.dumps(result)}", file=sys.stderr, flush=True)
            runs[name].append(result)
    table = []
    for name, rows in runs.items():
        good = [r for r in rows if "failed" not in r]
        row = {"scenario": name, "runs": len(good), "failed": rows[0].get("failed") if not good else None}
        for key in ("wall_s", "rps", "peak_rss_mb", "requests", "results", "errors"):
            row[key] = _median(good, key)
        row["hits"] = _median([r["cache"] for r in good if r.get("cache")], "hits")
        table.append(row)
    return table


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _print_table(args, table: list[dict]) -> None:
    print(f"\nemulator at zero latency, unlimited capacity; {args.records:,} records; medians of {args.repeat} "
          f"run(s); load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    head = f"{'scenario':<14}{'records/s':>11}{'wall s':>9}{'peak RSS MB':>13}{'requests':>10}{'from cache':>12}"
    print(head)
    print("-" * len(head))
    for r in table:
        if r["failed"]:
            print(f"{r['scenario']:<14}FAILED: {r['failed']}")
            continue
        print(f"{r['scenario']:<14}{_fmt(r['rps'], ',.0f'):>11}{_fmt(r['wall_s'], '.1f'):>9}"
              f"{_fmt(r['peak_rss_mb'], '.0f'):>13}{_fmt(r['requests'], ',.0f'):>10}{_fmt(r['hits'], ',.0f'):>12}")
    by = {r["scenario"]: r for r in table if not r["failed"]}
    if "uncached" in by and "fully cached" in by and by["uncached"]["rps"]:
        print(f"\nfully cached / uncached: {by['fully cached']['rps'] / by['uncached']['rps']:.2f}x records/s, "
              f"{by['fully cached']['peak_rss_mb'] / by['uncached']['peak_rss_mb']:.2f}x peak RSS")


def _two_nights(args, emu: Emulator, work: Path) -> list[tuple[str, bool, str]]:
    n = args.night_records
    changed = set(random.Random(14).sample(range(n), round(n * args.changed)))
    cache, extra = work / "nights-cache", args.chatbeam_args.split() + ["--cache", str(work / "nights-cache")]
    print("bench: two nights ...", file=sys.stderr, flush=True)
    first = _run(emu, _write(work / "night1.jsonl", _rows(n)), work / "night1", extra, args.timeout_s)
    second = _run(emu, _write(work / "night2.jsonl", _rows(n, changed)), work / "night2", extra, args.timeout_s)
    if "failed" in first or "failed" in second:
        return [("both nights ran", False, first.get("failed") or second.get("failed"))]

    def results(night: str) -> list[dict]:
        return [json.loads(line) for f in sorted((work / night).glob("results-*-of-*.jsonl")) for line in open(f)]

    before = {r["id"]: r for r in results("night1")}
    after = results("night2")
    ids = sorted(r["id"] for r in after)
    same = sum(1 for r in after if int(r["id"][1:]) not in changed and r["cached"]
               and {**r, "cached": False} == before[r["id"]])
    limit = 1.05 * len(changed)
    shutil.rmtree(cache, ignore_errors=True)
    return [
        (f"second night sends <= {limit:,.0f} requests", second["requests"] <= limit,
         f"{second['requests']:,} requests for {len(changed):,} changed of {n:,} rows "
         f"({second['rps']:,.0f} records/s; first night {first['rps']:,.0f})"),
        ("every record written once", ids == sorted(r["id"] for r in _rows(n)) and second["errors"] == 0,
         f"{len(after):,} results, {second['errors']} errors"),
        ("unchanged rows identical to the first night's (except cached)", same == n - len(changed),
         f"{same:,} of {n - len(changed):,}"),
    ]


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args._worker:
        return _worker(json.loads(args._worker))
    work = Path(tempfile.mkdtemp(prefix="chatbeam-cache-bench-"))
    emu = Emulator(0.0, 0.0)
    try:
        table = _per_record_table(args, emu, work)
        checks = [] if args.skip_nights else _two_nights(args, emu, work)
    finally:
        emu.stop()
        if args.keep:
            print(f"bench: work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    _print_table(args, table)
    for name, ok, detail in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
