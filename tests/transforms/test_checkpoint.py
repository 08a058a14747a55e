"""SkipDone (transforms/checkpoint.py), the --resume step, under a real in-memory pipeline: which input records are
called again and which completed outputs (journal parts, finished shards) are written again instead."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from client.config import ClientConfig, Target
from client.requests import build_request
from schemas.records import ErrorRecord, InputRecord, ResultRecord
from transforms.checkpoint import SkipDone, done_patterns

CONFIG = ClientConfig(target=Target("http://x", "none"), model="google/gemini-2.0-flash-001")


def key(record: InputRecord) -> str:
    return build_request(record, CONFIG).request_key


def result(record: InputRecord, content: str = "done before") -> str:
    return ResultRecord(id=record.id, request_key=key(record), content=content).model_dump_json()


def error(record: InputRecord, retryable: bool) -> str:
    return ErrorRecord(id=record.id, request_key=key(record), stage="request", error_type="bad_request",
                       message="refused", retryable=retryable).model_dump_json()


def test_completed_outputs_are_reused_and_everything_else_is_called(tmp_path):
    recs = {i: InputRecord(id=i, prompt=f"prompt {i}") for i in "abcdefg"}
    twin = InputRecord(id="f", prompt="prompt f")  # an identical input line: both copies get an output
    journal, output, errors = str(tmp_path / "j"), str(tmp_path / "r"), str(tmp_path / "r_errors")
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "part-1.jsonl").write_text("\n".join([
        result(recs["a"]),
        error(recs["c"], retryable=True),  # not final: a rerun may succeed, so c is called again
        result(InputRecord(id="d", prompt="the prompt d had before it changed")),  # other work: d is called
        result(recs["f"]),
        result(recs["g"]), result(recs["g"]),  # a retried bundle journaled g twice: g is written once
        '{"id": "cut off mid-li',  # a torn line is ignored, not a crash
    ]) + "\n")
    # b's permanent error reached the finished errors shard of the killed run (not the journal).
    (tmp_path / "r_errors-00000-of-00001.jsonl").write_text(error(recs["b"], retryable=False) + "\n")
    patterns = done_patterns(journal, output, errors)  # r-?????-of-?????.jsonl matches nothing: simply empty

    with TestPipeline() as p:
        skip = p | beam.Create([*recs.values(), twin]) | SkipDone(CONFIG, patterns)
        assert_that(skip.todo | "TodoIds" >> beam.Map(lambda r: r.id), equal_to(["c", "d", "e"]), label="Todo")
        assert_that(skip.results | "Results" >> beam.Map(lambda r: (r.id, r.content)),
                    equal_to([("a", "done before"), ("f", "done before"), ("f", "done before"),
                              ("g", "done before")]), label="Results")
        assert_that(skip.errors | "Errors" >> beam.Map(lambda e: (e.id, e.error_type, e.retryable)),
                    equal_to([("b", "bad_request", False)]), label="Errors")


def test_nothing_done_yet_means_every_record_is_called(tmp_path):
    recs = [InputRecord(id=f"n{i}", prompt=f"new {i}") for i in range(5)]
    with TestPipeline() as p:
        skip = p | beam.Create(recs) | SkipDone(CONFIG, done_patterns(str(tmp_path / "none"), str(tmp_path / "r"),
                                                                       None))
        assert_that(skip.todo | "TodoIds" >> beam.Map(lambda r: r.id), equal_to([r.id for r in recs]), label="Todo")
        assert_that(skip.results, equal_to([]), label="NoResults")
        assert_that(skip.errors, equal_to([]), label="NoErrors")


def test_done_patterns_name_the_journal_and_the_finished_shards():
    assert done_patterns("gs://b/j/", "gs://b/r", "gs://b/e") == [
        "gs://b/j/part-*.jsonl", "gs://b/r-?????-of-?????.jsonl", "gs://b/e-?????-of-?????.jsonl"]
    assert done_patterns(None, "out/r", None) == ["out/r-?????-of-?????.jsonl"]
