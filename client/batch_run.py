"""Batch mode's core, no Beam import: stage a group of lines, run its jobs, stream back one outcome per line, and
turn each record's outcome into exactly one result, error or online fallback.

    lines = [prepare(record, config, prices) for record in records]          # BatchLine, or raises ChatbeamError
    for key, outcome in run_group("gemini-2.5-flash-0", lines, settings, jobs, files, counters):
        ...                                                                   # every line's key exactly once
    out = BatchResolver(config, prices, fallback_online=True).resolve(item, outcome)     # client/batch_resolve.py

The Beam shell (transforms/batch.py) groups lines by model (and bucket), calls `run_group` per group, and joins the
outcomes back to the records **by key**, never by position: each line's request carries its key in
``labels.chatbeam_key`` (a hash of the record's id and request_key), which the output line echoes.

`run_group`, in order:

1. **Stage**: write the lines to ``{staging}/{run}/{group}/job-NNNN/input.jsonl``, at most ``max_requests`` per
   file (one file per job, as Vertex takes one input file for Gemini). With a budget, lines whose estimated cost
   at batch prices would pass it are not staged: they come back ``budget_exhausted`` at once.
2. **Submit** one job per file (idempotently: see client/batch_jobs.py), **poll** with a progress line.
3. **Read** every ``*.jsonl`` under each job's output directory and yield ``(key, OutputLine)`` per line.
4. **Missing**: iterate the lines again; a staged key with no output line yields ``(key, Missing(job state))`` — the
   job failed, was cancelled or expired. (Lines map to jobs by position, so the group must iterate in the same
   order twice, as Beam's grouped values do; were it not so, a Missing would only name the wrong job's state.)
"""

from __future__ import annotations

import bisect
import datetime
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, ContextManager, Iterable, Iterator, Protocol

from client.batch_jobs import BatchJobClient, JobStatus
from client.budget import DEFAULT_OUTPUT_TOKENS, output_token_limit
from client.caller import utc_iso
from client.config import ClientConfig
from client.errors import redact
from client.metrics import RunCounters
from client.native_request import LABEL_KEY, to_native
from client.native_response import OutputLine, parse_output_line
from client.pricing import PriceTable
from client.requests import build_request
from schemas.records import InputRecord

__all__ = ["BatchItem", "BatchLine", "BatchSettings", "Fallback", "Files", "Missing", "line_key", "prepare",
           "run_group"]

log = logging.getLogger("chatbeam.batch")


@dataclass(frozen=True)
class BatchSettings:
    """Picklable settings of batch mode (from the command line)."""

    staging: str  # gs:// prefix of this run's files
    run_id: str = "run"
    max_requests: int = 200_000  # lines per job (Vertex: about 200,000)
    poll_s: float = 30.0
    max_wait_s: float = 96 * 3600.0  # 24 h running + up to 72 h queued, then we cancel
    fallback_online: bool = True
    max_cost_usd: float | None = None  # per group, at batch prices, estimated before staging
    max_total_tokens: int | None = None
    est_output_tokens: int = DEFAULT_OUTPUT_TOKENS


class Files(Protocol):
    """File access by path (local or gs://); the Beam shell passes Beam's FileSystems."""

    def create(self, path: str) -> ContextManager[BinaryIO]: ...

    def open(self, path: str) -> ContextManager[BinaryIO]: ...

    def match(self, pattern: str) -> list[str]: ...


@dataclass
class BatchLine:
    """One staged line: its key, model, the JSONL text ``{"request": ...}``, and its estimated cost."""

    key: str
    model: str
    text: str
    est_cost: float = 0.0
    est_tokens: int = 0


@dataclass
class BatchItem:
    """What the join needs of a record to resolve it."""

    record: InputRecord
    request_key: str
    model: str


@dataclass
class Missing:
    """No output line came back for a staged (or budget-refused) line."""

    state: str  # the job's final state, or BUDGET_EXHAUSTED
    job: str | None = None
    error: str | None = None
    started_at: str | None = None  # when the job was submitted, and when it ended (None: never staged)
    finished_at: str | None = None


def _iso(text: str | None) -> str | None:
    """Vertex's timestamp (``2025-01-31T02:13:07.412345Z``) in the records' form (``utc_iso``), or None."""
    if not text:
        return None
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return utc_iso(when.timestamp())


@dataclass
class Fallback:
    """The record is to be finished online in this run."""

    record: InputRecord
    reason: str


def line_key(record_id: str | None, request_key: str) -> str:
    """The label that ties a line to its record: 32 hex characters, a valid Vertex label value."""
    return hashlib.sha256(f"{record_id}\0{request_key}".encode("utf-8", "surrogatepass")).hexdigest()[:32]


def prepare(record: InputRecord, config: ClientConfig, prices: PriceTable,
            est_output_tokens: int = DEFAULT_OUTPUT_TOKENS) -> tuple[BatchItem, BatchLine]:
    """The record's batch line; raises ChatbeamError (bad_request, media_error, unsupported_in_batch, ...)."""
    request = build_request(record, config)
    key = line_key(record.id, request.request_key)
    native = to_native(request, labels={LABEL_KEY: key})
    n = request.kwargs.get("n") if isinstance(request.kwargs.get("n"), int) else 1
    output = (output_token_limit(request) or est_output_tokens) * max(1, n)
    line = BatchLine(key, request.model, json.dumps({"request": native}, ensure_ascii=False),
                     prices.cost(request.model, request.est_prompt_tokens, output, tier="batch"),
                     request.est_prompt_tokens + output)
    return BatchItem(record, request.request_key, request.model), line


