"""Fixtures shared by the pipeline and end-to-end tests: one emulator in a thread, and a way to run the job.

    def test_x(vertex_emulator, run_job):
        vertex_emulator.set_faults(error_500_rate=0.1)
        out = run_job(records, "--max_attempts", "6")
        assert len(out.results) + len(out.errors) == len(records)
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pytest

from emulator import EmulatorConfig, RunningEmulator, serve_in_thread


@pytest.fixture(scope="session")
def _pipeline_emulator() -> RunningEmulator:
    with serve_in_thread(EmulatorConfig(seed=7)) as running:
        yield running


@pytest.fixture
def vertex_emulator(_pipeline_emulator: RunningEmulator) -> RunningEmulator:
    """A running emulator with no faults and empty stats; a test may set faults on it."""
    _pipeline_emulator.set_faults({})
    _pipeline_emulator.reset()
    yield _pipeline_emulator
    _pipeline_emulator.set_faults({})


def read_jsonl(prefix: str) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(glob.glob(f"{prefix}*.jsonl")) for line in open(path)
            if line.strip()]


@dataclass
class JobOutput:
    results: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    dir: Path
    result_obj: Any = field(default=None, repr=False)

    def ids(self) -> list[str]:
        return sorted([r["id"] for r in self.results] + [e["id"] for e in self.errors])

    def by_id(self) -> dict[str, dict[str, Any]]:
        return {r["id"]: r for r in self.results + self.errors}


def write_jsonl(path: Path, records: Iterable[Any]) -> Path:
    with open(path, "w") as fh:
        for rec in records:
            fh.write(rec if isinstance(rec, str) else json.dumps(rec))
            fh.write("\n")
    return path


@pytest.fixture
def run_job(tmp_path, vertex_emulator):
    """Run the extract job in-process against the fixture's emulator; returns the parsed outputs."""
    from pipelines.extract import run

    counter = iter(range(1000))

    def _run(records: Iterable[Any], *args: str, target: tuple[str, ...] | None = None) -> JobOutput:
        n = next(counter)
        src = write_jsonl(tmp_path / f"in{n}.jsonl", records)
        out_dir = tmp_path / f"out{n}"
        target_args = target if target is not None else ("--emulator_url", vertex_emulator.url)
        result = run(["--input", str(src), "--output", str(out_dir / "results"), "--errors",
                      str(out_dir / "errors"), *target_args, *args])
        return JobOutput(read_jsonl(str(out_dir / "results")), read_jsonl(str(out_dir / "errors")), out_dir, result)

    return _run
