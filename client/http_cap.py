"""``--max_response_bytes``: stop reading an answer once it is larger than the cap, streamed or not.

    cap_responses(http_client, max_bytes=8 << 20)   # installs two event hooks on an httpx2.AsyncClient

The cap is enforced where the bytes arrive, below the openai SDK, so an oversized answer is never held whole: a
``Content-Length`` over the cap fails before the body is read; otherwise the response stream is counted as it is
read, and the read stops (the connection is closed) at the first chunk past the cap. Either way the attempt raises
``ResponseTooLarge`` (error_type ``response_too_large``, not retried: the same request would bring the same answer).

Bytes are counted as received. Requests ask for ``Accept-Encoding: identity`` so that this is the size of the
answer itself; a server that compresses anyway is capped on its compressed bytes.

Why event hooks and not a transport: hooks work on any client, including one a test or a caller passes in, and
httpx runs the response hooks before it reads the body (and closes the response if a hook raises).
"""

from __future__ import annotations

from typing import AsyncIterator

import httpx2

from client.errors import ResponseTooLarge

__all__ = ["cap_responses"]


def _too_large(limit: int, seen: str) -> ResponseTooLarge:
    return ResponseTooLarge(f"the response is larger than --max_response_bytes {limit:,} ({seen}); it was not read "
                            "further (raise --max_response_bytes if such answers are expected)")


class _CappedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise _too_large(self._limit, f"more than {self._limit:,} bytes received")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def cap_responses(client: httpx2.AsyncClient, max_bytes: int) -> None:
    """Cap every response body ``client`` reads at ``max_bytes`` (see the module docstring)."""

    async def identity_encoding(request: httpx2.Request) -> None:
        request.headers["Accept-Encoding"] = "identity"

    async def cap(response: httpx2.Response) -> None:
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_bytes:
            raise _too_large(max_bytes, f"Content-Length {int(length):,}")
        response.stream = _CappedStream(response.stream, max_bytes)

    hooks = client.event_hooks
    client.event_hooks = {"request": [*hooks["request"], identity_encoding],
                          "response": [*hooks["response"], cap]}
