"""The Beam side of the run journal (client/journal.py): write its files through Beam's FileSystems (local or
gs://), and ``SkipDone`` — the ``--resume`` step that splits the input into records still to call and the
completed outputs of the ones already done.

    skip = records | "SkipDone" >> SkipDone(client_config, done_patterns(journal_dir, output, errors))
    called = skip.todo | "CallChatCompletions" >> CallChatCompletions(client_config, ...)
    results = (called.results, skip.results) | beam.Flatten()
    errors = (read.errors, called.errors, skip.errors) | beam.Flatten()

SkipDone reads every line of the journal and of the finished outputs (when a previous attempt got that far), keys
each completed output by ``(id, request_key)``, keys each input record the same way (``done_key``: the pure
``build_request``), and joins the two with a CoGroupByKey. A record with a completed output is not called again:
that output is re-emitted (one per input record, however many copies the journal holds). The patterns are matched
when the pipeline runs, not when it is built, and a pattern that matches nothing is simply empty.
"""

from __future__ import annotations

import posixpath
import uuid

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from client.config import ClientConfig
from client.journal import PART_GLOB, choose, done_key, is_final, output_key, parse_output
from client.progress import PROGRESS
from schemas.records import ErrorRecord, InputRecord
from transforms import metrics

__all__ = ["SkipDone", "done_patterns", "write_file_atomically"]

TODO, RESULTS, ERRORS = "todo", "results", "errors"
SHARD_GLOB = "-?????-of-?????.jsonl"  # WriteToText's default shard names, with our .jsonl suffix


def write_file_atomically(path: str, data: bytes) -> None:
    """Write a whole file so that readers see all of it or nothing: local files via a temp file and a rename;
    object stores (gs://) natively, since an object appears only when its upload completes."""
    scheme = FileSystems.get_scheme(path)
    if scheme not in (None, "file"):
        with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            fh.write(data)
        return
    directory, name = posixpath.split(path)
    tmp = posixpath.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        fh.write(data)
    FileSystems.rename([tmp], [path])


def done_patterns(journal_dir: str | None, output: str | None, errors: str | None) -> list[str]:
    """Where completed outputs of this run may already be: the journal and the finished file sinks."""
    patterns = [prefix + SHARD_GLOB for prefix in (output, errors) if prefix]
    if journal_dir:
        patterns.insert(0, f"{journal_dir.rstrip('/')}/{PART_GLOB}")
    return patterns


def _completed(line: str):
    output = parse_output(line)
    if output is not None and is_final(output):
        yield output_key(output), output


def _key_record(record: InputRecord, config: ClientConfig):
    return done_key(record, config), record


class _SplitFn(beam.DoFn):
    def __init__(self) -> None:
        self._skipped = metrics.counter("resume_skipped")

    def process(self, element):
        _, grouped = element
        records, done = list(grouped["records"]), choose(grouped["done"])
        if not done:
            yield from records
            return
        for i, _record in enumerate(records):
            # Identical input lines share a key: each gets a completed output (a distinct copy when there is one).
            out = done[i] if i < len(done) else done[0]
            self._skipped.inc()
            PROGRESS.advance()
            yield beam.pvalue.TaggedOutput(ERRORS if isinstance(out, ErrorRecord) else RESULTS, out)


class SkipDone(beam.PTransform):
    """InputRecords → ``.todo`` (records still to call), ``.results`` and ``.errors`` (completed outputs reused)."""

    def __init__(self, config: ClientConfig, patterns: list[str]) -> None:
        super().__init__()
        self._config = config
        self._patterns = list(patterns)

    def expand(self, records):
        keyed = records | "KeyRecords" >> beam.Map(_key_record, self._config)
        done = (records.pipeline
                | "DonePatterns" >> beam.Create(self._patterns)
                | "ReadDone" >> beam.io.ReadAllFromText()
                | "ParseDone" >> beam.FlatMap(_completed))
        return ({"records": keyed, "done": done}
                | "JoinDone" >> beam.CoGroupByKey()
                | "Split" >> beam.ParDo(_SplitFn()).with_outputs(RESULTS, ERRORS, main=TODO))
