"""The main job: prompt records → Chat Completions → results and errors sinks.

    chatbeam --input examples/prompts.jsonl --output out/results --errors out/errors --emulator
    python -m pipelines.extract ...   # the same job

Data flows one way: options → read (records or read errors) → call (results or call errors) → write.
Nightly options (pipelines/nightly.py, docs/nightly.md) add: ``--replay_errors`` (read an earlier run's retryable
failures instead of ``--input``), ``--resume`` (skip what this run already completed: SkipDone before the call),
the checkpoint journal and the budget (inside the call step), ``--dry_run`` (DryRun instead of the call), and the
run summary ``{output}-summary.json`` at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import sys
import time
import uuid
from typing import Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from client.budget import BudgetConfig
from client.cache import CacheMode, cache_summary, format_cache_summary
from client.config import Target
from client.journal import JournalSettings
from client.progress import ProgressSettings
from pipelines.local_emulator import EmulatorStartError, LocalEmulator
from pipelines.nightly import normalize_argv
from pipelines.options import EMULATOR_PROJECT, Plan, UsageError, validate
from pipelines.summary import build_summary, chatbeam_counters, count_input_lines, format_summary, read_json, write_json
from transforms import CallChatCompletions, ReadPrompts, WriteErrors, WriteResults
from transforms.cache import CacheLookup, CacheStore
from transforms.checkpoint import SkipDone, done_patterns
from transforms.dry_run import DryRun
from transforms.read import ReadReplayErrors
from transforms.write import WriteJsonl

__all__ = ["build_pipeline", "main", "run"]

log = logging.getLogger("chatbeam")

DRY_RUN_SHARDS = "-SSSSS"


def _check_input(pattern: str, flag: str = "--input") -> None:
    """A missing or unreadable input is a CLI error before the run, not a crash inside it."""
    try:
        matches = FileSystems.match([pattern])[0].metadata_list
    except Exception as exc:  # Beam raises BeamIOError / ValueError for bad schemes and unreachable stores
        raise UsageError(f"cannot list {flag} {pattern!r}: {exc}") from None
    if not matches:
        raise UsageError(f"{flag} {pattern!r} matches no files")
    for meta in matches:
        if "://" not in meta.path and not os.access(meta.path, os.R_OK):
            raise UsageError(f"{flag} file {meta.path!r} is not readable")


def build_pipeline(p: beam.Pipeline, plan: Plan, *, run_id: str = "", progress_total: int | None = None) -> None:
    """Wire the labelled steps; nothing here opens a connection."""
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
    if plan.cache and plan.cache.mode.reads:  # the cache sits before the call step, whatever that step is
        lookup = records | "CacheLookup" >> CacheLookup(plan.client, plan.cache)
        records = lookup.todo
    called = records | "CallChatCompletions" >> CallChatCompletions(
        plan.client,
        budget=BudgetConfig(prices=n.price_table, max_cost_usd=n.max_cost_usd, max_total_tokens=n.max_total_tokens,
                            output_tokens=n.est_output_tokens),
        journal=(JournalSettings(n.checkpoint_dir, n.checkpoint_every, n.checkpoint_interval_s)
                 if n.checkpoint_dir else None),
        progress=ProgressSettings(progress_total, n.progress_interval_s),
        run_id=run_id)
    results, errors = [called.results], [read.errors, called.errors]
    if resumed is not None:
        results.append(resumed.results)
        errors.append(resumed.errors)
    if plan.cache and plan.cache.mode.stores:
        # This run's new answers, resumed ones too (a killed run never stored them), except under write_only:
        # only the answers the lookup saw are known not to replace an entry.
        write_only = plan.cache.mode is CacheMode.WRITE_ONLY
        (tuple(results[:1] if write_only else results) | "NewAnswers" >> beam.Flatten()
         | "CacheStore" >> CacheStore(plan.cache, run_id, known=lookup.known if write_only else None))
    if lookup is not None:
        results.append(lookup.hits)
    results = tuple(results) | "AllResults" >> beam.Flatten()
    bq = plan.bigquery
    results | "WriteResults" >> (bq.write("results") if bq.output_table
                                 else WriteResults(plan.output, num_shards=plan.num_shards))
    (tuple(errors) | "AllErrors" >> beam.Flatten()
     | "WriteErrors" >> (bq.write("errors") if bq.errors_table
                         else WriteErrors(plan.errors, num_shards=plan.num_shards)))


def _build_dry_run(read, plan: Plan) -> None:
    """--dry_run: request bodies and estimates to {output}-dry-run, unsendable records to {errors}-dry-run, totals to
    {output}-dry-run-summary.json. The real run's sinks are not touched."""
    n = plan.nightly
    records = read.records
    if plan.cache and plan.cache.mode.serves:  # counts what would be served, and sends the rest to the estimate
        records = (records | "CacheLookup" >> CacheLookup(plan.client, plan.cache)).todo
    dry = records | "DryRun" >> DryRun(plan.client, n.price_table, n.est_output_tokens)
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


