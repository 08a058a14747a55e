"""Connection-level tricks: abort a connection (reset), wait for a client disconnect.

uvicorn's ``send`` callable is a bound method of its per-request cycle, which holds the
asyncio transport; `EmulatorApp` stores that raw ``send`` in the scope under
``"emulator.send"`` so a handler can abort the connection with an RST (``SO_LINGER`` 0):
the client sees a connection error, not a 500.  Without a transport (in-process ASGI
tests) `abort_connection` raises `ConnectionResetError` instead.

Usage::

    response = await abort_connection(request.scope)        # returns NoResponse()
    gone = await wait_disconnect(request.receive, 3600.0)   # True if the client left first
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any, Awaitable, Callable

from starlette.responses import Response

__all__ = ["NoResponse", "abort_connection", "wait_disconnect", "SEND_KEY"]

SEND_KEY = "emulator.send"


class NoResponse(Response):
    """A response that sends nothing (the connection is gone)."""

    def __init__(self) -> None:
        super().__init__(b"", 200)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        return None


def _transport(scope: dict[str, Any]) -> Any:
    send = scope.get(SEND_KEY)
    cycle = getattr(send, "__self__", None)
    return getattr(cycle, "transport", None)


async def abort_connection(scope: dict[str, Any]) -> Response:
    """Reset the client's TCP connection (RST) and return a `NoResponse`."""
    transport = _transport(scope)
    if transport is None:
        raise ConnectionResetError("emulated connection reset (no transport to abort)")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except (OSError, AttributeError):
            pass
    transport.abort()
    for _ in range(3):  # let connection_lost run, so uvicorn knows the client is gone
        await asyncio.sleep(0)
    return NoResponse()


async def wait_disconnect(receive: Callable[[], Awaitable[dict[str, Any]]], timeout_s: float) -> bool:
    """Sleep up to ``timeout_s``; return True early if the client disconnects."""

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait_for(asyncio.shield(watcher), timeout_s)
        return True
    except asyncio.TimeoutError:
        return False
    finally:
        watcher.cancel()
