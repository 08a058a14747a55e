"""Many independent chatbeam processes against one quota pool: do they share it, and how many 429s does it cost?

    python bench/many_processes.py                                  # N = 1, 4, 8, 16, then halve and churn
    python bench/many_processes.py --processes 8 --scenarios steady --repeat 3
    python bench/many_processes.py --scenarios halve,churn --repeat 3
    python bench/many_processes.py --processes 4 --duration_s 20     # a quick look

It starts the emulator once (``--latency_ms 300 --capacity_rps 100``: a pool of 100 requests per sliding second),
then, per run, N copies of the real job (``pipelines.extract``, DirectRunner, ``--emulator_url``), each with its own
input file and outputs and no knowledge of the others, as separate OS processes. Starting 16 Beam processes on a
small machine takes long and unevenly, so each child imports Beam and the pipeline first, reports ready, and waits
at a start gate that the parent opens for all at once; the rates are then measured over the window when all of them
are running: from ``--warmup_s`` (10 s) after the last process had its first answer until the first one finished.
The warm-up leaves out start-up — every process's slow start, which at 16 processes opened at once overshoots the
pool for a few seconds (about 120 requests answered 429 on this machine, ~1.3 % of a 90-s run's requests); the
whole-run 429 share, start-up included, is printed beside it. Each child
samples its own limiter's counters every 0.25 s; the parent samples the emulator's counters (ground truth for
requests and 429s) every 0.5 s.

Scenarios:

- ``steady``: N = ``--processes`` (default 1, 4, 8, 16) processes with equal work (capacity × ``--duration_s`` / N
  records each);
- ``halve``: 8 processes; ``--halve_after_s`` seconds after the last process's first answer the pool's capacity
  halves (POST /emulator/faults); measured before (from ``--warmup_s`` after that answer) and after (from 2 s after
  the change), ``--duration_s`` of work at half;
- ``churn``: 4 long and 4 short processes start; once the short ones have finished (left), 4 more start (join);
  capacity used and 429s over the whole time the long ones run, shares among long and joined while all run (from
  the last joiner's first answer, and again from ``--settle_s`` later: the joiners start small while the long ones
  hold the pool, so the first figure includes how long they take to find their part).

Printed per row: records/s in the window, % of the pool's capacity, % of requests the emulator answered 429,
the smallest and largest per-process share of the window's records relative to a fair share (1.00 = fair), the
whole-run 429 share (start-up included), and whether every record came out (results + errors = input, no errors).
Medians over ``--repeat`` runs. Every wait is bounded (``--timeout_s`` per run, ready/gate/HTTP timeouts).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import Emulator as ThroughputEmulator  # noqa: E402 - the same emulator launcher as bench/throughput.py

READY_TIMEOUT_S = 600.0  # 16 processes importing Beam on 2 busy cores
GATE_TIMEOUT_S = 900.0
SAMPLE_S = 0.25
SCENARIOS = ("steady", "halve", "churn")


# -- parent ---------------------------------------------------------------------------------------------------------


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", default="1,4,8,16", help="N for the steady scenario (comma-separated)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"subset of {','.join(SCENARIOS)}")
    p.add_argument("--latency_ms", type=float, default=300.0)
    p.add_argument("--capacity_rps", type=float, default=100.0)
    p.add_argument("--duration_s", type=float, default=60.0,
                   help="seconds of work at full capacity per steady run (sets the records per process)")
    p.add_argument("--halve_after_s", type=float, default=25.0,
                   help="halve: seconds after all processes run until the cut (measured before it from --warmup_s)")
    p.add_argument("--warmup_s", type=float, default=10.0,
                   help="steady: rates and shares are measured from this long after the last process's first answer "
                        "(start-up excluded; the whole-run 429 share includes it)")
    p.add_argument("--settle_s", type=float, default=15.0,
                   help="churn: shares are also compared from this long after the last joiner's first answer")
    p.add_argument("--repeat", type=int, default=1, help="runs per row; the table shows medians")
    p.add_argument("--max_concurrency", type=int, default=64)
    p.add_argument("--chatbeam_args", default="", help="extra flags for every chatbeam process")
    p.add_argument("--limiters", default="new",
                   help="comma-separated: new (client/limits.py) and/or v1 (the policy before issue 10, from git "
                        "history: see bench/limiter_sim.py), run side by side")
    p.add_argument("--timeout_s", type=float, default=1800.0, help="kill a run's processes after this long")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--json", dest="json_out", help="also write every run's raw figures to this file")
    p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--_gate", help=argparse.SUPPRESS)
    p.add_argument("--_trace", help=argparse.SUPPRESS)
    p.add_argument("--_records", type=int, help=argparse.SUPPRESS)
    p.add_argument("--_argv", help=argparse.SUPPRESS)
    p.add_argument("--_limiter", default="new", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args._child:
        unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
        if unknown or args.repeat < 1 or args.capacity_rps <= 0:
            p.error(f"unknown scenarios {sorted(unknown)}" if unknown else "--repeat >= 1 and --capacity_rps > 0")
    return args


class Emulator(ThroughputEmulator):
    """bench/throughput.py's emulator process (bounded start, fault changes), plus a sampler of its counters."""

    def __init__(self, latency_ms: float, capacity_rps: float) -> None:
        super().__init__(latency_ms, capacity_rps)
        self.samples: list[tuple[float, int, int]] = []  # (time, answered 200, answered 429)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def fresh(self) -> None:
        super().fresh()
        self.samples = []

    def set_capacity(self, capacity_rps: float) -> None:
        self._call("POST", "/emulator/faults", {**self.faults, "capacity_rps": capacity_rps})

    def sample(self) -> dict[str, Any]:
        stats = self.stats()
        by = stats.get("by_status", {})
        self.samples.append((time.time(), int(by.get("200", 0)), int(by.get("429", 0))))
        return stats

    def start_sampling(self) -> None:
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(0.5):
                try:
                    self.sample()
                except OSError:
                    pass
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop_sampling(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return self.sample()

    def at(self, t: float) -> tuple[float, float]:
        """(200s, 429s) answered by time ``t``, interpolated between samples."""
        return _interp([(s[0], (s[1], s[2])) for s in self.samples], t)

def _interp(series: list[tuple[float, tuple[float, ...]]], t: float) -> tuple[float, ...]:
    if not series:
        return (0.0, 0.0)
    if t <= series[0][0]:
        return series[0][1]
    for (t0, v0), (t1, v1) in zip(series, series[1:]):
        if t0 <= t <= t1:
            f = (t - t0) / (t1 - t0) if t1 > t0 else 1.0
            return tuple(a + f * (b - a) for a, b in zip(v0, v1))
    return series[-1][1]


@dataclass
class Child:
    """One chatbeam process of a run."""

    name: str
    records: int
    group: str
    gate: Path
    trace: Path
    out: Path
    proc: subprocess.Popen | None = None
    samples: list[tuple] = field(default_factory=list)  # (time, ok attempts, throttled attempts, window, in flight)
    returncode: int | None = None
    stderr_tail: str = ""

    def first_ok(self) -> float | None:
        return next((s[0] for s in self.samples if s[1] > 0), None)

    def finished(self) -> float | None:
        return next((s[0] for s in self.samples if s[1] >= self.records), None)

    def ok_at(self, t: float) -> float:
        return _interp([(s[0], (s[1],)) for s in self.samples], t)[0]

    def outputs(self) -> tuple[int, int]:
        def lines(prefix: str) -> int:
            return sum(sum(1 for line in f.open() if line.strip()) for f in self.out.glob(prefix + "-*-of-*"))
        return lines("results"), lines("errors")


def _write_input(path: Path, name: str, n: int) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"{name}-{i:06d}", "prompt": f"Process {name}, item {i}: one sentence."}))
            fh.write("\n")


