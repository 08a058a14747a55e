"""A token bucket with an injectable clock: the RPM and TPM caps of ``client.limits.RequestLimiter``.

It refills from the clock's readings (no timer, no thread) and never sleeps: ``wait_time(n)`` says how long to
wait and the caller decides how. Written here rather than taken from a rate-limit library because the limiter needs
two things of it: a level that may go negative (an oversized request, or usage charged after the fact) and refunds
capped at the capacity.
"""

from __future__ import annotations

import time
from typing import Callable

__all__ = ["TokenBucket"]

_EPS = 1e-9


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, holding at most ``capacity``; starts full.

        >>> bucket = TokenBucket(rate=10.0, capacity=10.0, clock=lambda: 0.0)
        >>> bucket.wait_time(4), bucket.take(4), bucket.level
        (0.0, None, 6.0)
        >>> bucket.wait_time(8)   # 2 tokens short at 10/s
        0.2

    ``wait_time(n)`` for ``n > capacity`` waits for a full bucket, so an oversized request is admitted (driving
    the level negative) instead of waiting forever.
    """

    def __init__(self, rate: float, capacity: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be > 0")
        self.rate = float(rate)
        self.capacity = float(capacity)
        self._clock = clock
        self._level = self.capacity
        self._stamp = clock()

    @property
    def level(self) -> float:
        self._refill()
        return self._level

    def wait_time(self, n: float) -> float:
        """Seconds until ``n`` tokens (or a full bucket, if ``n`` exceeds the capacity) are available."""
        need = min(float(n), self.capacity)
        short = need - self.level
        return 0.0 if short <= _EPS * max(1.0, need) else short / self.rate

    def take(self, n: float) -> None:
        """Remove ``n`` tokens; the level may go negative (an oversized or charged request)."""
        self._refill()
        self._level -= n

    def give(self, n: float) -> None:
        """Return ``n`` tokens (a refund), up to the capacity."""
        self._refill()
        self._level = min(self.capacity, self._level + n)

    def _refill(self) -> None:
        now = self._clock()
        if now > self._stamp:
            self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = max(self._stamp, now)
