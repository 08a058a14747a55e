"""Issue 16's progress findings, on real runs: a run where nothing finishes still prints its progress line (and
says for how long nothing finished, with no made-up ETA), and a .jsonl.gz input has the right total."""

from __future__ import annotations

import gzip
import json
import logging
import re

import pytest

from emulator import EmulatorConfig, FaultConfig, serve_in_thread
from pipelines.extract import run

pytestmark = pytest.mark.e2e


def _progress_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "chatbeam.progress"]


def test_a_run_where_every_request_hangs_still_prints_progress(tmp_path, caplog):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": f"h{i}", "prompt": f"p{i}"}) + "\n" for i in range(3)))
    faults = FaultConfig(hang_rate=1.0, hang_s=8.0)  # every request held 8 s, then answered
    with serve_in_thread(EmulatorConfig(seed=1, faults=faults)) as emu, \
            caplog.at_level(logging.INFO, logger="chatbeam.progress"):
        run(["--input", str(src), "--output", str(tmp_path / "out/results"), "--emulator_url", emu.url,
             "--progress_interval_s", "1", "--request_timeout", "60",
             "--no_adaptive_throttling"])  # all 3 sent at once (slow start would hold the third back)
    lines = _progress_lines(caplog)
    waiting = [line for line in lines if line.startswith("chatbeam progress: 0/3 records (0%)")]
    assert len(waiting) >= 4, lines  # a line a second while nothing finished, not silence
    assert all("ETA unknown" in line for line in waiting)  # no number invented from nothing
    assert any(re.search(r"\b3 in flight\b", line) for line in waiting), waiting
    assert lines[-1].startswith("chatbeam progress: 3/3 records (100%)")


def test_the_total_of_a_gzipped_input_counts_its_lines(tmp_path, caplog, vertex_emulator):
    src = tmp_path / "in.jsonl.gz"
    with gzip.open(src, "wt") as fh:
        for i in range(120):
            fh.write(json.dumps({"id": f"g{i}", "prompt": f"p{i}"}) + "\n")
    with caplog.at_level(logging.INFO, logger="chatbeam.progress"):
        run(["--input", str(src), "--output", str(tmp_path / "out/results"), "--emulator_url", vertex_emulator.url,
             "--progress_interval_s", "1"])
    lines = _progress_lines(caplog)
    assert lines[-1].startswith("chatbeam progress: 120/120 records (100%)"), lines
    assert not any("/3 records" in line for line in lines)  # the compressed file's 3 "lines" of bytes
