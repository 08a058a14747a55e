"""With --direct_running_mode multi_processing a user sees chatbeam's progress and summary, not every worker's
"Discarding unparseable args" warning listing every option (pipelines/worker_logs.py explains why workers log it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]


def test_multi_processing_run_shows_progress_and_summary_without_worker_start_up_noise(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": f"m{i}", "prompt": f"item {i}"}) + "\n" for i in range(120)))
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.extract", "--input", str(src), "--output", str(tmp_path / "out" / "results"),
         "--errors", str(tmp_path / "out" / "errors"), "--emulator", "--emulator_args", "--latency_ms 200",
         "--max_concurrency", "4", "--progress_interval_s", "1",
         "--direct_running_mode", "multi_processing", "--direct_num_workers", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=540, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Discarding unparseable args" not in proc.stderr
    assert "semi_persistent_directory" not in proc.stderr
    assert "chatbeam progress:" in proc.stderr  # the workers' progress lines reach the console
    assert "results   120" in proc.stdout and "errors    0" in proc.stdout
