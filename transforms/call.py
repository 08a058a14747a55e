"""CallChatCompletions: InputRecords → ResultRecords (main output ``results``) and ErrorRecords (``errors``).

The DoFn is a thin shell. The work happens in the Beam-free core: one ``Engine`` per worker process (a background
event loop owning the HTTP connection pool, the limiter and the ChatCaller), built in ``setup()`` — never at
pipeline construction, so a pipeline can be built on a machine with no credentials. Records are submitted as they
arrive and emitted as each completes; ``finish_bundle`` waits for the rest of the bundle.

Nightly-run options (all optional, all Beam-free objects from ``client/``): a ``BudgetConfig`` (one Budget per
worker process and run, consulted by the caller), ``JobShareSettings`` (the job ledger: with it the budget and
``--rpm``/``--tpm`` hold for the whole job — client/jobshare.py), ``JournalSettings`` (completed outputs also go to
the checkpoint journal, flushed at least at every bundle's end), ``ProgressSettings`` (a progress line per process)
and ``TelemetrySettings`` (engine samples per process for the run report and the launcher's progress line). A
``TierPlan`` (client/tiers.py) sets the service tier and, with a deadline, escalates it (one selector per process).
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from client.budget import BudgetConfig
from client.caller import ChatCaller, utc_iso
from client.config import ClientConfig
from client.engine import BoundedSubmitter, Engine
from client.errors import InternalError
from client.jobshare import JobShareSettings
from client.journal import JournalSettings, JournalWriter
from client.process_parts import ProcessParts
from client.progress import PROGRESS, ProgressSettings
from client.telemetry import TELEMETRY, TelemetrySettings, engine_sample
from client.tiers import TierPlan
from schemas.records import ErrorRecord, InputRecord, ResultRecord, error_record
from transforms import metrics
from transforms.checkpoint import write_file_atomically

__all__ = ["CallChatCompletions"]

RESULTS, ERRORS = "results", "errors"


def crash_to_error(record: InputRecord, exc: BaseException) -> ErrorRecord:
    """A bug in the core must not lose the record: it becomes a retryable ``internal_error`` record."""
    return error_record(InternalError(f"internal error: {type(exc).__name__}: {exc}"), record=record,
                        finished_at=utc_iso(time.time()))


class _RunnerMetrics:
    """The DoFn's Beam metrics. Beam metrics can only be updated from the DoFn's own thread, so the engine's
    counters are flushed here, as deltas, once per process (ProcessParts keeps the marks; all DoFn instances of
    the process share them)."""

    def __init__(self) -> None:
        self.latency = metrics.distribution("latency_ms")
        self._throttled = metrics.counter("cumulativeThrottlingSeconds")
        self._journal_failures = metrics.counter("checkpoint_write_failures")
        self._journal_failures_reported = 0
        self._counters = metrics.Counters()

    def flush(self, engine: Engine) -> None:
        delta, throttled = engine.parts.unflushed(float(getattr(engine.limiter, "throttled_seconds", 0.0)))
        for name, value in delta.items():
            self._counters.inc(name, value)
        if throttled:
            self._throttled.inc(throttled)

    def journal_flushed(self, journal: JournalWriter) -> None:
        self._journal_failures.inc(journal.failed_writes - self._journal_failures_reported)
        self._journal_failures_reported = journal.failed_writes


@dataclasses.dataclass(frozen=True)
class _Settings:
    """The nightly-run options of a CallChatCompletions (module docstring); all optional, all Beam-free."""

    budget: BudgetConfig | None = None
    journal: JournalSettings | None = None
    progress: ProgressSettings | None = None
    run_id: str = ""
    jobshare: JobShareSettings | None = None
    telemetry: TelemetrySettings | None = None
    tiers: TierPlan | None = None


class _CallChatCompletionsFn(beam.DoFn):
    def __init__(self, config: ClientConfig, settings: _Settings) -> None:
        self._config = config
        self._settings = settings
        self._metrics = _RunnerMetrics()

    def setup(self) -> None:
        self._engine = _shared_engine(self._config, self._settings)
        settings = self._settings
        self._journal = (JournalWriter(settings.journal, write_file_atomically)
                         if settings.journal is not None else None)
        if settings.progress is not None:
            PROGRESS.start(settings.progress)
        if settings.telemetry is not None:
            engine, counters = self._engine, self._engine.parts.counters
            TELEMETRY.start(settings.telemetry,
                            lambda: engine_sample(engine.stats(), counters.snapshot(), PROGRESS.done),
                            write_file_atomically)

    def start_bundle(self) -> None:
        self._submitter = BoundedSubmitter(self._engine, max_pending=2 * self._config.max_concurrency,
                                           on_crash=crash_to_error)

    def process(self, record: InputRecord):
        outputs = self._submitter.submit(record)
        if outputs:
            self._metrics.flush(self._engine)
        for out in outputs:
            yield self._tagged(out)

    def finish_bundle(self):
        for out in self._submitter.drain():
            yield self._tagged(WindowedValue(out, MIN_TIMESTAMP, [GlobalWindow()]), record=out)
        if self._journal is not None:
            self._journal.flush()
            self._metrics.journal_flushed(self._journal)
        self._metrics.flush(self._engine)

    def teardown(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.release()  # the last release closes the engine and its parts (the ledger lease goes back)
            self._engine = None
            if self._settings.telemetry is not None:
                TELEMETRY.stop()
            if self._settings.progress is not None:
                PROGRESS.stop()

    def _tagged(self, value: Any, record: ResultRecord | ErrorRecord | None = None):
        record = value if record is None else record
        if self._journal is not None:
            self._journal.add(record)
        PROGRESS.advance()
        if isinstance(record, ResultRecord):
            self._metrics.latency.update(int(record.latency_ms))
            return value
        return beam.pvalue.TaggedOutput(ERRORS, value)


def _shared_engine(config: ClientConfig, settings: _Settings) -> Engine:
    """The process's engine for this config and run (Engine.shared: one registry), with its ProcessParts: DoFn
    instances of one process with the same settings share one pool, one limiter, one budget, one ledger share."""
    key = json.dumps([dataclasses.asdict(config), settings.run_id], sort_keys=True, default=str)

    def caller(limiter: Any, parts: ProcessParts) -> ChatCaller:
        return ChatCaller(config, limiter=limiter, counters=parts.counters, budget=parts.budget, tiers=parts.tiers)

    return Engine.shared(key, caller, config,
                         parts=lambda: ProcessParts.build(settings.budget, settings.jobshare, settings.tiers))


class CallChatCompletions(beam.PTransform):
    """Call the chat completions endpoint for each InputRecord; returns ``.results`` and ``.errors``."""

    def __init__(self, config: ClientConfig, *, budget: BudgetConfig | None = None,
                 journal: JournalSettings | None = None, progress: ProgressSettings | None = None,
                 run_id: str = "", jobshare: JobShareSettings | None = None,
                 telemetry: TelemetrySettings | None = None, tiers: TierPlan | None = None) -> None:
        super().__init__()
        self._config = config
        self._settings = _Settings(budget, journal, progress, run_id, jobshare, telemetry, tiers)

    def expand(self, records):
        fn = _CallChatCompletionsFn(self._config, self._settings)
        return records | "Call" >> beam.ParDo(fn).with_outputs(ERRORS, main=RESULTS)
