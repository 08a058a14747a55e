"""WriteResults / WriteErrors: records → JSONL files (one object per line), local or gs://.

Both sinks are always written: a run with no errors still leaves an (empty) errors file, so "no file" never has to
be told apart from "no errors".
"""

from __future__ import annotations

import apache_beam as beam
from pydantic import BaseModel

__all__ = ["WriteErrors", "WriteJsonl", "WriteResults", "to_json_line"]


def to_json_line(record: BaseModel) -> str:
    return record.model_dump_json()


class WriteJsonl(beam.PTransform):
    """Write pydantic records as JSONL to ``{prefix}-SSSSS-of-NNNNN.jsonl``."""

    def __init__(self, prefix: str, num_shards: int = 0) -> None:
        super().__init__()
        self._prefix = prefix
        self._num_shards = num_shards

    def expand(self, records):
        return (records
                | "ToJson" >> beam.Map(to_json_line)
                | "WriteJsonl" >> beam.io.WriteToText(self._prefix, file_name_suffix=".jsonl",
                                                      num_shards=self._num_shards))


class WriteResults(WriteJsonl):
    """The results sink."""


class WriteErrors(WriteJsonl):
    """The errors sink."""
