"""100,000 records through the real job (DirectRunner, default options) against the emulator at zero latency.

Each id exactly once in results + errors, the emulator answered each request body once, and the pipeline's memory
stays flat (sampled from /proc while it runs: no per-record growth). Both run as subprocesses, so the peak RSS is
the pipeline's own. Takes ~4-5 minutes on 2 cores (the client side is CPU-bound, ~2.5 ms CPU per record);
``CHATBEAM_SCALE_RECORDS`` changes the count for a quicker local check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import read_jsonl
from tests.reliability.conftest import ROWS

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
N = int(os.environ.get("CHATBEAM_SCALE_RECORDS", "100000"))
BROKEN_EVERY = 1000  # one line in a thousand is cut off: the errors sink works at scale too
MAX_RSS_MB = 1024
MAX_GROWTH_MB = 150

# The peak is VmHWM (this process's own memory since exec), not ru_maxrss: Linux carries the forking process's
# high-water RSS across exec into ru_maxrss, so a child of a large pytest would report pytest's peak.
MAIN_WITH_RSS = ("import json, sys\n"
                 "from pipelines.extract import main\n"
                 "rc = main(sys.argv[1:])\n"
                 "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
                 "print(json.dumps({'peak_rss_kb': int(hwm)}), file=sys.stderr)\n"
                 "sys.exit(rc)\n")


@pytest.fixture
def emulator_process():
    """The emulator in its own process (so it does not share the pipeline's GIL), at zero latency."""
    proc = subprocess.Popen([sys.executable, "-m", "emulator", "--port", "0", "--seed", "11"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready"
        yield ready["url"]
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def test_100k_records_each_exactly_once_in_flat_memory(emulator_process, tmp_path):
    src = tmp_path / "input.jsonl"
    want_results, want_errors = [], []
    with open(src, "w") as fh:
        for i in range(N):
            rid = f"r{i:06d}"
            if i % BROKEN_EVERY == BROKEN_EVERY - 1:
                fh.write(f'{{"id": "{rid}", "prompt": "cut off\n')
                want_errors.append(rid)
            else:
                fh.write(json.dumps({"id": rid, "prompt": f"scale record {i}", "metadata": {"i": i}}) + "\n")
                want_results.append(rid)
    out = tmp_path / "out"
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", MAIN_WITH_RSS, "--input", str(src), "--output",
                             str(out / "results"), "--errors", str(out / "errors"), "--emulator_url", emulator_process],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, float]] = []

    def sample() -> None:
        while proc.poll() is None:
            rss = _rss_mb(proc.pid)
            if rss is not None:
                samples.append((time.monotonic() - started, rss))
            time.sleep(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate(timeout=1100)
    wall = time.monotonic() - started
    sampler.join(timeout=5)
    assert proc.returncode == 0, stderr[-3000:]
    peak_kb = json.loads(stderr.strip().splitlines()[-1])["peak_rss_kb"]

    results, errors = read_jsonl(str(out / "results")), read_jsonl(str(out / "errors"))
    assert len(results) + len(errors) == N
    assert sorted(r["id"] for r in results) == want_results
    assert sorted(e["id"] for e in errors) == want_errors and {e["stage"] for e in errors} == {"read"}
    assert all(r["metadata"] == {"i": int(r["id"][1:])} for r in results)

    with urllib.request.urlopen(emulator_process + "/emulator/stats?fingerprints=0", timeout=10) as resp:
        stats = json.loads(resp.read())
    assert stats["requests"] == stats["ok"] == len(want_results) and stats["duplicate_ok"] == 0

    steady = [rss for t, rss in samples if t > wall * 0.25]
    growth = max(steady) - steady[0] if len(steady) > 1 else 0.0
    ROWS.append({"fault": f"none: {N:,} records, zero latency", "settings": {"records": N}, "records": N,
                 "results": len(results), "errors": len(errors), "requests": stats["requests"],
                 "retries": stats["requests"] - len(want_results), "by_status": stats["by_status"],
                 "faults": stats["faults"], "duplicate_ok": stats["duplicate_ok"], "wall_s": round(wall, 1),
                 "peak_rss_mb": round(peak_kb / 1024), "rss_growth_after_25pct_mb": round(growth),
                 "records_per_s": round(N / wall)})
    assert peak_kb / 1024 < MAX_RSS_MB
    assert growth < MAX_GROWTH_MB, f"RSS grew {growth:.0f} MB during the run: {samples[::10]}"
