"""A budget for the whole job, end to end: DirectRunner with 4 worker processes over several input files shares one
--max_total_tokens through the job ledger (a local directory). Billed tokens are the emulator's own count."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.extract import run
from tests.conftest import read_jsonl, write_jsonl

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
CAP = 20_000


def billed(emulator) -> int:
    tokens = emulator.stats(fingerprints=False)["tokens"]
    return tokens["prompt"] + tokens["completion"]


def test_four_worker_processes_share_one_token_cap(vertex_emulator, tmp_path):
    """Per-process budgets billed 4.0 x the cap here (80,088 tokens); the job ledger keeps the whole job at it."""
    ids = []
    for f in range(8):
        records = [{"id": f"f{f}-{i}", "prompt": f"Question {f}-{i} about shared budgets"} for i in range(250)]
        ids += [r["id"] for r in records]
        write_jsonl(tmp_path / f"in-{f}.jsonl", records)
    out = tmp_path / "out"
    result = run(["--input", str(tmp_path / "in-*.jsonl"), "--output", str(out / "results"),
                  "--errors", str(out / "errors"), "--emulator_url", vertex_emulator.url,
                  "--progress_interval_s", "0", "--max_total_tokens", str(CAP),
                  "--direct_running_mode", "multi_processing", "--direct_num_workers", "4"])
    results, errors = read_jsonl(str(out / "results")), read_jsonl(str(out / "errors"))
    assert sorted(r["id"] for r in results + errors) == sorted(ids)  # every record exactly once
    spent = billed(vertex_emulator)
    assert 0.80 * CAP <= spent <= 1.05 * CAP, spent
    assert {e["error_type"] for e in errors} == {"budget_exhausted"} and len(results) == len(set(ids)) - len(errors)
    budget = result.summary["budget"]
    assert budget["scope"] == "job" and budget["max_total_tokens"] == CAP and budget["spent_tokens"] == spent
    assert budget["budget_exhausted"] == len(errors) and budget["leases"] >= 2
    # Leases never exceed the cap, and every process gave its unused lease back at teardown (none was reclaimed).
    assert budget["outstanding"]["tokens"] <= CAP and budget["reclaims"] == 0 and budget["returns"] >= 1
    ledger = Path(budget["ledger"])
    assert ledger.is_relative_to(out / "results-checkpoint")  # the default: under the checkpoint directory


def test_an_unwritable_ledger_is_a_one_line_error_before_the_run(vertex_emulator, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "hi"}])
    proc = subprocess.run([sys.executable, "-m", "pipelines.extract", "--input", str(src),
                           "--output", str(tmp_path / "out" / "results"), "--emulator_url", vertex_emulator.url,
                           "--max_total_tokens", "1000", "--job_ledger", str(blocker / "ledger")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chatbeam: error: --job_ledger: cannot write the job ledger at")
    assert vertex_emulator.stats(fingerprints=False)["requests"] == 0  # nothing ran
    assert not (tmp_path / "out").exists()


def test_a_ledger_shared_with_other_limits_is_refused(vertex_emulator, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "hi"}])
    common = ["--input", str(src), "--emulator_url", vertex_emulator.url, "--progress_interval_s", "0",
              "--job_ledger", str(tmp_path / "ledger")]
    run([*common, "--output", str(tmp_path / "one" / "results"), "--max_total_tokens", "1000"])
    with pytest.raises(ValueError, match=r"other limits: --max_total_tokens 1000 \(this run: 2000\)"):
        run([*common, "--output", str(tmp_path / "two" / "results"), "--max_total_tokens", "2000"])
    job = json.loads((tmp_path / "ledger" / "job.json").read_text())
    assert job["max_total_tokens"] == 1000
