"""Issue 16 figures: oversized answers (peak RSS, bytes read, bytes written) and the circuit breaker (requests
sent to a server answering 401 to everything). Prints a table; medians over --repeat runs.

    python bench/hardening.py --repeat 3
    python bench/hardening.py --repeat 1 --uncapped     # also the run without a cap (about 1 GB of RAM)

Each run is the real CLI in a subprocess against a stdlib server on 127.0.0.1 (tests/reliability/servers.py).
Peak RSS is the chatbeam process's own (``os.wait4``). Memory figures do not depend on CPU load; wall times do.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import write_jsonl  # noqa: E402
from tests.reliability.servers import always, huge_answer, misbehaving  # noqa: E402

ANSWER = 50 * 1024 * 1024


def cli(workdir: Path, n: int, server_url: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, float]:
    src = write_jsonl(workdir / "in.jsonl", [{"id": f"b{i}", "prompt": f"bench {i}"} for i in range(n)])
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "--input", str(src), "--output",
                             str(workdir / "r"), "--base_url", server_url, "--model", "m", "--progress_interval_s",
                             "0", *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    _, status, usage = os.wait4(proc.pid, 0)
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024


def written(workdir: Path) -> int:
    return sum(f.stat().st_size for f in workdir.rglob("*.jsonl") if f.name != "in.jsonl")


def oversized(cap: int, stream: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp, misbehaving(huge_answer(ANSWER)) as server:
        started = time.monotonic()
        code, peak = cli(Path(tmp), 3, server.url, "--max_response_bytes", str(cap), "--max_error_rate", "1",
                         *(["--stream"] if stream else []))
        return {"exit": code, "peak_rss_mb": peak, "server_sent_mb": server.bytes_sent / 1e6,
                "files_kb": written(Path(tmp)) / 1e3, "wall_s": time.monotonic() - started}


def breaker(concurrency: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp, misbehaving(always(401)) as server:
        started = time.monotonic()
        code, peak = cli(Path(tmp), 500, server.url, "--api_key_env", "CHATBEAM_BENCH_KEY", "--max_concurrency",
                         str(concurrency), env={"CHATBEAM_BENCH_KEY": "sk-bench-wrong-key-0000"})
        return {"exit": code, "requests": server.requests, "peak_rss_mb": peak, "wall_s": time.monotonic() - started}


def median_row(name: str, runs: list[dict]) -> str:
    keys = runs[0].keys()
    cells = ", ".join(f"{k} {statistics.median(r[k] for r in runs):,.1f}" for k in keys)
    return f"| {name} | {len(runs)} | {cells} |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--uncapped", action="store_true", help="also run with a 1 GiB cap (the old behaviour)")
    args = parser.parse_args()
    scenarios = [("3 x 50 MB answers, cap 1 MiB, JSON", lambda: oversized(1 << 20, False)),
                 ("3 x 50 MB answers, cap 1 MiB, --stream", lambda: oversized(1 << 20, True)),
                 ("500 records, server answers 401, --max_concurrency 64", lambda: breaker(64)),
                 ("500 records, server answers 401, --max_concurrency 8", lambda: breaker(8))]
    if args.uncapped:
        scenarios.append(("3 x 50 MB answers, no cap (1 GiB), JSON", lambda: oversized(1 << 30, False)))
    print("| scenario | runs | medians |\n|---|---|---|")
    for name, scenario in scenarios:
        print(median_row(name, [scenario() for _ in range(args.repeat)]), flush=True)


if __name__ == "__main__":
    main()
