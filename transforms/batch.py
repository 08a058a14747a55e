"""CallBatchPrediction: InputRecords → ResultRecords and ErrorRecords through Vertex batch prediction jobs, with the
same interface as CallChatCompletions (``.results``, ``.errors``), so anything before the call step (resume's
SkipDone, a cache join) composes with either.

    called = records | "CallBatchPrediction" >> CallBatchPrediction(client_config, batch_settings, prices,
                                                                      online=dict(budget=..., journal=..., ...))

The steps (the work is in the Beam-free core: client/batch_run.py, client/batch_resolve.py):

    PrepareLines  record → (key, BatchItem) for the join, (model, BatchLine) to stage; or an ErrorRecord
                  (bad_request, unsupported_in_batch, ...)
    CountPerModel / Bucket / GroupForJobs
                  lines grouped per model, in ceil(count / max_requests) buckets: one bucket is one worker's jobs
    RunJobs       per group: stage the input files, submit, poll, read → (key, OutputLine | Missing) per line
    JoinByKey     CoGroupByKey of items and outcomes on the key each request carries in labels.chatbeam_key
    Resolve       → ResultRecord | ErrorRecord | the record to finish online
    FinishOnline  CallChatCompletions on the fallback records (--batch_fallback online)
"""

from __future__ import annotations

import math
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsDict, TaggedOutput

from client.batch_jobs import BatchJobClient, BatchTarget
from client.batch_resolve import BatchResolver
from client.batch_run import BatchSettings, Fallback, Missing, prepare, run_group
from client.config import ClientConfig
from client.errors import ChatbeamError
from client.journal import JournalSettings, JournalWriter
from client.metrics import RunCounters
from client.pricing import PriceTable
from client.progress import PROGRESS
from schemas.records import ErrorRecord, InputRecord, ResultRecord, error_record
from transforms.call import CallChatCompletions
from transforms.checkpoint import write_file_atomically

__all__ = ["BatchOutputs", "CallBatchPrediction"]

ITEMS, LINES, ERRORS, FALLBACK = "items", "lines", "errors", "fallback"
NAMESPACE = "chatbeam"


class _BeamFiles:
    """client.batch_run.Files over Beam's FileSystems (local paths and gs://)."""

    def create(self, path: str) -> Any:
        return FileSystems.create(path)

    def open(self, path: str) -> Any:
        return FileSystems.open(path)

    def match(self, pattern: str) -> list[str]:
        return [m.path for m in FileSystems.match([pattern])[0].metadata_list]


class _Counted(beam.DoFn):
    """Flushes a core RunCounters' deltas into Beam counters (namespace chatbeam) from the DoFn's own thread."""

    def setup(self) -> None:
        self.counters = RunCounters()
        self._flushed: dict[str, int] = {}
        self._beam: dict[str, Any] = {}

    def flush(self) -> None:
        snapshot = self.counters.snapshot()
        for name, value in snapshot.items():
            delta = value - self._flushed.get(name, 0)
            if delta:
                if name not in self._beam:
                    self._beam[name] = Metrics.counter(NAMESPACE, name)
                self._beam[name].inc(delta)
        self._flushed = snapshot


def _unsendable(record: InputRecord, exc: ChatbeamError) -> ErrorRecord:
    return error_record(exc, record=record)


class _PrepareFn(_Counted):
    def __init__(self, config: ClientConfig, prices: PriceTable, settings: BatchSettings) -> None:
        self._config, self._prices, self._settings = config, prices, settings

    def process(self, record: InputRecord):
        try:
            item, line = prepare(record, self._config, self._prices, self._settings.est_output_tokens)
        except ChatbeamError as exc:
            self.counters.inc(f"error_{exc.error_type}")
            self.flush()
            PROGRESS.advance()
            yield TaggedOutput(ERRORS, _unsendable(record, exc))
            return
        yield line.key, item
        yield TaggedOutput(LINES, (line.model, line))


def _bucket(model_line: tuple[str, Any], counts: dict[str, int], max_requests: int) -> tuple[str, Any]:
    model, line = model_line
    buckets = max(1, math.ceil(counts.get(model, 1) / max_requests))
    name = model.removeprefix("google/").replace("/", "-")
    return f"{name}-{int(line.key[:8], 16) % buckets}", line


