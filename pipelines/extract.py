"""The main job: prompt records → Chat Completions → results and errors sinks.

    chatbeam --input examples/prompts.jsonl --output out/results --errors out/errors --emulator
    python -m pipelines.extract ...   # the same job

Data flows one way: options → read (records or read errors) → call (results or call errors) → write.
Nightly options (pipelines/nightly.py, docs/nightly.md) add: ``--replay_errors`` (read an earlier run's retryable
failures instead of ``--input``), ``--resume`` (skip what this run already completed: SkipDone before the call),
the checkpoint journal and the budget (inside the call step), ``--dry_run`` (DryRun instead of the call), and the
run summary ``{output}-summary.json`` at the end. ``--mode batch`` (pipelines/modes.py) swaps the call step for
CallBatchPrediction (transforms/batch.py), which has the same inputs and outputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sys
import time
import uuid
from typing import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions

from client.budget import BudgetConfig
from client.cache import CacheMode, cache_summary
from client.caller import utc_iso
from client.config import Target
from client.errors import redact
from client.estimate import dry_run_report, format_dry_run
from client.jobshare import JobShareSettings
from client.journal import JournalSettings
from client.progress import ProgressMonitor, ProgressSettings
from client.scrub import install_log_redaction
from client.summary import budget_block, build_summary, format_summary
from client.telemetry import TelemetrySettings, telemetry_dir
from pipelines.exit_codes import OK, USAGE, verdict
from pipelines.help import print_beam_help, print_help, wants_help
from pipelines.argv import check_known_options
from pipelines.jobledger import prepare_ledger
from pipelines.local_emulator import EmulatorStartError, LocalEmulator
from pipelines.nightly import normalize_argv
from pipelines.worker_logs import quiet_worker_startup
from pipelines.options import EMULATOR_PROJECT, Plan, UsageError, validate
from pipelines.signals import RunInterrupted, finish_interrupted, set_resume_hint, stop_on_signals
from transforms import CallChatCompletions, ReadPrompts, WriteErrors, WriteResults
from transforms.batch import CallBatchPrediction
from transforms.cache import CacheLookup, CacheStore
from transforms.checkpoint import SkipDone, done_patterns
from transforms.dry_run import DryRun
from transforms.files import (DRY_RUN_SHARDS, check_run_files, count_input_lines, count_records,
                              read_json, remove_stale_shards, shard_snapshot, write_json)
from transforms.metrics import chatbeam_counters
from transforms.report_files import build_report, run_totals, write_run_info
from transforms.read import ReadReplayErrors
from transforms.run_lock import RunLock
from transforms.write import WriteJsonl

__all__ = ["build_pipeline", "main", "run"]

log = logging.getLogger("chatbeam")

def _call_step(plan: Plan, run_id: str, progress_total: int | None, jobshare: JobShareSettings | None = None,
               worker_progress_lines: bool = True) -> beam.PTransform:
    """The call step: online Chat Completions, or batch prediction jobs (whose leftovers finish online)."""
    n = plan.nightly
    online = dict(
        budget=BudgetConfig(prices=n.price_table, max_cost_usd=n.max_cost_usd, max_total_tokens=n.max_total_tokens,
                            output_tokens=n.est_output_tokens),
        journal=(JournalSettings(n.checkpoint_dir, n.checkpoint_every, n.checkpoint_interval_s)
                 if n.checkpoint_dir else None),
        progress=ProgressSettings(progress_total, n.progress_interval_s if worker_progress_lines else 0),
        run_id=run_id, jobshare=jobshare,
        telemetry=TelemetrySettings(telemetry_dir(plan.output), run_id) if plan.output else None,
        tiers=dataclasses.replace(plan.tiers, total=progress_total))
    if plan.mode != "batch":
        return "CallChatCompletions" >> CallChatCompletions(plan.client, **online)
    settings = dataclasses.replace(plan.batch, run_id=run_id, max_cost_usd=n.max_cost_usd,
                                   max_total_tokens=n.max_total_tokens, est_output_tokens=n.est_output_tokens)
    return "CallBatchPrediction" >> CallBatchPrediction(plan.client, settings, n.price_table, online=online)


def build_pipeline(p: beam.Pipeline, plan: Plan, *, run_id: str = "", progress_total: int | None = None,
                   jobshare: JobShareSettings | None = None, worker_progress_lines: bool = True) -> None:
    """Wire the labelled steps; nothing here opens a connection. ``worker_progress_lines``: each worker process
    logs its own progress line (off when the launcher shows one line for the whole run)."""
    n = plan.nightly
    if n.replay_errors:
        read = p | "ReadReplayErrors" >> ReadReplayErrors(n.replay_errors)
    elif plan.bigquery.reads:
        read = p | "ReadPrompts" >> plan.bigquery.read()
    else:
        read = p | "ReadPrompts" >> ReadPrompts(plan.input, max_record_bytes=plan.max_record_bytes)
    if n.dry_run:
        _build_dry_run(read, plan)
        return
    records, resumed = read.records, None
    if n.resume:
        resumed = records | "SkipDone" >> SkipDone(plan.client,
                                                   done_patterns(n.checkpoint_dir, plan.output, plan.errors))
        records = resumed.todo
    lookup = None
    if plan.cache and plan.cache.mode.reads:  # the cache sits before the call step, online or batch
        lookup = records | "CacheLookup" >> CacheLookup(plan.client, plan.cache)
        records = lookup.todo
    called = records | _call_step(plan, run_id, progress_total, jobshare, worker_progress_lines)
    results, errors = [called.results], [read.errors, called.errors]
    if resumed is not None:
        results.append(resumed.results)
        errors.append(resumed.errors)
    if plan.cache and plan.cache.mode.stores:
        _store_answers(results, lookup, plan, run_id)
    if lookup is not None:
        results.append(lookup.hits)
    results = tuple(results) | "AllResults" >> beam.Flatten()
    bq = plan.bigquery
    results | "WriteResults" >> (bq.write("results") if bq.output_table
                                 else WriteResults(plan.output, num_shards=plan.num_shards))
    (tuple(errors) | "AllErrors" >> beam.Flatten()
     | "WriteErrors" >> (bq.write("errors") if bq.errors_table
                         else WriteErrors(plan.errors, num_shards=plan.num_shards)))


def _store_answers(results: list, lookup, plan: Plan, run_id: str) -> None:
    """--cache: store this run's new answers (``results``: called, then resumed — a killed run never stored those);
    under write_only only the called ones, the only answers the lookup knows not to replace an entry."""
    write_only = plan.cache.mode is CacheMode.WRITE_ONLY
    (tuple(results[:1] if write_only else results) | "NewAnswers" >> beam.Flatten()
     | "CacheStore" >> CacheStore(plan.cache, run_id, known=lookup.known if write_only else None))


def _build_dry_run(read, plan: Plan) -> None:
    """--dry_run: request bodies and estimates to {output}-dry-run, unsendable records to {errors}-dry-run, totals to
    {output}-dry-run-summary.json. The real run's sinks are not touched."""
    n = plan.nightly
    records = read.records
    if plan.cache and plan.cache.mode.serves:  # counts what would be served, and sends the rest to the estimate
        records = (records | "CacheLookup" >> CacheLookup(plan.client, plan.cache)).todo
    dry = records | "DryRun" >> DryRun(plan.client, n.price_table, n.est_output_tokens,
                                       "batch" if plan.mode == "batch" else None)
    # "-SSSSS" shard names (no "-of-NNNNN"): the real run's sinks delete "{output}-*-of-NNNNN.jsonl" before
    # writing, and would take the dry run's files with them.
    (dry["estimates"] | "EstimateLines" >> beam.Map(json.dumps)
     | "WriteDryRun" >> WriteJsonl(f"{plan.output}-dry-run", plan.num_shards, shard_name_template=DRY_RUN_SHARDS))
    ((read.errors, dry["errors"]) | "AllErrors" >> beam.Flatten()
     | "WriteErrors" >> WriteErrors(f"{plan.errors}-dry-run", plan.num_shards, shard_name_template=DRY_RUN_SHARDS))
    (dry["totals"] | "TotalsJson" >> beam.Map(json.dumps, indent=2)
     | "WriteTotals" >> beam.io.WriteToText(f"{plan.output}-dry-run-summary", file_name_suffix=".json",
                                            num_shards=1, shard_name_template=""))


