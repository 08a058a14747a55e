"""ReadPrompts: JSONL files (local or gs://) → InputRecords, and read-stage ErrorRecords for lines that are not records.

Lines are read as bytes so that a line that is not UTF-8 is an error record too, not a crashed run.
Blank lines separate nothing and are not records: they are skipped and counted (``chatbeam:blank_lines``).
Read errors are counted in total (``read_errors``) and by type (``read_error_<error_type>``). ``RecordsFn`` is the
one read path: the BigQuery reader (transforms/bigquery.py) uses it too, so file and table runs count the same.

ReadReplayErrors (``--replay_errors``): an earlier run's error files → the input records of its *retryable*
failures (their ``record`` field), so a rerun sends exactly those; the rest are skipped and counted
(``replay_skipped``).
"""

from __future__ import annotations

from typing import Any, Callable

import apache_beam as beam
from apache_beam.coders import BytesCoder

from client.journal import parse_output
from client.progress import PROGRESS
from schemas.records import DEFAULT_MAX_RECORD_BYTES, ErrorRecord, InputRecord, parse_line, parse_row, read_error
from transforms import metrics

__all__ = ["ERRORS", "RECORDS", "ParsePromptLines", "ReadPrompts", "ReadReplayErrors", "RecordsFn"]

RECORDS, ERRORS = "records", "errors"


class RecordsFn(beam.DoFn):
    """The one read path: each input item (a JSONL line, a BigQuery row, ...) → an InputRecord (main output) or a
    read-stage ErrorRecord (``errors``), counted the same way for every source: ``records_read``, ``read_errors``,
    ``read_error_<error_type>``, and the progress line's count of finished records for each error.

    ``convert`` turns one item into a record or an error (a picklable callable: a module-level function or a
    ``functools.partial`` of one); subclasses may override ``process`` and call ``emit``."""

    def __init__(self, convert: Callable[[Any], InputRecord | ErrorRecord] | None = None) -> None:
        self._convert = convert
        self._counters = metrics.Counters()

    def process(self, item: Any):
        yield self.emit(self._convert(item))

    def emit(self, out: InputRecord | ErrorRecord):
        """Count one record read; an ErrorRecord goes to ``errors`` (and counts as finished for the progress line)."""
        self._counters.inc("records_read")
        if isinstance(out, ErrorRecord):
            return self.error(out)
        return out

    def error(self, error: ErrorRecord):
        """Count a read error by type and send it to ``errors`` (``emit`` has counted it as read)."""
        self._counters.inc("read_errors")
        self._counters.inc(f"read_error_{error.error_type}")
        PROGRESS.advance()
        return beam.pvalue.TaggedOutput(ERRORS, error)


class _ParseLineFn(RecordsFn):
    def __init__(self, max_record_bytes: int) -> None:
        super().__init__()
        self._max_record_bytes = max_record_bytes

    def process(self, line: bytes):
        if not line.strip():
            self._counters.inc("blank_lines")
            return
        yield self.emit(parse_line(line, max_record_bytes=self._max_record_bytes))


class _ReplayFn(RecordsFn):
    def process(self, line: bytes):
        if not line.strip():
            return
        error = parse_output(line)
        if not isinstance(error, ErrorRecord):
            text = line.decode("utf-8", "replace")
            yield self.emit(read_error("not_an_error_record", "--replay_errors: the line is not an error record",
                                       raw=text))
            return
        if not error.retryable or error.record is None:
            self._counters.inc("replay_skipped")  # a permanent failure stays in the earlier run's errors
            return
        yield self.emit(parse_row(error.record))


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
