"""The run journal: completed outputs, written as they finish, so a killed run can be resumed. No Beam import.

Beam's file sinks write to temporary files and move them into place only when the whole run succeeds, so a run
killed half-way leaves no finished output. The call step therefore also appends every *completed* output — each
result, and each error that a rerun would not fix (``retryable`` false) — to a journal directory, default
``{output}-checkpoint/``::

    journal = JournalWriter("gs://bucket/2025-01-31/results-checkpoint", write_file, every=500, interval_s=30)
    journal.add(output)       # buffered; a file is written when 500 are buffered or 30 s have passed
    journal.flush()           # at the end of every bundle
    flush_all()               # every live writer of the process: on SIGINT/SIGTERM, and at interpreter exit

Layout: ``{dir}/part-{uuid}.jsonl``, one output per line, exactly the JSON the results/errors sinks write. Each
file is written once and whole: atomically (a temp file renamed into place locally; a GCS object appears only
when its upload completes), so a reader sees complete files or none. A kill loses at most the unflushed buffer.

``--resume`` reads the journal plus any finished outputs of the run, and skips every input record whose
``done_key`` — ``(id, request_key)`` — has a completed output there; that output is written again instead, so
the final sinks hold every record exactly once. ``request_key`` comes from the pure ``build_request(record,
config)``, so a record whose prompt, model, params or schema changed since is not "done" and is called again.
Duplicates (a bundle retried by the runner writes its outputs again) are collapsed by ``choose``.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Callable, Iterable

from pydantic import ValidationError

from client.config import ClientConfig
from client.errors import ChatbeamError
from client.requests import build_request
from schemas.records import ErrorRecord, InputRecord, ResultRecord

__all__ = ["DEFAULT_EVERY", "DEFAULT_INTERVAL_S", "JournalSettings", "JournalWriter", "choose", "done_key",
           "flush_all", "is_final", "output_key", "parse_output"]

log = logging.getLogger(__name__)

DEFAULT_EVERY = 500  # outputs per journal file (--checkpoint_every)
DEFAULT_INTERVAL_S = 30.0  # ...or a file at least this often while outputs arrive (--checkpoint_interval_s)
PART_PREFIX = "part-"
PART_GLOB = "part-*.jsonl"

Output = ResultRecord | ErrorRecord


@dataclass(frozen=True)
class JournalSettings:
    """Picklable journal settings for the call DoFn: the directory and when to write a file."""

    directory: str
    every: int = DEFAULT_EVERY
    interval_s: float = DEFAULT_INTERVAL_S


def is_final(output: Output) -> bool:
    """Would a rerun produce the same output? Results and non-retryable call errors are final; retryable errors
    (rate limits, budget_exhausted, ...) are not, and neither are read errors (they are re-read from the input)."""
    if isinstance(output, ResultRecord):
        return True
    return not output.retryable and output.stage != "read" and output.id is not None


def done_key(record: InputRecord, config: ClientConfig) -> str:
    """The identity of a record's work: its id and its request_key (empty when the request cannot be built)."""
    try:
        key = build_request(record, config).request_key
    except ChatbeamError:
        key = ""
    return f"{record.id}\t{key}"


def output_key(output: Output) -> str:
    """The ``done_key`` an output answers."""
    return f"{output.id}\t{output.request_key or ''}"


def parse_output(line: str | bytes) -> Output | None:
    """One results/errors/journal line → the record, or None for a line that is not one (say, cut off)."""
    try:
        data = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    try:
        return ErrorRecord.model_validate(data) if "error_type" in data else ResultRecord.model_validate(data)
    except ValidationError:
        return None


def choose(outputs: Iterable[Output]) -> list[Output]:
    """Completed outputs for one done_key, best first: results before errors, then a stable order."""
    return sorted(outputs, key=lambda o: (isinstance(o, ErrorRecord), o.model_dump_json()))


class JournalWriter:
    """Buffers final outputs and writes them to ``{directory}/part-{uuid}.jsonl`` files. One per DoFn instance.

    ``write_file(path, data)`` must write the whole file atomically (see transforms/call.py for the Beam
    FileSystems version). A failed write is logged and counted in ``failed_writes``; the run goes on (its
    outputs are unaffected; only a later resume would redo those records).
    """

    def __init__(self, settings: JournalSettings, write_file: Callable[[str, bytes], None], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()  # flush_all() may run on another thread (a signal, interpreter exit)
        self.settings = settings
        self._write_file = write_file
        self._clock = clock
        self._buffer: list[str] = []
        self._first_at: float | None = None
        self.files_written = 0
        self.lines_written = 0
        self.failed_writes = 0
        _LIVE.add(self)

    def add(self, output: Output) -> None:
        if not is_final(output):
            return
        try:
            line = output.model_dump_json()
        except Exception as exc:  # noqa: BLE001 - not serialisable (e.g. a lone surrogate): the sink will say so
            self.failed_writes += 1
            log.warning("could not journal the output for record %r: %r", output.id, exc)
            return
        with self._lock:
            if not self._buffer:
                self._first_at = self._clock()
            self._buffer.append(line)
            due = self._due()
        if due:
            self.flush()

    def _due(self) -> bool:
        if len(self._buffer) >= self.settings.every:
            return True
        return self._first_at is not None and self._clock() - self._first_at >= self.settings.interval_s

    def flush(self) -> None:
        with self._lock:
            if not self._buffer:
                return
            lines, self._buffer, self._first_at = self._buffer, [], None
        path = f"{self.settings.directory.rstrip('/')}/{PART_PREFIX}{uuid.uuid4().hex}.jsonl"
        try:
            self._write_file(path, ("\n".join(lines) + "\n").encode("utf-8"))
        except Exception as exc:  # the journal is a safety net; losing a file must not fail the run
            self.failed_writes += 1
            log.warning("could not write checkpoint file %s (%d outputs): %r", path, len(lines), exc)
            return
        self.files_written += 1
        self.lines_written += len(lines)


_LIVE: "weakref.WeakSet[JournalWriter]" = weakref.WeakSet()


def flush_all() -> int:
    """Flush every live JournalWriter of this process (a run stopped by a signal, or the interpreter exiting);
    returns how many outputs were written. Safe from any thread; never raises."""
    lines = 0
    for writer in list(_LIVE):
        before = writer.lines_written
        try:
            writer.flush()
        except Exception as exc:  # noqa: BLE001 - a last-chance flush must not hide why the run stopped
            log.warning("could not flush a checkpoint journal: %r", exc)
        lines += writer.lines_written - before
    return lines


atexit.register(flush_all)  # a worker process ended by SIGINT (KeyboardInterrupt) still writes what it holds
