"""Throughput benchmark: chatbeam vs. Beam RunInference vs. an unbounded asyncio.gather, against one emulator.

    python bench/throughput.py --latency_ms 300 --capacity_rps 100 --records 6000        # a rate quota
    python bench/throughput.py --latency_ms 300 --capacity_rps 0 --max_concurrency 64     # unlimited capacity
    python bench/throughput.py --latency_ms 0 --capacity_rps 0 --records 10000 --variants chatbeam
    python bench/throughput.py ... --repeat 3            # medians of three runs

It starts the local emulator (``python -m emulator``) once, on 127.0.0.1, then runs each variant in its own
subprocess against it, one after another, with the emulator's stats and capacity window reset in between:

- ``chatbeam``: the real job on DirectRunner (``pipelines.extract.run``) with ``--base_url <emulator>/v1``;
- ``runinference``: what a Beam user writes today — ``RunInference`` with a ``RemoteModelHandler`` subclass that
  calls the endpoint per element through the openai client (on ``--baseline_records`` records: at one request
  per round trip it would take hours on the full set);
- ``gather``: the cookbook loop — ``asyncio.gather`` over one ``AsyncOpenAI`` call per record, unbounded, with
  the SDK's default retries.

Printed per variant: records answered, errors, wall seconds (of the job, imports excluded), records/s, the
fraction of capacity reached (``capacity_rps``; with unlimited capacity ``max_concurrency / latency``), requests
the emulator answered 429 (count and share of all requests it received), peak RSS of the variant's process
(tree), and CPU seconds per 1000 records. Then the targets that apply to the scenario, checked.

Every wait is bounded (``--variant_timeout_s``, the emulator's ready line, HTTP timeouts); nothing listens
beyond 127.0.0.1.
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
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from pipelines.local_emulator import EmulatorStartError, LocalEmulator

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("chatbeam", "runinference", "gather")
DEFAULT_MODEL = "google/gemini-2.0-flash-001"
READY_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 10.0


# -- parent: orchestration ---------------------------------------------------------------------------------------


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--latency_ms", type=float, default=300.0, help="emulator latency per request (default 300)")
    p.add_argument("--capacity_rps", type=float, default=100.0, help="emulator capacity, req/s; 0 = unlimited")
    p.add_argument("--records", type=int, default=6000, help="records for chatbeam and gather (default 6000)")
    p.add_argument("--baseline_records", type=int, default=200,
                   help="records for runinference (default 200, capped at --records)")
    p.add_argument("--max_concurrency", type=int, default=64, help="chatbeam --max_concurrency (default 64)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    p.add_argument("--repeat", type=int, default=1, help="runs per variant; the table shows medians")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--chatbeam_args", default="",
                   help="extra chatbeam flags, e.g. '--direct_running_mode multi_processing --direct_num_workers 2'")
    p.add_argument("--variant_timeout_s", type=float, default=1800.0, help="kill a variant after this long")
    p.add_argument("--keep", action="store_true", help="keep the work directory (inputs and outputs)")
    p.add_argument("--json", dest="json_out", help="also write the raw results to this file")
    p.add_argument("--_worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--_url", help=argparse.SUPPRESS)
    p.add_argument("--_input", help=argparse.SUPPRESS)
    p.add_argument("--_out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.records < 1 or args.repeat < 1:
        p.error("--records and --repeat must be >= 1")
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants: {', '.join(sorted(unknown))}")
    return args


class Emulator:
    """``python -m emulator`` as a subprocess on 127.0.0.1; waits (bounded) for its ready line."""

    def __init__(self, latency_ms: float, capacity_rps: float) -> None:
        self.faults = {"latency_ms": latency_ms, "capacity_rps": capacity_rps}
        # The same launcher `chatbeam --emulator` uses: start, wait (bounded) for the ready line, stop.
        self._process = LocalEmulator(f"--latency_ms {latency_ms} --capacity_rps {capacity_rps}",
                                      ready_timeout_s=READY_TIMEOUT_S)
        try:
            self._process.__enter__()
        except EmulatorStartError as exc:
            raise SystemExit(f"bench: {exc}") from None
        self.url: str = self._process.url

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
            return json.loads(resp.read())

    def fresh(self) -> None:
        """Empty capacity window (faults set anew) and zeroed stats."""
        self._call("POST", "/emulator/faults", self.faults)
        self._call("POST", "/emulator/reset")

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/emulator/stats?fingerprints=0")

    def stop(self) -> None:
        self._process.__exit__(None, None, None)


def _write_input(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"r{i:07d}", "prompt": f"Write one sentence about item {i}."}) + "\n")


def _run_variant(args: argparse.Namespace, variant: str, emu: Emulator, work: Path, run_no: int) -> dict[str, Any]:
    n = min(args.records, args.baseline_records) if variant == "runinference" else args.records
    inp = work / f"input-{n}.jsonl"
    if not inp.exists():
        _write_input(inp, n)
    out = work / f"{variant}-{run_no}"
    out.mkdir()
    emu.fresh()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", variant, "--_url", emu.url,
           "--_input", str(inp), "--_out", str(out), "--model", args.model,
           "--max_concurrency", str(args.max_concurrency), "--records", str(n),
           "--chatbeam_args", args.chatbeam_args]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.variant_timeout_s)
    except subprocess.TimeoutExpired:
        return {"variant": variant, "records": n, "failed": f"timed out after {args.variant_timeout_s:.0f}s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"variant": variant, "records": n, "failed": f"exit {proc.returncode}: {' | '.join(tail)}"}
    result = json.loads(lines[-1])
    stats = emu.stats()
    by_status = stats.get("by_status", {})
    result.update(variant=variant, records=n, process_s=round(time.monotonic() - started, 2),
                  requests=stats.get("requests", 0), status_429=int(by_status.get("429", 0)),
                  emulator_max_in_flight=stats.get("max_in_flight"))
    return result


def _capacity(args: argparse.Namespace) -> float | None:
    if args.capacity_rps > 0:
        return args.capacity_rps
    if args.latency_ms > 0:
        return args.max_concurrency / (args.latency_ms / 1000.0)
    return None


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def _summarize(args: argparse.Namespace, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    capacity = _capacity(args)
    table = []
    for variant in [v for v in VARIANTS if v in args.variants.split(",")]:
        rows = [r for r in results if r["variant"] == variant]
        good = [r for r in rows if "failed" not in r]
        if not good:
            table.append({"variant": variant, "failed": rows[0].get("failed") if rows else "not run"})
            continue
        for r in good:
            r["rps"] = r["ok"] / r["wall_s"] if r["wall_s"] > 0 else None
            r["share_429"] = r["status_429"] / r["requests"] if r["requests"] else 0.0
            r["cpu_ms_per_record"] = 1000 * r["cpu_s"] / r["records"]
        row = {"variant": variant, "runs": len(good), "records": good[0]["records"]}
        for key in ("ok", "errors", "wall_s", "rps", "status_429", "share_429", "requests", "peak_rss_mb",
                    "cpu_ms_per_record"):
            row[key] = _median(good, key)
        row["capacity_fraction"] = row["rps"] / capacity if capacity and row["rps"] else None
        table.append(row)
    return table


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _print_table(args: argparse.Namespace, table: list[dict[str, Any]]) -> None:
    cap = _capacity(args)
    cap_text = (f"{args.capacity_rps:g} req/s" if args.capacity_rps > 0 else
                f"unlimited (reference {cap:.0f} req/s = max_concurrency/latency)" if cap else "unlimited")
    print(f"\nemulator: latency {args.latency_ms:g} ms, capacity {cap_text}; chatbeam max_concurrency "
          f"{args.max_concurrency}; medians of {args.repeat} run(s)\n")
    head = (f"{'variant':<13}{'records':>8}{'ok':>8}{'errors':>7}{'wall s':>9}{'rec/s':>9}{'of cap':>8}"
            f"{'429s':>7}{'429 %':>7}{'peak RSS MB':>12}{'CPU ms/rec':>11}")
    print(head)
    print("-" * len(head))
    for r in table:
        if "failed" in r:
            print(f"{r['variant']:<13}FAILED: {r['failed']}")
            continue
        print(f"{r['variant']:<13}{r['records']:>8}{_fmt(r['ok'], '.0f'):>8}{_fmt(r['errors'], '.0f'):>7}"
              f"{_fmt(r['wall_s'], '.1f'):>9}{_fmt(r['rps'], '.1f'):>9}"
              f"{'-' if r['capacity_fraction'] is None else format(100 * r['capacity_fraction'], '.1f') + '%':>8}"
              f"{_fmt(r['status_429'], '.0f'):>7}{_fmt(100 * r['share_429'], '.2f'):>7}"
              f"{_fmt(r['peak_rss_mb'], '.0f'):>12}{_fmt(r['cpu_ms_per_record'], '.2f'):>11}")


def _check_targets(args: argparse.Namespace, table: list[dict[str, Any]]) -> list[tuple[str, bool | None, str]]:
    by = {r["variant"]: r for r in table if "failed" not in r}
    cb, ri = by.get("chatbeam"), by.get("runinference")
    checks: list[tuple[str, bool | None, str]] = []
    if cb is None:
        return checks
    if cb["errors"]:
        checks.append(("chatbeam: every record answered", False, f"{cb['errors']:.0f} errors"))
    if args.capacity_rps > 0 and args.latency_ms > 0:
        frac = cb["capacity_fraction"]
        checks.append(("chatbeam >= 90% of capacity (aim 95%)", frac >= 0.9, f"{100 * frac:.1f}%"))
        checks.append(("chatbeam <= 2% of requests answered 429", cb["share_429"] <= 0.02,
                       f"{100 * cb['share_429']:.2f}%"))
    if args.capacity_rps == 0 and args.latency_ms > 0:
        frac = cb["capacity_fraction"]
        checks.append((f"chatbeam >= 85% of max_concurrency/latency", frac >= 0.85, f"{100 * frac:.1f}%"))
    if ri is not None and ri["rps"] and args.capacity_rps > 0 and args.latency_ms > 0:
        ratio = cb["rps"] / ri["rps"]
        checks.append(("chatbeam >= 10x RunInference records/s", ratio >= 10, f"{ratio:.1f}x"))
    if args.latency_ms == 0:
        checks.append(("chatbeam CPU per record (report)", None, f"{cb['cpu_ms_per_record']:.2f} ms"))
    return checks


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args._worker:
        return _worker(args)
    variants = [v for v in VARIANTS if v in args.variants.split(",")]
    work = Path(tempfile.mkdtemp(prefix="chatbeam-bench-"))
    emu = Emulator(args.latency_ms, args.capacity_rps)
    results = []
    try:
        for run_no in range(args.repeat):
            for variant in variants:
                print(f"bench: run {run_no + 1}/{args.repeat}: {variant} ...", file=sys.stderr, flush=True)
                result = _run_variant(args, variant, emu, work, run_no)
                print(f"bench:   {json.dumps(result)}", file=sys.stderr, flush=True)
                results.append(result)
    finally:
        emu.stop()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
        else:
            print(f"bench: work directory kept: {work}", file=sys.stderr)
    table = _summarize(args, results)
    _print_table(args, table)
    checks = _check_targets(args, table)
    if checks:
        print()
        for name, ok, detail in checks:
            mark = "PASS" if ok else ("----" if ok is None else "FAIL")
            print(f"  [{mark}] {name}: {detail}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"args": vars(args), "results": results, "table": table},
                                                  indent=2, default=str))
    return 0


# -- child: one variant in this process --------------------------------------------------------------------------


class _Usage:
    """CPU seconds and peak RSS of this process and its children (multi-process runners), polled via /proc."""

    def __init__(self) -> None:
        self.peak_tree_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_tree_kb = max(self.peak_tree_kb, _tree_rss_kb(os.getpid()))

    def finish(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(timeout=5)
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        peak_kb = max(self.peak_tree_kb, me.ru_maxrss, kids.ru_maxrss)
        return {"cpu_s": round(me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime, 3),
                "peak_rss_mb": round(peak_kb / 1024, 1)}


def _tree_rss_kb(pid: int) -> int:
    """Summed VmRSS of ``pid`` and its descendants (Linux /proc; 0 where unreadable)."""
    total, stack, seen = 0, [pid], set()
    while stack and len(seen) < 1000:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    stack.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError):
            continue
    return total


def _count_lines(out_dir: Path, prefix: str) -> int:
    """Lines in the sink's shards (``prefix-00000-of-00004...``), not in its side files (``prefix-summary.json``)."""
    return sum(sum(1 for _ in f.open()) for f in out_dir.glob(prefix + "-*-of-*") if f.is_file())


