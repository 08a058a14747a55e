"""A progress line every few seconds from each worker process: done / total, rate, ETA. No Beam import.

    PROGRESS.start(ProgressSettings(total=2000, interval_s=5))   # DoFn.setup (reference-counted)
    PROGRESS.advance()                                            # one record finished (result, error, resumed)
    PROGRESS.stop()                                               # DoFn.teardown; the last stop ends the thread

    chatbeam progress: 1,204/2,000 records (60%), 312.4 records/s, ETA 3s

``total`` is known when the input is local files (the CLI counts their lines before the run; blank and unreadable
lines included, so the last line may stop a little short of 100 %); otherwise the line shows done and rate only.
The count is per worker process: with several processes (``--direct_num_workers``, Dataflow) each logs its own
share. On Dataflow, read the same numbers from the job's Beam metrics (namespace ``chatbeam``) instead.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

__all__ = ["PROGRESS", "Progress", "ProgressSettings", "format_line"]

log = logging.getLogger("chatbeam.progress")

DEFAULT_INTERVAL_S = 5.0


@dataclass(frozen=True)
class ProgressSettings:
    total: int | None = None  # records expected in this run (None: unknown)
    interval_s: float = DEFAULT_INTERVAL_S  # 0: no progress thread


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_line(done: int, total: int | None, elapsed_s: float) -> str:
    """``chatbeam progress: 1,204/2,000 records (60%), 312.4 records/s, ETA 3s`` (pure, for tests)."""
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    if total:
        line = f"chatbeam progress: {done:,}/{total:,} records ({min(100, 100 * done // total)}%), {rate:.1f} records/s"
        if 0 < done < total and rate > 0:
            line += f", ETA {_duration((total - done) / rate)}"
        return line
    return f"chatbeam progress: {done:,} records, {rate:.1f} records/s"


class Progress:
    """Process-wide: counts finished records and, while started, logs a line every ``interval_s`` seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._done = 0
        self._users = 0
        self._started_at = 0.0
        self._settings = ProgressSettings()
        self._stop: threading.Event | None = None

    @property
    def done(self) -> int:
        return self._done

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self._done += n

    def line(self) -> str:
        with self._lock:
            return format_line(self._done, self._settings.total, self._clock() - self._started_at)

    def start(self, settings: ProgressSettings) -> None:
        """The first user of a run resets the count and (if ``interval_s`` > 0) starts the logging thread."""
        with self._lock:
            self._users += 1
            if self._users > 1:
                return
            self._done = 0
            self._started_at = self._clock()
            self._settings = settings
            if settings.interval_s <= 0:
                return
            stop = self._stop = threading.Event()
        threading.Thread(target=self._run, args=(stop, settings.interval_s), name="chatbeam-progress",
                         daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            if self._users == 0:
                return
            self._users -= 1
            if self._users or self._stop is None:
                return
            stop, self._stop = self._stop, None
        stop.set()

    def _run(self, stop: threading.Event, interval_s: float) -> None:
        last = -1
        while not stop.wait(interval_s):
            if self._done != last:  # an idle process stays quiet
                last = self._done
                log.info(self.line())


PROGRESS = Progress()
