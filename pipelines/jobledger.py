"""The job ledger's options, its pre-flight check and its end-of-run report (the logic is client/ledger*.py).

    settings = prepare_ledger(plan, options, run_id)   # None when nothing is shared; UsageError (exit 2) if unusable
    report = ledger_summary(settings, counters)         # for the run summary

A ledger is needed when the job has a budget (``--max_cost_usd`` / ``--max_total_tokens``) or a rate cap
(``--rpm`` / ``--tpm``): these hold for the whole job, shared through the ledger by every worker process.
Where it lives (``--job_ledger``, else the default):
``{--checkpoint_dir}/ledger-{run id}``, else ``{--temp_location}/chatbeam-ledger-{run id}``, else (DirectRunner) a
local temp directory. An explicit ``--job_ledger`` is used as given, so separate jobs (or a run and its
``--resume``) that pass the same location share one budget and one rate; they must agree on the caps.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any, Mapping

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions

from client.jobshare import DEFAULT_DEAD_AFTER_S, DEFAULT_HEARTBEAT_S, JobShareSettings
from client.ledger import read_report
from client.ledger_store import LedgerUnavailable, check_store, open_store

__all__ = ["add_ledger_arguments", "ledger_summary", "prepare_ledger"]

JOB_OBJECT = "job.json"
_LOCAL_RUNNERS = (None, "DirectRunner", "direct", "BundleBasedDirectRunner", "SwitchingDirectRunner", "PrismRunner",
                  "prism")


def add_ledger_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("job-wide budget and rates (see README 'Running on Dataflow')")
    group.add_argument("--job_ledger",
                       help="where worker processes share the budget and --rpm/--tpm: gs://... or a local directory "
                            "(default: CHECKPOINT_DIR/ledger-RUNID, else TEMP_LOCATION/chatbeam-ledger-RUNID); "
                            "jobs given the same location share one budget")
    group.add_argument("--ledger_heartbeat_s", type=float, default=DEFAULT_HEARTBEAT_S,
                       help=f"seconds between a worker's heartbeats in the ledger (default {DEFAULT_HEARTBEAT_S:g}; "
                            "at least 1: GCS allows about one write per second per object)")
    group.add_argument("--ledger_dead_after_s", type=float, default=DEFAULT_DEAD_AFTER_S,
                       help="a worker whose heartbeat has not changed this long is dead and its unused budget "
                            f"lease is reclaimed (default {DEFAULT_DEAD_AFTER_S:g})")


def _default_location(options: PipelineOptions, checkpoint_dir: str | None, run_id: str) -> str:
    if checkpoint_dir:
        return f"{checkpoint_dir.rstrip('/')}/ledger-{run_id}"
    temp = options.view_as(GoogleCloudOptions).temp_location
    if temp:
        return f"{temp.rstrip('/')}/chatbeam-ledger-{run_id}"
    return os.path.join(tempfile.gettempdir(), f"chatbeam-ledger-{run_id}")


def prepare_ledger(plan: Any, options: PipelineOptions, run_id: str) -> JobShareSettings | None:
    """Choose the ledger, prove it is writable and honours create-if-absent, and record the job's caps in it.

    Raises ValueError (one line) when it cannot be used: never a silent fallback to per-process limits."""
    n, client = plan.nightly, plan.client
    o = options.get_all_options()
    if n.dry_run or not (n.max_cost_usd is not None or n.max_total_tokens is not None or client.rpm or client.tpm):
        return None
    heartbeat, dead_after = o.get("ledger_heartbeat_s") or DEFAULT_HEARTBEAT_S, o.get("ledger_dead_after_s")
    if heartbeat < 1:
        raise ValueError("--ledger_heartbeat_s must be at least 1 (GCS allows about one write per second per "
                         "object)")
    if dead_after is None or dead_after < 3 * heartbeat:
        raise ValueError("--ledger_dead_after_s must be at least 3 x --ledger_heartbeat_s")
    url = o.get("job_ledger") or _default_location(options, n.checkpoint_dir, run_id)
    runner = options.view_as(StandardOptions).runner
    if runner not in _LOCAL_RUNNERS and not url.startswith("gs://"):
        raise ValueError(f"--job_ledger {url!r}: on {runner} the workers share the ledger through gs://; give "
                         "--job_ledger gs://BUCKET/... (or a gs:// --temp_location)")
    settings = JobShareSettings(url=url, max_total_tokens=n.max_total_tokens, max_cost_usd=n.max_cost_usd,
                                rpm=client.rpm, tpm=client.tpm, heartbeat_s=heartbeat, dead_after_s=dead_after)
    try:
        store = open_store(url)
        check_store(store)
        _record_job(store, settings)
    except LedgerUnavailable as exc:
        raise ValueError(f"--job_ledger: {exc}") from None
    return settings


def _terms(settings: JobShareSettings) -> dict[str, Any]:
    return {"max_total_tokens": settings.max_total_tokens, "max_cost_usd": settings.max_cost_usd,
            "rpm": settings.rpm, "tpm": settings.tpm}


def _record_job(store, settings: JobShareSettings) -> None:
    """``job.json`` holds the caps; a job joining an existing ledger must state the same ones."""
    terms = _terms(settings)
    if store.create(JOB_OBJECT, json.dumps({**terms, "created": round(time.time(), 3)}).encode()):
        return
    existing = json.loads(store.read(JOB_OBJECT) or b"{}")
    theirs = {k: existing.get(k) for k in terms}
    if theirs != terms:
        differ = ", ".join(f"--{k} {theirs[k]} (this run: {terms[k]})" for k in terms if theirs[k] != terms[k])
        raise LedgerUnavailable(f"the job ledger at {store.url} belongs to a job with other limits: {differ}")


def ledger_summary(settings: JobShareSettings | None, counters: Mapping[str, int]) -> dict[str, Any] | None:
    """The summary's ``budget`` block: the job-wide caps, what the whole job spent against them, the ledger's view."""
    if settings is None:
        return None
    out: dict[str, Any] = {"scope": "job", **{k: v for k, v in _terms(settings).items() if v is not None}}
    tokens, cost = int(counters.get("tokens_total", 0)), counters.get("cost_nano_usd", 0) / 1e9
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
