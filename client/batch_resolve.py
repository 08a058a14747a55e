"""Batch mode: one record's outcome (its output line, or why it has none) → exactly one ResultRecord, ErrorRecord
or `Fallback` (finish it online in this run). No Beam import.

    resolver = BatchResolver(config, prices, fallback_online=True, counters=counters)
    out = resolver.resolve(item, outcome)

* An answered line is translated to a chat completion and parsed by the online parser (client/parsing.py), with the
  record's schema: the same ``parsed``, the same finish-reason errors. It is charged at batch prices
  (``cost_nano_usd``, ``tier_cost_nano_usd_batch``) and marked ``service_tier: "batch"``.
* A schema-invalid answer is re-asked online (`Fallback`, reason ``reask``) when ``max_reasks`` > 0 — online, that
  record starts afresh (a first request, then up to ``--max_reasks`` re-asks) — else it is a ``schema_validation``
  error, as online. Other permanent answer errors (``truncated``, ``content_filtered``, ``empty_response``) are
  errors, as online.
* A failed line (``batch_line_failed``), a line of a failed / expired job (``batch_job_failed``) or of a cancelled
  one (``batch_job_cancelled``) finishes online with ``fallback_online``; otherwise it is a retryable error record
  whose ``status`` is Google's status (or the job state) and whose message quotes the batch status.
* A line the budget kept out of the job is ``budget_exhausted`` (retryable, nothing sent).
"""

from __future__ import annotations

from typing import Any

from client.batch_run import BatchItem, Fallback, Missing
from client.budget import BudgetExhausted
from client.config import ClientConfig
from client.errors import (BatchJobCancelled, BatchJobFailed, BatchLineFailed, ChatbeamError, SchemaInvalid,
                           is_retryable)
from client.metrics import RunCounters
from client.native_response import OutputLine, to_completion
from client.parsing import parse_completion, usage_of
from client.pricing import PriceTable
from client.requests import request_schema
from schemas.records import ErrorRecord, ResultRecord, Usage, error_record

__all__ = ["BatchJobCancelled", "BatchJobFailed", "BatchLineFailed", "BatchResolver"]  # the errors: client/errors.py

NANO = 1_000_000_000


class BatchResolver:
    """One record's outcome → ResultRecord | ErrorRecord | Fallback (see module docstring)."""

    def __init__(self, config: ClientConfig, prices: PriceTable, *, fallback_online: bool = True,
                 counters: RunCounters | None = None) -> None:
        self.config, self.prices, self.fallback_online = config, prices, fallback_online
        self.counters = counters if counters is not None else RunCounters()

    def resolve(self, item: BatchItem, outcome: OutputLine | Missing) -> ResultRecord | ErrorRecord | Fallback:
        out = self._resolve(item, outcome)
        if isinstance(out, (ResultRecord, ErrorRecord)):  # when the job was submitted, and answered (or ended)
            out.started_at, out.finished_at = outcome.started_at, outcome.finished_at
        return out

    def _resolve(self, item: BatchItem, outcome: OutputLine | Missing) -> ResultRecord | ErrorRecord | Fallback:
        if isinstance(outcome, Missing):
            return self._missing(item, outcome)
        if outcome.error is not None:
            error = BatchLineFailed(f"{outcome.error.message}", status_code=outcome.error.status_code,
                                    status=outcome.error.status)
            return self._retry_online(item, error, "line_failed")
        usage = None
        try:
            completion, _traffic = to_completion(outcome.response, model=item.model)
            usage = self._charge(item, completion)
            # The record's schema by the same rule as online (a record names only declared schemas); a cut-off
            # answer is kept as a result unless --on_truncation error (a batch line cannot be retried in place).
            parsed = parse_completion(completion, schema=request_schema(item.record, self.config),
                                      keep_truncated=self.config.on_truncation != "error")
        except SchemaInvalid as exc:
            if self.config.max_reasks > 0:
                return self._retry_online(item, exc, "reask", usage)
            return self._error(item, exc, usage)
        except ChatbeamError as exc:
            if is_retryable(exc):
                return self._retry_online(item, exc, "bad_answer", usage)
            return self._error(item, exc, usage)
        self.counters.inc("results")
        return ResultRecord(
            id=item.record.id or "", request_key=item.request_key, model=parsed.model or item.model,
            content=parsed.content, thoughts=parsed.thoughts, parsed=parsed.parsed, finish_reason=parsed.finish_reason,
            usage=parsed.usage, attempts=1, latency_ms=round(outcome.seconds * 1000, 3), alternatives=parsed.alternatives,
            tool_calls=parsed.tool_calls, metadata=item.record.metadata, service_tier="batch")

    def _charge(self, item: BatchItem, completion: Any) -> Usage:
        usage = usage_of(getattr(completion, "usage", None))
        c = self.counters
        for name in ("prompt", "completion", "reasoning", "cached", "total"):
            c.inc(f"tokens_{name}", getattr(usage, f"{name}_tokens"))
        cost = round(self.prices.cost(item.model, usage.prompt_tokens, usage.completion_tokens, tier="batch") * NANO)
        c.inc("cost_nano_usd", cost)
        c.inc("tier_cost_nano_usd_batch", cost)
        c.inc("tier_records_batch")
        return usage

    def _missing(self, item: BatchItem, outcome: Missing) -> ErrorRecord | Fallback:
        if outcome.state == "BUDGET_EXHAUSTED":
            return self._error(item, BudgetExhausted("budget exhausted before the line was staged: its estimated "
                                                     "cost at batch prices would pass the cap; it was not sent"),
                               attempts=0)
        cls = BatchJobCancelled if outcome.state == "JOB_STATE_CANCELLED" else BatchJobFailed
        why = f": {outcome.error}" if outcome.error else ""
        error = cls(f"no answer: batch job {outcome.job} ended {outcome.state}{why}", status=outcome.state)
        return self._retry_online(item, error, "job_" + outcome.state.removeprefix("JOB_STATE_").lower())

    def _retry_online(self, item: BatchItem, exc: ChatbeamError, reason: str,
                      usage: Usage | None = None) -> ErrorRecord | Fallback:
        if self.fallback_online:
            self.counters.inc("batch_fallback_online")
            self.counters.inc(f"batch_fallback_{reason}")
            return Fallback(item.record, reason)
        return self._error(item, exc, usage, retryable=True)

    def _error(self, item: BatchItem, exc: ChatbeamError, usage: Usage | None = None,
               retryable: bool | None = None, attempts: int = 1) -> ErrorRecord:
        self.counters.inc("errors")
        self.counters.inc(f"error_{exc.error_type}")
        return error_record(exc, record=item.record, request_key=item.request_key, attempts=attempts, usage=usage,
                            retryable=retryable, service_tier="batch")
