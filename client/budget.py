"""Budget: a per-process spend meter and cap (``--max_cost_usd`` / ``--max_total_tokens``). No Beam import.

    budget = Budget(PriceTable.load(), max_cost_usd=25.0)
    hold = await budget.reserve(request)     # None once the cap is reached: the record becomes budget_exhausted
    ...                                      # the request (and its retries / re-asks) runs
    hold.settle(usage)                       # the record's real usage replaces its estimate

ChatCaller consults the budget once per record, before its first attempt, and settles it after the last one.

* **Reservation.** An admitted record holds its estimated cost and tokens — ``est_prompt_tokens`` plus the expected
  output (below) — until it settles, so records in flight count against the cap. A record is admitted only if
  ``spent + reserved + estimate <= cap``.
* **Waiting, not refusing, on reservations.** If the spend alone leaves room for the record but the reservations
  of records in flight don't, the record waits for them to settle (an estimate is usually larger than the real
  usage, and refunds follow). Only when ``spent + estimate > cap`` is the record refused.
* **Refusal is final.** After the first refusal every later record is refused too (``exhausted``): the run stops
  spending at the cap, finishes what is in flight, and ends cleanly; the refused records are errors with
  error_type ``budget_exhausted`` and ``retryable`` true, which ``--replay_errors`` finishes later.
* **Expected output tokens.** Until real usage has been seen: ``output_tokens`` (``--est_output_tokens``); after
  that, a running mean of the completion tokens of settled records. Either way capped by the request's
  ``max_completion_tokens`` / ``max_tokens``, and times ``n``.
* **Overshoot.** The real spend can pass the cap only by how much the records in flight at the end cost more
  than their estimates (with the running mean, a few records' worth at most).

Scope: one Budget per worker process and run. Alone, its cap is the process's own. With a ``lease_source`` (the
job ledger, client/jobshare.py) the cap is the whole job's: the Budget's allowance is what it has leased from the
ledger, and when a record does not fit, it leases more (one lease at a time per process, off the event loop)
before it waits or refuses; refusal comes only once the ledger has nothing left. Without a cap the Budget is only a
meter: it charges every record's cost to the ``cost_nano_usd`` counter (for the run summary) and never waits or
refuses.

Thread-safe: ``reserve()`` may be awaited from any event loop and ``settle()`` called from any thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from client.errors import BudgetExhausted
from client.metrics import RunCounters
from client.pricing import PriceTable
from client.requests import ChatRequest
from schemas.records import Usage

__all__ = ["DEFAULT_OUTPUT_TOKENS", "Budget", "BudgetConfig", "BudgetExhausted", "Hold", "LeaseSource",
           "output_token_limit"]

log = logging.getLogger(__name__)

DEFAULT_OUTPUT_TOKENS = 256  # assumed completion tokens per choice until real usage is seen (--est_output_tokens)
NANO = 1_000_000_000  # cost counters are integers in nano-USD (Beam counters are ints; 1e-9 USD keeps precision)
_MEAN_AFTER = 1  # settled records with usage before the running mean replaces the assumption
INITIAL_LEASE_RECORDS = 8  # a process's first lease from the job ledger: this many records' estimates


class LeaseSource(Protocol):
    """The job ledger as a Budget sees it (client/jobshare.JobShare). Blocking; called off the event loop."""

    def grant(self, need: Mapping[str, int], want: Mapping[str, int],
              committed: Mapping[str, int]) -> Mapping[str, int] | None: ...


def output_token_limit(request: ChatRequest) -> int | None:
    """The request's own cap on output tokens per choice, if it sets one."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = request.kwargs.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _choices(request: ChatRequest) -> int:
    n = request.kwargs.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


@dataclass(frozen=True)
class BudgetConfig:
    """Picklable settings (built from the options, carried on the DoFn); ``build()`` makes the live Budget."""

    prices: PriceTable = field(default_factory=PriceTable.load)
    max_cost_usd: float | None = None
    max_total_tokens: int | None = None
    output_tokens: int = DEFAULT_OUTPUT_TOKENS

    @property
    def capped(self) -> bool:
        return self.max_cost_usd is not None or self.max_total_tokens is not None

    def build(self, counters: RunCounters | None = None, lease_source: LeaseSource | None = None) -> "Budget":
        return Budget(self.prices, max_cost_usd=self.max_cost_usd, max_total_tokens=self.max_total_tokens,
                      output_tokens=self.output_tokens, counters=counters, lease_source=lease_source)


class Hold:
    """One admitted record's reservation. ``settle(usage)`` exactly once (later calls do nothing)."""

    __slots__ = ("_budget", "model", "cost", "tokens", "choices", "_settled", "tier")

    def __init__(self, budget: "Budget", model: str | None, cost: float, tokens: int, choices: int = 1,
                 tier: str = "standard") -> None:
        self._budget, self.model, self.cost, self.tokens, self.choices = budget, model, cost, tokens, choices
        self.tier = tier
        self._settled = False

    def settle(self, usage: Usage | None, tier: str | None = None) -> None:
        """Release the reservation and charge the real usage (None: nothing was billed) at ``tier``'s prices
        (default: the tier it was reserved at)."""
        if not self._settled:
            self._settled = True
            if tier is not None:
                self.tier = tier
            self._budget._settle(self, usage)


