"""The nightly job end to end against the emulator: run dates, kill + resume, dry run, budget + replay, the summary,
and the multi-process DirectRunner. Each input record must end in exactly one output across the runs."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.extract import run
from tests.conftest import read_jsonl, write_jsonl
from tests.e2e.test_extract import mixed_records

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "prompts.jsonl"
EMULATOR_OUTPUT_TOKENS = "48"  # the emulator answers ~47 completion tokens on these prompts (see docs/nightly.md)


def job(vertex_emulator, src: Path, out: Path, *args: str):
    """Run the job in-process; outputs under ``out`` (results and errors with distinct prefixes)."""
    return run(["--input", str(src), "--output", str(out / "results"), "--errors", str(out / "errors"),
                "--emulator_url", vertex_emulator.url, "--progress_interval_s", "0", *args])


def outputs(out: Path) -> tuple[list[dict], list[dict]]:
    return read_jsonl(str(out / "results-")), read_jsonl(str(out / "errors-"))


def prompts(n: int, tag: str = "q") -> list[dict]:
    return [{"id": f"{tag}{i}", "prompt": f"Question {i} about nightly pipelines, resumes and budgets"}
            for i in range(n)]


def varied_records(n: int, seed: int = 5) -> list:
    """Valid records of every shape the estimator has to count: prompts with odd words, system prompts, chats,
    schemas, inline and gs:// images, audio, several models."""
    rng = random.Random(seed)
    words = ["internationalization", "data", "pipelines", "naïve", "café", "123456789", "!", "?", "don't",
             "résumé", "x", "Beam's", "(parenthesised)", "e-mail", "2025-01-31"]
    out = [line for line in mixed_records(n) if isinstance(line, dict) and line["id"][:3] != "bad"]
    for i in range(n):
        kind = i % 6
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 80)))
        if kind == 0:
            out.append({"id": f"v{i}", "prompt": text})
        elif kind == 1:
            out.append({"id": f"v{i}", "system": "Be terse; answer in one line.", "prompt": text,
                        "params": {"temperature": 0.3}})
        elif kind == 2:
            out.append({"id": f"v{i}", "prompt": f"Review {i}: {text}", "schema": "ProductReview"})
        elif kind == 3:
            data = base64.b64encode(rng.randbytes(rng.randint(10, 3000))).decode()
            out.append({"id": f"v{i}", "messages": [{"role": "user", "content": [
                {"type": "text", "text": text},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}]}]})
        elif kind == 4:
            out.append({"id": f"v{i}", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Transcribe."},
                {"type": "input_audio", "input_audio": {"format": "audio/mp3", "data": f"gs://b/{i}.mp3"}}]}]})
        else:
            out.append({"id": f"v{i}", "prompt": f"Contact {i}: {text}", "schema": "ContactInfo",
                        "model": "google/gemini-2.5-flash"})
    return out


