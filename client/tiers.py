"""Service tiers for online calls: the headers that select them, and escalation when a deadline is at risk.

    >>> tier_headers("flex")
    {'X-Vertex-AI-LLM-Request-Type': 'shared', 'X-Vertex-AI-LLM-Shared-Request-Type': 'flex'}
    >>> selector = TierSelector(TierPlan("flex", deadline=time.time() + 3600, total=10_000))
    >>> selector.current()        # "flex", until the projected finish passes the deadline
    >>> selector.record_done()    # one record finished (result or error)
    >>> selector.counts()         # records finished per tier

Vertex selects a tier with headers only (a body field is ignored): Flex PayGo is ``X-Vertex-AI-LLM-Request-Type:
shared`` + ``X-Vertex-AI-LLM-Shared-Request-Type: flex`` (half price, slower, throttled sooner), Priority PayGo
``X-Vertex-AI-LLM-Shared-Request-Type: priority`` (priority queueing, a higher price); Standard sends neither.

**Escalation** (`TierSelector`, with a deadline): every ``check_every_s`` it projects the finish as now + records
left / rate so far (the rate of records finished at the current tier or above since the last change — records still
in flight from the tier before do not count —, once ``min_observe_s`` has passed; both are capped at 2 % and 10 % of
the time the run had until its deadline, so a short run still gets to react). When the projection passes the
deadline, later attempts go one tier up: flex → standard → priority; never back down (a tier change resets the
measurement). Past the deadline itself it goes straight to priority.

``total`` is the job's record count. With several worker processes each selector is given the job's progress
(``job``: client/jobshare.py ``JobShare.others_finished``, the other processes' finished records per tier as their
heartbeats in the job ledger last said, and when that was read): records left and the rate are then the whole
job's — this process's own records counted live, the others' rate measured between two readings of the ledger —
so every process projects the same finish. Without a ledger (one process) it is this process's alone. The others'
counts lag by up to a heartbeat (2 s); a process that dies stops counting (its records may run again).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Mapping

__all__ = ["LADDER", "ONLINE_TIERS", "UNSENT", "JobProgress", "TierPlan", "TierSelector", "tier_headers"]

ONLINE_TIERS = ("standard", "flex", "priority")
LADDER = ("flex", "standard", "priority")  # cheapest first: escalation moves right
MIN_SAMPLES = 3  # records finished at the current tier before its rate is trusted
UNSENT = "unsent"  # finished without a request (no tier): counts as done, never toward a rate
_HEADERS = {
    "standard": {},
    "flex": {"X-Vertex-AI-LLM-Request-Type": "shared", "X-Vertex-AI-LLM-Shared-Request-Type": "flex"},
    "priority": {"X-Vertex-AI-LLM-Shared-Request-Type": "priority"},
}

# The other processes' finished records per tier, and when they were read (None: not yet).
JobProgress = Callable[[], "tuple[Mapping[str, int], float | None]"]


def tier_headers(tier: str) -> dict[str, str]:
    """The request headers that select ``tier`` on Vertex."""
    return dict(_HEADERS[tier])


@dataclass(frozen=True)
class TierPlan:
    """Picklable: the run's tier, its deadline (epoch seconds, UTC) and the records it expects."""

    tier: str = "standard"
    deadline: float | None = None
    total: int | None = None
    check_every_s: float = 5.0
    min_observe_s: float = 20.0


