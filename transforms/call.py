"""CallChatCompletions: InputRecords → ResultRecords (main output ``results``) and ErrorRecords (``errors``).

The DoFn is a thin shell. The work happens in the Beam-free core: one ``Engine`` per worker process (a background
event loop owning the HTTP connection pool, the limiter and the ChatCaller), built in ``setup()`` — never at
pipeline construction, so a pipeline can be built on a machine with no credentials. Records are submitted as they
arrive and emitted as each completes; ``finish_bundle`` waits for the rest of the bundle.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from client.caller import ChatCaller
from client.config import ClientConfig
from client.engine import BoundedSubmitter, Engine
from client.errors import redact
from client.metrics import RunCounters
from schemas.records import ErrorRecord, InputRecord, ResultRecord

__all__ = ["CallChatCompletions"]

RESULTS, ERRORS = "results", "errors"
NAMESPACE = "chatbeam"


def crash_to_error(record: InputRecord, exc: BaseException) -> ErrorRecord:
    """A bug in the core must not lose the record: it becomes a retryable error record."""
    return ErrorRecord(id=record.id, stage="request", error_type="internal_error", retryable=True,
                       message=redact(f"{type(exc).__name__}: {exc}"), record=record.to_json_dict(),
                       metadata=record.metadata)


class _ProcessState:
    """What all DoFn instances of one worker process share for one config: the counters and their flush mark."""

    _lock = threading.Lock()
    _by_key: dict[Any, "_ProcessState"] = {}

    def __init__(self) -> None:
        self.counters = RunCounters()
        self.flushed: dict[str, float] = {}
        self.throttled_flushed = 0.0
        self.lock = threading.Lock()

    @classmethod
    def for_key(cls, key: Any) -> "_ProcessState":
        with cls._lock:
            return cls._by_key.setdefault(key, cls())


class _CallChatCompletionsFn(beam.DoFn):
    def __init__(self, config: ClientConfig) -> None:
        self._config = config
        self._beam_counters: dict[str, Any] = {}
        self._latency = Metrics.distribution(NAMESPACE, "latency_ms")
        self._throttled = Metrics.counter(NAMESPACE, "cumulativeThrottlingSeconds")

    def setup(self) -> None:
        config = self._config
        # DoFn instances of one process with the same settings share one engine (one pool, one limiter).
        key = json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)
        self._state = _ProcessState.for_key(key)
        counters = self._state.counters
        self._engine = Engine.shared(key, lambda limiter: ChatCaller(config, limiter=limiter, counters=counters),
                                     config)

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
        self._flush_metrics()

    def teardown(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.release()
            self._engine = None

    def _tagged(self, value: Any, record: ResultRecord | ErrorRecord | None = None):
        record = value if record is None else record
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
            throttled = float(getattr(self._engine.limiter, "throttled_seconds", 0.0))
            throttled_delta, state.throttled_flushed = throttled - state.throttled_flushed, throttled
        for name, value in delta.items():
            if value:
                counter = self._beam_counters.get(name)
                if counter is None:
                    counter = self._beam_counters[name] = Metrics.counter(NAMESPACE, name)
                counter.inc(int(value))
        if throttled_delta >= 1:
            self._throttled.inc(int(throttled_delta))
            with state.lock:
                state.throttled_flushed -= throttled_delta - int(throttled_delta)


class CallChatCompletions(beam.PTransform):
    """Call the chat completions endpoint for each InputRecord; returns ``.results`` and ``.errors``."""

    def __init__(self, config: ClientConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, records):
        return records | "Call" >> beam.ParDo(_CallChatCompletionsFn(self._config)).with_outputs(ERRORS, main=RESULTS)
