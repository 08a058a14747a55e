"""The main job end to end against the emulator: every input line ends in results or errors exactly once."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import read_jsonl

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_command_as_a_new_user_runs_it(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.extract", "--emulator", "--input", str(ROOT / "examples/prompts.jsonl"),
         "--output", str(out / "results"), "--errors", str(out / "errors")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results, errors = read_jsonl(str(out / "results")), read_jsonl(str(out / "errors"))
    lines = [line for line in (ROOT / "examples/prompts.jsonl").read_text().splitlines() if line.strip()]
    assert len(results) + len(errors) == len(lines)
    assert sorted((e["stage"], e["id"]) for e in errors) == [("read", "broken-12"), ("read", "broken-13")]
    by_id = {r["id"]: r for r in results}
    assert by_id["event-4"]["parsed"].keys() == {"name", "date", "participants"}
    assert "[image/png 70 bytes]" in by_id["image-inline-7"]["content"]
    assert by_id["think-9"]["thoughts"] and "<think>" not in by_id["think-9"]["content"]
    assert by_id["sentiment-10"]["metadata"] == {"source": "reviews", "row": 10}


def test_usage_errors_exit_2_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipelines.extract", "--input", str(tmp_path / "nope*.jsonl"),
                           "--output", str(tmp_path / "o"), "--emulator"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"chatbeam: error: --input {str(tmp_path / 'nope*.jsonl')!r} "
                                                "matches no files"]


def mixed_records(n: int) -> list:
    lines = []
    for i in range(n):
        kind = i % 6
        if kind == 0:
            lines.append({"id": f"p{i}", "prompt": f"Question number {i} about pipelines"})
        elif kind == 1:
            lines.append({"id": f"m{i}", "messages": [{"role": "user", "content": f"hi {i}"},
                                                       {"role": "assistant", "content": "hello"},
                                                       {"role": "user", "content": f"more about {i}"}]})
        elif kind == 2:
            lines.append({"id": f"img{i}", "messages": [{"role": "user", "content": [
                {"type": "text", "text": f"describe {i}"}, {"type": "image_url", "image_url": f"gs://b/{i}.jpg"}]}]})
        elif kind == 3:
            lines.append({"id": f"s{i}", "prompt": f"Meeting {i} with Ann on Monday", "schema": "CalendarEvent"})
        elif kind == 4:
            lines.append('{"id": "broken' + str(i) + '", "prompt": ')
        else:
            lines.append({"id": f"bad{i}", "messages": [{"role": "wizard", "content": "x"}]})
    return lines


def test_mixed_input_each_line_exactly_once(run_job, vertex_emulator):
    records = mixed_records(120)
    out = run_job(records)
    assert len(out.results) + len(out.errors) == 120
    ids = [r["id"] for r in out.results] + [e["id"] for e in out.errors if e["id"]]
    assert len(ids) == len(set(ids))
    assert len(out.results) == 80 and {e["stage"] for e in out.errors} == {"read"}
    assert vertex_emulator.stats(fingerprints=False)["duplicate_ok"] == 0


def test_expiring_tokens_are_refreshed_through_a_long_run(run_job, vertex_emulator):
    vertex_emulator.set_faults(token_ttl_s=1.0, latency_ms=100)
    records = [{"id": f"t{i}", "prompt": f"token test {i}"} for i in range(150)]
    out = run_job(records, "--max_concurrency", "8")  # ~150 x 100 ms / 8 ≈ 2 s: several token lifetimes
    assert len(out.results) == 150 and out.errors == []
    assert vertex_emulator.stats(fingerprints=False)["by_status"].get("401", 0) >= 1  # the refresh path ran


def test_faults_recover_and_permanent_400s_are_not_retried(run_job, vertex_emulator):
    vertex_emulator.set_faults(error_500_rate=0.05, error_503_rate=0.05, reset_rate=0.02, malformed_rate=0.03,
                               hang_rate=0.02, hang_s=30)
    good = [{"id": f"g{i}", "prompt": f"fault test {i}"} for i in range(200)]
    bad = [{"id": f"bad{i}", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": "data:image/png;base64,@@not-base64@@"}]}]} for i in range(3)]
    out = run_job(good + bad, "--request_timeout", "1", "--max_attempts", "8")
    assert sorted(r["id"] for r in out.results) == sorted(r["id"] for r in good)
    assert len(out.errors) == 3
    for err in out.errors:
        assert (err["status_code"], err["retryable"], err["attempts"]) == (400, False, 1)
        assert err["status"] == "INVALID_ARGUMENT" and err["stage"] == "request"
    by_status = vertex_emulator.stats(fingerprints=False)["by_status"]
    assert by_status.get("500", 0) + by_status.get("503", 0) > 0  # the faults really happened
    assert any(r["attempts"] > 1 for r in out.results)


def test_429_with_retry_info_waits_at_least_the_delay(run_job, vertex_emulator):
    # A shared pool of 2 requests/s: most of the 10 records are answered 429 with RetryInfo 1s at first.
    vertex_emulator.set_faults(capacity_rps=2, retry_delay_s=1.0)
    out = run_job([{"id": f"r{i}", "prompt": f"burst {i}"} for i in range(10)])
    assert len(out.results) == 10 and out.errors == []
    retried = [r for r in out.results if r["attempts"] > 1]
    assert retried and all(r["latency_ms"] >= 1000 for r in retried)
    assert vertex_emulator.stats(fingerprints=False)["by_status"].get("429", 0) >= len(retried)


def test_stream_and_no_stream_give_the_same_parsed_results(run_job):
    records = [{"id": f"s{i}", "prompt": f"Lunch {i} with Bo on Tuesday", "schema": "CalendarEvent"}
               for i in range(10)] + [{"id": "t", "prompt": "think about it", "model": "google/gemini-2.5-flash",
                                       "google": {"thinking_config": {"include_thoughts": True},
                                                  "thought_tag_marker": "think"}}]
    plain = run_job(records).by_id()
    streamed = run_job(records, "--stream").by_id()
    assert plain.keys() == streamed.keys() and len(plain) == 11
    assert all("error_type" not in r for r in list(plain.values()) + list(streamed.values()))
    assert plain["t"]["thoughts"]
    for key in plain:
        for field in ("parsed", "content", "thoughts", "finish_reason"):
            assert plain[key][field] == streamed[key][field], (key, field)


def test_throttled_time_is_reported_as_cumulative_throttling_seconds(run_job):
    from apache_beam.metrics.metric import MetricsFilter

    # 10 records at 120 requests/minute (2/s, a bucket of 1 s = 2 requests): the last 8 wait about 4 s in all. The
    # bounds hold on a loaded machine: the pacing is what takes the time (records would have to reach the limiter
    # 0.25 s apart to halve it), and throttled time is wall time inside the run, never more than the run itself.
    started = time.monotonic()
    out = run_job([{"id": f"q{i}", "prompt": f"paced {i}"} for i in range(10)], "--rpm", "120")
    wall = time.monotonic() - started
    assert len(out.results) == 10
    counters = out.result_obj.metrics().query(MetricsFilter().with_name("cumulativeThrottlingSeconds"))["counters"]
    throttled = sum(c.committed or c.attempted or 0 for c in counters)
    assert 2 <= throttled <= wall


def test_a_rerun_with_another_shard_count_leaves_only_its_own_shards(tmp_path, vertex_emulator):
    """A rerun into the same --output with fewer shards: the older run's extra shards (-0000N-of-00003) would be
    read as part of the new output, so the run removes them; its own shards and other files stay."""
    from pipelines.extract import run

    from tests.conftest import write_jsonl

    out, errs = str(tmp_path / "r"), str(tmp_path / "e")

    def job(name: str, n: int, shards: int) -> None:
        src = write_jsonl(tmp_path / f"{name}.jsonl", [{"id": f"{name}{i}", "prompt": f"{name} {i}"} for i in range(n)]
                          + ["{not json"])  # one read error, so the errors sink has records too
        run(["--input", str(src), "--output", out, "--errors", errs, "--num_shards", str(shards),
             "--emulator_url", vertex_emulator.url])

    job("old", 9, shards=3)
    assert len(list(tmp_path.glob("r-*-of-00003.jsonl"))) == 3
    (tmp_path / "r-notes.txt").write_text("mine")  # not a shard: never touched
    job("new", 4, shards=2)

    assert sorted(p.name for p in tmp_path.glob("r-?????-of-?????.jsonl")) == ["r-00000-of-00002.jsonl",
                                                                              "r-00001-of-00002.jsonl"]
    assert sorted(p.name for p in tmp_path.glob("e-?????-of-?????.jsonl")) == ["e-00000-of-00002.jsonl",
                                                                              "e-00001-of-00002.jsonl"]
    assert sorted(r["id"] for r in read_jsonl(out + "-")) == [f"new{i}" for i in range(4)]
    assert [e["stage"] for e in read_jsonl(errs + "-")] == ["read"]  # the new run's one error, not the old one's
    assert (tmp_path / "r-notes.txt").read_text() == "mine"