def _spawn(args: argparse.Namespace, emu: Emulator, work: Path, name: str, records: int, group: str,
           limiter: str) -> Child:
    d = work / name
    d.mkdir(parents=True)
    _write_input(d / "input.jsonl", name, records)
    child = Child(name, records, group, work / f"gate-{group}", d / "trace.jsonl", d / "out")
    argv = ["--input", str(d / "input.jsonl"), "--output", str(child.out / "results"),
            "--errors", str(child.out / "errors"), "--emulator_url", emu.url, "--runner", "DirectRunner",
            "--max_concurrency", str(args.max_concurrency), *args.chatbeam_args.split()]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", "--_gate", str(child.gate),
           "--_trace", str(child.trace), "--_records", str(records), "--_argv", json.dumps(argv),
           "--_limiter", limiter]
    with open(d / "stdout.log", "w") as out, open(d / "stderr.log", "w") as err:  # files: a full pipe would block
        child.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err,
                                      env={**os.environ, "PYTHONPATH": str(ROOT)})
    return child


def _wait_ready(children: list[Child], deadline: float) -> None:
    """Each child touches ``<trace>.ready`` once it has imported everything; bounded by ``deadline``."""
    for child in children:
        ready = child.trace.with_suffix(".ready")
        while not ready.exists():
            if child.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} did not get ready: {_tail(child.trace.parent / 'stderr.log')}")
            time.sleep(0.1)


