"""Live progress: done / total, records/s, an honest ETA, the share answered 429, spend so far. No Beam import.

Two producers of the same line:

* ``ProgressMonitor`` — in the launcher (``chatbeam`` waiting for its run). It adds up the worker processes'
  latest engine samples (client/telemetry.py files) every tick, so a run with several worker processes shows one
  line for the whole run. On a terminal it is one updating tqdm line; otherwise a plain log line every
  ``--progress_interval_s``. It ticks on a timer, so a run where nothing finishes still prints (and says for how
  long nothing has finished).
* ``PROGRESS`` — in each worker process: the process's count (every finished record, read errors and resumed
  records included), which the telemetry sampler reads; where no launcher watches (a Dataflow job launched from a
  Flex Template), it also logs the process's own share every interval::

    PROGRESS.start(ProgressSettings(total=None, interval_s=5))   # DoFn.setup (reference-counted)
    PROGRESS.advance()                                            # one record finished
    PROGRESS.stop()                                               # DoFn.teardown; the last stop ends the thread

    chatbeam progress: 1,204/2,000 records (60%), 31.2 records/s, ETA 26s, 429 0.8% of 1,310 requests,
    ~$0.0123, 64 in flight

The ETA comes from a recent window, never from the average since the start: the shortest window ending now that
is at least ``MIN_WINDOW_S`` long and holds at least ``MIN_COMPLETIONS`` finished records, looking back at most
``MAX_WINDOW_S``. Time since the last completion is inside the window, so a stall lowers the rate. With fewer
completions than that in the whole look-back the line says ``ETA unknown`` instead of guessing (a run allowed one
request every 100 s shows no ETA until ten records have finished, and then an ETA of hours, which is the truth).
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TextIO

__all__ = ["PROGRESS", "Progress", "ProgressMonitor", "ProgressSettings", "RateWindow", "format_line"]

log = logging.getLogger("chatbeam.progress")

DEFAULT_INTERVAL_S = 5.0
MIN_COMPLETIONS = 10
MIN_WINDOW_S = 10.0
MAX_WINDOW_S = 3600.0
STALL_NOTE_S = 30.0  # "no record finished for ..." once nothing has finished for this long
TERMINAL_REFRESH_S = 1.0


@dataclass(frozen=True)
class ProgressSettings:
    total: int | None = None  # records expected in this run (None: unknown)
    interval_s: float = DEFAULT_INTERVAL_S  # 0: this process logs no line of its own


def _duration(seconds: float) -> str:
    if seconds < 0.5:
        return "<1s"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 100 * 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _rate(rate: float) -> str:
    if rate >= 1 or rate == 0:
        return f"{rate:,.1f} records/s"
    if rate * 60 >= 0.1:
        return f"{rate * 60:.1f} records/min"
    return f"{rate * 3600:.1f} records/h"


class RateWindow:
    """Recent completions → records/s and an ETA that only speaks when it has enough to go on.

        window = RateWindow()
        window.add(now, done)           # every tick
        window.rate(now), window.eta(now, total)
    """

    def __init__(self, *, min_completions: int = MIN_COMPLETIONS, min_window_s: float = MIN_WINDOW_S,
                 max_window_s: float = MAX_WINDOW_S) -> None:
        self.min_completions, self.min_window_s, self.max_window_s = min_completions, min_window_s, max_window_s
        self._points: collections.deque[tuple[float, int]] = collections.deque()
        self.started: float | None = None
        self.last_change: float | None = None

    def add(self, now: float, done: int) -> None:
        if self.started is None:
            self.started = self.last_change = now
        if self._points and done != self._points[-1][1]:
            self.last_change = now
        self._points.append((now, done))
        while len(self._points) > 2 and now - self._points[1][0] > self.max_window_s:
            self._points.popleft()

    @property
    def done(self) -> int:
        return self._points[-1][1] if self._points else 0

    def _window(self, now: float) -> tuple[float, int] | None:
        """The newest point far enough back (in time and in completions), or None."""
        done = self.done
        for t, d in reversed(self._points):
            if now - t >= self.min_window_s and done - d >= self.min_completions:
                return t, d
        return None

    def rate(self, now: float) -> float:
        """Records/s over the recent window; before there is one, over everything seen so far."""
        point = self._window(now) or (self._points[0] if self._points else None)
        if point is None or now <= point[0]:
            return 0.0
        return max(0, self.done - point[1]) / (now - point[0])

    def eta(self, now: float, total: int | None) -> float | None:
        """Seconds to go, or None when it would be a guess (no total, too few recent completions)."""
        if not total or self.done >= total:
            return None
        point = self._window(now)
        if point is None:
            return None
        rate = (self.done - point[1]) / (now - point[0])
        return (total - self.done) / rate if rate > 0 else None

    def stalled_for(self, now: float) -> float:
        return 0.0 if self.last_change is None else now - self.last_change


def format_line(done: int, total: int | None, rate: float, eta: float | None, *,
                totals: Mapping[str, float] | None = None, stalled_s: float = 0.0, prefix: str = "chatbeam progress: "
                ) -> str:
    """The progress line (pure, for tests). ``totals`` may hold ``attempts``, ``status_429``, ``cost_nano_usd``,
    ``in_flight`` (the launcher knows them from the engine samples; a worker's own line leaves them out)."""
    parts = [f"{done:,}/{total:,} records ({min(100, 100 * done // total)}%)" if total else f"{done:,} records",
             _rate(rate)]
    if total and done < total:
        parts.append(f"ETA {_duration(eta)}" if eta is not None else "ETA unknown")
    totals = totals or {}
    attempts = int(totals.get("attempts", 0))
    if attempts:
        parts.append(f"429 {100 * totals.get('status_429', 0) / attempts:.1f}% of {attempts:,} requests")
    if totals.get("cost_nano_usd"):
        usd = totals["cost_nano_usd"] / 1e9
        parts.append(f"~${usd:,.4f}" if usd >= 0.01 else f"~${usd:.6f}")
    if "in_flight" in totals:
        parts.append(f"{int(totals['in_flight']):,} in flight")
    if stalled_s >= STALL_NOTE_S and (not total or done < total):
        parts.append(f"no record finished for {_duration(stalled_s)}")
    return prefix + ", ".join(parts)


class Progress:
    """Process-wide: counts finished records and, while started with ``interval_s`` > 0, logs this process's
    line every interval (also when nothing finished, so a hung process is visible)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._done = 0
        self._users = 0
        self._settings = ProgressSettings()
        self._window = RateWindow()
        self._stop: threading.Event | None = None

    @property
    def done(self) -> int:
        return self._done

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self._done += n

    def line(self) -> str:
        now = self._clock()
        with self._lock:
            done, total = self._done, self._settings.total
            self._window.add(now, done)
        w = self._window
        return format_line(done, total, w.rate(now), w.eta(now, total), stalled_s=w.stalled_for(now))

    def start(self, settings: ProgressSettings) -> None:
        """The first user of a run resets the count and (if ``interval_s`` > 0) starts the logging thread."""
        with self._lock:
            self._users += 1
            if self._users > 1:
                return
            self._done = 0
            self._settings = settings
            self._window = RateWindow()
            self._window.add(self._clock(), 0)
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
        while not stop.wait(interval_s):
            log.info(self.line())


PROGRESS = Progress()


class ProgressMonitor:
    """The launcher's line for the whole run, from the worker processes' engine samples.

        monitor = ProgressMonitor(read_totals, total=2000, interval_s=5)   # read_totals() -> summed latest samples
        monitor.start(); ...; monitor.stop()                               # stop() prints the final state

    ``read_totals()`` returns ``{"done", "in_flight", "attempts", "status_429", "cost_nano_usd"}`` summed over
    the processes (client/telemetry.py ``combine_latest``), or None when no process has written yet.
    ``terminal``: one updating tqdm line redrawn every ``terminal_refresh_s`` (default: when ``stream`` is a
    terminal); else a log line per ``interval_s``.
    """

    def __init__(self, read_totals: Callable[[], Mapping[str, float] | None], *, total: int | None,
                 interval_s: float = DEFAULT_INTERVAL_S, stream: TextIO | None = None, terminal: bool | None = None,
                 terminal_refresh_s: float = TERMINAL_REFRESH_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read_totals
        self.total = total
        self.interval_s = interval_s
        self.terminal_refresh_s = terminal_refresh_s
        self._stream = stream if stream is not None else sys.stderr
        self.terminal = self._stream.isatty() if terminal is None else terminal
        self._clock = clock
        self.window = RateWindow()
        self._totals: Mapping[str, float] = {}
        self._bar: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lines: list[str] = []  # what was shown (plain mode), for tests and the last line

    def tick(self) -> str:
        """Read the samples once and show the line; returns it."""
        try:
            totals = self._read()
        except Exception:  # noqa: BLE001 - a progress line must never break the run
            log.debug("progress: reading samples failed", exc_info=True)
            totals = None
        now = self._clock()
        if totals is not None:
            self._totals = totals
        elif not self._totals:  # no worker process has written a sample yet: Beam is still starting the workers
            line = ("" if self.terminal else "chatbeam progress: ") + (
                f"0/{self.total:,} records, starting" if self.total else "0 records, starting")
            self._show(0, line)
            return line
        done = int(self._totals.get("done", 0))
        self.window.add(now, done)
        shown = {k: v for k, v in self._totals.items() if k != "done"}
        line = format_line(done, self.total, self.window.rate(now), self.window.eta(now, self.total),
                           totals=shown, stalled_s=self.window.stalled_for(now),
                           prefix="" if self.terminal else "chatbeam progress: ")
        self._show(done, line)
        return line

    def _show(self, done: int, line: str) -> None:
        if self.terminal:
            self._show_bar(done, line)
        else:
            self.lines.append(line)
            log.info(line)

    def _show_bar(self, done: int, line: str) -> None:
        from tqdm import tqdm  # only a terminal needs it

        if self._bar is None:
            # The line is the bar's description: tqdm would put ", " before a postfix.
            self._bar = tqdm(total=self.total, file=self._stream, dynamic_ncols=True, leave=True,
                             bar_format="chatbeam |{bar:16}| {desc}" if self.total else "chatbeam: {desc}")
        self._bar.n = min(done, self.total) if self.total else done
        self._bar.set_description_str(line, refresh=False)
        self._bar.refresh()

    def start(self) -> None:
        self.window.add(self._clock(), 0)
        period = self.terminal_refresh_s if self.terminal else self.interval_s
        self._thread = threading.Thread(target=self._run, args=(period,), name="chatbeam-progress-monitor",
                                        daemon=True)
        self._thread.start()

    def _run(self, period: float) -> None:
        while not self._stop.wait(period):
            self.tick()

    def stop(self) -> None:
        """Stop ticking, show the final state once, close the terminal line."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
            self.tick()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
