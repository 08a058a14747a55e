"""ReadPrompts: JSONL files (local or gs://) → InputRecords, and read-stage ErrorRecords for lines that are not records.

Lines are read as bytes so that a line that is not UTF-8 is an error record too, not a crashed run.
Blank lines separate nothing and are not records: they are skipped and counted (``chatbeam:blank_lines``).
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.coders import BytesCoder
from apache_beam.metrics import Metrics

from schemas.records import DEFAULT_MAX_RECORD_BYTES, ErrorRecord, parse_line

__all__ = ["ReadPrompts", "ParsePromptLines"]

RECORDS, ERRORS = "records", "errors"


class _ParseLineFn(beam.DoFn):
    def __init__(self, max_record_bytes: int) -> None:
        self._max_record_bytes = max_record_bytes
        self._read = Metrics.counter("chatbeam", "records_read")
        self._bad = Metrics.counter("chatbeam", "read_errors")
        self._blank = Metrics.counter("chatbeam", "blank_lines")

    def process(self, line: bytes):
        if not line.strip():
            self._blank.inc()
            return
        out = parse_line(line, max_record_bytes=self._max_record_bytes)
        self._read.inc()
        if isinstance(out, ErrorRecord):
            self._bad.inc()
            yield beam.pvalue.TaggedOutput(ERRORS, out)
        else:
            yield out


class ParsePromptLines(beam.PTransform):
    """PCollection of raw lines (bytes or str) → outputs ``records`` and ``errors``."""

    def __init__(self, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> None:
        super().__init__()
        self._max_record_bytes = max_record_bytes

    def expand(self, lines):
        return lines | "ParseLines" >> beam.ParDo(_ParseLineFn(self._max_record_bytes)).with_outputs(
            ERRORS, main=RECORDS)


class ReadPrompts(beam.PTransform):
    """Read JSONL prompt records from a path or glob; returns a tuple with ``.records`` and ``.errors``."""

    def __init__(self, file_pattern: str, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> None:
        super().__init__()
        self._file_pattern = file_pattern
        self._max_record_bytes = max_record_bytes

    def expand(self, pbegin):
        lines = pbegin | "ReadLines" >> beam.io.ReadFromText(self._file_pattern, coder=BytesCoder())
        return lines | "Parse" >> ParsePromptLines(self._max_record_bytes)