def _worker(args: argparse.Namespace) -> int:
    usage = _Usage()
    runner = {"chatbeam": _chatbeam, "runinference": _runinference, "gather": _gather}[args._worker]
    start = time.monotonic()
    ok, errors = runner(args, Path(args._out))
    wall = time.monotonic() - start
    print(json.dumps({"ok": ok, "errors": errors, "wall_s": round(wall, 3), **usage.finish()}), flush=True)
    return 0


def _chatbeam(args: argparse.Namespace, out: Path) -> tuple[int, int]:
    import shlex

    from pipelines.extract import run

    argv = ["--input", args._input, "--output", str(out / "results"), "--errors", str(out / "errors"),
            "--base_url", args._url + "/v1", "--model", args.model, "--max_concurrency", str(args.max_concurrency),
            "--runner", "DirectRunner", *shlex.split(args.chatbeam_args)]
    run(argv)
    return _count_lines(out, "results"), _count_lines(out, "errors")


def _runinference(args: argparse.Namespace, out: Path) -> tuple[int, int]:
    import apache_beam as beam
    import openai
    from apache_beam.ml.inference.base import PredictionResult, RemoteModelHandler, RunInference
    from apache_beam.options.pipeline_options import PipelineOptions

    base_url, model = args._url + "/v1", args.model

    class ChatHandler(RemoteModelHandler):
        """The baseline: one chat completion per element, retried by RemoteModelHandler on 429/5xx."""

        def __init__(self) -> None:
            super().__init__(namespace="bench", num_retries=5,
                             retry_filter=lambda e: isinstance(e, openai.APIStatusError)
                             and (e.status_code == 429 or e.status_code >= 500))

        def create_client(self):
            return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)

        def request(self, batch, model_client, inference_args=None):
            out = []
            for rec in batch:
                completion = model_client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": rec["prompt"]}])
                out.append(PredictionResult(rec, completion.choices[0].message.content))
            return out

        def batch_elements_kwargs(self):
            return {"max_batch_size": 1}

    with beam.Pipeline(options=PipelineOptions(["--runner", "DirectRunner"])) as p:
        (p | beam.io.ReadFromText(args._input) | beam.Map(json.loads) | RunInference(ChatHandler())
         | beam.Map(lambda r: json.dumps({"id": r.example["id"], "content": r.inference}))
         | beam.io.WriteToText(str(out / "results")))
    return _count_lines(out, "results"), 0


def _gather(args: argparse.Namespace, out: Path) -> tuple[int, int]:
    import asyncio

    import openai

    records = [json.loads(line) for line in open(args._input, encoding="utf-8")]

    async def main() -> tuple[int, int]:
        client = openai.AsyncOpenAI(base_url=args._url + "/v1", api_key="unused")  # the SDK's default retries

        async def one(rec):
            try:
                completion = await client.chat.completions.create(
                    model=args.model, messages=[{"role": "user", "content": rec["prompt"]}])
                return {"id": rec["id"], "content": completion.choices[0].message.content}
            except openai.APIError as exc:
                return {"id": rec["id"], "error": type(exc).__name__}

        results = await asyncio.gather(*(one(r) for r in records))
        await client.close()
        with open(out / "results.jsonl", "w", encoding="utf-8") as fh:
            for r in results:
                fh.write(json.dumps(r) + "\n")
        errors = sum(1 for r in results if "error" in r)
        return len(results) - errors, errors

    return asyncio.run(main())


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