def _tail(path: Path, lines: int = 6) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def _collect(child: Child, deadline: float) -> None:
    try:
        child.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        child.proc.kill()
        child.proc.wait(timeout=30)
    child.returncode = child.proc.returncode
    child.stderr_tail = _tail(child.trace.parent / "stderr.log")
    if child.trace.exists():
        child.samples = [tuple(json.loads(line)) for line in child.trace.read_text().splitlines() if line.strip()]


def _kill_all(children: list[Child]) -> None:
    for child in children:
        if child.proc is not None and child.proc.poll() is None:
            child.proc.kill()
            try:
                child.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass


class _NoWindow(Exception):
    """The scenario left no time in which to measure (the row is reported as failed, with the reason)."""


def _window_figures(emu: Emulator, children: list[Child], t0: float, t1: float,
                    capacity: float) -> dict[str, float]:
    """Records/s, % of capacity and 429 share from the emulator's counters over [t0, t1]."""
    if t1 - t0 < 1.0:
        # An empty or reversed window (a process finished before it began) has no rate: clamping its span to a
        # tiny positive number printed negative windows and rates of -1e11 for "N = 8, capacity halves".
        raise _NoWindow(f"no window to measure: it would end {t0 - t1:.1f} s before it starts")
    ok0, r0 = emu.at(t0)
    ok1, r1 = emu.at(t1)
    ok, rejected = ok1 - ok0, r1 - r0
    span = t1 - t0
    return {"window_s": round(t1 - t0, 1), "rps": ok / span, "capacity_fraction": ok / span / capacity,
            "share_429": rejected / (ok + rejected) if ok + rejected else 0.0}


def _shares(children: list[Child], t0: float, t1: float) -> tuple[float, float]:
    done = [c.ok_at(t1) - c.ok_at(t0) for c in children]
    fair = sum(done) / len(done) if done else 0.0
    return (min(done) / fair, max(done) / fair) if fair > 0 else (0.0, 0.0)


