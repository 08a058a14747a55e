"""chatbeam's Beam metrics: the one namespace, the counters the transforms keep, and the flush of the core's counters.

    counters = Counters()                       # on a DoFn (picklable); Beam counters are made on first use
    counters.inc("records_read")
    counters.inc(f"read_error_{error.error_type}")
    flushed = counters.flush_deltas(core_counters.snapshot(), flushed)   # the core's RunCounters, from the DoFn thread
    totals = chatbeam_counters(pipeline_result)  # after the run: {"records_read": 2000, ...}

Modelled on Beam's ``_MetricsCollector`` (apache_beam/ml/inference/base.py): one small object owns the names and
the updates, so every step counts in the same namespace and the run summary (client/summary.py) reads them back
with one query. The core (client/) keeps plain ``RunCounters`` (client/metrics.py): Beam metrics can only be
updated from the DoFn's own thread, so a DoFn flushes their deltas here.

Counter names by step: ``records_read``, ``read_errors``, ``read_error_<type>``, ``blank_lines``, ``replay_skipped``
(transforms/read.py, and transforms/bigquery.py through the same path); ``results_written``, ``errors_written``,
``<sink>_<error_type>``, ``results_written_truncated`` (transforms/write.py); ``resume_skipped``
(transforms/checkpoint.py); ``est_*`` (transforms/dry_run.py); the core's counters (client/metrics.py
``COUNTER_NAMES``) and ``cumulativeThrottlingSeconds`` / ``checkpoint_write_failures`` / ``latency_ms``
(transforms/call.py, transforms/batch.py).
"""

from __future__ import annotations

from typing import Any, Mapping

from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

__all__ = ["NAMESPACE", "Counters", "chatbeam_counters", "counter", "distribution"]

NAMESPACE = "chatbeam"


def counter(name: str):
    """The Beam counter ``chatbeam:<name>``."""
    return Metrics.counter(NAMESPACE, name)


def distribution(name: str):
    """The Beam distribution ``chatbeam:<name>``."""
    return Metrics.distribution(NAMESPACE, name)


class Counters:
    """Beam counters of the chatbeam namespace by name, created on first use (names such as ``read_error_<type>``
    are only known when they occur). Picklable, so it can sit on a DoFn."""

    def __init__(self) -> None:
        self._counters: dict[str, Any] = {}

    def inc(self, name: str, n: int = 1) -> None:
        if not n:
            return
        c = self._counters.get(name)
        if c is None:
            c = self._counters[name] = counter(name)
        c.inc(int(n))

    def flush_deltas(self, snapshot: Mapping[str, int], flushed: Mapping[str, int]) -> dict[str, int]:
        """Add what each counter of ``snapshot`` gained since ``flushed`` (both a RunCounters snapshot); returns
        ``snapshot`` as a dict, the next call's ``flushed``."""
        for name, value in snapshot.items():
            self.inc(name, value - flushed.get(name, 0))
        return dict(snapshot)


def chatbeam_counters(result: Any) -> dict[str, int]:
    """Sum the ``chatbeam`` counters of a PipelineResult over all steps (committed values; attempted if the runner
    reports no committed ones)."""
    found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    totals: dict[str, int] = {}
    for metric in found.get("counters", []):
        value = metric.committed if metric.committed is not None else metric.attempted
        name = metric.key.metric.name
        totals[name] = totals.get(name, 0) + int(value or 0)
    return totals
