"""Bounded load: concurrent requests under latency are all in flight at once, and none is served twice."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlsplit

import pytest

from tests.emulator._support import CHAT, MANAGED, MODEL

pytestmark = [pytest.mark.load, pytest.mark.timeout(60)]


async def _post(host: str, port: int, body: bytes, stream: bool) -> int:
    """One request on its own connection; returns the status (and checks a stream ends with [DONE])."""
    reader, writer = await asyncio.open_connection(host, port)
    head = (f"POST {MANAGED}{CHAT} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer load\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    writer.write(head.encode() + body)
    data = await reader.read(-1)
    writer.close()
    if stream:  # chunked: the last event, then the terminating zero-length chunk
        assert b"data: [DONE]\n\n" in data and data.endswith(b"\r\n0\r\n\r\n"), data[-200:]
    return int(data.split(b" ", 2)[1])


async def _burst(url: str, n: int, stream: bool) -> list[int]:
    parts = urlsplit(url)
    bodies = [json.dumps({"model": MODEL, "stream": stream,
                          "messages": [{"role": "user", "content": f"load request {i}"}]}).encode() for i in range(n)]
    return await asyncio.gather(*(_post(parts.hostname, parts.port, b, stream) for b in bodies))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_concurrent_requests_are_in_flight_together(emu, stream):
    # 3 s of latency: all 300 requests arrive while the first still waits, even on a loaded 2-core machine
    emu.set_faults(latency_ms=3000)
    started = time.perf_counter()
    statuses = asyncio.run(_burst(emu.url, 300, stream))
    elapsed = time.perf_counter() - started

    stats = emu.stats(fingerprints=False)
    assert statuses == [200] * 300
    assert stats["max_in_flight"] >= 250, stats
    assert stats["ok"] == 300 and stats["duplicate_ok"] == 0 and stats["unique_fingerprints"] == 300
    assert elapsed < 45  # 300 x 3 s served concurrently, not one after another (900 s); generous for a loaded box
