"""--max_response_bytes (client/http_cap.py): an oversized answer, streamed or not, is cut off where the bytes
arrive and becomes a ``response_too_large`` error; it is never read whole."""

from __future__ import annotations

import json
from typing import AsyncIterator

import httpx2
import pytest

from schemas.records import ErrorRecord, ResultRecord
from tests.client._support import chunk, completion
from tests.client.test_deadlines import complete

pytestmark = pytest.mark.anyio

CAP = 64 * 1024


class Endless(httpx2.AsyncByteStream):
    """An endless body of ``piece``s; counts what was read."""

    def __init__(self, piece: bytes, first: bytes = b"") -> None:
        self.piece, self.first, self.pieces = piece, first, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.first:
            yield self.first
        while True:
            self.pieces += 1
            yield self.piece


async def test_a_declared_oversized_body_is_refused_before_it_is_read(harness):
    big = json.dumps(completion("x" * (CAP * 2))).encode()
    h = harness([httpx2.Response(200, content=big, headers={"content-type": "application/json"})],
                max_response_bytes=CAP)
    out = await complete(h)
    assert isinstance(out, ErrorRecord)
    assert (out.error_type, out.stage, out.retryable, out.attempts) == ("response_too_large", "response", False, 1)
    assert "--max_response_bytes 65,536" in out.message and len(h.script.requests) == 1  # not retried


async def test_an_endless_chunked_body_stops_at_the_cap(harness):
    body = Endless(b" " * 1024, first=b'{"id": "c1", "choices": [')
    h = harness([lambda request: httpx2.Response(200, stream=body, headers={"content-type": "application/json"})],
                max_response_bytes=CAP)
    out = await complete(h)
    assert isinstance(out, ErrorRecord) and out.error_type == "response_too_large"
    assert body.pieces <= CAP // 1024 + 1  # read up to the cap, not one piece more


async def test_an_oversized_stream_stops_at_the_cap(harness):
    piece = f"data: {json.dumps(chunk('y' * 1000))}\n\n".encode()
    body = Endless(piece)
    h = harness([lambda request: httpx2.Response(200, stream=body, headers={"content-type": "text/event-stream"})],
                max_response_bytes=CAP, stream=True)
    out = await complete(h)
    assert isinstance(out, ErrorRecord) and out.error_type == "response_too_large" and out.attempts == 1
    assert body.pieces * len(piece) <= CAP + len(piece)


async def test_answers_under_the_cap_pass_and_ask_for_no_compression(harness):
    h = harness([completion("z" * 1000)], max_response_bytes=CAP)
    out = await complete(h)
    assert isinstance(out, ResultRecord) and out.content == "z" * 1000
    assert h.script.requests[0].headers["accept-encoding"] == "identity"
