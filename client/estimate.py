"""Dry run: what a record's request would be and cost, without sending it. No Beam import.

    >>> est = estimate(InputRecord(id="a1", prompt="Say hi", params={"max_tokens": 50}), config, PriceTable.load())
    >>> est.body["messages"], est.prompt_tokens, est.output_tokens
    ([{'role': 'user', 'content': 'Say hi'}], 9, 50)

* ``body`` is the JSON body as the openai SDK would send it: ``model``, ``messages``, the create() parameters, and
  the ``extra_body`` keys merged in at the top level (so ``extra_body.google`` appears as Vertex reads it).
* ``prompt_tokens`` is ``ChatRequest.est_prompt_tokens`` (client/requests.py ``estimate_tokens``: the same rule
  the limiter and the budget use).
* ``output_tokens``: the record's ``max_completion_tokens`` / ``max_tokens`` when set (what you pay at most),
  else the assumption ``--est_output_tokens`` (default 256 per choice); times ``n``. Thinking models also bill
  reasoning tokens as output, which this does not foresee: set ``max_tokens`` or raise the assumption for them.
* ``cost_usd`` from the price table (client/pricing.py, ``--price_table``), by the request's model, at the run's
  service tier (``config.service_tier``; ``tier="batch"`` for ``--mode batch``).

A record that cannot be sent (bad params, unknown schema, media outside --media_root) raises the same
ChatbeamError the real run would turn into an error record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from client.budget import DEFAULT_OUTPUT_TOKENS, choices, output_token_limit
from client.cache import format_cache_summary
from client.config import ClientConfig
from client.errors import ChatbeamError
from client.pricing import PriceTable
from client.requests import ChatRequest, build_request
from schemas.records import ErrorRecord, InputRecord, error_record

__all__ = ["DryRunTotals", "Estimate", "dry_run_report", "estimate", "format_dry_run", "render_body", "unsendable"]


def render_body(request: ChatRequest, *, stream: bool = False) -> dict[str, Any]:
    """The JSON body ``chat.completions.create(**request.create_args())`` puts on the wire."""
    body: dict[str, Any] = {}
    if request.model is not None:
        body["model"] = request.model
    body["messages"] = request.messages
    body.update(request.kwargs)
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    body.update(request.extra_body)  # the SDK merges extra_body into the top level of the JSON body
    return body


@dataclass
class Estimate:
    """One record's dry-run line."""

    id: str
    request_key: str
    model: str | None
    prompt_tokens: int
    output_tokens: int
    cost_usd: float
    body: dict[str, Any]

    def to_json_dict(self) -> dict[str, Any]:
        return {"id": self.id, "request_key": self.request_key, "model": self.model,
                "est_prompt_tokens": self.prompt_tokens, "est_output_tokens": self.output_tokens,
                "est_cost_usd": round(self.cost_usd, 9), "body": self.body}


def estimate(record: InputRecord, config: ClientConfig, prices: PriceTable,
             output_tokens: int = DEFAULT_OUTPUT_TOKENS, tier: str | None = None) -> Estimate:
    """Build the request for ``record`` and estimate it; raises ChatbeamError for a record that cannot be sent.
    With ``tier="batch"`` the body is the record's batch line (its native request) and a record with no native
    form raises ``unsupported_in_batch``."""
    request = build_request(record, config)
    tier = tier or config.service_tier
    limit = output_token_limit(request)
    out = (limit if limit is not None else output_tokens) * choices(request)
    if tier == "batch":
        from client.native_request import to_native  # noqa: PLC0415 - only batch dry runs need it

        body = {"request": to_native(request)}
    else:
        body = render_body(request, stream=config.stream)
    return Estimate(id=record.id or "", request_key=request.request_key, model=request.model,
                    prompt_tokens=request.est_prompt_tokens, output_tokens=out,
                    cost_usd=prices.cost(request.model, request.est_prompt_tokens, out, tier=tier), body=body)


@dataclass
class DryRunTotals:
    """Totals over estimates, overall and per model; combinable (``merge``) so a runner can sum in parallel."""

    records: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    by_model: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, est: Estimate) -> "DryRunTotals":
        self.records += 1
        self.prompt_tokens += est.prompt_tokens
        self.output_tokens += est.output_tokens
        self.cost_usd += est.cost_usd
        row = self.by_model.setdefault(str(est.model), {"records": 0, "prompt_tokens": 0, "output_tokens": 0,
                                                        "cost_usd": 0.0})
        row["records"] += 1
        row["prompt_tokens"] += est.prompt_tokens
        row["output_tokens"] += est.output_tokens
        row["cost_usd"] += est.cost_usd
        return self

    def merge(self, others: Iterable["DryRunTotals"]) -> "DryRunTotals":
        for other in others:
            self.records += other.records
            self.prompt_tokens += other.prompt_tokens
            self.output_tokens += other.output_tokens
            self.cost_usd += other.cost_usd
            for model, row in other.by_model.items():
                mine = self.by_model.setdefault(model, {k: 0 for k in row})
                for k, v in row.items():
                    mine[k] = mine.get(k, 0) + v
        return self

    def to_json_dict(self, prices: PriceTable | None = None, assumed_output_tokens: int | None = None
                     ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "records": self.records, "est_prompt_tokens": self.prompt_tokens,
            "est_output_tokens": self.output_tokens, "est_cost_usd": round(self.cost_usd, 6),
            "by_model": {m: {**r, "cost_usd": round(r["cost_usd"], 6)} for m, r in sorted(self.by_model.items())},
        }
        if prices is not None:
            out["prices_as_of"] = prices.as_of
        if assumed_output_tokens is not None:
            out["assumed_output_tokens"] = assumed_output_tokens
        return out


def unsendable(record: InputRecord, exc: ChatbeamError) -> ErrorRecord:
    """The error record the real run would write for a record whose request cannot be built."""
    return error_record(exc, record=record)


def dry_run_report(totals: dict[str, Any], *, run_date: str, unsendable: int,
                   cache: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a finished ``--dry_run`` returns: its totals (``DryRunTotals.to_json_dict``), the run date, the number
    of records that could not be sent, and with ``--cache`` what the cache would serve (client/cache.py
    ``cache_summary``)."""
    return {"dry_run": True, "run_date": run_date, **totals, "unsendable": unsendable, "cache": cache}


def format_dry_run(t: dict[str, Any]) -> str:
    """The dry run's printed report (``t``: a ``dry_run_report``)."""
    lines = [f"chatbeam dry run {t['run_date']}: {t['records']:,} requests would be sent, "
             f"{t['unsendable']:,} records could not be",
             f"  estimated prompt tokens {t['est_prompt_tokens']:,}, output tokens {t['est_output_tokens']:,} "
             f"(max_tokens, else {t.get('assumed_output_tokens')} per choice)",
             f"  estimated cost ~${t['est_cost_usd']:.4f} (prices as of {t.get('prices_as_of')})"]
    lines += [f"    {model}: {row['records']:,} requests, ~${row['cost_usd']:.4f}"
              for model, row in t["by_model"].items()]
    lines += format_cache_summary(t.get("cache"), dry_run=True)
    return "\n".join(lines)
