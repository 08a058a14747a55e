"""The JSONL sinks (transforms/write.py) under a real in-memory pipeline."""

import glob
import json

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline

from schemas.records import ErrorRecord, ResultRecord
from transforms import WriteErrors, WriteResults


def test_sinks_write_one_json_object_per_line_and_always_write_errors(tmp_path):
    results = [ResultRecord(id="r1", request_key="k1", content="hello"),
               ResultRecord(id="r2", request_key="k2", parsed={"a": 1})]
    with TestPipeline() as p:
        p | "Results" >> beam.Create(results) | WriteResults(str(tmp_path / "results"))
        p | "NoErrors" >> beam.Create([]).with_output_types(ErrorRecord) | WriteErrors(str(tmp_path / "errors"))
    written = [json.loads(line) for f in glob.glob(str(tmp_path / "results-*.jsonl")) for line in open(f)]
    assert sorted((r["id"], r["content"], r["parsed"]) for r in written) == [("r1", "hello", None),
                                                                               ("r2", None, {"a": 1})]
    error_files = glob.glob(str(tmp_path / "errors-*.jsonl"))
    assert error_files and all(open(f).read() == "" for f in error_files)


def test_a_result_json_cannot_carry_is_still_written_not_a_crash():
    from transforms.write import to_json_line

    lone = ResultRecord(id="r", request_key="k", content="a\ud800b")  # as a server's "\ud800" escape decodes
    assert json.loads(to_json_line(lone))["content"] == "a\ud800b"
    deep: list = []
    for _ in range(400):
        deep = [deep]
    line = json.loads(to_json_line(ResultRecord(id="d", request_key="k", parsed=deep)))
    assert line["id"] == "d"
