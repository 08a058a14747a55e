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
import threading
import time
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from client.budget import Budget, BudgetConfig
from client.caller import ChatCaller, utc_iso
from client.config import ClientConfig
from client.engine import BoundedSubmitter, Engine
from client.errors import InternalError
from client.jobshare import JobShare, JobShareSettings
from client.journal import JournalSettings, JournalWriter
from client.metrics import RunCounters
from client.progress import PROGRESS, ProgressSettings
from client.telemetry import TELEMETRY, TelemetrySettings, engine_sample
from client.tiers import TierPlan, TierSelector
from schemas.records import ErrorRecord, InputRecord, ResultRecord, error_record
from transforms.checkpoint import write_file_atomically

__all__ = ["CallChatCompletions"]

RESULTS, ERRORS = "results", "errors"
NAMESPACE = "chatbeam"


def crash_to_error(record: InputRecord, exc: BaseException) -> ErrorRecord:
    """A bug in the core must not lose the record: it becomes a retryable ``internal_error`` record."""
    return error_record(InternalError(f"internal error: {type(exc).__name__}: {exc}"), record=record,
                        finished_at=utc_iso(time.time()))


class _ProcessState:
    """What all DoFn instances of one worker process share for one config: the counters and their flush mark."""

    _lock = threading.Lock()
    _by_key: dict[Any, "_ProcessState"] = {}

    def __init__(self) -> None:
        self.counters = RunCounters()
        self.flushed: dict[str, float] = {}
        self.throttled_flushed = 0.0
        self.lock = threading.Lock()
        self.budget: Budget | None = None
        self.tiers: TierSelector | None = None
        self.share: JobShare | None = None
        self.users = 0

    def acquire(self, config: BudgetConfig | None,
                jobshare: JobShareSettings | None) -> tuple[Budget | None, JobShare | None]:
        """The process's budget and ledger membership (built by the first DoFn instance); pair with release()."""
        with self.lock:
            self.users += 1
            if self.share is None and jobshare is not None:
                self.share = JobShare(jobshare)  # writes its first heartbeat: the ledger must be reachable
                self.budget = None
            if self.budget is None and config is not None:
                source = self.share if self.share is not None and config.capped else None
                self.budget = config.build(self.counters, lease_source=source)
            return self.budget, self.share

    def release(self) -> None:
        """The last DoFn instance of the process gives the unused lease back to the ledger."""
        with self.lock:
            self.users -= 1
            share = self.share if self.users <= 0 else None
            if share is not None:
                self.share, self.budget = None, None
        if share is not None:
            share.close()

    def tiers_for(self, plan: TierPlan | None) -> TierSelector | None:
        with self.lock:
            if self.tiers is None and plan is not None:
                self.tiers = TierSelector(plan)
            return self.tiers

    @classmethod
    def for_key(cls, key: Any) -> "_ProcessState":
        with cls._lock:
            return cls._by_key.setdefault(key, cls())


