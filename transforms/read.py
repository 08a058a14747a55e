"""ReadPrompts: JSONL files (local or gs://) → InputRecords, and read-stage ErrorRecords for lines that are not records.

Lines are read as bytes so that a line that is not UTF-8 is an error record too, not a crashed run.
Blank lines separate nothing and are not records: they are skipped and counted (``chatbeam:blank_lines``).
Read errors are counted in total (``read_errors``) and by type (``read_error_<error_type>``).

ReadReplayErrors (``--replay_errors``): an earlier run's error files → the input records of its *retryable*
failures (their ``record`` field), so a rerun sends exactly those; the rest are skipped and counted
(``replay_skipped``).
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.coders import BytesCoder
from apache_beam.metrics import Metrics

from client.journal import parse_output
from client.progress import PROGRESS
from schemas.records import DEFAULT_MAX_RECORD_BYTES, ErrorRecord, parse_line, parse_row, read_error

__all__ = ["ParsePromptLines", "ReadPrompts", "ReadReplayErrors"]

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
            yield _read_error(self._bad, out)
        else:
            yield out


def _read_error(total, error: ErrorRecord):
    total.inc()
    Metrics.counter("chatbeam", f"read_error_{error.error_type}").inc()
    PROGRESS.advance()
    return beam.pvalue.TaggedOutput(ERRORS, error)


class _ReplayFn(beam.DoFn):
    def __init__(self) -> None:
        self._read = Metrics.counter("chatbeam", "records_read")
        self._bad = Metrics.counter("chatbeam", "read_errors")
        self._skipped = Metrics.counter("chatbeam", "replay_skipped")

    def process(self, line: bytes):
        if not line.strip():
            return
        error = parse_output(line)
        if not isinstance(error, ErrorRecord):
            self._read.inc()
            text = line.decode("utf-8", "replace")
            yield _read_error(self._bad, read_error("not_an_error_record",
                                                    "--replay_errors: the line is not an error record", raw=text))
            return
        if not error.retryable or error.record is None:
            self._skipped.inc()  # a permanent failure stays in the earlier run's errors; a rerun would fail again
            return
        self._read.inc()
        out = parse_row(error.record)
        if isinstance(out, ErrorRecord):
            yield _read_error(self._bad, out)
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


class ReadReplayErrors(beam.PTransform):
    """Read an earlier run's error JSONL files; returns ``.records`` (retryable failures' input records) and
    ``.errors`` (lines that were not error records, or whose record is no longer valid)."""

    def __init__(self, file_pattern: str) -> None:
        super().__init__()
        self._file_pattern = file_pattern

    def expand(self, pbegin):
        lines = pbegin | "ReadErrorLines" >> beam.io.ReadFromText(self._file_pattern, coder=BytesCoder())
        return lines | "RetryableRecords" >> beam.ParDo(_ReplayFn()).with_outputs(ERRORS, main=RECORDS)
