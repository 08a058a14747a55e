"""The collision rules of transforms/files.py (pure: no file system) and the run lock (transforms/run_lock.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from transforms.files import (RunFilesError, cache_collision, check_existing_inputs, check_input,
                              check_output_prefix, reads_own_files, replay_into_results, run_files, sink_collision)
from transforms.run_lock import LockHeld, RunLock


def collide(output, errors, checkpoint=None):
    return sink_collision(run_files(output, errors, checkpoint or (f"{output}-checkpoint" if output else None)))


@pytest.mark.parametrize("output, errors", [
    ("/d/r", "/d/r"),                     # the issue: the results file ends up holding the error lines
    ("/d/run-results", "/d/run"),         # the issue: the errors sink deletes the results
    ("/d/r", "/d/r-errors"),              # the results sink deletes the errors
    ("/d/r", "/d/r-dry-run"),             # the dry run's sink deletes the errors
    ("gs://b/x/r", "gs://b/x/r-e"),
])
def test_sinks_that_would_delete_each_other_are_refused(output, errors):
    problem = collide(output, errors)
    assert problem and "would delete" in problem and "\n" not in problem


@pytest.mark.parametrize("output, errors", [
    ("/d/r", "/d/r_errors"), ("/d/results", "/d/errors"), ("/d/a/r", "/d/b/r"), ("gs://b/r", "gs://b/e"),
    ("/d/r", None), (None, "/d/e"),
])
def test_sinks_apart_are_fine(output, errors):
    assert collide(output, errors) is None


@pytest.mark.parametrize("glob, what", [
    ("/d/*.jsonl", "results"),                    # a rerun would read the previous run's results
    ("/d/r-00000-of-00001.jsonl", "results"),     # the input itself would be overwritten
    ("/d/r-00003-of-00004.jsonl", "results"),
    ("/d/r_errors-*", "error"),
    ("/d/*", "results"),
    ("/d/r-checkpoint/*.jsonl", "journal"),
    ("/d/**", "results"),
    ("/d/r-dry-run-*.jsonl", "dry-run results"),
])
def test_an_input_glob_matching_this_runs_files_is_refused(glob, what):
    problem = reads_own_files("--input", glob, run_files("/d/r", "/d/r_errors", "/d/r-checkpoint"))
    assert problem and f"this run's {what} files" in problem


@pytest.mark.parametrize("glob", ["/d/in/*.jsonl", "/d/prompts.jsonl", "/d/r.jsonl", "/e/*.jsonl", "/d/in-*.jsonl"])
def test_an_input_glob_apart_from_the_outputs_is_fine(glob):
    assert reads_own_files("--input", glob, run_files("/d/r", "/d/r_errors", "/d/r-checkpoint")) is None


def test_a_replay_of_the_runs_own_output_is_refused():
    # The issue: --replay_errors 'D/r_errors-*' --output D/r --errors D/other replaced the earlier run's results.
    assert "would replace that run's results" in replay_into_results("/d/r_errors-*", "/d/r")
    assert replay_into_results("/d/r_errors-*", "/d/replay") is None


def cache_problem(cache, output="/d/r", errors="/d/r_errors"):
    return cache_collision(cache, run_files(output, errors, f"{output}-checkpoint" if output else None, cache))


@pytest.mark.parametrize("cache, output, errors, says", [
    ("/d/r", "/d/r", "/d/r_errors", "--cache '/d/r' lies under --output"),            # equal to the output prefix
    ("/d/r/cache", "/d/r", "/d/r_errors", "lies under --output"),                     # under it
    ("/d/r_errors/k", "/d/r", "/d/r_errors", "lies under --errors"),
    ("/d/r-checkpoint/k", "/d/r", "/d/r_errors", "lies under --checkpoint_dir"),
    ("/d", "/d/r", "/d/e", "--output '/d/r' lies inside --cache"),                    # the outputs in the cache
    ("gs://b/k", "gs://b/k/r", None, "lies inside --cache"),
    ("gs://b/e", "gs://b/r", "gs://b/e", "lies under --errors"),
])
def test_a_cache_sharing_a_path_with_the_outputs_is_refused(cache, output, errors, says):
    problem = cache_problem(cache, output, errors)
    assert problem and says in problem and "\n" not in problem


@pytest.mark.parametrize("cache", ["/d/cache", "/d/r_cache", "/d/r-cache", "/k", "gs://b/k"])
def test_a_cache_apart_from_the_outputs_is_fine(cache):
    assert cache_problem(cache) is None


@pytest.mark.parametrize("glob", ["/d/cache/*.jsonl", "/d/cache/entries-*", "/d/**", "/d/*/*.jsonl"])
def test_an_input_glob_that_would_read_cache_shards_is_refused(glob):
    problem = reads_own_files("--input", glob, run_files("/d/r", "/d/r_errors", None, "/d/cache"))
    assert problem and "this run's response cache files" in problem
    assert reads_own_files("--input", "/d/in/*.jsonl", run_files("/d/r", "/d/r_errors", None, "/d/cache")) is None


def test_an_existing_input_file_that_is_a_cache_shard_is_refused(tmp_path):
    shard = tmp_path / "k" / "compact-20261130T031000Z-0123abcd-00000-of-00001.jsonl"
    shard.parent.mkdir()
    shard.write_text("{}\n")
    families = run_files(str(tmp_path / "r"), None, None, str(tmp_path / "k"))
    with pytest.raises(RunFilesError, match="cache shards are not prompt records"):
        check_existing_inputs("--input", [str(shard)], families)
    check_existing_inputs("--input", [str(tmp_path / "k" / "notes.jsonl")], families)  # not a shard name


def test_output_prefix_checks(tmp_path):
    with pytest.raises(RunFilesError, match="is a directory, not a file prefix"):
        check_output_prefix("--output", str(tmp_path) + "/")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunFilesError, match="is a file, not a directory"):
        check_output_prefix("--output", str(blocker / "sub" / "results"))
    check_output_prefix("--output", str(tmp_path / "new" / "dir" / "results"))  # parents are created later
    check_output_prefix("--output", "gs://bucket/results")


def test_input_checks(tmp_path):
    with pytest.raises(RunFilesError, match="is a directory"):
        check_input(str(tmp_path))
    with pytest.raises(RunFilesError, match="matches no files"):
        check_input(str(tmp_path / "*.jsonl"))
    (tmp_path / "r-00000-of-00001.jsonl").write_text("{}\n")
    paths = check_input(str(tmp_path / "*.jsonl"))
    with pytest.raises(RunFilesError, match="one of this run's results files"):
        check_existing_inputs("--input", paths, run_files(str(tmp_path / "r"), None, None))


# ---------------------------------------------------------------------------------------------- the lock

def test_a_second_lock_names_the_holder_and_the_first_release_frees_it(tmp_path):
    prefix = str(tmp_path / "out" / "r")
    first = RunLock([prefix], run_id="a" * 32).acquire()
    with pytest.raises(LockHeld) as held:
        RunLock([prefix], run_id="b" * 32).acquire()
    message = str(held.value)
    assert f"pid {os.getpid()}" in message and "aaaaaaaaaaaa" in message and "--force" in message
    first.release()
    assert not os.path.exists(prefix + ".lock")
    with RunLock([prefix], run_id="c" * 32):
        assert json.loads(open(prefix + ".lock").read())["run_id"] == "c" * 32


def test_a_failed_lock_releases_the_ones_already_taken(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    holder = RunLock([b], run_id="h").acquire()
    with pytest.raises(LockHeld):
        RunLock([a, b], run_id="x").acquire()
    RunLock([a], run_id="y").acquire().release()  # a was given back
    holder.release()


def test_force_breaks_a_lock(tmp_path):
    prefix = str(tmp_path / "r")
    RunLock([prefix], run_id="stuck").acquire()  # never released
    with RunLock([prefix], run_id="forced", force=True):
        assert json.loads(open(prefix + ".lock").read())["run_id"] == "forced"


def test_a_lock_dies_with_its_process(tmp_path):
    """kill -9 leaves no stale lock: the kernel drops a dead process's flock (a --resume needs no --force)."""
    prefix = str(tmp_path / "r")
    code = (f"import os, sys; sys.path.insert(0, {os.getcwd()!r}); from transforms.run_lock import RunLock; "
            f"RunLock([{prefix!r}], run_id='dead').acquire(); os.kill(os.getpid(), 9)")
    subprocess.run([sys.executable, "-c", code], timeout=120)
    assert os.path.exists(prefix + ".lock")  # the file is left behind...
    with RunLock([prefix], run_id="next"):  # ...but not the lock
        pass
