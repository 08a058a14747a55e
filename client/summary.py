"""The run summary, with no Beam import: a finished run's counters → one JSON object, and the short report printed.

    summary = build_summary(counters, run_date="2025-01-31", wall_s=12.5, prices_as_of="2025-07-01")
    print(format_summary(summary))

``counters`` are the run's ``chatbeam`` Beam counters summed over all steps (transforms/metrics.py
``chatbeam_counters``); ``budget`` is the job ledger's block (``budget_block``), when the job had caps. The CLI
(pipelines/extract.py) writes the summary as ``{output}-summary.json`` beside the outputs and prints the report. A
Flex Template launch does not wait, so there the same numbers are the job's Beam metrics in the Dataflow console.

Where the numbers come from: ``records_read`` (transforms/read.py), ``results_written`` / ``errors_written_<type>``
(transforms/write.py: what the sinks got, whichever path a record took), ``resume_skipped``
(transforms/checkpoint.py), and the core's counters flushed by transforms/call.py (client/metrics.py):
``requests`` (records sent to the caller), ``attempts`` (HTTP requests), ``retries``, ``status_429``,
``tokens_*``, ``cost_nano_usd`` (priced by client/pricing.py), plus ``cumulativeThrottlingSeconds``.
The fields are described in docs/nightly.md.
"""

from __future__ import annotations

from typing import Any, Mapping

from client.cache import cache_summary, format_cache_summary
from client.constants import NANO
from client.jobshare import JobShareSettings
from client.ledger import read_report
from client.ledger_store import open_store

__all__ = ["budget_block", "build_summary", "format_summary"]


def _by_prefix(counters: Mapping[str, int], prefix: str) -> dict[str, int]:
    return {name[len(prefix):]: value for name, value in sorted(counters.items())
            if name.startswith(prefix) and value}


