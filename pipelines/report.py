"""``chatbeam report``: a run's sinks (local or gs://) → ``RESULTS_PREFIX-report.html``; and the run's side files.

    chatbeam report out/results                      # errors from out/results_errors (the job's default)
    chatbeam report gs://b/2026-01-31/results gs://b/2026-01-31/errors --out report.html

It reads ``PREFIX-SSSSS-of-NNNNN.jsonl`` of both sinks, the run summary ``PREFIX-summary.json`` and the
``PREFIX-telemetry/`` folder (engine samples per worker process, and ``run-<id>.json`` with the run's options)
when they exist, and writes one self-contained page (report/). A waited ``chatbeam`` run calls ``build_report``
at its end. File I/O goes through Beam's FileSystems; the numbers and the page are Beam-free (report/).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any, Sequence

from apache_beam.io.filesystems import FileSystems

from client.pricing import PriceTable
from client.telemetry import combine_latest, telemetry_dir
from report.aggregate import RunAggregate, redact_options
from transforms.checkpoint import SHARD_GLOB, write_file_atomically

__all__ = ["build_report", "main", "read_telemetry", "run_info_path", "write_run_info"]

log = logging.getLogger("chatbeam.report")

RUN_INFO_PREFIX = "run-"


def run_info_path(output_prefix: str, run_id: str) -> str:
    return f"{telemetry_dir(output_prefix)}/{RUN_INFO_PREFIX}{run_id}.json"


def write_run_info(output_prefix: str, run_id: str, info: dict[str, Any]) -> None:
    """The run's identity and options (secrets redacted before they touch the disk), for the report."""
    info = {"run_id": run_id, **info, "options": redact_options(info.get("options") or {})}
    write_file_atomically(run_info_path(output_prefix, run_id), json.dumps(info, indent=1, default=str).encode())


def _match(pattern: str) -> list[str]:
    try:
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # noqa: BLE001 - a folder that does not exist matches nothing
        return []


def _read_json(path: str) -> Any:
    with FileSystems.open(path) as fh:
        return json.loads(fh.read().decode("utf-8"))


def read_telemetry(output_prefix: str, run_id: str | None = None) -> tuple[list[dict], list[dict]]:
    """(engine sample documents, run-info documents) in ``OUTPUT-telemetry/`` — of one run, or of all."""
    samples, runs = [], []
    for path in _match(f"{telemetry_dir(output_prefix)}/*.json"):
        name = path.rsplit("/", 1)[-1]
        if run_id is not None and not (name.startswith(run_id) or name == f"{RUN_INFO_PREFIX}{run_id}.json"):
            continue
        try:
            doc = _read_json(path)
        except (OSError, ValueError) as exc:  # a file being replaced, or a stray file: skip it
            log.debug("skipping %s: %s", path, exc)
            continue
        (runs if name.startswith(RUN_INFO_PREFIX) else samples).append(doc)
    return samples, runs


def run_totals(output_prefix: str, run_id: str):
    """For the launcher's progress line: a callable returning this run's latest samples summed."""
    return lambda: combine_latest(read_telemetry(output_prefix, run_id)[0])


def _feed_sink(agg: RunAggregate, prefix: str) -> int:
    files = _match(f"{prefix}{SHARD_GLOB}")
    for path in files:
        with FileSystems.open(path) as fh:
            for line in iter(fh.readline, b""):
                agg.add_line(line)
    return len(files)


def build_report(results_prefix: str, errors_prefix: str | None = None, *, out: str | None = None,
                 prices: PriceTable | None = None, title: str | None = None) -> tuple[str, dict[str, Any]]:
    """Read the sinks and side files, write the page; returns (its path, the numbers drawn)."""
    started = time.monotonic()
    agg = RunAggregate(prices)
    shards = _feed_sink(agg, results_prefix)
    errors_prefix = errors_prefix or f"{results_prefix}_errors"
    shards += _feed_sink(agg, errors_prefix)
    samples, runs = read_telemetry(results_prefix)
    for doc in samples:
        agg.add_telemetry(doc)
    if runs:
        agg.run_info = max(runs, key=lambda r: str(r.get("started_at", "")))
    summary_path = f"{results_prefix}-summary.json"
    if _match(summary_path):
        agg.summary = _read_json(summary_path)
    data = agg.data()
    from report.render import render_html  # Bokeh is imported only when a page is drawn

    run_date = (agg.summary or {}).get("run_date") or (agg.run_info or {}).get("run_date")
    page = render_html(data, title=title or f"chatbeam run{f' {run_date}' if run_date else ''}",
                       sources=[results_prefix, errors_prefix])
    out = out or f"{results_prefix}-report.html"
    write_file_atomically(out, page.encode("utf-8"))
    log.info("report %s: %d shard files, %d outputs, %.1f s", out, shards, data["totals"]["outputs"],
             time.monotonic() - started)
    return out, data


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="chatbeam report",
                                     description="Build the run report (one self-contained HTML page) from a run's "
                                                 "results and errors, local or gs://.")
    parser.add_argument("results", help="the run's --output prefix (files PREFIX-SSSSS-of-NNNNN.jsonl)")
    parser.add_argument("errors", nargs="?", help="the run's --errors prefix (default: RESULTS_errors)")
    parser.add_argument("--out", help="where to write the page (default: RESULTS-report.html), local or gs://")
    parser.add_argument("--price_table", help="prices JSON for the cost estimate (default: the bundled table)")
    parser.add_argument("--title", help="the page's title")
    args = parser.parse_args(list(argv))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        prices = PriceTable.load(args.price_table) if args.price_table else None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"chatbeam report: error: --price_table {args.price_table!r} is not a readable price table: {exc}",
              file=sys.stderr)
        return 2
    if not _match(f"{args.results}{SHARD_GLOB}"):
        print(f"chatbeam report: error: no results files {args.results}{SHARD_GLOB}", file=sys.stderr)
        return 2
    out, data = build_report(args.results, args.errors, out=args.out, prices=prices, title=args.title)
    totals = data["totals"]
    print(f"chatbeam report: {out} ({totals['results']:,} results, {totals['errors']:,} errors)")
    return 0
