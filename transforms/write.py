"""WriteResults / WriteErrors: records → JSONL files (one object per line), local or gs://.

Both sinks are always written: a run with no errors still leaves an (empty) errors file, so "no file" never has to
be told apart from "no errors".

What is written is counted (namespace ``chatbeam``) by ``CountWritten``, which every sink — these files and the
BigQuery tables (transforms/bigquery.py) — runs on its input: ``results_written``, ``results_written_truncated``
(finish_reason ``length``), ``errors_written`` and ``errors_written_<error_type>``. Those are the run summary's
numbers, whichever path a record took (called, resumed, read) and whatever the sinks are.
"""

from __future__ import annotations

import json
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError

__all__ = ["CountWritten", "WriteErrors", "WriteJsonl", "WriteResults", "to_json_line"]


def to_json_line(record: BaseModel) -> str:
    """One JSON line; never raises. Read records are checked to be writable (schemas.records.unwritable), but a
    server can still send what UTF-8 JSON cannot carry (a lone surrogate from a ``\\ud800`` escape) or nest too deep:
    such a record is written with \\u escapes, or at least its id and why, rather than crash the sink and lose the
    whole run."""
    try:
        return record.model_dump_json()
    except (PydanticSerializationError, ValueError) as exc:
        try:
            return json.dumps(record.model_dump(mode="python"), ensure_ascii=True, default=str)
        except (PydanticSerializationError, ValueError, RecursionError):
            return json.dumps({"id": getattr(record, "id", None), "request_key": getattr(record, "request_key", None),
                               "unwritable": str(exc)}, ensure_ascii=True, default=str)


class _CountFn(beam.DoFn):
    def __init__(self, counter: str) -> None:
        self._counter_name = counter
        self._counter = Metrics.counter("chatbeam", counter)

    def process(self, record: Any):
        self._counter.inc()
        error_type = getattr(record, "error_type", None)
        if error_type:
            Metrics.counter("chatbeam", f"{self._counter_name}_{error_type}").inc()
        elif getattr(record, "finish_reason", None) == "length":
            Metrics.counter("chatbeam", f"{self._counter_name}_truncated").inc()
        yield record


class CountWritten(beam.PTransform):
    """Count the records a sink is given (``{counter}``, ``{counter}_<error_type>``, ``{counter}_truncated``); the
    records pass through unchanged. Every sink applies it, so the summary equals what the sinks hold."""

    def __init__(self, counter: str) -> None:
        super().__init__()
        self._counter = counter

    def expand(self, records):
        return records | "Count" >> beam.ParDo(_CountFn(self._counter))


def _to_json(record: Any) -> str:
    return record if isinstance(record, str) else to_json_line(record)


class WriteJsonl(beam.PTransform):
    """Write pydantic records (or ready JSON lines) as JSONL to ``{prefix}-SSSSS-of-NNNNN.jsonl``.

    Beam's sink first deletes every existing ``{prefix}-*-of-NNNNN.jsonl``, which includes the files of any other
    sink whose prefix starts with ``{prefix}-`` and that has the same shard count: side outputs such as the dry
    run's use ``shard_name_template="-SSSSS"`` (``{prefix}-SSSSS.jsonl``) so that a later run into ``{prefix}``
    leaves them alone.
    """

    counter: str | None = None

    def __init__(self, prefix: str, num_shards: int = 0, shard_name_template: str | None = None) -> None:
        super().__init__()
        self._prefix = prefix
        self._num_shards = num_shards
        self._template = shard_name_template

    def expand(self, records):
        if self.counter:
            records = records | "Counted" >> CountWritten(self.counter)
        return (records
                | "ToJson" >> beam.Map(_to_json)
                | "WriteJsonl" >> beam.io.WriteToText(self._prefix, file_name_suffix=".jsonl",
                                                      num_shards=self._num_shards,
                                                      shard_name_template=self._template))


class WriteResults(WriteJsonl):
    """The results sink."""

    counter = "results_written"


class WriteErrors(WriteJsonl):
    """The errors sink."""

    counter = "errors_written"
