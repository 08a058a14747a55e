"""A bad command line is one clear error before any Beam work; a good one becomes the right target."""

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.options import DEFAULT_MODEL, UsageError, validate

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
