"""The command line (pipelines/options.py, pipelines/nightly.py): a bad one is one clear error before any Beam work;
a good one becomes the right target. The nightly options: run date, checkpoint, replay, budget, dry run, and the Flex
Template argv normalisation. No pipeline runs."""

import argparse
import json

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import nightly
from pipelines.nightly import normalize_argv, template_argv
from pipelines.options import DEFAULT_MODEL, ChatbeamOptions, UsageError, validate

BASE = ["--input", "in.jsonl", "--output", "out/r"]


def plan(*args):
    return validate(PipelineOptions([*BASE, *args]))


def test_managed_vertex_target_from_project_and_location():
    p = plan("--vertex_project", "acme", "--vertex_location", "europe-west4")
    assert p.client.target.base_url == (
        "https://europe-west4-aiplatform.googleapis.com/v1/projects/acme/locations/europe-west4/endpoints/openapi")
    assert p.client.target.auth == "adc" and p.client.model == DEFAULT_MODEL


def test_beam_project_alone_means_managed_vertex_in_that_project():
    assert "/projects/acme/" in plan("--project", "acme").client.target.base_url


def test_global_location_has_no_host_prefix():
    url = plan("--vertex_project", "acme", "--vertex_location", "global").client.target.base_url
    assert url.startswith("https://aiplatform.googleapis.com/v1/projects/acme/locations/global/")


def test_self_deployed_endpoint_uses_project_and_location():
    p = plan("--project", "acme", "--endpoint_id", "123456", "--model", "gemma-2-9b-it")
    assert p.client.target.base_url.endswith("/projects/acme/locations/us-central1/endpoints/123456")
    assert p.client.model == "gemma-2-9b-it"