@contextlib.contextmanager
def _target_for_run(plan: Plan):
    """For --emulator: start it, aim the managed target at it, stop it at the end. Otherwise: the plan as is."""
    if not plan.emulator or plan.nightly.dry_run:
        yield plan
        return
    with LocalEmulator(plan.emulator_args) as emu:
        target = Target.managed(EMULATOR_PROJECT, plan.vertex_location, root=emu.url, auth="local_tokens")
        log.info("local emulator at %s", emu.url)
        yield dataclasses.replace(plan, client=dataclasses.replace(plan.client, target=target))


def _finish(result, plan: Plan, wall_s: float, shards_before: dict[str, dict[str, float]],
            jobshare: JobShareSettings | None = None) -> dict:
    """After a run that was waited for: the summary (written beside the outputs) or, for --dry_run, the totals."""
    n = plan.nightly
    if n.dry_run:
        counters = chatbeam_counters(result)
        return dry_run_report(read_json(f"{plan.output}-dry-run-summary.json"), run_date=n.run_date,
                              unsendable=counters.get("errors_written", 0), cache=cache_summary(counters))
    for prefix, before in shards_before.items():
        remove_stale_shards(prefix, before)
    counters = chatbeam_counters(result)
    summary = build_summary(counters, run_date=n.run_date, wall_s=wall_s, prices_as_of=n.price_table.as_of,
                            budget=budget_block(jobshare, counters))
    summary["exit_code"], summary["failures"] = verdict(summary, plan.reliability.max_error_rate)
    if plan.output:
        write_json(f"{plan.output}-summary.json", summary)
    return summary