def _run(args: argparse.Namespace, emu: Emulator, work: Path, scenario: str, n: int, run_no: int,
         limiter: str) -> dict:
    """One run of a scenario; returns its figures (or ``failed``)."""
    run_dir = work / f"{scenario}-{n}-{limiter}-{run_no}"
    cap = args.capacity_rps
    if scenario == "steady":
        plan = [(f"p{i:02d}", max(1, math.ceil(cap * args.duration_s / n)), "a") for i in range(n)]
    elif scenario == "halve":
        # enough for the start-up spread, halve_after_s at full capacity and duration_s at half, with a margin
        # for a process above its fair share (the window after the cut ends when the first process finishes)
        total = 1.25 * (cap * (args.halve_after_s + 10.0) + cap / 2 * args.duration_s)
        plan = [(f"p{i:02d}", math.ceil(total / n), "a") for i in range(n)]
    else:  # churn: long ones run throughout; short ones leave early; joiners come once they have left (3.0 units,
        # not 2.2: with 2.2 a long process above its share finished 9 s after the join and left no window to compare)
        unit = cap * args.duration_s / 8
        plan = ([(f"long{i}", math.ceil(3.0 * unit), "a") for i in range(4)]
                + [(f"short{i}", math.ceil(0.5 * unit), "a") for i in range(4)]
                + [(f"join{i}", math.ceil(1.0 * unit), "b") for i in range(4)])
    emu.fresh()
    deadline = time.monotonic() + args.timeout_s
    children = [_spawn(args, emu, run_dir, name, records, group, limiter) for name, records, group in plan]
    try:
        _wait_ready(children, min(deadline, time.monotonic() + READY_TIMEOUT_S))
        emu.start_sampling()
        (run_dir / "gate-a").touch()
        events = _drive(args, emu, children, scenario, run_dir, deadline)
        for child in children:
            _collect(child, deadline)
        final = emu.stop_sampling()
    except Exception as exc:  # noqa: BLE001 - one failed run is reported as such; the bench goes on
        emu.stop_sampling()
        return {"scenario": scenario, "n": n, "limiter": limiter, "failed": str(exc)[:500]}
    finally:
        _kill_all(children)
    try:
        return {**_figures(args, emu, children, scenario, n, events, final), "limiter": limiter}
    except _NoWindow as exc:
        return {"scenario": scenario, "n": n, "limiter": limiter, "failed": str(exc)}


def _drive(args: argparse.Namespace, emu: Emulator, children: list[Child], scenario: str, run_dir: Path,
           deadline: float) -> dict[str, float]:
    """The scenario's events while the run goes on: the capacity cut, or the joiners' gate."""
    events: dict[str, float] = {}
    if scenario == "halve":
        started = _when(lambda: all(_ok_now(c) > 0 for c in children), deadline)
        time.sleep(min(args.halve_after_s, max(0.0, deadline - time.monotonic())))
        emu.set_capacity(args.capacity_rps / 2)
        events.update(all_running=started, halved=time.time())
    elif scenario == "churn":
        short = [c for c in children if c.name.startswith("short")]
        events["short_left"] = _when(lambda: all(_ok_now(c) >= c.records for c in short), deadline)
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        (run_dir / "gate-b").touch()
        events["joined_gate"] = time.time()
    return events


def _ok_now(child: Child) -> int:
    try:
        lines = child.trace.read_text().splitlines()
    except OSError:
        return 0
    return json.loads(lines[-1])[1] if lines else 0


def _when(condition, deadline: float) -> float:
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for the scenario's next step")
        time.sleep(0.25)
    return time.time()


