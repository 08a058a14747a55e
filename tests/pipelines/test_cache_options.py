"""--cache, --cache_mode and --cache_ttl_days on the command line: what a bad combination says (exit 2 material)."""

from __future__ import annotations

import os

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from client.cache import CacheMode
from pipelines.options import UsageError, validate


def plan(tmp_path, *args: str):
    return validate(PipelineOptions(["--input", "in.jsonl", "--output", str(tmp_path / "out" / "results"),
                                     "--emulator", *args]))


def test_without_cache_there_is_no_cache_step(tmp_path):
    assert plan(tmp_path).cache is None


def test_defaults_and_modes(tmp_path):
    p = plan(tmp_path, "--cache", str(tmp_path / "cache"))
    assert (p.cache.mode, p.cache.ttl_days, p.cache.location) == (CacheMode.READ_WRITE, None, str(tmp_path / "cache"))
    assert p.cache.run_started.endswith("Z") and p.cache.prices is not None
    p = plan(tmp_path, "--cache", "gs://bucket/chatbeam-cache/", "--cache_mode", "refresh", "--cache_ttl_days", "0.5")
    assert (p.cache.location, p.cache.mode, p.cache.ttl_days) == ("gs://bucket/chatbeam-cache", CacheMode.REFRESH,
                                                                  0.5)


@pytest.mark.parametrize("args, message", [
    (["--cache_mode", "read_only"], "need --cache"),
    (["--cache_ttl_days", "3"], "need --cache"),
    (["--cache", "CACHE", "--cache_ttl_days", "0"], "must be positive"),
    (["--cache", "my-project:dataset.table"], "BigQuery table"),
    (["--cache", "s3://bucket/cache"], "gs://"),
    (["--cache", "OUT"], "lies inside --cache"),
])
def test_bad_combinations_are_one_line_usage_errors(tmp_path, args, message):
    args = [a.replace("CACHE", str(tmp_path / "cache")).replace("OUT", str(tmp_path / "out")) for a in args]
    with pytest.raises(UsageError, match=message):
        plan(tmp_path, *args)


def test_a_cache_that_is_a_file_or_not_writable_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        plan(tmp_path, "--cache", str(tmp_path / "file"))
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(UsageError, match="not writable"):
            plan(tmp_path, "--cache", str(locked / "cache"))
        assert plan(tmp_path, "--cache", str(locked / "cache"), "--cache_mode", "read_only").cache is not None
    finally:
        os.chmod(locked, 0o700)


def test_an_unknown_mode_is_refused_by_the_parser(tmp_path):
    with pytest.raises(SystemExit):
        plan(tmp_path, "--cache", str(tmp_path / "cache"), "--cache_mode", "sometimes")


def test_the_cache_options_are_known_to_the_unknown_option_check_and_listed_by_help(capsys):
    from pipelines.argv import check_known_options
    from pipelines.help import print_help

    check_known_options(["--input", "in.jsonl", "--cache", "gs://b/k", "--cache_mode", "refresh",
                         "--cache_ttl_days", "30"])
    with pytest.raises(ValueError, match=r"unknown option --cache_mod \(did you mean --cache_mode\?\)"):
        check_known_options(["--input", "in.jsonl", "--cache", "gs://b/k", "--cache_mod", "refresh"])
    print_help()
    text = capsys.readouterr().out
    assert all(flag in text for flag in ("--cache ", "--cache_mode", "--cache_ttl_days"))