def _progress(group: str, total: int) -> Callable[[list[JobStatus], float], None]:
    def report(jobs: list[JobStatus], elapsed: float) -> None:
        done = sum(j.successful + j.failed for j in jobs)
        states = ", ".join(sorted({f"{sum(1 for j in jobs if j.state == s)} {s.removeprefix('JOB_STATE_')}"
                                   for s in {j.state for j in jobs}}))
        log.info("chatbeam batch %s: %d job(s) (%s), %s/%s lines answered (%d%%), %.0f s", group, len(jobs), states,
                 f"{done:,}", f"{total:,}", 100 * done // max(1, total), elapsed)
    return report


class _Chunk:
    """One job's input file being written."""

    def __init__(self, files: Files, uri: str, model: str, start: int) -> None:
        self.uri, self.model, self.start, self.count = uri, model, start, 0
        self._cm = files.create(uri)
        self._fh = self._cm.__enter__()

    def write(self, text: str) -> None:
        self._fh.write(text.encode("utf-8") + b"\n")
        self.count += 1

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


def _stage(group: str, lines: Iterable[BatchLine], settings: BatchSettings, files: Files,
           counters: RunCounters) -> tuple[list[_Chunk], list[tuple[str, Missing]]]:
    """Write the job input files (a new one every ``max_requests`` lines, or when the model changes); the lines the
    budget refuses come back as outcomes at once."""
    chunks: list[_Chunk] = []
    refused: list[tuple[str, Missing]] = []
    spent_usd, spent_tokens, position = 0.0, 0, 0
    try:
        for line in lines:
            over = ((settings.max_cost_usd is not None and spent_usd + line.est_cost > settings.max_cost_usd)
                    or (settings.max_total_tokens is not None
                        and spent_tokens + line.est_tokens > settings.max_total_tokens))
            if refused or over:  # the refusal is final, as online
                refused.append((line.key, Missing("BUDGET_EXHAUSTED")))
                continue
            if not chunks or chunks[-1].count >= settings.max_requests or chunks[-1].model != line.model:
                if chunks:
                    chunks[-1].close()
                uri = f"{settings.staging.rstrip('/')}/{settings.run_id}/{group}/job-{len(chunks):04d}/input.jsonl"
                chunks.append(_Chunk(files, uri, line.model, position))
            chunks[-1].write(line.text)
            spent_usd += line.est_cost
            spent_tokens += line.est_tokens
            position += 1
    finally:
        if chunks:
            chunks[-1].close()
    counters.inc("batch_lines", position)
    counters.inc("batch_budget_refused", len(refused))
    return chunks, refused


def run_group(group: str, lines: Iterable[BatchLine], settings: BatchSettings, jobs: BatchJobClient, files: Files,
              counters: RunCounters) -> Iterator[tuple[str, OutputLine | Missing]]:
    """Stage, submit, wait, read: one ``(key, outcome)`` per line of ``lines`` (iterated twice)."""
    chunks, refused = _stage(group, lines, settings, files, counters)
    yield from refused
    if not chunks:
        return
    staged = sum(c.count for c in chunks)
    submitted = time.time()
    names = []
    for i, chunk in enumerate(chunks):
        names.append(jobs.submit(model=chunk.model, input_uri=chunk.uri,
                                 output_prefix=chunk.uri.rsplit("/", 1)[0] + "/output",
                                 display_name=f"chatbeam-{settings.run_id[:16]}-{group}-{i}"[:128]))
        counters.inc("batch_jobs")
    log.info("chatbeam batch %s: %d job(s) submitted for %s lines: %s", group, len(names), f"{staged:,}", names)
    statuses = jobs.wait(names, poll_s=settings.poll_s, max_wait_s=settings.max_wait_s,
                         on_progress=_progress(group, staged))
    seen: set[str] = set()
    for name in names:
        status = statuses[name]
        counters.inc(f"batch_jobs_{status.short_state.lower()}")
        if status.output_dir:
            for key, out in _read_output(status.output_dir, files, seen, counters):
                out.seconds = status.seconds
                out.started_at = utc_iso(submitted)
                out.finished_at = _iso(out.processed_time) or utc_iso(submitted + status.seconds)
                yield key, out
    starts = [c.start for c in chunks]
    for position, line in enumerate(lines):  # the second pass: which staged lines came back with nothing
        if position >= staged:
            break
        if line.key not in seen:
            status = statuses[names[bisect.bisect_right(starts, position) - 1]]
            counters.inc("batch_lines_missing")
            yield line.key, Missing(status.state, status.name, status.error, utc_iso(submitted),
                                    utc_iso(submitted + status.seconds))


def _read_output(directory: str, files: Files, seen: set[str], counters: RunCounters
                 ) -> Iterator[tuple[str, OutputLine]]:
    for path in sorted(files.match(f"{directory.rstrip('/')}/*.jsonl")):
        with files.open(path) as fh:
            for raw in fh:
                if not raw.strip():
                    continue
                out = parse_output_line(raw)
                if out.key is None:  # not ours to map (or unreadable): counted, never guessed at
                    counters.inc("batch_unmapped_lines")
                    log.warning("a batch output line in %s carries no %s label: %s", path, LABEL_KEY,
                                redact(raw[:200].decode("utf-8", "replace")))
                    continue
                seen.add(out.key)
                counters.inc("batch_lines_failed" if out.error is not None else "batch_lines_answered")
                yield out.key, out