class Budget:
    """See the module docstring. ``spent_usd``, ``spent_tokens``, ``exhausted`` may be read from any thread."""

    def __init__(self, prices: PriceTable, *, max_cost_usd: float | None = None,
                 max_total_tokens: int | None = None, output_tokens: int = DEFAULT_OUTPUT_TOKENS,
                 counters: RunCounters | None = None, lease_source: LeaseSource | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.prices = prices
        self.max_cost_usd = max_cost_usd
        self.max_total_tokens = max_total_tokens
        self.counters = counters if counters is not None else RunCounters()
        self._assumed_output = max(0, int(output_tokens))
        self._lock = threading.Lock()
        self.spent_usd = 0.0
        self.spent_tokens = 0
        self._reserved_usd = 0.0
        self._reserved_tokens = 0
        self._in_flight = 0
        self._output_sum = 0.0
        self._output_seen = 0
        self.exhausted = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        # With a lease source (the job ledger): the allowance leased so far, per capped dimension.
        self._source = lease_source
        self._clock = clock
        self.allowance = {d: 0 for d in self._dims()}
        self._last_lease: dict[str, int] = {}
        self._leasing = False
        self._ledger_dry = False  # the ledger said no: no more leases for this process
        self._ledger_error: str | None = None
        self.last_active = clock()

    @property
    def capped(self) -> bool:
        return self.max_cost_usd is not None or self.max_total_tokens is not None

    def expected_output_tokens(self, request: ChatRequest) -> int:
        """Completion tokens to reserve for ``request`` (all choices)."""
        with self._lock:
            per_choice = (self._output_sum / self._output_seen if self._output_seen >= _MEAN_AFTER
                          else self._assumed_output)
        limit = output_token_limit(request)
        if limit is not None:
            per_choice = min(per_choice, limit)
        return round(per_choice * _choices(request))

    async def reserve(self, request: ChatRequest, tier: str = "standard") -> Hold | None:
        """Admit the record (a Hold to settle later) or refuse it (None); may wait for records in flight, or for
        a lease from the job ledger. The estimate is priced at ``tier`` (client/pricing.py)."""
        output = self.expected_output_tokens(request)
        cost = self.prices.cost(request.model, request.est_prompt_tokens, output, tier=tier)
        tokens = request.est_prompt_tokens + output
        while True:
            with self._lock:
                self.last_active = self._clock()
                decision = self._decide(cost, tokens)
                if decision == "admit":
                    self._reserved_usd += cost
                    self._reserved_tokens += tokens
                    self._in_flight += 1
                    return Hold(self, request.model, cost, tokens, _choices(request), tier)
                if decision == "refuse":
                    self.exhausted = True
                    return None
                if decision == "lease":
                    self._leasing = True
                    need, want = self._lease_request(cost, tokens)
                    committed = self._committed()
                else:
                    loop = asyncio.get_running_loop()
                    waiter = loop.create_future()
                    self._waiters.append((loop, waiter))
            if decision == "lease":
                if not await self._lease(need, want, committed):
                    return None  # the ledger could not be reached: this record is refused, later ones try again
                continue
            await waiter

    async def _lease(self, need: dict[str, int], want: dict[str, int], committed: dict[str, int]) -> bool:
        """Ask the ledger for more allowance (blocking I/O, so on a worker thread); False if it failed. Shielded:
        a record cancelled meanwhile (say, by its deadline) does not lose the lease or leave others waiting."""
        work = asyncio.get_running_loop().run_in_executor(None, self._lease_now, need, want, committed)
        return await asyncio.shield(work)

    def _lease_now(self, need: dict[str, int], want: dict[str, int], committed: dict[str, int]) -> bool:
        granted, error = None, None
        try:
            granted = self._source.grant(need, want, committed)
        except Exception as exc:  # noqa: BLE001 - an unreachable ledger refuses records; it must not crash them
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            log.warning("the job ledger could not be reached: %s", error)
        with self._lock:
            self._leasing = False
            self._ledger_error = error
            if granted:
                for d, v in granted.items():
                    if d in self.allowance:
                        self.allowance[d] += int(v)
                self._last_lease = dict(granted)
            elif error is None:
                self._ledger_dry = True
            waiters, self._waiters = self._waiters, []
        if granted:
            self.counters.inc("budget_leases")
        for loop, waiter in waiters:
            loop.call_soon_threadsafe(_wake, waiter)
        return error is None

    # -- the job ledger's side (client/jobshare.py) -------------------------------------------------------------

    def committed(self) -> dict[str, int]:
        """Spent plus reserved, per capped dimension (what this process has used or may still use)."""
        with self._lock:
            return self._committed()

    def take_unused(self) -> dict[str, int]:
        """Lower the allowance to what is committed and return the difference (to give back to the ledger)."""
        with self._lock:
            committed = self._committed()
            unused = {d: max(0, self.allowance[d] - committed[d]) for d in self.allowance}
            for d in self.allowance:
                self.allowance[d] -= unused[d]
            return unused

    def fence(self) -> None:
        """The ledger reclaimed this process's lease: stop using it (keep only what is committed)."""
        with self._lock:
            committed = self._committed()
            self.allowance = {d: min(self.allowance[d], committed[d]) for d in self.allowance}
            self._last_lease = {}

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def exhausted_message(self) -> str:
        if self._source is not None and self._ledger_error and not self.exhausted:
            return (f"the job ledger could not be reached ({self._ledger_error}); the record was not sent "
                    "(rerun it with --replay_errors)")
        caps = []
        if self.max_cost_usd is not None:
            caps.append(f"--max_cost_usd {self.max_cost_usd:g} (spent ${self.spent_usd:.6f})")
        if self.max_total_tokens is not None:
            caps.append(f"--max_total_tokens {self.max_total_tokens} (spent {self.spent_tokens})")
        scope = ("budget exhausted for the whole job (this process " if self._source is not None
                 else "budget exhausted in this worker process (")
        return (scope + ", ".join(caps) + "); the record was not sent (rerun it with --replay_errors)")

    # -- internals (under the lock) ----------------------------------------------------------------------------

    def _dims(self) -> list[str]:
        return [d for d, cap in (("tokens", self.max_total_tokens), ("nano_usd", self.max_cost_usd))
                if cap is not None]

    def _committed(self) -> dict[str, int]:
        return {d: (self.spent_tokens + self._reserved_tokens if d == "tokens"
                    else round((self.spent_usd + self._reserved_usd) * NANO)) for d in self._dims()}

    def _caps(self) -> dict[str, float]:
        """The limits this process may use: its leased allowance with a ledger, else the configured caps."""
        if self._source is not None:
            return {d: self.allowance[d] for d in self._dims()}
        return {d: (self.max_total_tokens if d == "tokens" else round(self.max_cost_usd * NANO))
                for d in self._dims()}

    def _lease_request(self, cost: float, tokens: int) -> tuple[dict[str, int], dict[str, int]]:
        """What the waiting record lacks (need) and what to ask for (want: twice the last lease, at first a few
        records' worth)."""
        est = {"tokens": tokens, "nano_usd": round(cost * NANO)}
        committed = self._committed()
        need = {d: max(0, committed[d] + est[d] - self.allowance[d]) for d in self._dims()}
        want = {d: max(need[d], 2 * self._last_lease.get(d, 0), INITIAL_LEASE_RECORDS * est[d])
                for d in self._dims()}
        return need, want

    def _decide(self, cost: float, tokens: int) -> str:
        if not self.capped:
            return "admit"
        if self.exhausted:
            return "refuse"
        est = {"tokens": tokens, "nano_usd": round(cost * NANO)}
        spent = {"tokens": self.spent_tokens, "nano_usd": round(self.spent_usd * NANO)}
        committed = self._committed()
        caps = self._caps()
        over_spent = any(spent[d] + est[d] > caps[d] for d in caps)
        over_reserved = any(committed[d] + est[d] > caps[d] for d in caps)
        if not over_reserved:
            return "admit"
        if self._source is not None and not self._ledger_dry:
            return "wait" if self._leasing else "lease"
        if over_spent:
            return "refuse"
        return "wait" if self._in_flight > 0 else "admit"  # records in flight settle (usually below estimate)

    def _settle(self, hold: Hold, usage: Usage | None) -> None:
        cost = 0.0
        tokens = 0
        if usage is not None:
            cost = self.prices.cost(hold.model, usage.prompt_tokens, usage.completion_tokens, tier=hold.tier)
            tokens = usage.total_tokens or usage.prompt_tokens + usage.completion_tokens
        with self._lock:
            self._reserved_usd = max(0.0, self._reserved_usd - hold.cost)
            self._reserved_tokens = max(0, self._reserved_tokens - hold.tokens)
            self._in_flight -= 1
            self.spent_usd += cost
            self.spent_tokens += tokens
            self.last_active = self._clock()
            if usage is not None and usage.total_tokens:
                self._output_sum += usage.completion_tokens / hold.choices
                self._output_seen += 1
            waiters, self._waiters = self._waiters, []
        self.counters.inc("cost_nano_usd", round(cost * NANO))
        self.counters.inc(f"tier_cost_nano_usd_{hold.tier}", round(cost * NANO))
        for loop, waiter in waiters:
            loop.call_soon_threadsafe(_wake, waiter)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"spent_usd": self.spent_usd, "spent_tokens": self.spent_tokens,
                    "reserved_usd": self._reserved_usd, "in_flight": self._in_flight, "exhausted": self.exhausted}


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)
