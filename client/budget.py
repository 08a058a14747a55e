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

Scope: one Budget per worker process and run. On Dataflow every SDK worker process has its own, so the job's
total cap is ``cap × processes``; see docs/nightly.md. Without a cap the Budget is only a meter: it charges every
record's cost to the ``cost_nano_usd`` counter (for the run summary) and never waits or refuses.

Thread-safe: ``reserve()`` may be awaited from any event loop and ``settle()`` called from any thread.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from client.errors import BudgetExhausted
from client.metrics import RunCounters
from client.pricing import PriceTable
from client.requests import ChatRequest
from schemas.records import Usage

__all__ = ["DEFAULT_OUTPUT_TOKENS", "Budget", "BudgetConfig", "BudgetExhausted", "Hold", "output_token_limit"]

DEFAULT_OUTPUT_TOKENS = 256  # assumed completion tokens per choice until real usage is seen (--est_output_tokens)
NANO = 1_000_000_000  # cost counters are integers in nano-USD (Beam counters are ints; 1e-9 USD keeps precision)
_MEAN_AFTER = 1  # settled records with usage before the running mean replaces the assumption


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

    def build(self, counters: RunCounters | None = None) -> "Budget":
        return Budget(self.prices, max_cost_usd=self.max_cost_usd, max_total_tokens=self.max_total_tokens,
                      output_tokens=self.output_tokens, counters=counters)


class Hold:
    """One admitted record's reservation. ``settle(usage)`` exactly once (later calls do nothing)."""

    __slots__ = ("_budget", "model", "cost", "tokens", "choices", "_settled")

    def __init__(self, budget: "Budget", model: str | None, cost: float, tokens: int, choices: int = 1) -> None:
        self._budget, self.model, self.cost, self.tokens, self.choices = budget, model, cost, tokens, choices
        self._settled = False

    def settle(self, usage: Usage | None) -> None:
        """Release the reservation and charge the real usage (None: nothing was billed)."""
        if not self._settled:
            self._settled = True
            self._budget._settle(self, usage)


class Budget:
    """See the module docstring. ``spent_usd``, ``spent_tokens``, ``exhausted`` may be read from any thread."""

    def __init__(self, prices: PriceTable, *, max_cost_usd: float | None = None,
                 max_total_tokens: int | None = None, output_tokens: int = DEFAULT_OUTPUT_TOKENS,
                 counters: RunCounters | None = None) -> None:
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

    async def reserve(self, request: ChatRequest) -> Hold | None:
        """Admit the record (a Hold to settle later) or refuse it (None); may wait for records in flight."""
        output = self.expected_output_tokens(request)
        cost = self.prices.cost(request.model, request.est_prompt_tokens, output)
        tokens = request.est_prompt_tokens + output
        while True:
            with self._lock:
                decision = self._decide(cost, tokens)
                if decision == "admit":
                    self._reserved_usd += cost
                    self._reserved_tokens += tokens
                    self._in_flight += 1
                    return Hold(self, request.model, cost, tokens, _choices(request))
                if decision == "refuse":
                    self.exhausted = True
                    return None
                loop = asyncio.get_running_loop()
                waiter = loop.create_future()
                self._waiters.append((loop, waiter))
            await waiter

    def exhausted_message(self) -> str:
        caps = []
        if self.max_cost_usd is not None:
            caps.append(f"--max_cost_usd {self.max_cost_usd:g} (spent ${self.spent_usd:.6f})")
        if self.max_total_tokens is not None:
            caps.append(f"--max_total_tokens {self.max_total_tokens} (spent {self.spent_tokens})")
        return ("budget exhausted in this worker process: " + ", ".join(caps)
                + "; the record was not sent (rerun it with --replay_errors)")

    # -- internals (under the lock) ----------------------------------------------------------------------------

    def _decide(self, cost: float, tokens: int) -> str:
        if not self.capped:
            return "admit"
        if self.exhausted:
            return "refuse"
        over_spent = over_reserved = False
        if self.max_cost_usd is not None:
            over_spent |= self.spent_usd + cost > self.max_cost_usd
            over_reserved |= self.spent_usd + self._reserved_usd + cost > self.max_cost_usd
        if self.max_total_tokens is not None:
            over_spent |= self.spent_tokens + tokens > self.max_total_tokens
            over_reserved |= self.spent_tokens + self._reserved_tokens + tokens > self.max_total_tokens
        if over_spent:
            return "refuse"
        if over_reserved and self._in_flight > 0:
            return "wait"  # records in flight will settle (usually below their estimate)
        return "admit"

    def _settle(self, hold: Hold, usage: Usage | None) -> None:
        cost = 0.0
        tokens = 0
        if usage is not None:
            cost = self.prices.cost(hold.model, usage.prompt_tokens, usage.completion_tokens)
            tokens = usage.total_tokens or usage.prompt_tokens + usage.completion_tokens
        with self._lock:
            self._reserved_usd = max(0.0, self._reserved_usd - hold.cost)
            self._reserved_tokens = max(0, self._reserved_tokens - hold.tokens)
            self._in_flight -= 1
            self.spent_usd += cost
            self.spent_tokens += tokens
            if usage is not None and usage.total_tokens:
                self._output_sum += usage.completion_tokens / hold.choices
                self._output_seen += 1
            waiters, self._waiters = self._waiters, []
        self.counters.inc("cost_nano_usd", round(cost * NANO))
        for loop, waiter in waiters:
            loop.call_soon_threadsafe(_wake, waiter)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"spent_usd": self.spent_usd, "spent_tokens": self.spent_tokens,
                    "reserved_usd": self._reserved_usd, "in_flight": self._in_flight, "exhausted": self.exhausted}


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)
