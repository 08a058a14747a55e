"""--mode batch end to end: the real extract job, the emulator's batch prediction jobs, input staged and output read
on the GCS emulator. Every record comes back exactly once, with the same ``parsed`` as the online run; failed,
cancelled and partially failed jobs finish online (or become retryable errors); inputs over the per-job limit make
several jobs; several worker processes give the same outputs."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import httpx2
import pytest
from apache_beam.io.filesystems import FileSystems

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "prompts.jsonl"
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
EXTRA = [
    {"id": "tool-15", "prompt": "Weather in Oslo", "params": {"tools": [TOOL], "tool_choice": "required"}},
    {"id": "effort-16", "prompt": "Plan a meeting with Ann", "model": "google/gemini-2.5-flash",
     "params": {"reasoning_effort": "low"}, "schema": "CalendarEvent"},
    {"id": "https-17", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": "https://example.com/a.png"}]}]},
]
AUTH = {"authorization": "Bearer t"}


@pytest.fixture(scope="module")
def emu(gcp_env):
    from emulator import EmulatorConfig, serve_in_thread

    with serve_in_thread(EmulatorConfig(seed=9)) as running:  # batch jobs use GCS through STORAGE_EMULATOR_HOST
        yield running


@pytest.fixture
def quiet(emu):
    emu.set_faults(batch_queue_s=0.05, batch_duration_s=0.3)
    emu.reset()
    return emu


def write_input(tmp_path: Path, extra: list[dict] = EXTRA) -> tuple[Path, int]:
    lines = EXAMPLES.read_text().splitlines() + [json.dumps(r) for r in extra]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, sum(1 for line in lines if line.strip())


def run(emu, tmp_path: Path, name: str, *args: str, batch: bool = True, input_path: Path | None = None):
    from pipelines.extract import run as extract_run

    out = tmp_path / name
    argv = ["--input", str(input_path), "--output", str(out / "results"), "--errors", str(out / "errors"),
            "--emulator_url", emu.url, "--progress_interval_s", "0"]
    if batch:
        argv += ["--mode", "batch", "--batch_staging", f"gs://chatbeam-test/batch-{uuid.uuid4().hex[:8]}",
                 "--batch_poll_interval_s", "0.1"]
    result = extract_run(argv + list(args))
    return read(out / "results"), read(out / "errors"), result.summary


def read(prefix: Path) -> list[dict]:
    rows = []
    for meta in FileSystems.match([f"{prefix}-*-of-*.jsonl"])[0].metadata_list:
        with open(meta.path) as fh:
            rows += [json.loads(line) for line in fh if line.strip()]
    return rows


def ids(rows):
    return sorted(str(r.get("id")) for r in rows)


def test_batch_mode_gives_every_record_once_with_the_online_parsed(quiet, tmp_path):
    path, n_lines = write_input(tmp_path)
    results, errors, summary = run(quiet, tmp_path, "batch", "--direct_running_mode", "multi_processing",
                                   "--direct_num_workers", "2", input_path=path)
    online_results, online_errors, _ = run(quiet, tmp_path, "online", batch=False, input_path=path)

    assert len(results) + len(errors) == n_lines and len(set(ids(results + errors))) == n_lines
    assert {(e["id"], e["error_type"]) for e in errors} == {
        ("broken-12", "invalid_json"), ("broken-13", "invalid_record"), ("https-17", "unsupported_in_batch")}
    unsupported = next(e for e in errors if e["id"] == "https-17")
    assert unsupported["retryable"] and "gs:// URIs" in unsupported["message"] and unsupported["record"]
    online = {r["id"]: r for r in online_results}
    for r in results:
        assert r["service_tier"] == "batch" and r["started_at"] <= r["finished_at"]
        assert r["parsed"] == online[r["id"]]["parsed"] and r["content"] == online[r["id"]]["content"], r["id"]
        assert r["request_key"] == online[r["id"]]["request_key"]
    by_id = {r["id"]: r for r in results}
    assert by_id["event-4"]["parsed"].keys() == {"name", "date", "participants"}
    assert by_id["think-9"]["thoughts"] == online["think-9"]["thoughts"] and by_id["think-9"]["thoughts"]
    assert by_id["tool-15"]["finish_reason"] == "tool_calls"
    assert by_id["effort-16"]["usage"]["reasoning_tokens"] == online["effort-16"]["usage"]["reasoning_tokens"] > 0
    assert by_id["sentiment-10"]["metadata"] == {"source": "reviews", "row": 10}
    assert summary["batch"]["jobs"] == 2 and summary["batch"]["answered"] == len(results)  # two models: two jobs
    assert summary["tiers"]["batch"]["records"] == len(results) and summary["records_called"] == 0
    assert 0 < summary["estimated_cost_usd"] == summary["tiers"]["batch"]["cost_usd"]


def test_partial_line_failures_finish_online(quiet, tmp_path):
    quiet.set_faults(batch_queue_s=0.0, batch_duration_s=0.2, batch_line_failure_rate=0.3)
    path, n_lines = write_input(tmp_path, extra=[])
    results, errors, summary = run(quiet, tmp_path, "partial", input_path=path)

    stats = quiet.stats(fingerprints=False)
    failed = stats["batch"]["lines_failed"]
    assert 0 < failed < 12 and stats["batch"]["jobs_by_state"].get("JOB_STATE_PARTIALLY_SUCCEEDED", 0) >= 1
    assert len(results) == 12 and ids(errors) == ["broken-12", "broken-13"]
    tiers = [r["service_tier"] for r in results]
    assert tiers.count("standard") == failed and tiers.count("batch") == 12 - failed
    assert summary["batch"]["finished_online"] == failed == stats["by_tier"]["standard"]["ok"]


def test_a_failed_job_becomes_retryable_errors_with_fallback_error(quiet, tmp_path):
    quiet.set_faults(batch_queue_s=0.0, batch_duration_s=0.2, batch_job_failure_rate=1.0, batch_fail_at=0.5)
    path, n_lines = write_input(tmp_path, extra=[])
    results, errors, summary = run(quiet, tmp_path, "failed", "--batch_fallback", "error", input_path=path)

    failed = [e for e in errors if e["error_type"] == "batch_job_failed"]
    assert len(results) + len(errors) == n_lines and len(failed) >= 1
    assert all(e["retryable"] and e["status"] == "JOB_STATE_FAILED" and e["record"] and e["service_tier"] == "batch"
               and "emulated failure" in e["message"] for e in failed)
    assert all(r["service_tier"] == "batch" for r in results)  # the lines answered before the failure
    assert quiet.stats(fingerprints=False)["by_tier"].get("standard", {}).get("requests", 0) == 0  # nothing online


def test_a_job_cancelled_mid_way_finishes_online(quiet, tmp_path):
    quiet.set_faults(batch_queue_s=0.0, batch_duration_s=30.0)
    path, n_lines = write_input(tmp_path, extra=[{"id": f"more-{i}", "prompt": f"more {i}"} for i in range(40)])
    cancelled = []

    def cancel_the_running_job():  # an operator cancels the job in the console once some lines are answered
        with httpx2.Client(base_url=quiet.url, headers=AUTH, timeout=10) as http:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not cancelled:
                for job in http.get("/v1/projects/chatbeam-local/locations/us-central1/batchPredictionJobs").json().get(
                        "batchPredictionJobs", []):
                    if job["state"] == "JOB_STATE_RUNNING" and int(job["completionStats"]["successfulCount"]) >= 3:
                        http.post(f"/v1/{job['name']}:cancel")
                        cancelled.append(job["name"])
                time.sleep(0.05)

    watcher = threading.Thread(target=cancel_the_running_job, daemon=True)
    watcher.start()
    results, errors, summary = run(quiet, tmp_path, "cancelled", input_path=path)
    watcher.join(5)

    assert cancelled and len(results) + len(errors) == n_lines and ids(errors) == ["broken-12", "broken-13"]
    tiers = [r["service_tier"] for r in results]
    assert tiers.count("batch") >= 3 and tiers.count("standard") >= 1
    assert summary["batch"]["jobs_by_state"].get("cancelled") == 1
    assert summary["batch"]["finished_online_by_reason"].get("job_cancelled") == tiers.count("standard")


def test_inputs_over_the_per_job_limit_are_split_into_several_jobs(quiet, tmp_path):
    quiet.set_faults(batch_queue_s=0.0, batch_duration_s=0.1, batch_max_requests=10)
    extra = [{"id": f"n{i}", "prompt": f"record {i}"} for i in range(25)]
    path, n_lines = write_input(tmp_path, extra=extra)
    results, errors, summary = run(quiet, tmp_path, "split", "--batch_max_requests", "10", input_path=path)

    assert len(results) + len(errors) == n_lines and all(r["service_tier"] == "batch" for r in results)
    assert summary["batch"]["jobs"] >= 4  # 36 lines of gemini-2.0-flash in jobs of <= 10, plus one 2.5 job
    assert quiet.stats(fingerprints=False)["batch"]["jobs_by_state"] == {"JOB_STATE_SUCCEEDED": summary["batch"]["jobs"]}


def test_the_cli_with_emulator_runs_batch_mode(gcp_env, tmp_path):
    """What a user types: --emulator starts the emulator (which reads and writes the job files on GCS too)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.extract", "--emulator", "--mode", "batch", "--input", str(EXAMPLES),
         "--output", str(tmp_path / "results"), "--temp_location", "gs://chatbeam-test/tmp",
         "--emulator_args", "--batch_queue_s 0.1 --batch_duration_s 0.5"],
        cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results, errors = read(tmp_path / "results"), read(tmp_path / "results_errors")
    assert len(results) == 12 and ids(errors) == ["broken-12", "broken-13"]
    assert {r["service_tier"] for r in results} == {"batch"}
    assert "  batch     2 job(s) (succeeded 2), 12 lines: 12 answered" in proc.stdout
    assert "  tiers     batch 12 records" in proc.stdout