def build_summary(counters: Mapping[str, int], *, run_date: str, wall_s: float, prices_as_of: str | None = None,
                  budget: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The summary JSON (see docs/nightly.md for each field)."""
    def c(name: str) -> int:
        return int(counters.get(name, 0))

    read = c("records_read")
    errors_by_type = _by_prefix(counters, "errors_written_")
    summary = {
        "run_date": run_date,
        "records_read": read,
        "results": c("results_written"),
        "results_truncated": c("results_written_truncated"),  # results cut off (finish_reason "length")
        "errors": c("errors_written"),
        "errors_by_type": errors_by_type,
        "resumed": c("resume_skipped"),
        "replay_skipped": c("replay_skipped"),
        "tokens": {"prompt": c("tokens_prompt"), "completion": c("tokens_completion"),
                   "reasoning": c("tokens_reasoning"), "cached": c("tokens_cached"), "total": c("tokens_total"),
                   # Tokens and cost count every answered attempt, those of records that ended as errors too:
                   "on_errors": c("error_tokens_total")},
        # What to give --est_output_tokens next time (results of this run's calls only).
        "completion_tokens_per_result": round(c("tokens_completion") / c("results"), 1) if c("results") else None,
        "estimated_cost_usd": round(c("cost_nano_usd") / NANO, 6),
        "prices_as_of": prices_as_of,
        "records_called": c("requests"),
        "http_requests": c("attempts"),
        "retries": c("retries"),
        "status_429": c("status_429"),
        "throttled_seconds": c("cumulativeThrottlingSeconds"),
        "checkpoint_write_failures": c("checkpoint_write_failures"),  # > 0: a resume would redo those records
        "breaker_opened": c("breaker_opened"),  # times the circuit breaker opened (client/breaker.py)
        "breaker_refused": c("breaker_refused"),  # records it turned into errors without sending them
        "wall_seconds": round(wall_s, 3),
        "records_per_second": round(read / wall_s, 2) if wall_s > 0 else None,
    }
    if budget:
        summary["budget"] = dict(budget)
    cache = cache_summary(counters)  # --cache: hits, misses, tokens and cost saved (client/cache.py)
    if cache:
        summary["cache"] = cache
    summary.update(_tiers_and_batch(counters))
    return summary


def _tiers_and_batch(counters: Mapping[str, int]) -> dict[str, Any]:
    """``tiers``: records finished and their estimated cost per service tier (standard, flex, priority, batch);
    ``batch``: jobs by final state and what became of their lines (present when batch jobs ran)."""
    out: dict[str, Any] = {}
    records = _by_prefix(counters, "tier_records_")
    costs = _by_prefix(counters, "tier_cost_nano_usd_")
    if records:
        out["tiers"] = {tier: {"records": records.get(tier, 0), "cost_usd": round(costs.get(tier, 0) / NANO, 6)}
                        for tier in sorted(set(records) | set(costs))}
    if counters.get("batch_jobs") or counters.get("batch_lines"):
        c = {k: int(counters.get(k, 0)) for k in ("batch_jobs", "batch_lines", "batch_lines_answered",
                                                   "batch_lines_failed", "batch_lines_missing", "batch_fallback_online",
                                                   "batch_budget_refused", "batch_unmapped_lines")}
        out["batch"] = {"jobs": c["batch_jobs"], "jobs_by_state": _by_prefix(counters, "batch_jobs_"),
                        "lines": c["batch_lines"], "answered": c["batch_lines_answered"],
                        "failed_lines": c["batch_lines_failed"], "missing_lines": c["batch_lines_missing"],
                        "finished_online": c["batch_fallback_online"],
                        "finished_online_by_reason": _by_prefix(counters, "batch_fallback_") or {},
                        "budget_refused": c["batch_budget_refused"], "unmapped_output_lines": c["batch_unmapped_lines"]}
        out["batch"]["finished_online_by_reason"].pop("online", None)
    return out


def _format_tiers_and_batch(s: Mapping[str, Any]) -> list[str]:
    lines = []
    if s.get("tiers") and set(s["tiers"]) != {"standard"}:
        lines.append("  tiers     " + ", ".join(f"{tier} {row['records']:,} records ~${row['cost_usd']:.4f}"
                                              for tier, row in s["tiers"].items()))
    b = s.get("batch")
    if b:
        states = ", ".join(f"{k} {v}" for k, v in b["jobs_by_state"].items())
        lines.append(f"  batch     {b['jobs']:,} job(s) ({states}), {b['lines']:,} lines: {b['answered']:,} answered, "
                     f"{b['failed_lines']:,} failed, {b['missing_lines']:,} missing; {b['finished_online']:,} "
                     "finished online")
    return lines


def format_summary(s: Mapping[str, Any]) -> str:
    errors = ", ".join(f"{k} {v}" for k, v in s["errors_by_type"].items())
    t = s["tokens"]
    lines = [
        f"chatbeam run {s['run_date']}: {s['records_read']:,} records read in {s['wall_seconds']:.1f} s "
        f"({s['records_per_second'] or 0:,.1f} records/s)",
        f"  results   {s['results']:,}" + (f" ({s['results_truncated']:,} cut off: finish_reason length)"
                                             if s.get("results_truncated") else ""),
        f"  errors    {s['errors']:,}" + (f" ({errors})" if errors else ""),
    ]
    if s.get("resumed"):
        lines.append(f"  resumed   {s['resumed']:,} records already done (not called again)")
    if s.get("replay_skipped"):
        lines.append(f"  replay    {s['replay_skipped']:,} permanent errors of the replayed files skipped (a rerun "
                     "would fail them again; they stay in the earlier run's errors)")
    if s.get("breaker_refused"):
        lines.append(f"  breaker   {s['breaker_refused']:,} records not sent: every recent request failed the same "
                     "way (retryable: --replay_errors after the fix)")
    lines += [
        f"  tokens    prompt {t['prompt']:,}, completion {t['completion']:,}, reasoning {t['reasoning']:,}, "
        f"cached {t['cached']:,}" + (f" ({s['completion_tokens_per_result']:g} completion tokens per result)"
                                     if s.get("completion_tokens_per_result") else ""),
    ]
    if t.get("on_errors"):  # tokens and cost count what failed records were billed too; say how much
        lines.append(f"            ({t['on_errors']:,} of these tokens were spent on records that ended as errors)")
    lines += [
        f"  cost      ~${s['estimated_cost_usd']:.4f}" + (f" (prices as of {s['prices_as_of']})"
                                                        if s.get("prices_as_of") else ""),
    ]
    if s["records_called"] or not s.get("batch"):  # a batch run with nothing finished online sent no HTTP requests
        lines.append(f"  requests  {s['http_requests']:,} HTTP requests for {s['records_called']:,} records, "
                     f"{s['retries']:,} retries, {s['status_429']:,} answered 429, throttled "
                     f"{s['throttled_seconds']:,} s")
    lines += _format_tiers_and_batch(s)
    if s.get("budget"):
        lines.append(_budget_line(s["budget"]))
    lines += format_cache_summary(s.get("cache"))
    for reason in s.get("failures") or ():
        lines.append(f"  FAILED    {reason}")
    if s.get("checkpoint_write_failures"):
        lines.append(f"  WARNING   {s['checkpoint_write_failures']:,} checkpoint files could not be written "
                     "(the outputs are complete; a --resume would redo those records)")
    return "\n".join(lines)


def _budget_line(b: Mapping[str, Any]) -> str:
    """One line: the job-wide caps, what the whole job spent against them, and the ledger's view."""
    caps = []
    if b.get("max_total_tokens") is not None:
        caps.append(f"{b['spent_tokens']:,} of {b['max_total_tokens']:,} tokens ({b['tokens_used_pct']:g} %)")
    if b.get("max_cost_usd") is not None:
        caps.append(f"${b['spent_usd']:.4f} of ${b['max_cost_usd']:g} ({b['cost_used_pct']:g} %)")
    rates = [f"--{k} {b[k]:g}" for k in ("rpm", "tpm") if b.get(k)]
    text = "  budget    whole job: " + (", ".join(caps) if caps else "no cap")
    if b.get("budget_exhausted"):
        text += f", {b['budget_exhausted']:,} records budget_exhausted"
    if rates:
        text += f"; {' '.join(rates)} shared"
    if "leases" in b:
        text += (f"; ledger {b['ledger']} ({b['processes']} processes, {b['leases']} leases, "
                 f"{b['reclaims']} reclaimed)")
    return text


def budget_block(settings: JobShareSettings | None, counters: Mapping[str, int]) -> dict[str, Any] | None:
    """The summary's ``budget`` block: the job-wide caps, what the whole job spent against them, the ledger's view."""
    if settings is None or all(v is None for v in settings.terms.values()):
        return None  # a ledger for --deadline's progress alone: no budget or rate to report
    out: dict[str, Any] = {"scope": "job", **{k: v for k, v in settings.terms.items() if v is not None}}
    tokens, cost = int(counters.get("tokens_total", 0)), counters.get("cost_nano_usd", 0) / NANO
    if settings.max_total_tokens is not None:
        out["spent_tokens"] = tokens
        out["tokens_used_pct"] = round(100.0 * tokens / settings.max_total_tokens, 2)
    if settings.max_cost_usd is not None:
        out["spent_usd"] = round(cost, 6)
        out["cost_used_pct"] = round(100.0 * cost / settings.max_cost_usd, 2)
    out["budget_exhausted"] = int(counters.get("errors_written_budget_exhausted", 0))
    try:
        out.update(read_report(open_store(settings.url), settings.caps).as_dict())
    except Exception as exc:  # noqa: BLE001 - the run is over; a summary without the ledger's view still helps
        out["ledger"] = settings.url
        out["ledger_error"] = f"{type(exc).__name__}: {exc}"[:200]
    return out