def test_two_run_dates_leave_both_outputs_intact(vertex_emulator, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", prompts(20))
    for day in ("2025-01-30", "2025-01-31"):
        run(["--input", str(src), "--output", str(tmp_path / "{run_date}" / "results"),
             "--errors", str(tmp_path / "{run_date}" / "errors"), "--run_date", day,
             "--emulator_url", vertex_emulator.url, "--progress_interval_s", "0"])
    for day in ("2025-01-30", "2025-01-31"):
        results, errors = outputs(tmp_path / day)
        assert len(results) == 20 and errors == []
        summary = json.loads((tmp_path / day / "results-summary.json").read_text())
        assert summary["run_date"] == day and summary["results"] == 20
        assert list((tmp_path / day / "results-checkpoint").glob("part-*.jsonl"))


def test_summary_counts_what_the_sinks_got(vertex_emulator, tmp_path):
    records = mixed_records(60)
    result = job(vertex_emulator, write_jsonl(tmp_path / "in.jsonl", records), tmp_path / "out")
    results, errors = outputs(tmp_path / "out")
    s = json.loads((tmp_path / "out" / "results-summary.json").read_text())
    assert s == result.summary
    assert (s["records_read"], s["results"], s["errors"]) == (60, len(results), len(errors)) == (60, 40, 20)
    assert s["errors_by_type"] == {"invalid_json": 10, "invalid_record": 10}
    assert s["tokens"]["prompt"] == sum(r["usage"]["prompt_tokens"] for r in results)
    assert s["tokens"]["completion"] == sum(r["usage"]["completion_tokens"] for r in results)
    assert s["http_requests"] == s["records_called"] == 40 and s["estimated_cost_usd"] > 0
    assert s["wall_seconds"] > 0 and s["records_per_second"] > 0


def test_an_unwritable_checkpoint_does_not_fail_the_run(vertex_emulator, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the checkpoint directory should be")
    result = job(vertex_emulator, write_jsonl(tmp_path / "in.jsonl", prompts(10)), tmp_path / "out",
                 "--checkpoint_dir", str(blocker / "checkpoint"))
    assert len(outputs(tmp_path / "out")[0]) == 10
    assert result.summary["checkpoint_write_failures"] >= 1


def _requests(emulator) -> int:
    return emulator.stats(fingerprints=False)["requests"]


def test_killed_run_resumes_without_redoing_the_finished_half(vertex_emulator, tmp_path):
    n = 2000
    src = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out"
    vertex_emulator.set_faults(latency_ms=40)
    log = tmp_path / "first-run.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.extract", "--input", str(src), "--output", str(out / "results"),
             "--errors", str(out / "errors"), "--emulator_url", vertex_emulator.url, "--max_concurrency", "16",
             "--checkpoint_every", "50", "--checkpoint_interval_s", "1"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        while _requests(vertex_emulator) < n // 2:
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the first run never got half-way"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    first = _requests(vertex_emulator)
    assert first < n and not list(out.glob("results-*.jsonl"))  # killed: Beam never finalised any output
    journaled = sum(1 for f in (out / "results-checkpoint").glob("part-*.jsonl") for _ in open(f))
    assert 0 < journaled <= first

    vertex_emulator.set_faults({})
    while vertex_emulator.stats(fingerprints=False)["in_flight"]:  # the dead run's last requests
        time.sleep(0.02)
    vertex_emulator.reset()
    result = job(vertex_emulator, src, out, "--resume")
    second = _requests(vertex_emulator)
    results, errors = outputs(out)
    ids = [r["id"] for r in results + errors]
    assert sorted(ids) == sorted(r["id"] for r in prompts(n)) and errors == []  # every record exactly once
    assert second < 1200 and second == n - journaled
    assert result.summary["resumed"] == journaled and result.summary["records_called"] == second
    assert vertex_emulator.stats(fingerprints=False)["duplicate_ok"] == 0


def test_resume_of_a_finished_run_calls_nothing_and_rewrites_the_same_outputs(vertex_emulator, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", mixed_records(60))
    out = tmp_path / "out"
    job(vertex_emulator, src, out)
    before = outputs(out)
    vertex_emulator.reset()
    result = job(vertex_emulator, src, out, "--resume")
    assert _requests(vertex_emulator) == 0 and result.summary["resumed"] == 40
    after = outputs(out)
    key = lambda r: r["id"]  # noqa: E731
    assert sorted(after[0], key=key) == sorted(before[0], key=key)
    assert sorted(after[1], key=key) == sorted(before[1], key=key)


def _estimate_and_real(vertex_emulator, src: Path, out: Path) -> tuple[int, int, dict]:
    vertex_emulator.reset()
    dry = job(vertex_emulator, src, out, "--dry_run")
    assert _requests(vertex_emulator) == 0  # a dry run sends nothing
    real = job(vertex_emulator, src, out)
    return dry.summary["est_prompt_tokens"], real.summary["tokens"]["prompt"], dry.summary


def test_dry_run_sends_nothing_and_estimates_prompt_tokens_within_10_percent(vertex_emulator, tmp_path):
    est, real, dry = _estimate_and_real(vertex_emulator, EXAMPLES, tmp_path / "examples")
    assert abs(est - real) <= 0.10 * real, (est, real)
    assert dry["records"] == 12 and dry["unsendable"] == 2 and dry["est_cost_usd"] > 0
    lines = read_jsonl(str(tmp_path / "examples" / "results-dry-run"))
    assert len(lines) == 12 and {"id", "request_key", "body", "est_prompt_tokens", "est_cost_usd"} <= lines[0].keys()
    bodies = {line["id"]: line["body"] for line in lines}
    assert bodies["think-9"]["extra_body"]["google"]["thinking_config"]["include_thoughts"] is True
    assert bodies["event-4"]["response_format"]["type"] == "json_schema"
    # The request keys of the dry run are those of the real run.
    real_keys = {r["id"]: r["request_key"] for r in read_jsonl(str(tmp_path / "examples" / "results-0"))}
    assert {line["id"]: line["request_key"] for line in lines} == real_keys
    assert (tmp_path / "examples" / "results-dry-run-00000.jsonl").exists()  # the real run did not delete it

    src = write_jsonl(tmp_path / "varied.jsonl", varied_records(120))
    est, real, _ = _estimate_and_real(vertex_emulator, src, tmp_path / "varied")
    assert abs(est - real) <= 0.10 * real, (est, real)


def test_budget_cap_stops_half_way_and_replay_finishes_the_rest(vertex_emulator, tmp_path):
    n = 300
    src = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    dry = job(vertex_emulator, src, tmp_path / "dry", "--dry_run", "--est_output_tokens", EMULATOR_OUTPUT_TOKENS)
    cap = dry.summary["est_cost_usd"] / 2
    vertex_emulator.reset()
    capped = job(vertex_emulator, src, tmp_path / "night", "--max_cost_usd", str(cap),
                 "--est_output_tokens", EMULATOR_OUTPUT_TOKENS)
    results, errors = outputs(tmp_path / "night")
    assert len(results) + len(errors) == n
    assert 0.35 * n <= len(results) <= 0.65 * n, len(results)
    assert {(e["error_type"], e["retryable"], e["attempts"]) for e in errors} == {("budget_exhausted", True, 0)}
    assert capped.summary["estimated_cost_usd"] <= cap * 1.10  # in-flight records may cost more than estimated
    assert _requests(vertex_emulator) == len(results)  # refused records were never sent

    replay = run(["--replay_errors", str(tmp_path / "night" / "errors-*.jsonl"),
                  "--output", str(tmp_path / "replay" / "results"), "--errors", str(tmp_path / "replay" / "errors"),
                  "--emulator_url", vertex_emulator.url, "--progress_interval_s", "0"])
    more, still = outputs(tmp_path / "replay")
    assert still == [] and replay.summary["records_read"] == len(errors)
    assert sorted(r["id"] for r in results + more) == sorted(r["id"] for r in prompts(n))  # exactly once overall
    assert vertex_emulator.stats(fingerprints=False)["duplicate_ok"] == 0


VOLATILE = {"latency_ms", "started_at", "finished_at"}


def _comparable(records: list[dict]) -> list[dict]:
    return sorted(({k: v for k, v in r.items() if k not in VOLATILE} for r in records),
                  key=lambda r: (str(r.get("id")), json.dumps(r, sort_keys=True)))


def test_multi_process_direct_runner_gives_the_same_outputs(vertex_emulator, tmp_path):
    """DoFns, configs, budget and journal settings survive pickling into separate worker processes (as on
    Dataflow), and the outputs equal the in-process run's."""
    src = write_jsonl(tmp_path / "in.jsonl", mixed_records(120))
    job(vertex_emulator, src, tmp_path / "inproc")
    multi = job(vertex_emulator, src, tmp_path / "multi", "--direct_num_workers", "2",
                "--direct_running_mode", "multi_processing", "--max_cost_usd", "100")
    a, b = outputs(tmp_path / "inproc"), outputs(tmp_path / "multi")
    assert _comparable(a[0]) == _comparable(b[0]) and _comparable(a[1]) == _comparable(b[1])
    assert multi.summary["results"] == len(b[0]) == 80 and multi.summary["errors"] == 40
    assert list((tmp_path / "multi" / "results-checkpoint").glob("part-*.jsonl"))