def _resume_hint(plan: Plan) -> str:
    n = plan.nightly
    if n.dry_run:
        return "the dry run sends nothing: rerun it to get its estimates"
    if n.checkpoint_dir:
        return (f"the outputs completed so far are in the journal {n.checkpoint_dir}: rerun the same command with "
                "--resume to finish (only the rest is sent)")
    return "no journal was kept (--no_checkpoint): rerunning the same command does the whole run again"


def _report(plan: Plan) -> str | None:
    """The run report page beside the results (file sinks only); a failure here must not fail a finished run."""
    if not plan.output or plan.nightly.dry_run:
        return None
    try:
        return build_report(plan.output, plan.errors, prices=plan.nightly.price_table)[0]
    except Exception:  # noqa: BLE001 - the outputs are written; the page is a view of them
        log.warning("could not write the run report; `chatbeam report %s` retries it", plan.output, exc_info=True)
        return None


_LOCAL_RUNNERS = {None, "DirectRunner", "direct", "SwitchingDirectRunner", "BundleBasedDirectRunner",
                  "FnApiRunner", "PrismRunner", "prism"}


def _is_local(options: PipelineOptions) -> bool:
    return options.view_as(StandardOptions).runner in _LOCAL_RUNNERS


def _monitor(options: PipelineOptions, plan: Plan, run_id: str, total: int | None) -> ProgressMonitor | None:
    """The launcher's one progress line for the whole run, from the worker processes' engine samples."""
    n = plan.nightly
    if not plan.output or n.dry_run or n.progress_interval_s <= 0:
        return None
    # Remote workers write their samples every 30 s (client/telemetry.py): polling faster would show nothing new.
    local = _is_local(options)
    interval = n.progress_interval_s if local else max(n.progress_interval_s, 30.0)
    return ProgressMonitor(run_totals(plan.output, run_id), total=total, interval_s=interval,
                           **({} if local else {"terminal_refresh_s": interval}))


def _run_info(options: PipelineOptions, plan: Plan, total: int | None) -> dict:
    return {"run_date": plan.nightly.run_date, "started_at": utc_iso(time.time()),
            "runner": str(options.view_as(StandardOptions).runner or "DirectRunner"), "input_lines": total,
            "options": options.get_all_options(drop_default=True, retain_unknown_options=True)}


@contextlib.contextmanager
def _monitoring(monitor: ProgressMonitor | None):
    """Run the launcher's progress line around the run; on a terminal, log lines print above it."""
    if monitor is None:
        yield
        return
    redirect = contextlib.nullcontext()
    if monitor.terminal:
        from tqdm.contrib.logging import logging_redirect_tqdm

        redirect = logging_redirect_tqdm(loggers=[logging.getLogger()])
    with redirect:
        monitor.start()
        try:
            yield
        finally:
            monitor.stop()


def _claim(plan: Plan, options: PipelineOptions, run_id: str, *, wait: bool) -> tuple[RunLock, JobShareSettings | None]:
    """Before any work: the lock on the output prefixes (none for ``wait=False``: the run outlives this process),
    then the job ledger. A UsageError (exit 2) when either cannot be had, with nothing left held."""
    lock = RunLock([plan.output, plan.errors] if wait else [], run_id=run_id, force=plan.reliability.force,
                   gcs_client=lambda: _storage_client(options))
    try:
        lock.acquire()
        jobshare = prepare_ledger(plan, options, run_id)
    except ValueError as exc:  # LockHeld is one too
        lock.release()
        raise UsageError(str(exc)) from None
    return lock, jobshare