class TierSelector:
    """Which tier the next attempt uses. Thread-safe; one per worker process.

    ``job`` (optional): returns the other worker processes' finished records per tier (``UNSENT`` for records that
    finished without a request) and when that was read (epoch seconds, on this selector's clock; None before the
    first reading) — see the module docstring."""

    def __init__(self, plan: TierPlan, *, clock: Callable[[], float] = time.time,
                 job: JobProgress | None = None) -> None:
        self.plan = plan
        self._clock = clock
        self._job = job
        self._lock = threading.Lock()
        self._tier = plan.tier
        self._finished: Counter[str] = Counter()  # this process's records by the tier of their last attempt
        # The measurement since the current tier was chosen: this process's count at or above it then, and the
        # others' (count, when read) at or above it in a reading of the ledger — the first one, for the first tier.
        self._since, self._own_base = clock(), 0
        self._others_base: tuple[int, float] | None = None
        span = max(0.0, plan.deadline - self._since) if plan.deadline is not None else float("inf")
        self._check_every = min(plan.check_every_s, 0.02 * span)
        self._min_observe = min(plan.min_observe_s, 0.10 * span)
        self._next_check = self._since + self._check_every
        self.escalations: list[tuple[float, str, str]] = []  # (when, from, to)

    def current(self) -> str:
        plan = self.plan
        if plan.deadline is None or self._tier == LADDER[-1] or self._tier not in LADDER:
            return self._tier
        now = self._clock()
        if now < self._next_check:
            return self._tier
        with self._lock:
            self._next_check = now + self._check_every
            others, read_at = self._job() if self._job is not None else ({}, None)
            if now >= plan.deadline or self._projected_late(now, others, read_at):
                self._escalate(now, others, read_at, to_top=now >= plan.deadline)
            return self._tier

    def _at_or_above(self, counts: Mapping[str, int]) -> int:
        """Records finished at the current tier or a higher one. Job-wide, what counts toward the current tier's
        rate is what the job now gets at this tier or better: records finishing at a lower tier are the ones still
        in flight from before the change (here, or in a process that has not escalated yet) and do not count."""
        floor = LADDER.index(self._tier)
        return sum(n for t, n in counts.items() if t in LADDER and LADDER.index(t) >= floor)

    def _others_fresh(self, others: Mapping[str, int], read_at: float | None) -> tuple[int, float]:
        """The other processes' records at or above the current tier since the change, and their rate, measured
        between two readings of the ledger (both as late as a heartbeat, so the lag cancels out)."""
        if read_at is None:
            return 0, 0.0
        count = self._at_or_above(others)
        if self._others_base is None:
            self._others_base = (count, read_at)
        base, base_at = self._others_base
        if read_at <= base_at:
            return 0, 0.0
        fresh = max(0, count - base)  # a dead process drops out of the sum: never a negative rate
        return fresh, fresh / (read_at - base_at)

    def _projected_late(self, now: float, others: Mapping[str, int], read_at: float | None) -> bool:
        plan = self.plan
        observed = now - self._since
        others_fresh, others_rate = self._others_fresh(others, read_at)  # first: the first reading is the base
        if plan.total is None or observed < self._min_observe:
            return False
        left = plan.total - sum(self._finished.values()) - sum(others.values())
        if left <= 0:
            return False
        own_fresh = self._at_or_above(self._finished) - self._own_base
        if own_fresh + others_fresh < MIN_SAMPLES:
            # Too few finished at this tier to measure a rate (its first answers may not be due yet): act only once
            # half of the time that was left when the tier was chosen has gone by without them.
            return observed >= 0.5 * (plan.deadline - self._since)
        return now + left / (own_fresh / observed + others_rate) > plan.deadline

    def _escalate(self, now: float, others: Mapping[str, int], read_at: float | None, *, to_top: bool) -> None:
        before = self._tier
        self._tier = LADDER[-1] if to_top else LADDER[LADDER.index(before) + 1]
        self._since, self._own_base = now, self._at_or_above(self._finished)
        self._others_base = (self._at_or_above(others), read_at) if read_at is not None else None
        self.escalations.append((now, before, self._tier))

    def record_done(self, tier: str | None = None) -> None:
        """One record finished (``tier``: the tier of its last attempt; None when nothing was sent)."""
        with self._lock:
            self._finished[tier if tier is not None else UNSENT] += 1

    def finished(self) -> dict[str, int]:
        """This process's finished records per tier, ``UNSENT`` included (what its heartbeat publishes)."""
        with self._lock:
            return dict(self._finished)

    def counts(self) -> dict[str, int]:
        """Records finished per tier they were sent at."""
        with self._lock:
            return {t: n for t, n in self._finished.items() if t != UNSENT}
