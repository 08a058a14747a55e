"""What a worker process's engine owns for one run besides its limiter and caller. No Beam import.

    parts = lambda: ProcessParts.build(budget_config, jobshare_settings, tier_plan)
    engine = Engine.shared(key, lambda limiter, p: ChatCaller(config, limiter=limiter, counters=p.counters,
                                                              budget=p.budget, tiers=p.tiers), config, parts=parts)
    engine.parts.counters.snapshot()        # the process's run counters
    engine.release()                        # the last release closes the engine, then the parts (ledger lease back)

``Engine.shared`` builds the parts once per process and key (with the engine), attaches them to the engine (the
job ledger adjusts the engine's limiter and the budget), and closes them after the engine: one registry, so every
DoFn instance and thread of a process shares one engine, one limiter, one budget, one ledger membership, one tier
selector and one set of counters.
"""

from __future__ import annotations

import threading
from typing import Any

from client.budget import Budget, BudgetConfig
from client.jobshare import JobShare, JobShareSettings
from client.metrics import RunCounters
from client.tiers import TierPlan, TierSelector

__all__ = ["ProcessParts"]


class ProcessParts:
    """The run counters, the budget, the job-ledger membership and the tier selector of one process's engine, and
    the marks of what has been flushed to the runner's metrics (flushes may come from several DoFn threads)."""

    def __init__(self, counters: RunCounters, budget: Budget | None = None, share: JobShare | None = None,
                 tiers: TierSelector | None = None) -> None:
        self.counters = counters
        self.budget = budget
        self.share = share
        self.tiers = tiers
        self._lock = threading.Lock()
        self._flushed: dict[str, int] = {}
        self._throttled_flushed = 0.0

    @classmethod
    def build(cls, budget: BudgetConfig | None = None, jobshare: JobShareSettings | None = None,
              tiers: TierPlan | None = None) -> "ProcessParts":
        """Built in the worker (``DoFn.setup()``): joining the ledger writes a first heartbeat, so it must be
        reachable. With a ledger a capped budget leases its allowance from it."""
        counters = RunCounters()
        share = JobShare(jobshare) if jobshare is not None else None
        source = share if share is not None and budget is not None and budget.capped else None
        built = budget.build(counters, lease_source=source) if budget is not None else None
        # With a ledger the selector projects a --deadline from the whole job's progress (the others' heartbeats).
        job = share.others_finished if share is not None else None
        return cls(counters, built, share, TierSelector(tiers, job=job) if tiers is not None else None)

    def attach(self, engine: Any) -> None:
        """Called by the engine once its limiter and loop exist: the ledger steers the limiter and the budget, and
        the heartbeats publish the tier selector's finished records."""
        if self.share is not None:
            progress = self.tiers.finished if self.tiers is not None else None
            self.share.attach(budget=self.budget, limiter=engine.limiter, loop=engine.loop, progress=progress)

    def close(self) -> None:
        """After the engine closed: give the unused lease back to the ledger."""
        if self.share is not None:
            self.share.close()

    def unflushed(self, throttled_seconds: float) -> tuple[dict[str, int], int]:
        """The counters' growth since the last call (from any thread), and the whole throttled seconds to add
        (runner counters are integers: the fraction is carried to the next call)."""
        with self._lock:
            snap = self.counters.snapshot()
            delta = {k: v - self._flushed.get(k, 0) for k, v in snap.items()}
            self._flushed = snap
            throttled = int(throttled_seconds - self._throttled_flushed)
            self._throttled_flushed += throttled
        return {k: v for k, v in delta.items() if v}, throttled