class _RunJobsFn(_Counted):
    def __init__(self, config: ClientConfig, settings: BatchSettings) -> None:
        self._target = BatchTarget.from_target(config.target)
        self._settings = settings

    def setup(self) -> None:
        super().setup()
        self._jobs = BatchJobClient(self._target)  # google-genai client: built on the worker, never pickled
        self._files = _BeamFiles()

    def process(self, group_lines: tuple[str, Any]):
        group, lines = group_lines
        for n, (key, outcome) in enumerate(run_group(group, lines, self._settings, self._jobs, self._files,
                                                     self.counters)):
            yield key, outcome
            if n % 1000 == 0:
                self.flush()
        self.flush()


class _ResolveFn(_Counted):
    def __init__(self, config: ClientConfig, prices: PriceTable, fallback_online: bool,
                 journal: JournalSettings | None) -> None:
        self._config, self._prices, self._fallback = config, prices, fallback_online
        self._journal_settings = journal

    def setup(self) -> None:
        super().setup()
        self._resolver = BatchResolver(self._config, self._prices, fallback_online=self._fallback,
                                       counters=self.counters)
        self._journal = (JournalWriter(self._journal_settings, write_file_atomically)
                         if self._journal_settings is not None else None)

    def process(self, joined: tuple[str, dict[str, list]]):
        key, groups = joined
        items, outcomes = list(groups[ITEMS]), list(groups["outcomes"])
        if len(outcomes) > len(items):  # answers for lines no record owns (not ours): counted, never guessed at
            self.counters.inc("batch_orphan_outputs", len(outcomes) - len(items))
        for n, item in enumerate(items):
            outcome = outcomes[n] if n < len(outcomes) else Missing("UNKNOWN", error="no output line came back "
                                                                                       "for this record")
            out = self._resolver.resolve(item, outcome)
            if isinstance(out, Fallback):
                yield TaggedOutput(FALLBACK, out.record)
                continue
            if self._journal is not None:
                self._journal.add(out)
            PROGRESS.advance()
            yield out if isinstance(out, ResultRecord) else TaggedOutput(ERRORS, out)
        self.flush()

    def finish_bundle(self) -> None:
        if self._journal is not None:
            self._journal.flush()


class BatchOutputs:
    """``.results`` and ``.errors``, as CallChatCompletions returns them."""

    def __init__(self, results: Any, errors: Any) -> None:
        self.results, self.errors = results, errors

    def __iter__(self):
        return iter((self.results, self.errors))


class CallBatchPrediction(beam.PTransform):
    """Call Vertex batch prediction for each InputRecord; returns ``.results`` and ``.errors``.

    ``online``: the keyword arguments of the CallChatCompletions step that finishes fallback records (budget,
    journal, progress, run_id); its journal settings also journal the batch results.
    """

    def __init__(self, config: ClientConfig, settings: BatchSettings, prices: PriceTable, *,
                 online: dict[str, Any] | None = None) -> None:
        super().__init__()
        BatchTarget.from_target(config.target)  # fail at construction for a target without a batch API
        self._config, self._settings, self._prices = config, settings, prices
        self._online = dict(online or {})

    def expand(self, records):
        settings = self._settings
        prepared = records | "PrepareLines" >> beam.ParDo(
            _PrepareFn(self._config, self._prices, settings)).with_outputs(LINES, ERRORS, main=ITEMS)
        counts = prepared[LINES] | "CountPerModel" >> beam.combiners.Count.PerKey()
        outcomes = (prepared[LINES]
                    | "Bucket" >> beam.Map(_bucket, counts=AsDict(counts), max_requests=settings.max_requests)
                    | "GroupForJobs" >> beam.GroupByKey()
                    | "RunJobs" >> beam.ParDo(_RunJobsFn(self._config, settings)))
        joined = {ITEMS: prepared[ITEMS], "outcomes": outcomes} | "JoinByKey" >> beam.CoGroupByKey()
        resolved = joined | "Resolve" >> beam.ParDo(_ResolveFn(
            self._config, self._prices, settings.fallback_online, self._online.get("journal"))).with_outputs(
            ERRORS, FALLBACK, main="results")
        results = [resolved.results]
        errors = [prepared[ERRORS], resolved[ERRORS]]
        if settings.fallback_online:
            online = resolved[FALLBACK] | "FinishOnline" >> CallChatCompletions(self._config, **self._online)
            results.append(online.results)
            errors.append(online.errors)
        return BatchOutputs(tuple(results) | "BatchResults" >> beam.Flatten(),
                            tuple(errors) | "BatchErrors" >> beam.Flatten())

