"""The HTTP client a ChatCaller sends with: httpx2 (what the openai SDK speaks) over an aiohttp connection pool.

    client = new_http_client(max_connections=64, timeout=httpx2.Timeout(120, connect=10))

Why aiohttp under httpx2: at zero latency httpcore2's pool (pure-Python HTTP/1.1 over anyio, which re-checks every
idle connection on each request) was half of chatbeam's CPU per record; aiohttp's pool and C parser cost a fraction
of it (docs/hotpath.md). The transport is the one the openai SDK ships for this (``openai.DefaultAioHttpClient``,
``openai._vendor.httpx_aiohttp``); everything above it — the SDK, the auth flow, the response-size hooks, httpx2's
exceptions — is unchanged. What this module adds is the error mapping: the SDK's transport reports a dropped
connection as a *connect timeout*; here each aiohttp failure becomes the httpx2 error httpcore2 raised for it
(refused → ConnectError, reset or closed mid-answer → ReadError/RemoteProtocolError, read timeout → ReadTimeout),
so client/errors.py translates them as before (connection_error, stream_broken, timeout).

With a proxy configured in the environment (``HTTPS_PROXY`` ...) httpx2's own pool is used: it honours them, the
aiohttp transport does not.
"""

from __future__ import annotations

import urllib.request
from typing import AsyncIterator

import aiohttp
import httpx2
from openai._vendor.httpx_aiohttp import AiohttpTransport
from openai._vendor.httpx_aiohttp.transport import AiohttpResponseStream

__all__ = ["new_http_client"]

KEEPALIVE_EXPIRY_S = 4.0


def new_http_client(max_connections: int, timeout: httpx2.Timeout) -> httpx2.AsyncClient:
    """An AsyncClient with at most ``max_connections`` connections. Idle connections are dropped after 4 s: servers
    close idle ones (llama-server after 5 s), and a request sent on a connection the server is closing fails with
    "disconnected without a response"."""
    limits = httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections,
                           keepalive_expiry=KEEPALIVE_EXPIRY_S)
    if _proxied():
        return httpx2.AsyncClient(limits=limits, timeout=timeout)
    return httpx2.AsyncClient(transport=_PoolTransport(limits=limits), timeout=timeout)


def _proxied() -> bool:
    return any(k in ("http", "https", "all") for k in urllib.request.getproxies())


def _mapped(exc: BaseException) -> httpx2.TransportError | None:
    """The httpx2 error for an aiohttp one (raised by aiohttp itself or already mapped by the SDK's transport)."""
    cause = exc.__cause__ if isinstance(exc, httpx2.TransportError) else exc
    if not isinstance(cause, aiohttp.ClientError):
        return None
    message = f"{type(cause).__name__}: {cause}"
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        return httpx2.ConnectTimeout(message)
    if isinstance(cause, aiohttp.ServerTimeoutError):  # includes SocketTimeoutError (a read)
        return httpx2.ReadTimeout(message)
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx2.ConnectError(message)
    if isinstance(cause, (aiohttp.ServerDisconnectedError, aiohttp.ClientResponseError)):
        return httpx2.RemoteProtocolError(message)
    return httpx2.ReadError(message)  # reset, incomplete body, other connection errors


class _PoolTransport(AiohttpTransport):
    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            response = await super().handle_async_request(request)
        except (httpx2.TransportError, aiohttp.ClientError) as exc:
            mapped = _mapped(exc)
            if mapped is None:
                raise
            raise mapped from exc
        stream = response.stream
        # The body is read from aiohttp's response directly (one stream layer, not two, on every read).
        aiohttp_response = getattr(stream, "_aiohttp_response", None) if isinstance(stream, AiohttpResponseStream) \
            else None
        response.stream = _MappedStream(stream if aiohttp_response is None else aiohttp_response.content,
                                        aiohttp_response)
        return response


class _MappedStream(httpx2.AsyncByteStream):
    """The body with aiohttp's errors mapped (``_mapped``): read from aiohttp's ``StreamReader`` directly when the
    transport's response is at hand, otherwise from the SDK transport's own stream."""

    CHUNK_SIZE = AiohttpResponseStream.CHUNK_SIZE

    def __init__(self, inner: httpx2.AsyncByteStream | aiohttp.StreamReader,
                 aiohttp_response: aiohttp.ClientResponse | None = None) -> None:
        self._inner = inner
        self._aiohttp_response = aiohttp_response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        inner = self._inner
        chunks = inner.iter_chunked(self.CHUNK_SIZE) if isinstance(inner, aiohttp.StreamReader) else inner
        try:
            async for chunk in chunks:
                yield chunk
        except (httpx2.TransportError, aiohttp.ClientError) as exc:
            mapped = _mapped(exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        if self._aiohttp_response is None:
            await self._inner.aclose()
            return
        try:
            await self._aiohttp_response.__aexit__(None, None, None)
        except aiohttp.ClientError as exc:
            mapped = _mapped(exc)
            if mapped is None:
                raise
            raise mapped from exc
