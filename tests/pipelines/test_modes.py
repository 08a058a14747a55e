"""--mode batch, --service_tier and --deadline on the command line: what is accepted, the defaults flex changes,
and the one-line errors (exit 2) for targets without a batch API or tier, a missing gs:// staging location, ..."""

from __future__ import annotations

import datetime
import json

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.extract import main
from pipelines.modes import parse_deadline
from pipelines.options import UsageError, validate

BASE = ["--input", "in.jsonl", "--output", "out/r"]
NOW = datetime.datetime(2025, 1, 31, 22, 0, tzinfo=datetime.timezone.utc)


def plan(*args):
    return validate(PipelineOptions([*BASE, *args]))


def test_batch_mode_on_vertex_stages_under_temp_location_by_default():
    p = plan("--mode", "batch", "--vertex_project", "acme", "--temp_location", "gs://bucket/tmp")
    assert p.mode == "batch" and p.batch.staging == "gs://bucket/tmp/chatbeam-batch"
    assert p.batch.poll_s == 30.0 and p.batch.max_requests == 200_000 and p.batch.fallback_online


def test_batch_mode_options():
    p = plan("--mode", "batch", "--emulator", "--batch_staging", "gs://b/stage", "--batch_fallback", "error",
             "--batch_max_requests", "40", "--temp_location", "gs://ignored/tmp")
    assert p.batch.staging == "gs://b/stage" and not p.batch.fallback_online
    assert p.batch.max_requests == 40 and p.batch.poll_s == 1.0  # the emulator answers in seconds


@pytest.mark.parametrize("args, fragment", [
    (["--base_url", "http://127.0.0.1:8080/v1", "--temp_location", "gs://b/t"], "no batch prediction API"),
    (["--vertex_project", "p", "--endpoint_id", "123", "--temp_location", "gs://b/t"], "no batch prediction API"),
    (["--endpoint_url", "https://1.us-central1-9.prediction.vertexai.goog/v1/projects/9/locations/us-central1/"
                        "endpoints/1", "--temp_location", "gs://b/t"], "no batch prediction API"),
    (["--vertex_project", "p"], "gs:// staging location"),
    (["--vertex_project", "p", "--temp_location", "/tmp/local"], "gs:// staging location"),
    (["--emulator", "--batch_staging", "out/stage"], "gs:// staging location"),
    (["--emulator", "--temp_location", "gs://b/t", "--model", "meta/llama-3.1-8b"], "not a google/gemini-"),
    (["--emulator", "--temp_location", "gs://b/t", "--batch_max_requests", "0"], "at least 1"),
    (["--emulator", "--temp_location", "gs://b/t", "--deadline", "06:00"], "batch job runs at its own pace"),
])
def test_batch_mode_usage_errors(args, fragment):
    with pytest.raises(UsageError, match=fragment):
        plan("--mode", "batch", *args)


def test_a_batch_target_error_is_one_line_and_exit_2(capsys, tmp_path):
    (tmp_path / "in.jsonl").write_text('{"prompt": "hi"}\n')
    code = main(["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "r"), "--mode", "batch",
                 "--base_url", "http://127.0.0.1:9/v1", "--temp_location", "gs://b/t"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("chatbeam: error: --mode batch needs") and err.count("\n") == 1


def test_flex_raises_the_timeout_defaults_but_keeps_explicit_values():
    p = plan("--vertex_project", "acme", "--vertex_location", "global", "--service_tier", "flex")
    c = p.client
    assert (c.service_tier, c.request_timeout, c.record_deadline_s, c.max_attempts) == ("flex", 1200.0, 3600.0, 10)
    p = plan("--emulator", "--vertex_location", "global", "--service_tier", "flex", "--request_timeout", "60",
             "--max_attempts", "3")
    assert (p.client.request_timeout, p.client.max_attempts) == (60.0, 3)
    standard = plan("--emulator").client
    assert (standard.service_tier, standard.request_timeout, standard.record_deadline_s,
            standard.max_attempts) == ("standard", 120.0, 900.0, 6)


@pytest.mark.parametrize("args, fragment", [
    (["--service_tier", "flex", "--base_url", "http://127.0.0.1:8080/v1"], "add --force_service_tier"),
    (["--service_tier", "priority", "--vertex_project", "p", "--endpoint_id", "1"], "add --force_service_tier"),
    (["--service_tier", "flex", "--vertex_project", "p"], "--vertex_location global"),
    (["--service_tier", "flex", "--emulator", "--vertex_location", "global", "--request_timeout", "4000"],
     "at most 1800"),
    (["--service_tier", "priority", "--emulator", "--vertex_location", "global", "--deadline", "06:00"],
     "already the top tier"),
    (["--service_tier", "flex", "--emulator", "--vertex_location", "global", "--deadline", "soon"],
     "is not a time"),
    (["--service_tier", "flex", "--emulator", "--vertex_location", "global", "--deadline",
      "2001-01-01T00:00:00Z"], "already passed"),
])
def test_tier_usage_errors(args, fragment):
    with pytest.raises(UsageError, match=fragment):
        plan(*args)


def test_tiers_can_be_forced_onto_other_targets():
    p = plan("--service_tier", "flex", "--base_url", "http://127.0.0.1:8080/v1", "--force_service_tier")
    assert p.client.service_tier == "flex"


def test_deadline_needs_files_to_count():
    with pytest.raises(UsageError, match="--deadline needs --input"):
        validate(PipelineOptions(["--input_table", "p:d.t", "--output", "o", "--emulator", "--deadline", "06:00"]))


@pytest.mark.parametrize("text, expected", [
    ("23:30", datetime.datetime(2025, 1, 31, 23, 30, tzinfo=datetime.timezone.utc)),
    ("06:00", datetime.datetime(2025, 2, 1, 6, 0, tzinfo=datetime.timezone.utc)),  # the next 06:00
    ("2025-02-01T05:30:00Z", datetime.datetime(2025, 2, 1, 5, 30, tzinfo=datetime.timezone.utc)),
    ("2025-02-01T07:30:00+02:00", datetime.datetime(2025, 2, 1, 5, 30, tzinfo=datetime.timezone.utc)),
    ("2025-02-01 05:30", datetime.datetime(2025, 2, 1, 5, 30, tzinfo=datetime.timezone.utc)),  # naive = UTC
])
def test_deadline_forms(text, expected):
    assert parse_deadline(text, now=NOW) == expected.timestamp()


def test_batch_dry_run_writes_native_lines_at_batch_prices(tmp_path):
    from pipelines.extract import run

    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a", "prompt": "Hi", "params": {"max_tokens": 100}}\n'
                    '{"id": "b", "messages": [{"role": "user", "content": [{"type": "image_url", '
                    '"image_url": "https://example.com/x.png"}]}]}\n')
    online = run(["--input", str(path), "--output", str(tmp_path / "online"), "--emulator", "--dry_run"]).summary
    batch = run(["--input", str(path), "--output", str(tmp_path / "batch"), "--emulator", "--dry_run",
                 "--mode", "batch"]).summary
    [line] = [json.loads(x) for x in (tmp_path / "batch-dry-run-00000.jsonl").read_text().splitlines()]
    assert line["id"] == "a" and line["body"]["request"]["generationConfig"] == {"maxOutputTokens": 100}
    assert batch["records"] == 1 and batch["unsendable"] == 1 and online["records"] == 2  # https: online only
    online_a = json.loads((tmp_path / "online-dry-run-00000.jsonl").read_text().splitlines()[0])
    assert line["est_cost_usd"] == pytest.approx(online_a["est_cost_usd"] / 2)
