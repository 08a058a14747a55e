"""The run report's files: a run's sinks (local or gs://) → ``RESULTS_PREFIX-report.html``; and the run's side files.

    path, data = build_report("out/results")          # errors from out/results_errors (the job's default)
    write_run_info("out/results", run_id, info)       # at the start of a run: its options, for the report
    totals = run_totals("out/results", run_id)()       # the launcher's progress line: this run's latest samples

``build_report`` reads ``PREFIX-SSSSS-of-NNNNN.jsonl`` of both sinks, the run summary ``PREFIX-summary.json`` and the
``PREFIX-telemetry/`` folder (engine samples per worker process, and ``run-<id>.json`` with the run's options)
when they exist, and writes one self-contained page (report/). A waited ``chatbeam`` run calls ``build_report``
at its end, and ``chatbeam report`` (pipelines/report.py) on demand. File I/O goes through Beam's FileSystems; the numbers and the page are Beam-free (report/).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from apache_beam.io.filesystems import FileSystems

from client.pricing import PriceTable
from client.telemetry import combine_latest, telemetry_dir
from report.aggregate import RunAggregate, redact_options
from transforms.checkpoint import SHARD_GLOB, write_file_atomically
from transforms.files import read_json

__all__ = ["build_report", "has_files", "read_telemetry", "run_info_path", "run_totals", "write_run_info"]

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


def read_telemetry(output_prefix: str, run_id: str | None = None) -> tuple[list[dict], list[dict]]:
    """(engine sample documents, run-info documents) in ``OUTPUT-telemetry/`` — of one run, or of all."""
    samples, runs = [], []
    for path in _match(f"{telemetry_dir(output_prefix)}/*.json"):
        name = path.rsplit("/", 1)[-1]
        if run_id is not None and not (name.startswith(run_id) or name == f"{RUN_INFO_PREFIX}{run_id}.json"):
            continue
        try:
            doc = read_json(path)
        except (OSError, ValueError) as exc:  # a file being replaced, or a stray file: skip it
            log.debug("skipping %s: %s", path, exc)
            continue
        (runs if name.startswith(RUN_INFO_PREFIX) else samples).append(doc)
    return samples, runs


def has_files(pattern: str) -> bool:
    """Whether ``pattern`` (local or gs://) matches any file."""
    return bool(_match(pattern))


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
        agg.summary = read_json(summary_path)
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