def _figures(args: argparse.Namespace, emu: Emulator, children: list[Child], scenario: str, n: int,
             events: dict[str, float], final: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"scenario": scenario, "n": n}
    complete = True
    for c in children:
        results, errors = c.outputs()
        if c.returncode != 0 or results + errors != c.records or errors:
            complete = False
            row.setdefault("problems", []).append(f"{c.name}: exit {c.returncode}, {results} results, {errors} "
                                                  f"errors of {c.records}; {c.stderr_tail[-300:]}")
    row["complete"] = complete
    by = final.get("by_status", {})
    row["run_share_429"] = int(by.get("429", 0)) / max(1, final.get("requests", 0))
    row["duplicate_ok"] = final.get("duplicate_ok")
    firsts = [c.first_ok() for c in children]
    ends = [c.finished() for c in children]
    if any(t is None for t in firsts + ends):
        row["failed"] = "a process never answered or never finished"
        return row
    cap = args.capacity_rps
    if scenario == "steady":
        t0, t1 = max(firsts) + args.warmup_s, min(ends)
        row.update(_window_figures(emu, children, t0, t1, cap))
        row["min_share"], row["max_share"] = _shares(children, t0, t1)
        row["start_spread_s"] = round(max(firsts) - min(firsts), 1)
    elif scenario == "halve":
        # Before the cut: from --warmup_s after the last process's first answer (start-up excluded, as in the
        # steady rows) to the cut; after: from 2 s after the cut until the first process finished (shares are
        # only comparable while all run).
        t0, th, t1 = max(firsts) + args.warmup_s, events["halved"], min(ends)
        if t1 < th + 12.0 or th < t0 + 1.0:
            row["failed"] = (f"a process finished {t1 - th:.1f} s after the halving (need >= 12 s): raise "
                             f"--duration_s" if t1 < th + 12.0 else "the halving came before all processes ran")
            return row
        before = _window_figures(emu, children, t0, th, cap)
        after = _window_figures(emu, children, th + 2.0, t1, cap / 2)
        row.update(after)
        row["before"] = before
        row["min_share"], row["max_share"] = _shares(children, th + 2.0, t1)
    else:
        longs = [c for c in children if c.group == "a" and c.name.startswith("long")]
        joins = [c for c in children if c.group == "b"]
        t0 = max(c.first_ok() for c in children if c.group == "a")
        t1 = min(c.finished() for c in longs + joins)
        row.update(_window_figures(emu, children, t0, t1, cap))
        j0 = max(c.first_ok() for c in joins)
        row["min_share"], row["max_share"] = _shares(longs + joins, j0, t1) if t1 > j0 else (0.0, 0.0)
        row["join_window_s"] = round(t1 - j0, 1)
        # The same, once the joiners had --settle_s to find their part (they start from 2 requests in flight
        # while the long ones hold the whole pool): how fair the sharing is, rather than how fast it gets there.
        ts = j0 + args.settle_s
        row["settled"] = ({"window_s": round(t1 - ts, 1), **dict(zip(("min_share", "max_share"),
                                                                    _shares(longs + joins, ts, t1)))}
                          if t1 > ts + 5.0 else None)
    return row


