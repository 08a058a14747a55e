"""Command-line checks of the results contract: unknown options are refused with a suggestion (runner options pass),
and --tools / --tool_choice / --structured_output / --on_truncation / --schema_registry are validated into the
ClientConfig before any work."""

from __future__ import annotations

import json
import re

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.argv import check_known_options
from pipelines.options import UsageError, validate

BASE = ["--input", "in.jsonl", "--output", "out/r", "--emulator"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--max_cots_usd", "0.00001"], "unknown option --max_cots_usd (did you mean --max_cost_usd?)"),
    (["--max_concurency", "5"], "unknown option --max_concurency (did you mean --max_concurrency?)"),
    (["--on_trunction=retry"], "unknown option --on_trunction (did you mean --on_truncation?)"),
    (["--zzzz"], "unknown option --zzzz"),
    (["results.jsonl"], "unexpected argument 'results.jsonl'"),
    (["--max_concurrency", "lots"], "argument --max_concurrency: invalid int value: 'lots'"),
    (["--on_truncation", "maybe"], "argument --on_truncation: invalid choice: 'maybe'"),
])
def test_unknown_or_bad_arguments_are_one_line_errors(argv, message) -> None:
    with pytest.raises(ValueError) as info:
        check_known_options(BASE + argv)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_beam_dataflow_and_other_runner_options_are_known() -> None:
    check_known_options(BASE + [
        "--runner", "DataflowRunner", "--project", "p", "--region", "us-central1", "--temp_location", "gs://b/t",
        "--max_num_workers", "10", "--worker_machine_type", "n2-standard-4", "--sdk_container_image", "img",
        "--experiments", "use_runner_v2", "--experiments=a", "--setup_file", "./setup.py", "--no_use_public_ips",
        "--dataflow_service_options=enable_prime", "--direct_num_workers", "2", "--flink_master", "localhost:8081",
        "--chatbeam_dry_run", "--emulator_args", "--latency_ms 50"])


def test_help_is_left_to_beams_parser() -> None:
    check_known_options(BASE + ["--help", "--nonsense"])  # argparse prints every option and exits 0


def options(*extra: str):
    return validate(PipelineOptions(BASE + list(extra))).client


def test_tools_file_and_tool_choice_become_run_defaults(tmp_path) -> None:
    bare = {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}
    path = tmp_path / "tools.json"
    path.write_text(json.dumps({"tools": [bare]}))
    client = options("--tools", str(path), "--tool_choice", "lookup", "--on_truncation", "retry")
    assert client.tools == ({"type": "function", "function": bare},)  # a bare function is wrapped
    assert client.tool_choice == {"type": "function", "function": {"name": "lookup"}}
    assert client.on_truncation == "retry" and client.structured_output == "json_schema"
    assert options("--tool_choice", "required").tool_choice == "required"
    assert options("--tool_choice", '{"type": "function", "function": {"name": "x"}}').tool_choice["function"] == {
        "name": "x"}


@pytest.mark.parametrize(("content", "message"), [
    ("not json", "is not a readable JSON file"),
    ("[]", "must hold a non-empty JSON list"),
    ('[{"type": "function", "function": {"name": "f", "parameters": {"type": "nope"}}}]',
     "parameters is not a JSON schema"),
    ('[{"type": "function", "function": {"description": "no name"}}]',
     re.escape("tools[0] must be {'type': 'function', 'function': {'name': ..., 'parameters': {...}}}") + "$"),
])
def test_bad_tools_files_are_usage_errors(tmp_path, content, message) -> None:
    path = tmp_path / "tools.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        options("--tools", str(path))


def test_conflicts_and_bad_registry_modules_are_usage_errors(tmp_path) -> None:
    path = tmp_path / "tools.json"
    path.write_text('[{"name": "f"}]')
    with pytest.raises(UsageError, match="cannot be combined with --tools"):
        options("--tools", str(path), "--structured_output", "tool", "--schema", "Sentiment")
    with pytest.raises(UsageError, match="--schema_registry 'no_such_module_xyz' cannot be imported"):
        options("--schema_registry", "no_such_module_xyz")
    with pytest.raises(UsageError, match="unknown schema"):
        options("--schema", "NoSuchSchema")


def test_help_lists_chatbeams_options_and_exits_0(capsys) -> None:
    from pipelines.extract import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: chatbeam") and "--on_truncation" in out and "--max_cost_usd" in out
