"""Issue 16 item 4: SIGINT and SIGTERM stop a run cleanly. Before: SIGTERM killed chatbeam at once and left the
``--emulator`` child running under PID 1; SIGINT printed a 120-line traceback and exited 1.

Now: exit 130 / 143, one line saying how to --resume and no traceback, no child process left behind, and the
journal flushed -- the checkpoint settings here are so large that only the stop itself can have written it -- so
``--resume`` sends only what was not finished and the union holds every record once.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.signals import descendants
from tests.conftest import read_jsonl, write_jsonl

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
N = 400


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _survivors(pids: list[int], timeout_s: float = 15.0) -> list[int]:
    """The pids still alive once ``timeout_s`` has passed (or none are left): a loaded machine may take a moment to
    reap processes that are already on their way out."""
    deadline = time.monotonic() + timeout_s
    while (alive := [pid for pid in pids if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, Path, Path]:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": f"s{i}", "prompt": f"signal test {i}"} for i in range(N)])
    log = tmp_path / "stderr.log"
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "--input", str(src), "--output",
                             str(tmp_path / "out" / "r"), "--errors", str(tmp_path / "out" / "e"),
                             "--checkpoint_every", "100000", "--checkpoint_interval_s", "100000",
                             "--progress_interval_s", "0.5", "--max_concurrency", "8", *args],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    return proc, src, log


def wait_for_progress(proc: subprocess.Popen, log: Path, at_least: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = [int(n.replace(",", "")) for n in re.findall(r"chatbeam progress: ([\d,]+)/", log.read_text())]
        if found and found[-1] >= at_least:
            return
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.1)
    raise AssertionError("the run never made progress: " + log.read_text()[-3000:])


def journaled(out: Path) -> int:
    return sum(1 for f in (out / "r-checkpoint").glob("part-*.jsonl") for line in open(f) if line.strip())


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_run_cleanly_and_resume_finishes_it(tmp_path, signum, code):
    proc, src, log = start(tmp_path, "--emulator", "--emulator_args", "--latency_ms 200")
    try:
        wait_for_progress(proc, log, 20)
        children = descendants(proc.pid)
        assert children, "the --emulator child should be running"
        os.kill(proc.pid, signum)
        assert proc.wait(60) == code, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = log.read_text()
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"chatbeam: stopped by {signal.Signals(signum).name};") and "--resume" in last, last
    assert not _survivors(children), "a child process outlived chatbeam"
    assert not (tmp_path / "out" / "r.lock").exists()
    done = journaled(tmp_path / "out")
    assert done >= 20  # flushed by the stop: the journal settings would never have written a file

    resumed = subprocess.run([sys.executable, "-m", "pipelines.cli", "--input", str(src), "--output",
                              str(tmp_path / "out" / "r"), "--errors", str(tmp_path / "out" / "e"), "--emulator",
                              "--resume", "--progress_interval_s", "0"],
                             cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results, errors = read_jsonl(str(tmp_path / "out" / "r-")), read_jsonl(str(tmp_path / "out" / "e-"))
    assert errors == [] and sorted(r["id"] for r in results) == sorted(f"s{i}" for i in range(N))
    assert f"resumed   {done:,} records" in resumed.stdout


def test_sigterm_stops_multi_process_workers(vertex_emulator, tmp_path):
    vertex_emulator.set_faults(latency_ms=200)
    proc, _, log = start(tmp_path, "--emulator_url", vertex_emulator.url, "--direct_running_mode",
                         "multi_processing", "--direct_num_workers", "2")
    try:
        deadline = time.monotonic() + 120  # the workers' progress lines stay in the workers: count requests
        while vertex_emulator.stats(fingerprints=False)["requests"] < 10:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        children = descendants(proc.pid)
        assert children, "multi_processing should run worker processes"
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(90) == 143, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not _survivors(children), "a worker process outlived chatbeam"
    assert "Traceback" not in log.read_text()
