"""The nightly options (pipelines/nightly.py through pipelines/options.validate): run date, checkpoint, replay,
budget, dry run, and the Flex Template argv normalisation. No pipeline runs."""

from __future__ import annotations

import argparse
import json

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import nightly
from pipelines.nightly import normalize_argv, template_argv
from pipelines.options import ChatbeamOptions, UsageError, validate

TARGET = ["--base_url", "http://127.0.0.1:1/v1"]


def plan(*args: str, input_: str | None = "in/{run_date}.jsonl"):
    base = ["--output", "gs://b/{run_date}/results", *TARGET]
    if input_ is not None:
        base += ["--input", input_]
    return validate(PipelineOptions(normalize_argv([*base, *args])))


def test_run_date_is_substituted_in_every_path():
    p = plan("--run_date", "2025-01-31", "--errors", "gs://b/{run_date}/errors")
    assert (p.input, p.output, p.errors) == ("in/2025-01-31.jsonl", "gs://b/2025-01-31/results",
                                             "gs://b/2025-01-31/errors")
    assert p.nightly.run_date == "2025-01-31"
    assert p.nightly.checkpoint_dir == "gs://b/2025-01-31/results-checkpoint"


def test_run_date_defaults_to_today_in_utc(monkeypatch):
    monkeypatch.setattr(nightly, "today_utc", lambda: "2030-12-24")
    p = plan()
    assert p.nightly.run_date == "2030-12-24" and p.output == "gs://b/2030-12-24/results"
    assert p.errors == "gs://b/2030-12-24/results_errors"


def test_other_braces_are_left_alone():
    assert nightly.with_run_date("gs://b/{a,b}/{run_date}/x", "2025-01-01") == "gs://b/{a,b}/2025-01-01/x"


@pytest.mark.parametrize("bad", ["2025-02-30", "20250131", "2025-1-31", "tomorrow", "2025-01-31T00:00"])
def test_an_invalid_run_date_is_a_usage_error(bad):
    with pytest.raises(UsageError, match="--run_date .* is not a date"):
        plan("--run_date", bad)


def test_checkpoint_dir_can_be_moved_or_turned_off():
    moved = plan("--checkpoint_dir", "/j/{run_date}", "--run_date", "2025-01-01")
    assert moved.nightly.checkpoint_dir == "/j/2025-01-01"
    assert plan("--no_checkpoint").nightly.checkpoint_dir is None


def test_replay_errors_replaces_input():
    p = plan("--replay_errors", "gs://b/{run_date}/errors-*.jsonl", "--run_date", "2025-01-01", input_=None)
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
        plan(*args, input_=input_)


def test_budget_and_price_table_options(tmp_path):
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"as_of": "2099-01-01", "per_million_tokens": {"m": {"input": 1, "output": 2}}}))
    p = plan("--max_cost_usd", "12.5", "--max_total_tokens", "1000000", "--price_table", str(prices),
             "--est_output_tokens", "64")
    n = p.nightly
    assert (n.max_cost_usd, n.max_total_tokens, n.est_output_tokens) == (12.5, 1_000_000, 64)
    assert n.price_table.as_of == "2099-01-01" and n.price_table.rates("m") == (1.0, 2.0)
    assert plan().nightly.price_table.as_of  # the bundled table by default


def test_dry_run_is_ours_not_beams():
    assert normalize_argv(["--dry_run", "--input", "x"]) == ["--chatbeam_dry_run", "--input", "x"]
    assert normalize_argv(["--dry_run=true"]) == ["--chatbeam_dry_run"]
    assert normalize_argv(["--dry_run=false"]) == []
    assert plan("--dry_run").nightly.dry_run
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
