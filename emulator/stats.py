"""Exact request counters for ``GET /emulator/stats`` (single process, single event loop).

Fingerprints are the sha256 of the canonical JSON body (sorted keys, compact; the raw
bytes when the body is not JSON).  ``received`` counts every arrival of a fingerprint on a
chat route, ``ok`` every complete, well-formed 200 answer to it (a malformed body or a
dropped stream is a 200 in ``by_status`` but not ``ok``), so ``duplicate_ok == 0`` means
nothing was served twice.

Usage::

    stats = Stats()
    stats.begin("managed_chat")
    attempt = stats.receive("ab12...")      # 0 on first arrival, 1 on the first retry, ...
    stats.status(200); stats.ok("ab12...", prompt=10, completion=20, reasoning=0)
    stats.snapshot(fingerprints=False)

Per service tier (``by_tier``: standard, flex, priority for chat and generateContent requests; ``batch`` for lines
answered inside batch prediction jobs): requests that asked for the tier, those answered 429, and the ok answers
with their tokens. ``batch`` counts jobs by final state and lines (ok / failed).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

__all__ = ["Stats", "FAULT_KINDS"]

FAULT_KINDS = ("storm_429", "capacity_429", "error_500", "error_503", "hang", "hang_cancelled", "reset",
               "stream_drop", "malformed", "schema_violation", "truncate", "token_expired")


class Stats:
    """Counters; every mutation happens on the server's event loop."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Zero every counter; ``in_flight`` is a live gauge and keeps counting requests already running."""
        self.started = time.time()
        self.requests = 0
        self.in_flight = getattr(self, "in_flight", 0)
        self.max_in_flight = self.in_flight
        self.by_status: Counter[str] = Counter()
        self.by_route: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.tokens = {"prompt": 0, "completion": 0, "reasoning": 0}
        self.extra_content = {"messages": 0, "parts": 0, "tool_calls": 0}
        self.fingerprints: dict[str, list[int]] = {}
        self.duplicate_ok = 0
        self.ok_total = 0
        self.by_tier: dict[str, dict[str, int]] = {}
        self.batch: dict[str, Any] = {"jobs_created": 0, "lines": 0, "lines_ok": 0, "lines_failed": 0,
                                      "jobs_by_state": Counter()}

    # -- in flight: entered/left by the app around every API request ----------------------
    def enter(self) -> None:
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight

    def leave(self) -> None:
        self.in_flight -= 1

    # -- per request ------------------------------------------------------------------
    def begin(self, route: str) -> None:
        self.requests += 1
        self.by_route[route] += 1

    def receive(self, fingerprint: str) -> int:
        """Count an arrival; return how many times this fingerprint arrived before."""
        entry = self.fingerprints.get(fingerprint)
        if entry is None:
            self.fingerprints[fingerprint] = [1, 0]
            return 0
        entry[0] += 1
        return entry[0] - 1

    def status(self, code: int | str) -> None:
        self.by_status[str(code)] += 1

    def fault(self, kind: str) -> None:
        self.faults[kind] += 1

    def extra(self, messages: int, parts: int, tool_calls: int) -> None:
        ec = self.extra_content
        ec["messages"] += messages
        ec["parts"] += parts
        ec["tool_calls"] += tool_calls

    def ok(self, fingerprint: str, prompt: int, completion: int, reasoning: int, tier: str = "standard") -> None:
        """A complete, well-formed 200 was served for ``fingerprint``."""
        entry = self.fingerprints.setdefault(fingerprint, [1, 0])
        entry[1] += 1
        self.ok_total += 1
        if entry[1] == 2:
            self.duplicate_ok += 1
        t = self.tokens
        t["prompt"] += prompt
        t["completion"] += completion
        t["reasoning"] += reasoning
        self.tier_ok(tier, prompt, completion, reasoning)

    # -- per service tier -------------------------------------------------------------
    def _tier(self, tier: str) -> dict[str, int]:
        entry = self.by_tier.get(tier)
        if entry is None:
            entry = self.by_tier[tier] = {"requests": 0, "throttled": 0, "ok": 0, "prompt_tokens": 0,
                                          "completion_tokens": 0, "reasoning_tokens": 0}
        return entry

    def tier_request(self, tier: str) -> None:
        self._tier(tier)["requests"] += 1

    def tier_throttled(self, tier: str) -> None:
        self._tier(tier)["throttled"] += 1

    def tier_ok(self, tier: str, prompt: int, completion: int, reasoning: int) -> None:
        entry = self._tier(tier)
        entry["ok"] += 1
        entry["prompt_tokens"] += prompt
        entry["completion_tokens"] += completion
        entry["reasoning_tokens"] += reasoning

    # -- batch prediction jobs --------------------------------------------------------
    def batch_job_created(self) -> None:
        self.batch["jobs_created"] += 1

    def batch_job_done(self, state: str) -> None:
        self.batch["jobs_by_state"][state] += 1

    def batch_line(self, ok: bool, prompt: int = 0, completion: int = 0, reasoning: int = 0) -> None:
        b = self.batch
        b["lines"] += 1
        self.tier_request("batch")
        if ok:
            b["lines_ok"] += 1
            self.tier_ok("batch", prompt, completion, reasoning)
        else:
            b["lines_failed"] += 1

    def snapshot(self, fingerprints: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "requests": self.requests,
            "by_status": dict(self.by_status),
            "by_route": dict(self.by_route),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "tokens": dict(self.tokens),
            "extra_content": dict(self.extra_content),
            "faults": dict(self.faults),
            "unique_fingerprints": len(self.fingerprints),
            "duplicate_ok": self.duplicate_ok,
            "ok": self.ok_total,
            "by_tier": {tier: dict(entry) for tier, entry in self.by_tier.items()},
            "batch": {**self.batch, "jobs_by_state": dict(self.batch["jobs_by_state"])},
            "uptime_s": round(time.time() - self.started, 3),
        }
        if fingerprints:
            out["fingerprints"] = {fp: {"received": e[0], "ok": e[1]} for fp, e in self.fingerprints.items()}
        return out