_SHARD = re.compile(r"-\d{5}-of-(\d{5})\.jsonl$")


def _remove_stale_shards(prefix: str, since: float) -> None:
    """After a rerun into the same prefix (--resume, or any rerun) with a different shard count, the old run's
    shards (``-SSSSS-of-MMMMM`` with another MMMMM, older than this run) would be read as part of the output."""
    try:
        files = FileSystems.match([f"{prefix}-?????-of-?????.jsonl"])[0].metadata_list
    except Exception:  # noqa: BLE001 - tidying up is best effort
        return
    fresh = {m.group(1) for f in files if (m := _SHARD.search(f.path)) and f.last_updated_in_seconds >= since}
    stale = [f.path for f in files if (m := _SHARD.search(f.path)) and fresh and m.group(1) not in fresh
             and f.last_updated_in_seconds < since]
    if stale:
        log.info("removing %d shard(s) of an earlier run with another shard count: %s", len(stale), stale)
        FileSystems.delete(stale)


def _finish(result, plan: Plan, wall_s: float, started_at: float) -> dict:
    """After a run that was waited for: the summary (written beside the outputs) or, for --dry_run, the totals."""
    n = plan.nightly
    if n.dry_run:
        totals = read_json(f"{plan.output}-dry-run-summary.json")
        counters = chatbeam_counters(result)
        return {"dry_run": True, "run_date": n.run_date, **totals,
                "unsendable": counters.get("errors_written", 0), "cache": cache_summary(counters)}
    for prefix in (plan.output, plan.errors):
        if prefix:
            _remove_stale_shards(prefix, started_at)
    summary = build_summary(chatbeam_counters(result), run_date=n.run_date, wall_s=wall_s,
                            prices_as_of=n.price_table.as_of)
    if plan.output:
        write_json(f"{plan.output}-summary.json", summary)
    return summary


def run(argv: Sequence[str] | None = None, *, wait: bool = True):
    """Run the job; returns the Beam PipelineResult. Raises UsageError for a bad command line.

    With ``wait`` (the default) it waits for the run to end, writes ``{output}-summary.json`` and sets
    ``result.summary`` (a dict; for ``--dry_run`` the estimate totals) and ``result.summary_path``.
    ``wait=False`` only submits (a Flex Template launcher must exit after submitting: dataflow/launch.py).
    """
    try:
        argv = normalize_argv(list(argv) if argv is not None else sys.argv[1:])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    options = PipelineOptions(argv)
    plan = validate(options)
    n = plan.nightly
    if n.replay_errors:
        _check_input(n.replay_errors, "--replay_errors")
    elif plan.input:
        _check_input(plan.input)
    total = count_input_lines(plan.input) if plan.input and wait and n.progress_interval_s > 0 else None
    started_at, started = time.time() - 1.0, time.monotonic()  # 1 s of slack for coarse file mtimes
    with _target_for_run(plan) as plan:
        p = beam.Pipeline(options=options)
        try:
            build_pipeline(p, plan, run_id=uuid.uuid4().hex, progress_total=total)
        except ValueError as exc:
            if not plan.bigquery.reads:
                raise
            # ReadPromptsFromBigQuery checks the table/query and the mapped columns while the pipeline is built.
            raise UsageError(str(exc)) from None
        result = p.run()
        if not wait:
            return result
        result.wait_until_finish()
    result.summary = _finish(result, plan, time.monotonic() - started, started_at)
    result.summary_path = (f"{plan.output}-dry-run-summary.json" if n.dry_run
                           else f"{plan.output}-summary.json" if plan.output else None)
    return result


def _format_dry_run(t: dict) -> str:
    lines = [f"chatbeam dry run {t['run_date']}: {t['records']:,} requests would be sent, "
             f"{t['unsendable']:,} records could not be",
             f"  estimated prompt tokens {t['est_prompt_tokens']:,}, output tokens {t['est_output_tokens']:,} "
             f"(max_tokens, else {t.get('assumed_output_tokens')} per choice)",
             f"  estimated cost ~${t['est_cost_usd']:.4f} (prices as of {t.get('prices_as_of')})"]
    lines += [f"    {model}: {row['records']:,} requests, ~${row['cost_usd']:.4f}"
              for model, row in t["by_model"].items()]
    lines += format_cache_summary(t.get("cache"), dry_run=True)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, *, wait: bool = True) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    try:
        result = run(sys.argv[1:] if argv is None else argv, wait=wait)
    except (UsageError, EmulatorStartError) as exc:
        print(f"chatbeam: error: {exc}", file=sys.stderr)
        return 2
    summary = getattr(result, "summary", None)
    if summary is not None:
        print(_format_dry_run(summary) if summary.get("dry_run") else format_summary(summary))
        if result.summary_path:
            print(f"  summary   {result.summary_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
