"""Issue 16 items 1, 2 and 12: no silent data loss through colliding paths, and one run at a time per prefix.

Each reproduction from the issue is now a one-line error, exit 2, before any work -- nothing sent, nothing written,
the earlier files untouched. Two runs into one prefix: the second is refused with a message naming the first.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.extract import main
from tests.conftest import read_jsonl, write_jsonl

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, lines: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_jsonl(path, lines)


def records(n: int, tag: str = "c") -> list[dict]:
    return [{"id": f"{tag}{i}", "prompt": f"collision test {i}"} for i in range(n)]


def refused(capsys, argv: list[str], emulator, *, others_sending: bool = False) -> str:
    before = emulator.stats(fingerprints=False)["requests"]
    code = main([*argv, "--emulator_url", emulator.url, "--progress_interval_s", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("chatbeam: error:"), err
    if not others_sending:  # (another run's requests would move the count)
        assert emulator.stats(fingerprints=False)["requests"] == before  # nothing was sent
    return err


def files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("output, errors", [("r", "r"), ("run-results", "run")], ids=["equal", "prefix"])
def test_errors_colliding_with_output_is_refused(vertex_emulator, tmp_path, capsys, output, errors):
    src = write(tmp_path / "in" / "in.jsonl", records(5) + ["{broken"])
    d = tmp_path / "d"
    err = refused(capsys, ["--input", str(src), "--output", str(d / output), "--errors", str(d / errors)],
                  vertex_emulator)
    assert "would delete" in err and not d.exists()


def test_an_input_named_like_a_results_shard_is_not_overwritten(vertex_emulator, tmp_path, capsys):
    src = write_jsonl(tmp_path / "r-00000-of-00001.jsonl", records(5))
    before = src.read_bytes()
    err = refused(capsys, ["--input", str(src), "--output", str(tmp_path / "r")], vertex_emulator)
    assert "results files" in err and src.read_bytes() == before


def test_a_rerun_never_reads_its_own_results_as_input(vertex_emulator, tmp_path, capsys):
    write_jsonl(tmp_path / "prompts.jsonl", records(5))
    err = refused(capsys, ["--input", str(tmp_path / "*.jsonl"), "--output", str(tmp_path / "results")],
                  vertex_emulator)
    assert "would also read this run's results files" in err


def test_a_replay_cannot_replace_the_replayed_runs_results(vertex_emulator, tmp_path, capsys):
    vertex_emulator.set_faults(error_500_rate=0.3)
    src = write(tmp_path / "in" / "in.jsonl", records(30))
    d = tmp_path / "d"
    assert main(["--input", str(src), "--output", str(d / "r"), "--emulator_url", vertex_emulator.url,
                 "--max_attempts", "1", "--progress_interval_s", "0"]) in (0, 3)
    capsys.readouterr()
    earlier = files(d)
    assert read_jsonl(str(d / "r_errors-")), "the first run needs retryable errors to replay"
    vertex_emulator.set_faults({})
    err = refused(capsys, ["--replay_errors", str(d / "r_errors-*"), "--output", str(d / "r"), "--errors",
                           str(d / "other")], vertex_emulator)
    assert "would replace that run's results" in err
    # The errors copied elsewhere first: the replay would still write over results that exist.
    copy = tmp_path / "copy" / "errs-00000-of-00001.jsonl"
    copy.parent.mkdir()
    copy.write_bytes(next((d).glob("r_errors-*.jsonl")).read_bytes())
    err = refused(capsys, ["--replay_errors", str(copy), "--output", str(d / "r"),
                           "--errors", str(tmp_path / "elsewhere" / "e")], vertex_emulator)
    assert "already holds results" in err and files(d) == earlier


def test_two_runs_into_one_prefix(vertex_emulator, tmp_path, capsys):
    """The second run is refused while the first holds the prefix, and succeeds once it is done."""
    vertex_emulator.set_faults(latency_ms=300)
    src = write(tmp_path / "in" / "in.jsonl", records(200))
    out = tmp_path / "out"
    log = tmp_path / "first.log"
    first = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "--input", str(src), "--output",
                              str(out / "r"), "--emulator_url", vertex_emulator.url, "--max_concurrency", "4",
                              "--progress_interval_s", "0"], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=open(log, "w"))
    try:
        deadline = time.monotonic() + 120
        while vertex_emulator.stats(fingerprints=False)["requests"] < 4:
            assert first.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
        err = refused(capsys, ["--input", str(src), "--output", str(out / "r"), "--num_shards", "3"],
                      vertex_emulator, others_sending=True)
        assert f"pid {first.pid}" in err and "--force" in err
        assert not list(out.glob("r-*-of-00003*"))  # the refused run wrote nothing
        vertex_emulator.set_faults({})
        assert first.wait(240) == 0, log.read_text()[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
    assert main(["--input", str(src), "--output", str(out / "r"), "--num_shards", "3", "--emulator_url",
                 vertex_emulator.url, "--progress_interval_s", "0"]) == 0
    results = read_jsonl(str(out / "r-"))
    assert sorted(r["id"] for r in results) == sorted(r["id"] for r in records(200))  # one shard set, 200 lines
