"""The job ledger's options and its pre-flight check (the logic is client/ledger*.py).

    settings = prepare_ledger(plan, options, run_id)   # None when nothing is shared; ValueError (one line) if unusable

The summary's ``budget`` block is client/summary.py ``budget_block``.

A ledger is needed when the job has a budget (``--max_cost_usd`` / ``--max_total_tokens``) or a rate cap
(``--rpm`` / ``--tpm``): these hold for the whole job, shared through the ledger by every worker process; and with
``--deadline``, whose escalation projects the finish from the whole job's progress (the heartbeats' finished records).
Where it lives (``--job_ledger``, else the default):
``{--checkpoint_dir}/ledger-{run id}``, else ``{--temp_location}/chatbeam-ledger-{run id}``, else (DirectRunner) a
local temp directory. An explicit ``--job_ledger`` is used as given, so separate jobs (or a run and its
``--resume``) that pass the same location share one budget and one rate; they must agree on the caps.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions

from client.jobshare import DEFAULT_DEAD_AFTER_S, DEFAULT_HEARTBEAT_S, JobShareSettings, record_job
from client.ledger_store import LedgerUnavailable, check_store, open_store

__all__ = ["add_ledger_arguments", "prepare_ledger"]

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
    if n.dry_run or not (n.max_cost_usd is not None or n.max_total_tokens is not None or client.rpm or client.tpm
                         or plan.tiers.deadline is not None):
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
        record_job(store, settings)
    except LedgerUnavailable as exc:
        raise ValueError(f"--job_ledger: {exc}") from None
    return settings
