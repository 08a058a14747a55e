"""ReadPrompts (transforms/read.py) under a real in-memory pipeline: every line a record or a read error."""

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms import ReadPrompts

LINES = [
    '{"id": "a", "prompt": "one"}',
    '{"id": "b", "messages": [{"role": "user", "content": "two"}]}',
    "",
    "{broken",
    '{"id": "c"}',
    '{"id": "d", "prompt": "' + "x" * 3000 + '"}',
]


def test_every_nonblank_line_is_a_record_or_a_read_error(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(("\n".join(LINES) + "\n").encode() + b'{"id": "e", "prompt": "\xff"}\n')
    with TestPipeline() as p:
        read = p | ReadPrompts(str(src), max_record_bytes=2000)
        assert_that(read.records | "RecIds" >> beam.Map(lambda r: r.id), equal_to(["a", "b"]), label="Records")
        assert_that(read.errors | "ErrTypes" >> beam.Map(lambda e: (e.stage, e.error_type)),
                    equal_to([("read", "invalid_json"), ("read", "invalid_record"), ("read", "record_too_large"),
                              ("read", "invalid_encoding")]), label="Errors")
