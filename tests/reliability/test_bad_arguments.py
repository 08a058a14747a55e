"""Issue 16 items 7 and 8: a bad argument is one line and exit 2 before any work (it used to be a traceback, or
silently accepted); ``chatbeam --help`` lists every chatbeam option in the README's groups and says where Beam's are."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.extract import main
from pipelines.options import ChatbeamOptions
from tests.conftest import write_jsonl

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def src(tmp_path) -> Path:
    return write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "hi"}])


BAD = [
    (["--rpm", "0"], "--rpm must be positive"),
    (["--rpm", "-1"], "--rpm must be positive"),
    (["--rpm", "nan"], "--rpm must be a finite number"),
    (["--tpm", "0"], "--tpm must be positive"),
    (["--request_timeout", "nan"], "--request_timeout must be a finite number"),
    (["--request_timeout", "inf"], "--request_timeout must be a finite number"),
    (["--record_deadline", "-5"], "--record_deadline must be positive"),
    (["--num_shards", "-1"], "--num_shards must be at least 0"),
    (["--max_reasks", "-1"], "--max_reasks must be at least 0"),
    (["--temperature", "nan"], "--temperature must be a finite number"),
    (["--progress_interval_s", "nan"], "--progress_interval_s must be a finite number"),
    (["--max_error_rate", "1.5"], "--max_error_rate is a share"),
    (["--max_response_bytes", "0"], "--max_response_bytes must be at least"),
]


@pytest.mark.parametrize("args, fragment", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_numbers_are_one_line_errors(vertex_emulator, src, tmp_path, capsys, args, fragment):
    code = main(["--input", str(src), "--output", str(tmp_path / "o" / "r"), "--emulator_url", vertex_emulator.url,
                 *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / "o").exists() and vertex_emulator.stats(fingerprints=False)["requests"] == 0


def test_bad_paths_are_one_line_errors(vertex_emulator, src, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cases = [
        (["--input", str(tmp_path), "--output", str(tmp_path / "o" / "r")], "is a directory"),
        (["--input", str(src), "--output", str(blocker / "r")], "is a file, not a directory"),
        (["--input", str(src), "--output", str(tmp_path / "o") + "/"], "is a directory, not a file prefix"),
        (["--input", str(src), "--output", str(tmp_path / "o" / "r"), "--errors", str(tmp_path / "e") + "/"],
         "is a directory, not a file prefix"),
    ]
    for args, fragment in cases:
        code = main([*args, "--emulator_url", vertex_emulator.url])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and fragment in err, (args, err)
    assert not (tmp_path / "o").exists()


def test_help_lists_every_chatbeam_option_in_the_readme_groups(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    import argparse

    parser = argparse.ArgumentParser()
    ChatbeamOptions._add_argparse_args(parser)
    flags = {s for a in parser._actions for s in a.option_strings if s.startswith("--")} - {"--help",
                                                                                            "--chatbeam_dry_run"}
    missing = sorted(f for f in flags | {"--dry_run"} if not re.search(rf"{f}\b", text))
    assert not missing, missing
    groups = ["input and output", "target", "requests", "retries and limits", "reliability",
              "service tiers and batch", "job-wide budget", "nightly runs", "BigQuery"]
    positions = [re.search(rf"^{g}[ :]", text, re.MULTILINE).start() for g in groups]  # the group headings
    assert positions == sorted(positions)  # the README's order
    assert "--help_beam" in text and "--runner" in text and "Exit codes" in text


def test_help_beam_lists_beams_options_and_the_console_script_answers_help():
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "--help_beam"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0
    for flag in ("--runner", "--project", "--region", "--temp_location", "--direct_num_workers",
                 "--max_num_workers", "--setup_file"):
        assert flag in proc.stdout, flag
    assert "--max_concurrency" not in proc.stdout  # chatbeam's own are in --help
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "--max_concurrency" in proc.stdout and "usage: chatbeam" in proc.stdout
