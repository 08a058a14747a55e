"""Issue 16 item 5: a run that fails says so. A circuit breaker stops sending after a run of identical permanent
failures (the rest become retryable errors of that type, never sent); --max_error_rate makes a run whose error share
exceeds it exit 3 after writing everything; the Quickstart (2 broken lines of 14) still exits 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.extract import main
from tests.conftest import read_jsonl, write_jsonl
from tests.reliability.servers import always, misbehaving

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "prompts.jsonl"


def records(n: int, tag: str = "f") -> list[dict]:
    return [{"id": f"{tag}{i}", "prompt": f"failing run {i}"} for i in range(n)]


def test_500_records_against_401_for_everything_stop_early_and_exit_3(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHATBEAM_FAILING_KEY", "sk-wrong-key-000000000000")
    src = write_jsonl(tmp_path / "in.jsonl", records(500))
    with misbehaving(always(401, "invalid api key")) as server:
        code = main(["--input", str(src), "--output", str(tmp_path / "r"), "--errors", str(tmp_path / "e"),
                     "--base_url", server.url, "--api_key_env", "CHATBEAM_FAILING_KEY", "--model", "m",
                     "--max_concurrency", "8", "--progress_interval_s", "0"])
    out = capsys.readouterr().out
    errors = read_jsonl(str(tmp_path / "e-"))
    assert code == 3 and read_jsonl(str(tmp_path / "r-")) == [] and len(errors) == 500
    assert server.requests <= 20 + 8  # the window, plus what was in flight when it opened
    sent = [e for e in errors if e["attempts"]]
    refused = [e for e in errors if not e["attempts"]]
    assert len(sent) == server.requests and len(refused) == 500 - server.requests
    assert {(e["error_type"], e["retryable"]) for e in sent} == {("auth_error", False)}
    assert {(e["error_type"], e["status_code"], e["retryable"]) for e in refused} == {("auth_error", 401, True)}
    summary = json.loads((tmp_path / "r-summary.json").read_text())
    assert summary["exit_code"] == 3 and summary["breaker_refused"] == len(refused) and summary["failures"]
    assert "FAILED" in out and "--replay_errors" in out


def test_a_429_storm_longer_than_the_record_deadline_exits_3(vertex_emulator, tmp_path):
    vertex_emulator.set_faults(storm_429_s=3600)  # longer than any record deadline
    src = write_jsonl(tmp_path / "in.jsonl", records(20, "s"))
    code = main(["--input", str(src), "--output", str(tmp_path / "r"), "--errors", str(tmp_path / "e"),
                 "--emulator_url", vertex_emulator.url, "--record_deadline", "2", "--progress_interval_s", "0"])
    errors = read_jsonl(str(tmp_path / "e-"))
    assert code == 3 and len(errors) == 20 and {e["error_type"] for e in errors} <= {"rate_limited", "timeout"}
    # The same run with the rule turned off finishes "successfully": the share is the operator's call.
    code = main(["--input", str(src), "--output", str(tmp_path / "r2"), "--errors", str(tmp_path / "e2"),
                 "--emulator_url", vertex_emulator.url, "--record_deadline", "2", "--progress_interval_s", "0",
                 "--max_error_rate", "1"])
    assert code == 0


def test_error_share_just_above_the_rate_fails_and_the_quickstart_passes(vertex_emulator, tmp_path):
    lines = [*records(7, "ok"), *["{broken"] * 3]  # 30 % errors
    src = write_jsonl(tmp_path / "in.jsonl", lines)
    base = ["--input", str(src), "--emulator_url", vertex_emulator.url, "--progress_interval_s", "0"]
    assert main([*base, "--output", str(tmp_path / "a"), "--max_error_rate", "0.25"]) == 3
    assert main([*base, "--output", str(tmp_path / "b"), "--max_error_rate", "0.3"]) == 0
    assert main(["--input", str(EXAMPLES), "--output", str(tmp_path / "q"), "--emulator_url", vertex_emulator.url,
                 "--progress_interval_s", "0"]) == 0  # 2 of 14 (14 %) under the default 0.25