def test_openai_compatible_server_reads_the_key_name_not_the_key(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-secret")
    p = plan("--base_url", "http://127.0.0.1:8080/v1", "--api_key_env", "MY_KEY")
    assert p.client.target.auth == "api_key_env" and p.client.target.api_key_env == "MY_KEY"
    assert "sk-secret" not in repr(p)


@pytest.mark.parametrize("args, fragment", [
    ([], "no target"),
    (["--emulator", "--base_url", "http://x/v1"], "exactly one target"),
    (["--vertex_project", "p", "--endpoint_url", "https://x"], "exactly one target"),
    (["--endpoint_id", "1"], "needs --vertex_project"),
    (["--base_url", "http://x/v1", "--api_key_env", "CHATBEAM_TEST_UNSET_VAR"], "not set"),
    (["--emulator", "--runner", "DataflowRunner"], "only with DirectRunner"),
    (["--emulator", "--schema", "NoSuchSchema"], "unknown schema"),
    (["--emulator", "--params", "[1]"], "JSON object"),
    (["--emulator", "--max_concurrency", "0"], "at least 1"),
    (["--emulator", "--reasoning_effort", "low", "--include_thoughts"], "cannot be combined"),
])
def test_bad_command_lines_are_usage_errors(args, fragment):
    with pytest.raises(UsageError, match=fragment):
        plan(*args)


def test_missing_input_and_output_are_usage_errors():
    with pytest.raises(UsageError, match="no input"):
        validate(PipelineOptions(["--output", "o", "--emulator"]))
    with pytest.raises(UsageError, match="no output"):
        validate(PipelineOptions(["--input", "i", "--emulator"]))


def test_thinking_options_map_to_extra_body_google():
    p = plan("--emulator", "--thinking_budget", "512", "--include_thoughts", "--thought_tag_marker", "think")
    assert p.client.google == {"thinking_config": {"thinking_budget": 512, "include_thoughts": True},
                               "thought_tag_marker": "think"}


def test_params_flags_merge_into_defaults():
    p = plan("--emulator", "--params", '{"top_p": 0.5, "temperature": 1}', "--temperature", "0", "--max_tokens", "64")
    assert p.client.params == {"top_p": 0.5, "temperature": 0.0, "max_tokens": 64}


def test_default_errors_prefix_is_not_matched_by_the_results_sinks_glob():
    p = plan("--emulator")
    assert p.errors == "out/r_errors"  # Beam deletes "out/r-*-of-N.jsonl" before writing the results


def test_errors_prefix_under_the_results_glob_is_refused():
    with pytest.raises(UsageError, match="would delete the error files"):
        plan("--emulator", "--errors", "out/r-errors")


def test_bigquery_input_and_tables_with_run_date():
    p = validate(PipelineOptions(["--input_query", "SELECT * FROM t WHERE d = '{run_date}'", "--prompt_column", "question",
                                  "--output_table", "proj:ds.results_{run_date}", "--errors_table", "proj:ds.errors",
                                  "--run_date", "2026-01-02", "--emulator"]))
    assert p.bigquery.reads and p.input == "" and p.output is None and p.errors is None
    assert p.bigquery.output_table == "proj:ds.results_20260102"  # BigQuery's date-sharded table names
    assert p.bigquery.input_query == "SELECT * FROM t WHERE d = '2026-01-02'"
    assert p.nightly.checkpoint_dir is None


@pytest.mark.parametrize("args, fragment", [
    (["--input_table", "p:d.t", "--input", "x.jsonl", "--output", "o"], "give one input"),
    (["--input", "x.jsonl", "--output_table", "p:d.r"], "errors"),
    (["--input_table", "p:d.t", "--output_table", "p:d.r", "--errors_table", "p:d.e", "--resume"],
     "give --output"),
    (["--input", "x", "--output", "o", "--bigquery_endpoint", "http://127.0.0.1:9050", "--runner",
      "DataflowRunner"], "only with DirectRunner"),
])
def test_bigquery_usage_errors(args, fragment):
    with pytest.raises(UsageError, match=fragment):
        validate(PipelineOptions([*args, "--emulator_url", "http://127.0.0.1:1"]))


# --- the nightly options (pipelines/nightly.py) ---

TARGET = ["--base_url", "http://127.0.0.1:1/v1"]


def nightly_plan(*args: str, input_: str | None = "in/{run_date}.jsonl"):
    base = ["--output", "gs://b/{run_date}/results", *TARGET]
    if input_ is not None:
        base += ["--input", input_]
    return validate(PipelineOptions(normalize_argv([*base, *args])))


def test_run_date_is_substituted_in_every_path():
    p = nightly_plan("--run_date", "2025-01-31", "--errors", "gs://b/{run_date}/errors")
    assert (p.input, p.output, p.errors) == ("in/2025-01-31.jsonl", "gs://b/2025-01-31/results",
                                             "gs://b/2025-01-31/errors")
    assert p.nightly.run_date == "2025-01-31"
    assert p.nightly.checkpoint_dir == "gs://b/2025-01-31/results-checkpoint"


def test_run_date_defaults_to_today_in_utc(monkeypatch):
    monkeypatch.setattr(nightly, "today_utc", lambda: "2030-12-24")
    p = nightly_plan()
    assert p.nightly.run_date == "2030-12-24" and p.output == "gs://b/2030-12-24/results"
    assert p.errors == "gs://b/2030-12-24/results_errors"


def test_other_braces_are_left_alone():
    assert nightly.with_run_date("gs://b/{a,b}/{run_date}/x", "2025-01-01") == "gs://b/{a,b}/2025-01-01/x"


@pytest.mark.parametrize("bad", ["2025-02-30", "20250131", "2025-1-31", "tomorrow", "2025-01-31T00:00"])
def test_an_invalid_run_date_is_a_usage_error(bad):
    with pytest.raises(UsageError, match="--run_date .* is not a date"):
        nightly_plan("--run_date", bad)


def test_checkpoint_dir_can_be_moved_or_turned_off():
    moved = nightly_plan("--checkpoint_dir", "/j/{run_date}", "--run_date", "2025-01-01")
    assert moved.nightly.checkpoint_dir == "/j/2025-01-01"
    assert nightly_plan("--no_checkpoint").nightly.checkpoint_dir is None


def test_replay_errors_replaces_input():
    p = nightly_plan("--replay_errors", "gs://b/{run_date}/errors-*.jsonl", "--run_date", "2025-01-01", input_=None)
    assert p.nightly.replay_errors == "gs://b/2025-01-01/errors-*.jsonl" and p.input == ""


@pytest.mark.parametrize("args, input_, fragment", [
    (["--replay_errors", "e*.jsonl"], "in.jsonl", "--input or --replay_errors, not both"),
    (["--replay_errors", "gs://b/{run_date}/results_errors*"], None, "would also read this run.s error files"),
    (["--max_cost_usd", "0"], "in.jsonl", "--max_cost_usd must be positive"),
    (["--max_total_tokens", "0"], "in.jsonl", "--max_total_tokens must be at least 1"),
    (["--checkpoint_every", "0"], "in.jsonl", "--checkpoint_every must be at least 1"),
    (["--dry_run", "--resume"], "in.jsonl", "cannot be combined"),
    (["--no_checkpoint", "--checkpoint_dir", "x"], "in.jsonl", "cannot be combined"),
    (["--price_table", "/no/such/prices.json"], "in.jsonl", "not a readable price table"),
    ([], None, "no input"),
])
def test_bad_nightly_command_lines_are_usage_errors(args, input_, fragment):
    with pytest.raises(UsageError, match=fragment):
        nightly_plan(*args, input_=input_)


def test_budget_and_price_table_options(tmp_path):
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"as_of": "2099-01-01", "per_million_tokens": {"m": {"input": 1, "output": 2}}}))
    p = nightly_plan("--max_cost_usd", "12.5", "--max_total_tokens", "1000000", "--price_table", str(prices),
             "--est_output_tokens", "64")
    n = p.nightly
    assert (n.max_cost_usd, n.max_total_tokens, n.est_output_tokens) == (12.5, 1_000_000, 64)
    assert n.price_table.as_of == "2099-01-01" and n.price_table.rates("m") == (1.0, 2.0)
    assert nightly_plan().nightly.price_table.as_of  # the bundled table by default


def test_dry_run_is_ours_not_beams():
    assert normalize_argv(["--dry_run", "--input", "x"]) == ["--chatbeam_dry_run", "--input", "x"]
    assert normalize_argv(["--dry_run=true"]) == ["--chatbeam_dry_run"]
    assert normalize_argv(["--dry_run=false"]) == []
    assert nightly_plan("--dry_run").nightly.dry_run
    with pytest.raises(ValueError, match="true or false"):
        normalize_argv(["--dry_run=maybe"])


def _parser():
    parser = argparse.ArgumentParser()
    ChatbeamOptions._add_argparse_args(parser)
    return parser


def test_template_parameters_for_on_off_flags_become_bare_flags():
    argv = ["--resume=true", "--emulator=false", "--output=gs://b/x", "--stream=True", "--max_cost_usd=5"]
    assert template_argv(argv, _parser()) == ["--resume", "--output=gs://b/x", "--stream", "--max_cost_usd=5"]
    with pytest.raises(ValueError, match="true or false"):
        template_argv(["--resume=sometimes"], _parser())