class _CallChatCompletionsFn(beam.DoFn):
    def __init__(self, config: ClientConfig, budget: BudgetConfig | None = None,
                 journal: JournalSettings | None = None, progress: ProgressSettings | None = None,
                 run_id: str = "", jobshare: JobShareSettings | None = None,
                 telemetry: TelemetrySettings | None = None, tiers: TierPlan | None = None) -> None:
        self._config = config
        self._telemetry = telemetry
        self._tier_plan = tiers
        self._budget_config = budget
        self._jobshare = jobshare
        self._journal_settings = journal
        self._progress = progress
        self._run_id = run_id
        self._beam_counters: dict[str, Any] = {}
        self._latency = Metrics.distribution(NAMESPACE, "latency_ms")
        self._throttled = Metrics.counter(NAMESPACE, "cumulativeThrottlingSeconds")
        self._journal_failures = Metrics.counter(NAMESPACE, "checkpoint_write_failures")

    def setup(self) -> None:
        config = self._config
        # DoFn instances of one process with the same settings and run share one engine (one pool, one limiter,
        # one budget).
        key = json.dumps([dataclasses.asdict(config), self._run_id], sort_keys=True, default=str)
        self._state = _ProcessState.for_key(key)
        counters = self._state.counters
        budget, share = self._state.acquire(self._budget_config, self._jobshare)
        tiers = self._state.tiers_for(self._tier_plan)
        self._engine = Engine.shared(
            key, lambda limiter: ChatCaller(config, limiter=limiter, counters=counters, budget=budget, tiers=tiers),
            config)
        if share is not None:
            share.attach(budget=budget, limiter=self._engine.limiter, loop=self._engine.loop)
        self._journal = (JournalWriter(self._journal_settings, write_file_atomically)
                         if self._journal_settings is not None else None)
        self._journal_failures_reported = 0
        if self._progress is not None:
            PROGRESS.start(self._progress)
        if self._telemetry is not None:
            engine = self._engine
            TELEMETRY.start(self._telemetry, lambda: engine_sample(engine.stats(), counters.snapshot(), PROGRESS.done),
                            write_file_atomically)

    def start_bundle(self) -> None:
        self._submitter = BoundedSubmitter(self._engine, max_pending=2 * self._config.max_concurrency,
                                           on_crash=crash_to_error)

    def process(self, record: InputRecord):
        outputs = self._submitter.submit(record)
        if outputs:
            self._flush_metrics()
        for out in outputs:
            yield self._tagged(out)

    def finish_bundle(self):
        for out in self._submitter.drain():
            yield self._tagged(WindowedValue(out, MIN_TIMESTAMP, [GlobalWindow()]), record=out)
        if self._journal is not None:
            self._journal.flush()
            self._journal_failures.inc(self._journal.failed_writes - self._journal_failures_reported)
            self._journal_failures_reported = self._journal.failed_writes
        self._flush_metrics()

    def teardown(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.release()
            self._engine = None
            self._state.release()
            if self._telemetry is not None:
                TELEMETRY.stop()
            if self._progress is not None:
                PROGRESS.stop()

    def _tagged(self, value: Any, record: ResultRecord | ErrorRecord | None = None):
        record = value if record is None else record
        if self._journal is not None:
            self._journal.add(record)
        PROGRESS.advance()
        if isinstance(record, ResultRecord):
            self._latency.update(int(record.latency_ms))
            return value
        return beam.pvalue.TaggedOutput(ERRORS, value)

    def _flush_metrics(self) -> None:
        # Beam metrics can only be updated from the DoFn's own thread, so the engine's counters are flushed here,
        # as deltas, once per process (all DoFn instances of the process share them).
        state = self._state
        with state.lock:
            snap = state.counters.snapshot()
            delta = {k: v - state.flushed.get(k, 0) for k, v in snap.items()}
            state.flushed = snap
            # Beam counters are integers: flush whole throttled seconds and carry the fraction to the next flush.
            throttled = float(getattr(self._engine.limiter, "throttled_seconds", 0.0))
            throttled_whole = int(throttled - state.throttled_flushed)
            state.throttled_flushed += throttled_whole
        for name, value in delta.items():
            if value:
                counter = self._beam_counters.get(name)
                if counter is None:
                    counter = self._beam_counters[name] = Metrics.counter(NAMESPACE, name)
                counter.inc(int(value))
        if throttled_whole:
            self._throttled.inc(throttled_whole)


class CallChatCompletions(beam.PTransform):
    """Call the chat completions endpoint for each InputRecord; returns ``.results`` and ``.errors``."""

    def __init__(self, config: ClientConfig, *, budget: BudgetConfig | None = None,
                 journal: JournalSettings | None = None, progress: ProgressSettings | None = None,
                 run_id: str = "", jobshare: JobShareSettings | None = None,
                 telemetry: TelemetrySettings | None = None, tiers: TierPlan | None = None) -> None:
        super().__init__()
        self._config = config
        self._fn_args = (budget, journal, progress, run_id, jobshare, telemetry, tiers)

    def expand(self, records):
        fn = _CallChatCompletionsFn(self._config, *self._fn_args)
        return records | "Call" >> beam.ParDo(fn).with_outputs(ERRORS, main=RESULTS)
