"""The 401 refresh as an httpx2 auth flow (client/auth.py TokenAuth), on its own and under a ChatCaller talking to a
real HTTP server on 127.0.0.1 (the production HTTP pool, client/http_pool.py)."""

from __future__ import annotations

import json
import threading

import httpx2
import pytest

from client.auth import EnvKeySource, LocalTokenSource, NoAuth, TokenAuth
from client.caller import ChatCaller
from client.config import ClientConfig, Target
from client.metrics import RunCounters
from schemas.records import ErrorRecord, InputRecord, ResultRecord
from tests.reliability.servers import _headers, completion, misbehaving

pytestmark = pytest.mark.anyio


def first_401_then_ok(failures: int = 1):
    """The first ``failures`` requests are answered 401 (an expired token), the rest 200."""
    seen = {"n": 0}
    lock = threading.Lock()

    def behaviour(handler, body) -> None:
        with lock:
            seen["n"] += 1
            n = seen["n"]
        if n <= failures:
            data = json.dumps({"error": {"code": 401, "status": "UNAUTHENTICATED",
                                         "message": "Request had invalid authentication credentials."}}).encode()
            _headers(handler, 401, content_length=str(len(data)))
        else:
            data = json.dumps(completion("fresh")).encode()
            _headers(handler, 200, content_length=str(len(data)))
        handler.send(data)

    return behaviour


def mock_client(statuses: list[int], auth: httpx2.Auth) -> tuple[httpx2.AsyncClient, list[httpx2.Request]]:
    sent: list[httpx2.Request] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return httpx2.Response(statuses[min(len(sent), len(statuses)) - 1], json={})

    return httpx2.AsyncClient(transport=httpx2.MockTransport(answer), auth=auth), sent


async def test_a_401_refreshes_the_token_once_and_resends() -> None:
    source, refreshes = LocalTokenSource(), []
    client, sent = mock_client([401, 200], TokenAuth(source, on_refresh=lambda: refreshes.append(1)))
    async with client:
        response = await client.post("http://test.invalid/v1/chat/completions", content=b"{}")
    assert response.status_code == 200 and [r.status_code for r in response.history] == [401]
    first, second = (r.headers["authorization"] for r in sent)
    assert first.startswith("Bearer local-") and second.startswith("Bearer local-") and first != second
    assert source.minted == 2 and refreshes == [1]
    assert sent[1].content == b"{}"  # the same body sent again


async def test_a_second_401_is_final_and_no_further_refresh_happens() -> None:
    source = LocalTokenSource()
    client, sent = mock_client([401, 401, 200], TokenAuth(source))
    async with client:
        response = await client.post("http://test.invalid/x", content=b"{}")
    assert response.status_code == 401 and len(sent) == 2 and source.minted == 2


async def test_a_fixed_key_is_not_refreshed_and_no_auth_sends_no_header() -> None:
    client, sent = mock_client([401], TokenAuth(EnvKeySource("K", environ={"K": "sk-fixed-key-123456"})))
    async with client:
        response = await client.post("http://test.invalid/x", content=b"{}")
    assert response.status_code == 401 and len(sent) == 1  # nothing to refresh: the 401 is final
    client, sent = mock_client([200], TokenAuth(NoAuth()))
    async with client:
        await client.post("http://test.invalid/x", content=b"{}", headers={"Authorization": "Bearer sdk-default"})
    assert "authorization" not in sent[0].headers


async def test_caller_recovers_from_an_expired_token_against_a_real_server() -> None:
    source, counters = LocalTokenSource(), RunCounters()
    with misbehaving(first_401_then_ok()) as server:
        config = ClientConfig(target=Target(server.url, "local_tokens"), model="m", max_attempts=1)
        async with ChatCaller(config, token_source=source, counters=counters) as caller:
            out = await caller.complete(InputRecord(id="a", prompt="hi"))
    assert isinstance(out, ResultRecord) and out.content == "fresh"
    assert out.attempts == 2 and server.requests == 2  # the attempts a record reports are the requests sent
    assert server.auth_headers[0] != server.auth_headers[1] and source.minted == 2
    assert counters.snapshot()["auth_refreshes"] == 1


async def test_caller_reports_a_401_that_survives_the_refresh_without_the_token() -> None:
    source = LocalTokenSource()
    with misbehaving(first_401_then_ok(failures=10)) as server:
        config = ClientConfig(target=Target(server.url, "local_tokens"), model="m", max_attempts=3)
        async with ChatCaller(config, token_source=source) as caller:
            out = await caller.complete(InputRecord(id="a", prompt="hi"))
    assert isinstance(out, ErrorRecord) and out.error_type == "auth_error" and not out.retryable
    assert server.requests == 2 and out.attempts == 2 and source.minted == 2  # one refresh, then final
    dumped = out.model_dump_json()
    assert all(h.partition(" ")[2] not in dumped for h in server.auth_headers)
