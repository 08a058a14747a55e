"""Issue 16 items 10, 11 and 13: unsendable schemas refused at start-up, read errors that keep their id, the
replay's skipped count in the printed summary, and what duplicate ids, identical lines and CR-only line endings do
(README "Reliability")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.extract import main, run
from tests.conftest import read_jsonl, write_jsonl

pytestmark = [pytest.mark.e2e]


def job(emulator, tmp_path: Path, src: Path, name: str = "out", *args: str):
    out = tmp_path / name
    result = run(["--input", str(src), "--output", str(out / "r"), "--emulator_url", emulator.url,
                  "--progress_interval_s", "0", *args])
    return result, read_jsonl(str(out / "r-")), read_jsonl(str(out / "r_errors-"))


@pytest.mark.parametrize("schema, fragment", [
    ({"type": "object", "properties": {"child": {"$ref": "#"}}}, "recursive"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}, "points at nothing"),
    ({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}, "not a local reference"),
], ids=["root-ref", "dangling", "remote"])
def test_unsendable_refs_are_refused_at_start_up(vertex_emulator, tmp_path, capsys, schema, fragment):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(schema))
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}])
    code = main(["--input", str(src), "--output", str(tmp_path / "o" / "r"), "--schema", str(path),
                 "--emulator_url", vertex_emulator.url])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and fragment in err, err
    assert vertex_emulator.stats(fingerprints=False)["requests"] == 0  # not one 400 per record


def test_read_errors_keep_the_id_the_line_began_with(vertex_emulator, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"id": "big", "prompt": "' + b"x" * (5 << 20) + b'"}\n'
                    b'{"id": "latin1", "prompt": "caf\xe9"}\n'
                    b'{"id": "fine", "prompt": "hello"}\n')
    _, results, errors = job(vertex_emulator, tmp_path, src)
    assert [r["id"] for r in results] == ["fine"]
    assert {e["id"]: e["error_type"] for e in errors} == {"big": "record_too_large", "latin1": "invalid_encoding"}


def test_the_printed_summary_counts_what_a_replay_skipped(vertex_emulator, tmp_path, capsys):
    vertex_emulator.set_faults(error_500_rate=0.5)
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": f"p{i}", "prompt": f"replay {i}"} for i in range(20)]
                      + ["{broken", "{broken too"])
    job(vertex_emulator, tmp_path, src, "first", "--max_attempts", "1")
    vertex_emulator.set_faults({})
    capsys.readouterr()
    code = main(["--replay_errors", str(tmp_path / "first" / "r_errors-*"), "--output", str(tmp_path / "again" / "r"),
                 "--emulator_url", vertex_emulator.url, "--progress_interval_s", "0"])
    out = capsys.readouterr().out
    assert code == 0 and "replay    2 permanent errors of the replayed files skipped" in out, out


def test_duplicate_ids_and_identical_lines_each_get_their_own_output(vertex_emulator, tmp_path):
    """Documented (README "Reliability"): every line is its own record. Identical requests are sent (and paid)
    once per line; a repeated id does not merge or drop anything."""
    same = {"id": "twin", "prompt": "the same question"}
    src = write_jsonl(tmp_path / "in.jsonl", [same, same, {"id": "twin", "prompt": "another question"}])
    _, results, errors = job(vertex_emulator, tmp_path, src)
    assert [r["id"] for r in results] == ["twin"] * 3 and errors == []
    assert vertex_emulator.stats(fingerprints=False)["requests"] == 3


def test_cr_only_line_endings_make_one_line(vertex_emulator, tmp_path):
    """Documented: lines end at LF or CRLF; a bare CR (old Mac files) does not end a line, so such a file is one
    line -- here one invalid_json error that keeps the first record's id."""
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"id": "m1", "prompt": "one"}\r{"id": "m2", "prompt": "two"}\r')
    _, results, errors = job(vertex_emulator, tmp_path, src)
    assert results == [] and [(e["id"], e["error_type"]) for e in errors] == [("m1", "invalid_json")]
