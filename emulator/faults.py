"""Fault decisions: 429 storm and capacity (shared pool), and per-request seeded draws.

Capacity is a **sliding 1-second window** over admitted requests: a request is admitted
when fewer than ``capacity_rps`` requests were admitted in the last second, otherwise it
is answered 429 at once (rejected requests don't count towards the window).  A storm
answers every request 429 for ``storm_429_s`` seconds from when the faults were set (or, with
``storm_from_first_request``, from the first request after that: a job that starts slowly still meets it).

The other faults come from `draw`, which takes the request's own RNG (seeded from
``seed + fingerprint + attempt``), so a retry of the same body draws afresh and the
whole run is reproducible under one ``--seed``.  The draw order is fixed.

Usage::

    state = FaultState(FaultConfig(capacity_rps=2), clock=fake_clock)
    state.admit()            # None, None, then "capacity_429" within the same second
    d = state.draw(random.Random("0:ab12:0"))
    d.error, d.latency_s, d.truncate
"""

from __future__ import annotations

import random
import time
from collections import deque
from typing import Callable

from emulator.config import FaultConfig

__all__ = ["FaultState", "Draw"]


class Draw:
    """One request's fault draw.  ``error`` is None, "reset", "hang", "error_500" or "error_503"."""

    __slots__ = ("error", "malformed", "stream_drop", "violate", "truncate", "latency_s")

    def __init__(self, error: str | None, malformed: bool, stream_drop: bool, violate: bool, truncate: bool,
                 latency_s: float) -> None:
        self.error = error
        self.malformed = malformed
        self.stream_drop = stream_drop
        self.violate = violate
        self.truncate = truncate
        self.latency_s = latency_s


class FaultState:
    """The live fault settings plus the storm deadline and the capacity window."""

    def __init__(self, config: FaultConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.set(config)

    def set(self, config: FaultConfig) -> None:
        """Replace the settings; a storm starts now (or at the next request); the capacity window starts empty."""
        self.config = config
        self.storm_until = self._clock() + config.storm_429_s if config.storm_429_s > 0 else 0.0
        self._storm_pending = config.storm_429_s > 0 and config.storm_from_first_request
        self._window: deque[float] = deque()
        c = config
        self._cuts = (
            ("reset", c.reset_rate),
            ("hang", c.reset_rate + c.hang_rate),
            ("error_500", c.reset_rate + c.hang_rate + c.error_500_rate),
            ("error_503", c.reset_rate + c.hang_rate + c.error_500_rate + c.error_503_rate),
        )

    def admit(self, share: float = 1.0) -> str | None:
        """None if the request may proceed, else the 429 kind ("storm_429" or "capacity_429").

        ``share`` scales the capacity for this request's tier (flex < 1: throttled sooner; priority > 1); every
        admitted request counts in the one window whatever its tier.
        """
        now = self._clock()
        if self._storm_pending:
            self._storm_pending = False
            self.storm_until = now + self.config.storm_429_s
        if now < self.storm_until:
            return "storm_429"
        limit = self.config.capacity_rps * share
        if limit > 0:
            window = self._window
            cutoff = now - 1.0
            while window and window[0] <= cutoff:
                window.popleft()
            if len(window) >= limit:
                return "capacity_429"
            window.append(now)
        return None

    def draw(self, rng: random.Random) -> Draw:
        """Draw every per-request fault from ``rng`` (always the same number of draws)."""
        c = self.config
        u = rng.random()
        error = next((kind for kind, cut in self._cuts if u < cut), None)
        malformed = rng.random() < c.malformed_rate
        stream_drop = rng.random() < c.stream_drop_rate
        violate = rng.random() < c.schema_violation_rate
        truncate = rng.random() < c.truncate_rate
        jitter = rng.uniform(-c.latency_jitter_ms, c.latency_jitter_ms)
        latency_s = max(0.0, c.latency_ms + jitter) / 1000.0
        return Draw(error, malformed, stream_drop, violate, truncate, latency_s)
