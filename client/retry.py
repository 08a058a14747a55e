"""The retry policy as data: one tenacity ``AsyncRetrying`` per record, with injected sleep and clock.

    >>> policy = RetryPolicy.from_config(config)      # max_attempts, record_deadline_s, max_retry_delay
    >>> sleeps = []
    >>> retrying = policy.retrying(sleep=sleeps.append)           # tests record sleeps instead of sleeping
    >>> result = await retrying(send_once, request)               # re-raises the last error when it gives up

What is retried is decided by ``is_retryable`` (errors.py), except errors that say ``retry_in_run = False``
(a record the circuit breaker refused: retryable by a later replay, pointless to retry now). How long to wait: full-jitter exponential backoff
(``wait_random_exponential``: a random time in [0, initial·2^n], capped at ``max_delay``), but never less than what
the server asked for (Retry-After / RetryInfo ``retryDelay``, itself capped at ``MAX_RETRY_AFTER``). When to stop:
after ``max_attempts`` attempts, or before a sleep that would end past the record's deadline.

Build a fresh ``retrying()`` per record: tenacity keeps per-call state on the object, so one instance must not be
shared by concurrent coroutines. ``policy.call(fn, *args, ...)`` is the same thing with the first attempt made
before any of it is built: most records succeed at once, and at zero latency building tenacity's objects per record
was a measurable part of the CPU per record (docs/hotpath.md). When that attempt fails, a fresh ``retrying()`` takes
over with that failure as its attempt 1, so every decision (retry or not, the wait, the stop) is still tenacity's.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_random_exponential

from client.constants import INITIAL_RETRY_DELAY, MAX_RETRY_AFTER
from client.errors import is_retryable

__all__ = ["RetryPolicy", "stop_before_deadline", "wait_server_directed"]

Sleep = Callable[[float], "Awaitable[None] | None"]


class wait_server_directed(wait_base):  # noqa: N801 - tenacity's naming
    """``fallback``'s wait, raised to the failed attempt's ``retry_after`` (capped at ``cap``) when it has one.

    Written here because tenacity's only combinator (``+``) sums waits; we need the larger of the two.
    """

    def __init__(self, fallback: wait_base, cap: float = MAX_RETRY_AFTER) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = self.fallback(retry_state)
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            wait = max(wait, min(float(retry_after), self.cap))
        return wait


class stop_before_deadline(stop_base):  # noqa: N801 - tenacity's naming
    """Stop when the upcoming sleep would end past ``deadline_s`` after ``start``, read from an injected clock.

    tenacity's ``stop_after_delay``/``stop_before_delay`` read ``time.monotonic`` directly, so tests could not
    drive them with a fake clock; this is ``stop_before_delay`` with the clock as a parameter.
    """

    def __init__(self, deadline_s: float, clock: Callable[[], float] = time.monotonic,
                 start: float | None = None) -> None:
        self.deadline_s = deadline_s
        self.clock = clock
        self.start = clock() if start is None else start

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.clock() - self.start + retry_state.upcoming_sleep >= self.deadline_s


def _retry_in_run(exc: BaseException) -> bool:
    return is_retryable(exc) and getattr(exc, "retry_in_run", True)


@dataclass(frozen=True)
class RetryPolicy:
    """How one request is retried. Plain, picklable data."""

    max_attempts: int = 6
    deadline_s: float = 900.0
    initial_delay: float = INITIAL_RETRY_DELAY
    max_delay: float = 60.0
    max_retry_after: float = MAX_RETRY_AFTER

    @classmethod
    def from_config(cls, config: Any) -> "RetryPolicy":
        return cls(max_attempts=max(1, config.max_attempts), deadline_s=config.record_deadline_s,
                   max_delay=config.max_retry_delay)

    def retrying(self, *, sleep: Sleep = asyncio.sleep, clock: Callable[[], float] = time.monotonic,
                 start: float | None = None,
                 on_retry: Callable[[BaseException, float], None] | None = None) -> AsyncRetrying:
        """A fresh AsyncRetrying. ``start``: when the record began (re-asks share one deadline);
        ``on_retry(exc, seconds)`` is called before each backoff sleep (for counters and logs)."""

        async def _sleep(seconds: float) -> None:
            result = sleep(seconds)  # a sync recorder (sleeps.append) or an async sleep
            if inspect.isawaitable(result):
                await result

        def _before_sleep(retry_state: RetryCallState) -> None:
            if on_retry is not None and retry_state.outcome is not None:
                on_retry(retry_state.outcome.exception(), retry_state.upcoming_sleep)

        return AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts) | stop_before_deadline(self.deadline_s, clock, start),
            wait=wait_server_directed(wait_random_exponential(multiplier=self.initial_delay, max=self.max_delay),
                                      cap=self.max_retry_after),
            retry=retry_if_exception(_retry_in_run),
            sleep=_sleep,
            before_sleep=_before_sleep,
            reraise=True,
        )

    async def call(self, fn: Callable[..., Awaitable[Any]], *args: Any, sleep: Sleep = asyncio.sleep,
                   clock: Callable[[], float] = time.monotonic, start: float | None = None,
                   on_retry: Callable[[BaseException, float], None] | None = None) -> Any:
        """``await self.retrying(...)(fn, *args)``, with the first attempt made before the retrying is built.

        tenacity decides what follows a failed first attempt exactly as if it had made it: a fresh ``retrying()``
        is called with a function whose first call re-raises that failure and whose later calls are ``fn``. Errors
        that are not ``Exception`` (a cancellation) are never retried, so they propagate at once, as tenacity
        (``reraise=True``) would let them."""
        try:
            return await fn(*args)
        except Exception as exc:  # noqa: BLE001 - handed to tenacity, which re-raises what it does not retry
            first: BaseException | None = exc

        async def attempt(*call_args: Any) -> Any:
            nonlocal first
            if first is not None:
                failed, first = first, None
                raise failed
            return await fn(*call_args)

        retrying = self.retrying(sleep=sleep, clock=clock, start=start, on_retry=on_retry)
        return await retrying(attempt, *args)
