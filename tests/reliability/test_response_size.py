"""Issue 16 item 6: an oversized answer is an error record, streamed or not, and is never held whole.

A stdlib server sends three 50 MB answers (generated as it sends them). Before the fix: peak RSS 922 MB and 157 MB of
results (and as much again in the journal). Now each becomes a ``response_too_large`` error, the client stops reading
at the cap (the server sees the connection close after a few MB of socket buffers), and the files stay small.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import read_jsonl, write_jsonl
from tests.reliability.servers import huge_answer, misbehaving

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
ANSWER = 50 * 1024 * 1024


def run_cli(tmp_path: Path, server, *args: str) -> tuple[int, int, list[dict], list[dict]]:
    """The job as a user runs it; returns (exit code, peak RSS in MB of that process, results, errors)."""
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": f"big{i}", "prompt": f"a long answer {i}"} for i in range(3)])
    cli = [sys.executable, "-m", "pipelines.cli", "--input", str(src), "--output", str(tmp_path / "r"), "--errors",
           str(tmp_path / "e"), "--base_url", server.url, "--model", "m", "--progress_interval_s", "0", *args]
    # The job is started by a small intermediate Python that reports its peak: Linux carries the high-water RSS of
    # the forking process across exec into the child's ru_maxrss, so measured straight from pytest (hundreds of MB
    # late in the suite) the child's peak would be pytest's.
    measured = subprocess.run([sys.executable, "-c", _MEASURE, *cli], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    code, peak_kb = (int(x) for x in measured.stdout.split())
    return code, peak_kb // 1024, read_jsonl(str(tmp_path / "r-")), read_jsonl(str(tmp_path / "e-"))


_MEASURE = ("import os, subprocess, sys\n"
            "with open(os.devnull, 'wb') as null:\n"
            "    p = subprocess.Popen(sys.argv[1:], stdout=null, stderr=null)\n"
            "    _, status, usage = os.wait4(p.pid, 0)\n"
            "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)\n")


def output_bytes(tmp_path: Path) -> int:
    return sum(f.stat().st_size for f in tmp_path.rglob("*.jsonl") if f.name != "in.jsonl")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_three_50mb_answers_become_errors_without_being_held(tmp_path, stream):
    with misbehaving(huge_answer(ANSWER)) as server:
        code, peak_mb, results, errors = run_cli(tmp_path, server, "--max_response_bytes", str(1 << 20),
                                                 *(["--stream"] if stream else []))
    assert results == [] and len(errors) == 3
    assert {(e["error_type"], e["stage"], e["retryable"], e["attempts"]) for e in errors} == {
        ("response_too_large", "response", False, 1)}
    assert server.requests == 3  # not retried: the same request would bring the same answer
    assert server.bytes_sent < 0.4 * 3 * ANSWER  # the client hung up at the cap (plus socket buffers)
    assert output_bytes(tmp_path) < 100_000  # results, errors and journal: nothing huge
    assert peak_mb < 600, peak_mb  # 922 MB before; Beam itself is ~250 MB
    assert code == 3  # every record failed: the run says so


def test_the_default_cap_applies(tmp_path):
    with misbehaving(huge_answer(ANSWER)) as server:
        _, _, results, errors = run_cli(tmp_path, server)
    assert results == [] and {e["error_type"] for e in errors} == {"response_too_large"}
    assert "8,388,608" in errors[0]["message"]
