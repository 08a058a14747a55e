"""The run journal's pure parts (client/journal.py): what counts as done, keys, flush policy, tolerant parsing."""

from __future__ import annotations

import json

from client.config import ClientConfig, Target
from client.journal import JournalSettings, JournalWriter, choose, done_key, is_final, output_key, parse_output
from client.requests import build_request
from schemas.records import ErrorRecord, InputRecord, ResultRecord

CONFIG = ClientConfig(target=Target("http://x", "none"), model="google/gemini-2.0-flash-001")


def result(id_: str, key: str = "k") -> ResultRecord:
    return ResultRecord(id=id_, request_key=key, content=f"answer {id_}")


def error(id_: str, retryable: bool, stage: str = "request", key: str | None = "k") -> ErrorRecord:
    return ErrorRecord(id=id_, request_key=key, stage=stage, error_type="x", message="m", retryable=retryable)


def test_final_outputs_are_results_and_permanent_call_errors():
    assert is_final(result("a"))
    assert is_final(error("a", retryable=False))
    assert not is_final(error("a", retryable=True))  # rate limits, budget_exhausted: a rerun may succeed
    assert not is_final(error("a", retryable=False, stage="read", key=None))  # re-read from the input anyway


def test_done_key_matches_the_output_of_the_same_work_only():
    rec = InputRecord(id="a", prompt="hello")
    out = result("a", build_request(rec, CONFIG).request_key)
    assert done_key(rec, CONFIG) == output_key(out)
    assert done_key(InputRecord(id="a", prompt="hello, changed"), CONFIG) != output_key(out)
    assert done_key(InputRecord(id="b", prompt="hello"), CONFIG) != output_key(out)
    other_model = ClientConfig(target=CONFIG.target, model="google/gemini-2.5-flash")
    assert done_key(rec, other_model) != output_key(out)


def test_a_record_whose_request_cannot_be_built_keys_on_its_id_alone():
    rec = InputRecord(id="bad", prompt="x", params={"stream": True})  # a reserved param: BadRequest
    assert done_key(rec, CONFIG) == output_key(error("bad", retryable=False, key=None)) == "bad\t"


def test_parse_output_tells_results_from_errors_and_skips_broken_lines():
    assert isinstance(parse_output(result("a").model_dump_json()), ResultRecord)
    assert isinstance(parse_output(error("a", False).model_dump_json().encode()), ErrorRecord)
    line = result("a").model_dump_json()
    assert parse_output(line[: len(line) // 2]) is None  # a line cut off by a kill
    assert parse_output("[1, 2]") is None and parse_output('{"id": 3}') is None


def test_choose_prefers_a_result_and_is_stable():
    outs = [error("a", False), result("a", "k2"), result("a", "k1")]
    assert choose(outs)[0] == result("a", "k1") and choose(reversed(outs)) == choose(outs)


class Files:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.fail = False

    def __call__(self, path: str, data: bytes) -> None:
        if self.fail:
            raise OSError("disk full")
        self.files[path] = data


def test_writer_flushes_every_n_outputs_and_after_t_seconds_and_skips_non_final():
    files, now = Files(), [0.0]
    writer = JournalWriter(JournalSettings("gs://b/run-checkpoint/", every=3, interval_s=10), files,
                           clock=lambda: now[0])
    for i in range(7):
        writer.add(result(f"r{i}"))
    writer.add(error("e", retryable=True))  # not final: never journaled
    assert writer.files_written == 2 and writer.lines_written == 6
    now[0] = 9.9
    writer.add(result("late"))
    assert writer.files_written == 2
    now[0] = 10.1  # the oldest buffered output (r6, added at t=0) is now 10 s old
    writer.add(result("later"))
    assert writer.files_written == 3
    writer.flush()  # nothing buffered: no empty file
    assert writer.files_written == 3
    assert all(p.startswith("gs://b/run-checkpoint/part-") and p.endswith(".jsonl") for p in files.files)
    ids = [json.loads(line)["id"] for data in files.files.values() for line in data.decode().splitlines()]
    assert sorted(ids) == sorted([f"r{i}" for i in range(7)] + ["late", "later"])


def test_a_failed_write_is_counted_and_does_not_raise():
    files = Files()
    files.fail = True
    writer = JournalWriter(JournalSettings("/tmp/x", every=1), files)
    writer.add(result("a"))
    assert writer.failed_writes == 1 and writer.files_written == 0


def test_an_output_that_cannot_be_serialised_is_skipped_not_raised():
    files = Files()
    writer = JournalWriter(JournalSettings("/tmp/x", every=1), files)
    writer.add(ResultRecord(id="a", request_key="k", content="\ud800"))  # a lone surrogate: not valid UTF-8 JSON
    writer.add(result("b"))
    assert writer.failed_writes == 1 and writer.lines_written == 1
