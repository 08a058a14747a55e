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
left / rate so far (the rate of records finished at the current tier since the last change — records still in
flight from the tier before do not count —, once ``min_observe_s`` has passed; both are
capped at 2 % and 10 % of the time the run had until its deadline, so a short run still gets to react). When the
projection passes the deadline, later attempts go one tier up: flex → standard → priority; never back down (a
tier change resets the measurement). Past the deadline itself it goes straight to priority. ``total`` is the
records this process expects: exact with one worker process; with several, each sees only its own rate and the
job's total, so it projects late and escalates early (which costs more, never misses more).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

__all__ = ["LADDER", "ONLINE_TIERS", "TierPlan", "TierSelector", "tier_headers"]

ONLINE_TIERS = ("standard", "flex", "priority")
LADDER = ("flex", "standard", "priority")  # cheapest first: escalation moves right
MIN_SAMPLES = 3  # records finished at the current tier before its rate is trusted
_HEADERS = {
    "standard": {},
    "flex": {"X-Vertex-AI-LLM-Request-Type": "shared", "X-Vertex-AI-LLM-Shared-Request-Type": "flex"},
    "priority": {"X-Vertex-AI-LLM-Shared-Request-Type": "priority"},
}


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
    """Which tier the next attempt uses. Thread-safe; one per worker process."""

    def __init__(self, plan: TierPlan, *, clock: Callable[[], float] = time.time) -> None:
        self.plan = plan
        self._clock = clock
        self._lock = threading.Lock()
        self._tier = plan.tier
        self._done = 0
        self._since, self._fresh = clock(), 0  # records finished at the current tier since it was chosen
        span = max(0.0, plan.deadline - self._since) if plan.deadline is not None else float("inf")
        self._check_every = min(plan.check_every_s, 0.02 * span)
        self._min_observe = min(plan.min_observe_s, 0.10 * span)
        self._next_check = self._since + self._check_every
        self._counts: Counter[str] = Counter()
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
            if now >= plan.deadline or self._projected_late(now):
                self._escalate(now, to_top=now >= plan.deadline)
            return self._tier

    def _projected_late(self, now: float) -> bool:
        plan = self.plan
        observed = now - self._since
        if plan.total is None or observed < self._min_observe:
            return False
        left = plan.total - self._done
        if left <= 0:
            return False
        if self._fresh < MIN_SAMPLES:
            # Too few finished at this tier to measure a rate (its first answers may not be due yet): act only once
            # half of the time that was left when the tier was chosen has gone by without them.
            return observed >= 0.5 * (plan.deadline - self._since)
        return now + left / (self._fresh / observed) > plan.deadline

    def _escalate(self, now: float, *, to_top: bool) -> None:
        before = self._tier
        self._tier = LADDER[-1] if to_top else LADDER[LADDER.index(before) + 1]
        self._since, self._fresh = now, 0
        self.escalations.append((now, before, self._tier))

    def record_done(self, tier: str | None = None) -> None:
        """One record finished (``tier``: the tier of its last attempt; None when nothing was sent)."""
        with self._lock:
            self._done += 1
            if tier is not None:
                self._counts[tier] += 1
            if tier == self._tier:
                self._fresh += 1

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