def _pipeline(options: PipelineOptions, plan: Plan, run_id: str, total: int | None,
              jobshare: JobShareSettings | None, monitor: ProgressMonitor | None) -> beam.Pipeline:
    p = beam.Pipeline(options=options)
    try:
        build_pipeline(p, plan, run_id=run_id, progress_total=total, jobshare=jobshare,
                       worker_progress_lines=monitor is None or not _is_local(options))
    except ValueError as exc:
        if not plan.bigquery.reads:
            raise
        # ReadPromptsFromBigQuery checks the table/query and the mapped columns while the pipeline is built.
        raise UsageError(str(exc)) from None
    if not plan.nightly.dry_run:  # a dry run writes no table
        try:  # before any request: an older chatbeam's tables get the columns added since (or exit 2)
            plan.bigquery.prepare_sinks(options.view_as(GoogleCloudOptions).project)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return p


def run(argv: Sequence[str] | None = None, *, wait: bool = True):
    """Run the job; returns the Beam PipelineResult. Raises UsageError for a bad command line (or paths that
    collide, or output prefixes locked by another run), RunInterrupted when a signal stops it (see main()).

    With ``wait`` (the default) it waits for the run to end, writes ``{output}-summary.json`` and sets
    ``result.summary`` (a dict; for ``--dry_run`` the estimate totals) and ``result.summary_path``.
    ``wait=False`` only submits (a Flex Template launcher must exit after submitting: dataflow/launch.py); it
    takes no lock, since the run goes on after this process.
    """
    try:
        argv = normalize_argv(list(argv) if argv is not None else sys.argv[1:])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    check_known_options(argv, UsageError)  # a misspelt option is an error before any work, not a Beam warning
    options = PipelineOptions(argv)
    plan = validate(options)
    n = plan.nightly
    try:
        check_run_files(input=plan.input, output=plan.output, errors=plan.errors, checkpoint_dir=n.checkpoint_dir,
                        cache=plan.cache.location if plan.cache else None, replay=n.replay_errors,
                        replay_may_overwrite=n.resume or n.dry_run)
    except ValueError as exc:  # RunFilesError, or Beam's own for a bad path
        raise UsageError(str(exc)) from None
    total = count_input_lines(plan.input) if plan.input and wait and n.progress_interval_s > 0 else None
    if plan.tiers.deadline is not None:  # the escalation projects the finish from the records left
        total = count_records(n.replay_errors or plan.input)
    run_id = uuid.uuid4().hex
    lock, jobshare = _claim(plan, options, run_id, wait=wait)
    set_resume_hint(_resume_hint(plan))
    started = time.monotonic()
    shards_before = {prefix: shard_snapshot(prefix) for prefix in (plan.output, plan.errors) if prefix and wait}
    monitor = _monitor(options, plan, run_id, total) if wait else None
    with lock, _target_for_run(plan) as plan:
        p = _pipeline(options, plan, run_id, total, jobshare, monitor)
        if plan.output and not n.dry_run:
            write_run_info(plan.output, run_id, _run_info(options, plan, total))
        with _monitoring(monitor):
            result = p.run()
            if not wait:
                return result
            result.wait_until_finish()
        result.summary = _finish(result, plan, time.monotonic() - started, shards_before, jobshare)
        result.report_path = _report(plan)  # under the lock: the page is one of the run's files
    result.summary_path = (f"{plan.output}-dry-run-summary.json" if n.dry_run
                           else f"{plan.output}-summary.json" if plan.output else None)
    return result


def _storage_client(options: PipelineOptions):
    from apache_beam.io.gcp.gcsio import create_storage_client  # only for a gs:// lock

    return create_storage_client(options)


def main(argv: Sequence[str] | None = None, *, wait: bool = True) -> int:
    """The ``chatbeam`` command; returns the exit code (pipelines/exit_codes.py, README "Reliability")."""
    argv = list(sys.argv[1:] if argv is None else argv)
    asked = wants_help(argv)
    if asked:
        (print_beam_help if asked == "beam" else print_help)()
        return OK
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    install_log_redaction()
    quiet_worker_startup()  # multi_processing: no worker start-up noise; the workers' progress lines shown
    with stop_on_signals():
        try:
            result = run(argv, wait=wait)
        except (UsageError, EmulatorStartError) as exc:
            print(f"chatbeam: error: {redact(str(exc))}", file=sys.stderr)
            return USAGE
        except RunInterrupted as stop:
            return finish_interrupted(stop)
    summary = getattr(result, "summary", None)
    if summary is None:
        return OK
    print(format_dry_run(summary) if summary.get("dry_run") else format_summary(summary))
    if result.summary_path:
        print(f"  summary   {result.summary_path}")
    if getattr(result, "report_path", None):
        print(f"  report    {result.report_path}")
    return summary.get("exit_code", OK)


if __name__ == "__main__":
    sys.exit(main())