def _median(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return statistics.median(values) if values else None


def _label(scenario: str, n: int) -> str:
    return {"steady": f"N = {n}", "halve": f"N = {n}, capacity halves", "churn": "4 + 4 leave + 4 join"}[scenario]


def _print_table(args: argparse.Namespace, results: list[dict]) -> None:
    print(f"\nemulator: {args.capacity_rps:g} req/s pool (sliding 1 s), {args.latency_ms:g} ms latency; "
          f"max_concurrency {args.max_concurrency}; medians of {args.repeat} run(s); rates over the window when "
          f"all processes run (N = k rows: from {args.warmup_s:g} s after the last one's first answer, start-up "
          f"excluded)\n")
    head = (f"{'scenario':<30}{'window s':>9}{'rec/s':>8}{'of cap':>8}{'429 %':>7}{'min sh':>8}{'max sh':>8}"
            f"{'run 429 %':>10}  all records")
    print(head)
    print("-" * len(head))
    seen: list[tuple[str, int, str]] = []
    for r in results:
        if (r["scenario"], r["n"], r["limiter"]) not in seen:
            seen.append((r["scenario"], r["n"], r["limiter"]))
    for scenario, n, limiter in seen:
        rows = [r for r in results if (r["scenario"], r["n"], r["limiter"]) == (scenario, n, limiter)]
        good = [r for r in rows if "failed" not in r]
        label = _label(scenario, n) + ("" if args.limiters == "new" else f" [{limiter}]")
        if not good:
            print(f"{label:<30}FAILED: {rows[0].get('failed')}")
            continue
        m = {k: _median(good, k) for k in ("window_s", "rps", "capacity_fraction", "share_429", "min_share",
                                            "max_share", "run_share_429")}
        complete = "yes" if all(r.get("complete") for r in good) else "NO"
        print(f"{label:<30}{m['window_s']:>9.0f}{m['rps']:>8.1f}{100 * m['capacity_fraction']:>7.1f}%"
              f"{100 * m['share_429']:>6.2f}%{m['min_share']:>8.2f}{m['max_share']:>8.2f}"
              f"{100 * m['run_share_429']:>9.2f}%  {complete} ({len(good)}/{len(rows)} runs)")
        if scenario == "halve":
            before = [r["before"] for r in good]
            print(f"{'  (before the cut)':<30}{_median(before, 'window_s'):>9.0f}{_median(before, 'rps'):>8.1f}"
                  f"{100 * _median(before, 'capacity_fraction'):>7.1f}%{100 * _median(before, 'share_429'):>6.2f}%")
        settled = [r["settled"] for r in good if r.get("settled")]
        if scenario == "churn" and settled:
            print(f"{f'  (from {args.settle_s:g} s after the join)':<30}{_median(settled, 'window_s'):>9.0f}"
                  f"{'':>23}{_median(settled, 'min_share'):>8.2f}{_median(settled, 'max_share'):>8.2f}")
    print("\nof cap: records/s over the pool's capacity (after a halving: over the halved capacity); 429 %: share of "
          "requests the emulator answered 429 in the window; min/max sh: a process's records in the window over a "
          "fair share; run 429 %: the whole run, start-up included.")


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args._child:
        return _child(args)
    work = Path(tempfile.mkdtemp(prefix="chatbeam-many-"))
    emu = Emulator(args.latency_ms, args.capacity_rps)
    plan = []
    for scenario in [s for s in SCENARIOS if s in args.scenarios.split(",")]:
        ns = [int(x) for x in args.processes.split(",")] if scenario == "steady" else [8 if scenario == "halve"
                                                                                       else 12]
        plan += [(scenario, n) for n in ns]
    results = []
    try:
        for run_no in range(args.repeat):
            for (scenario, n), limiter in [(sn, lim) for sn in plan for lim in args.limiters.split(",")]:
                print(f"bench: run {run_no + 1}/{args.repeat}: {scenario} N={n} {limiter} "
                      f"(load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
                row = _run(args, emu, work, scenario, n, run_no, limiter)
                row["load_before"] = round(os.getloadavg()[0], 1)
                print(f"bench:   {json.dumps(row, default=str)}", file=sys.stderr, flush=True)
                results.append(row)
    finally:
        emu.stop()
        if args.keep:
            print(f"bench: work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    _print_table(args, results)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2, default=str))
    return 0


# -- child: one chatbeam process ---------------------------------------------------------------------------------


def _child(args: argparse.Namespace) -> int:
    """Import everything, report ready, wait at the gate, then run the real job while sampling its limiter."""
    from client import engine
    from pipelines.extract import main as chatbeam_main

    if args._limiter == "v1":
        from limiter_sim import _v1_class  # bench/ is this script's directory

        engine.RequestLimiter = _v1_class()

    Path(args._trace).with_suffix(".ready").touch()
    gate, deadline = Path(args._gate), time.monotonic() + GATE_TIMEOUT_S
    while not gate.exists():
        if time.monotonic() > deadline:
            print("bench child: the start gate never opened", file=sys.stderr)
            return 3
        time.sleep(0.02)
    stop = threading.Event()
    trace = open(args._trace, "w", encoding="utf-8")
    last = [0, 0]

    def sample() -> None:
        ok = thr = in_flight = 0
        window = 0.0
        for eng in list(engine._REGISTRY.values()):
            limiter = eng.limiter
            if limiter is not None:
                ok += limiter.outcomes["ok"]
                thr += limiter.outcomes["throttled"]
                window += getattr(limiter, "window", limiter.limit)
                in_flight += limiter.in_flight
        last[0], last[1] = max(last[0], ok), max(last[1], thr)  # engines leave the registry at teardown
        trace.write(json.dumps([time.time(), last[0], last[1], round(window, 2), in_flight]) + "\n")
        trace.flush()

    def sampler() -> None:
        while not stop.wait(SAMPLE_S):
            sample()

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    try:
        rc = chatbeam_main(json.loads(args._argv))
    finally:
        stop.set()
        thread.join(timeout=5)
        if last[0] < args._records:
            last[0] = max(last[0], _results_written(json.loads(args._argv)))
        sample()
        trace.close()
    return rc


def _results_written(argv: list[str]) -> int:
    prefix = Path(argv[argv.index("--output") + 1])
    return sum(sum(1 for line in f.open() if line.strip()) for f in prefix.parent.glob(prefix.name + "-*-of-*"))


if __name__ == "__main__":
    sys.exit(main())
