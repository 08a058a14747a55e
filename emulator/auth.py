"""Bearer-token checks: Vertex's OAuth tokens (with expiry) and the plain route's API key.

Each distinct token is accepted for ``ttl_s`` seconds from its first use, then answers
401 UNAUTHENTICATED with reason ACCESS_TOKEN_EXPIRED; ``ttl_s == 0`` never expires.
Tokens are kept only as sha256 digests and never logged.

Usage::

    clock = TokenClock()
    clock.check("Bearer abc", ttl_s=3600)      # None (accepted), or an ApiError
    check_api_key("Bearer k1", expected="k1")  # None
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Callable

from emulator.errors import ApiError, token_expired, unauthenticated

__all__ = ["TokenClock", "check_api_key", "bearer"]


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class TokenClock:
    """First-use times of Vertex bearer tokens."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._first_use: dict[bytes, float] = {}

    def reset(self) -> None:
        self._first_use.clear()

    def check(self, header: str | None, ttl_s: float) -> ApiError | None:
        token = bearer(header)
        if token is None:
            return unauthenticated()
        if ttl_s <= 0:
            return None
        key = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        first = self._first_use.setdefault(key, now)
        return token_expired() if now - first >= ttl_s else None


def check_api_key(header: str | None, expected: str | None) -> ApiError | None:
    """None when no key is configured or the header carries it; else a 401."""
    if expected is None:
        return None
    token = bearer(header)
    if token is not None and hmac.compare_digest(token.encode(), expected.encode()):
        return None
    return ApiError(401, "UNAUTHENTICATED", "Incorrect API key provided.")
