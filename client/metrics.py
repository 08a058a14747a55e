"""Thread-safe named counters for one worker process; the Beam DoFn flushes their deltas into Beam metrics.

    >>> counters = RunCounters()
    >>> counters.inc("attempts"); counters.inc("status_429"); counters.inc("tokens_prompt", 120)
    >>> before = counters.snapshot()
    >>> counters.inc("attempts")
    >>> counters.delta_since(before)
    {'attempts': 1}

Names used by the core (ChatCaller): see ``COUNTER_NAMES``; per-status ``status_<code>`` and per-error
``error_<error_type>`` counters are added as they occur. All values are ints (durations in milliseconds), so they
map one to one onto Beam counters. Throttling time for Dataflow's autoscaler is the limiter's own
``throttled_seconds`` (client/limits.py), not a counter here.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Mapping

__all__ = ["COUNTER_NAMES", "RunCounters"]

COUNTER_NAMES = (
    "requests",            # records handed to ChatCaller.complete()
    "results",             # records that produced a ResultRecord
    "errors",              # records that produced an ErrorRecord (see error_<error_type>)
    "attempts",            # HTTP requests sent: first tries, retries, re-asks and the post-401 retry
    "retries",             # backoff retries (attempts after a retryable failure)
    "reasks",              # re-ask turns after a schema-invalid answer
    "parse_failures",      # answers that failed schema validation (each one, re-asked or not)
    "auth_refreshes",      # 401s answered by a forced refresh and one repeat (a sibling may have refreshed first)
    "throttled",           # attempts answered 429 or 503
    "tokens_prompt", "tokens_completion", "tokens_reasoning", "tokens_cached", "tokens_total",
    "backoff_ms",          # time slept between retries (server-directed or jittered)
    "permit_wait_ms",      # time attempts spent waiting for the limiter's permit, summed over attempts
)


class RunCounters:
    """Named counters, safe to share between threads and coroutines. Missing names read as 0."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: defaultdict[str, int] = defaultdict(int)

    def inc(self, name: str, n: int = 1) -> None:
        if n:
            with self._lock:
                self._values[name] += n

    def get(self, name: str) -> int:
        with self._lock:
            return self._values.get(name, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)

    def delta_since(self, previous: Mapping[str, int]) -> dict[str, int]:
        """What changed since ``previous`` (a snapshot); zero deltas are left out."""
        now = self.snapshot()
        return {k: v - previous.get(k, 0) for k, v in now.items() if v != previous.get(k, 0)}

    def __getstate__(self) -> dict[str, object]:
        # Exclude the lock, which cannot be pickled (the counters may sit on a DoFn before setup()).
        return {"values": self.snapshot()}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__()  # type: ignore[misc]
        self._values.update(state["values"])  # type: ignore[arg-type]
