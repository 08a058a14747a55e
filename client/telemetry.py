"""Engine samples, one file per worker process: the run report's in-flight / limit / 429 charts and the launcher's
live progress line read them. No Beam import (the file writer is injected).

    TELEMETRY.start(TelemetrySettings("out/results-telemetry", run_id="9f3c…"), sample, write_file_atomically)
    ...                                       # a daemon thread samples every second and rewrites the file
    TELEMETRY.stop()                          # the last user's stop takes a final sample and flushes

``sample()`` returns the process's numbers right now (``SAMPLE_FIELDS`` less ``t``); the call DoFn builds it from
the engine's ``stats()`` (``in_flight``, ``limit``), the core's counters and the progress count. The file,
``{directory}/{run_id}-{host}-{pid}.json``, is rewritten whole (atomically) every ``flush_s``::

    {"run_id": "9f3c…", "host": "h", "pid": 4242, "sample_s": 1.0,
     "fields": ["t", "done", ...], "samples": [[1767225600.0, 0, ...], ...]}

Counters in a sample are cumulative for the process; ``in_flight`` and ``limit`` are gauges (after thinning, the
larger of the two merged samples). A long run keeps at most ``MAX_SAMPLES`` samples: past that every other one is
dropped and sampling slows to match, so a file stays under ~150 KB however long the run.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

__all__ = ["MAX_SAMPLES", "SAMPLE_FIELDS", "TELEMETRY", "Telemetry", "TelemetrySettings", "combine_latest",
           "engine_sample", "telemetry_dir"]

log = logging.getLogger(__name__)

SAMPLE_FIELDS = ("t", "done", "results", "errors", "in_flight", "limit", "attempts", "status_429", "retries",
                 "tokens_total", "cost_nano_usd")
GAUGES = frozenset({"in_flight", "limit"})
MAX_SAMPLES = 2000
LOCAL_FLUSH_S = 1.0  # a local file is cheap to rewrite: the launcher's progress line stays current
REMOTE_FLUSH_S = 30.0  # an object store (gs://): one small object write per worker process every 30 s


def telemetry_dir(output_prefix: str) -> str:
    """Where a run's samples go: beside the results, ``{output}-telemetry``."""
    return f"{output_prefix}-telemetry"


@dataclass(frozen=True)
class TelemetrySettings:
    """Picklable (it sits on the DoFn): where to write, and how often to sample and to rewrite the file."""

    directory: str
    run_id: str
    sample_s: float = 1.0
    flush_s: float | None = None  # None: LOCAL_FLUSH_S for a local directory, REMOTE_FLUSH_S for gs:// and others

    @property
    def flush_every_s(self) -> float:
        if self.flush_s is not None:
            return self.flush_s
        return REMOTE_FLUSH_S if "://" in self.directory else LOCAL_FLUSH_S


def _thin(samples: list[list[float]]) -> list[list[float]]:
    """Every other sample; a kept sample's gauges become the larger of the pair (a peak is not lost)."""
    gauge_index = [i for i, name in enumerate(SAMPLE_FIELDS) if name in GAUGES]
    out = []
    for i in range(1, len(samples), 2):
        keep = list(samples[i])
        for g in gauge_index:
            keep[g] = max(keep[g], samples[i - 1][g])
        out.append(keep)
    if len(samples) % 2:
        out.append(samples[-1])
    return out


class Telemetry:
    """Process-wide and reference-counted, like the progress count: the first ``start`` of a run starts the thread,
    the last ``stop`` ends it with a final sample and flush."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._users = 0
        self._settings: TelemetrySettings | None = None
        self._sample: Callable[[], Mapping[str, float]] | None = None
        self._write: Callable[[str, bytes], None] | None = None
        self._samples: list[list[float]] = []
        self._period = 1.0
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self.failed_writes = 0

    @property
    def path(self) -> str | None:
        s = self._settings
        return None if s is None else f"{s.directory}/{s.run_id}-{socket.gethostname()}-{os.getpid()}.json"

    def start(self, settings: TelemetrySettings, sample: Callable[[], Mapping[str, float]],
              write: Callable[[str, bytes], None], *, thread: bool = True) -> None:
        with self._lock:
            self._users += 1
            if self._users > 1:
                return
            self._settings, self._sample, self._write = settings, sample, write
            self._samples, self._period = [], settings.sample_s
            if not thread:
                return
            stop = self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(stop,), name="chatbeam-telemetry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            if self._users == 0:
                return
            self._users -= 1
            if self._users:
                return
            stop, thread, self._stop, self._thread = self._stop, self._thread, None, None
        if stop is not None:
            stop.set()
        if thread is not None:
            thread.join(timeout=10)
        self.take_sample()
        self.flush()

    def take_sample(self) -> None:
        sample, now = self._sample, self._clock()
        if sample is None:
            return
        try:
            values = sample()
        except Exception:  # noqa: BLE001 - a sampling bug must not take the run down; the report just has a gap
            log.debug("telemetry sample failed", exc_info=True)
            return
        row = [round(now, 2)] + [float(values.get(name, 0) or 0) for name in SAMPLE_FIELDS[1:]]
        with self._lock:
            self._samples.append(row)
            if len(self._samples) > MAX_SAMPLES:
                self._samples = _thin(self._samples)
                self._period *= 2

    def document(self) -> dict:
        s = self._settings
        with self._lock:
            samples = [list(row) for row in self._samples]
        return {"run_id": s.run_id if s else None, "host": socket.gethostname(), "pid": os.getpid(),
                "sample_s": self._period, "fields": list(SAMPLE_FIELDS), "samples": samples}

    def flush(self) -> None:
        path, write = self.path, self._write
        if path is None or write is None:
            return
        try:
            write(path, json.dumps(self.document(), separators=(",", ":")).encode("utf-8"))
        except Exception:  # noqa: BLE001 - best effort: the run's outputs matter more than its charts
            self.failed_writes += 1
            log.warning("could not write telemetry file %s", path, exc_info=self.failed_writes == 1)

    def _run(self, stop: threading.Event) -> None:
        next_flush = self._clock() + self._settings.flush_every_s
        while not stop.wait(self._period):
            self.take_sample()
            if self._clock() >= next_flush:
                self.flush()
                next_flush = self._clock() + self._settings.flush_every_s


TELEMETRY = Telemetry()


def engine_sample(stats: Mapping[str, float], counters: Mapping[str, int], done: int) -> dict[str, float]:
    """One sample from an engine's ``stats()`` (``in_flight``, ``limit``), a counters snapshot and the progress
    count (records finished in this process: results, errors, read errors, resumed)."""
    return {"done": done, "in_flight": stats.get("in_flight", 0), "limit": stats.get("limit", 0),
            **{name: counters.get(name, 0) for name in ("results", "errors", "attempts", "status_429", "retries",
                                                       "tokens_total", "cost_nano_usd")}}


def combine_latest(docs: list[Mapping]) -> dict[str, float] | None:
    """The run so far: each process's latest sample, summed over the processes (``t`` left out); None when no
    process has written a sample yet."""
    totals: dict[str, float] = {}
    for doc in docs:
        fields, samples = doc.get("fields") or [], doc.get("samples") or []
        if not samples:
            continue
        for name, value in zip(fields, samples[-1]):
            if name != "t":
                totals[name] = totals.get(name, 0.0) + float(value)
    return totals or None
