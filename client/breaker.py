"""The circuit breaker: stop sending once every recent request failed the same permanent way. No Beam import.

    breaker = Breaker(window=20, probe_interval_s=60)
    breaker.check(model)              # before sending: None, or a CircuitOpen error to give the record (not sent)
    breaker.record(status_code, model)  # after each attempt: 200 -> None... a 401/403/404 -> that status

A run whose credentials are wrong answers 401 to every request: without a breaker a 500-record run makes 500
requests for 500 ``auth_error`` records. With it, once ``window`` requests in a row (per worker process) have been
answered with the same 401 or 403, or with 404 for the same model, the breaker opens: every later record (of that
model, for a 404) becomes an error record of that same type, **retryable** (``--replay_errors`` finishes it once the
cause is fixed), with ``attempts`` 0 and nothing sent. A 404 is keyed by model because a wrong model name fails
only its own records; a 401 or 403 is about the credentials or the project, so it stops every record.

Why 20: a permanent failure costs nothing to detect but every request after it is wasted, while a window too short
could open on a burst of records that all name one bad model. 20 identical answers in a row, with nothing else in
between, does not happen by chance in a healthy run. At most ``window`` + the requests already in flight (up to
``--max_concurrency``) are sent before it opens.

Half-open: while open, one probe request is let through every ``probe_interval_s`` (60 s); a success closes the
breaker, so a permission that took a minute to propagate costs a minute of refused records, not the night. Any
other answer in a run (a success, a 429, a timeout, a different status or model) starts the count again.

One breaker per engine (worker process); it lives on the engine's event loop (no locks needed).
"""

from __future__ import annotations

import time
from typing import Callable

from client.errors import RetryableError

__all__ = ["BREAKER_STATUS", "Breaker", "CircuitOpen", "DEFAULT_PROBE_INTERVAL_S", "DEFAULT_WINDOW"]

DEFAULT_WINDOW = 20  # identical permanent failures in a row before the breaker opens
DEFAULT_PROBE_INTERVAL_S = 60.0  # while open, one request is let through this often
BREAKER_STATUS = {401: "auth_error", 403: "permission_denied", 404: "not_found"}


class CircuitOpen(RetryableError):
    """A record not sent because every recent request failed the same permanent way. Retryable later (a replay
    after the fix), but never retried within the run (``retry_in_run``)."""

    retry_in_run = False

    def __init__(self, status_code: int, model: str | None, window: int) -> None:
        about = f" for model {model!r}" if status_code == 404 and model else ""
        super().__init__(f"not sent: the last {window} requests{about} were all answered HTTP {status_code} "
                         f"({BREAKER_STATUS[status_code]}), so chatbeam stopped sending; fix the cause and finish "
                         "these records with --replay_errors", status_code=status_code,
                         error_type=BREAKER_STATUS[status_code])


def _key(status_code: int | None, model: str | None) -> tuple[int, str | None] | None:
    if status_code not in BREAKER_STATUS:
        return None
    return (status_code, model if status_code == 404 else None)


class Breaker:
    """See the module docstring. ``opened`` counts how often it opened (for the run summary)."""

    def __init__(self, window: int = DEFAULT_WINDOW, probe_interval_s: float = DEFAULT_PROBE_INTERVAL_S, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window
        self.probe_interval_s = probe_interval_s
        self._clock = clock
        self._run_key: tuple[int, str | None] | None = None
        self._run = 0
        self._open: dict[tuple[int, str | None], float] = {}  # key -> when the last probe (or the opening) went
        self.opened = 0

    def _open_key(self, model: str | None) -> tuple[int, str | None] | None:
        for key in self._open:
            if key[1] is None or key[1] == model:
                return key
        return None

    def check(self, model: str | None) -> CircuitOpen | None:
        """None: send (a probe, when the breaker is open and a probe is due); else the error for the record."""
        key = self._open_key(model)
        if key is None:
            return None
        now = self._clock()
        if now - self._open[key] >= self.probe_interval_s:
            self._open[key] = now  # this record is the probe
            return None
        return CircuitOpen(key[0], model, self.window)

    def record(self, status_code: int | None, model: str | None) -> None:
        """The outcome of one attempt that reached the server: its HTTP status (200 for success), or None for
        one that did not (a timeout, a reset)."""
        key = _key(status_code, model)
        if key is None:
            self._run_key, self._run = None, 0
            if status_code is not None and 200 <= status_code < 300:
                self._close(model)
            return
        if key == self._run_key:
            self._run += 1
        else:
            self._run_key, self._run = key, 1
        if self._run >= self.window and key not in self._open:
            self._open[key] = self._clock()
            self.opened += 1

    def _close(self, model: str | None) -> None:
        for key in [k for k in self._open if k[1] is None or k[1] == model]:
            del self._open[key]

    @property
    def is_open(self) -> bool:
        return bool(self._open)
