"""client/http_pool.py: aiohttp's pool under httpx2 reports failures the way httpcore2 did, so records get the same
error types; with a proxy in the environment httpx2's own pool (which honours it) is used."""

from __future__ import annotations

import json
import socket

import httpx2
import pytest

from client.caller import ChatCaller
from client.config import ClientConfig, Target
from client.http_pool import _PoolTransport, new_http_client
from schemas.records import ErrorRecord, InputRecord, ResultRecord
from tests.reliability.servers import _headers, completion, misbehaving

pytestmark = pytest.mark.anyio


def cut_mid_body(handler, body) -> None:
    """Promises 10,000 bytes, sends 20, closes the connection."""
    _headers(handler, 200, content_length="10000")
    handler.send(b'{"id": "c1", "object"')


def ok(handler, body) -> None:
    data = json.dumps(completion("pooled")).encode()
    _headers(handler, 200, content_length=str(len(data)))
    handler.send(data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def one(url: str, **kw) -> ResultRecord | ErrorRecord:
    config = ClientConfig(target=Target(url, "none"), model="m", max_attempts=1, **kw)
    async with ChatCaller(config) as caller:
        assert isinstance(caller._http._transport, _PoolTransport)  # the production pool, not a test double
        return await caller.complete(InputRecord(id="a", prompt="hi"))


async def test_an_answer_through_the_pool() -> None:
    with misbehaving(ok) as server:
        out = await one(server.url)
    assert isinstance(out, ResultRecord) and out.content == "pooled"
    assert server.auth_headers == [""]  # auth "none": no Authorization header at all


async def test_a_refused_connection_is_a_connection_error() -> None:
    out = await one(f"http://127.0.0.1:{free_port()}/v1")
    assert isinstance(out, ErrorRecord) and (out.error_type, out.retryable) == ("connection_error", True)


async def test_an_answer_cut_off_mid_body_is_a_retryable_connection_error_not_a_timeout() -> None:
    with misbehaving(cut_mid_body) as server:
        out = await one(server.url)
    assert isinstance(out, ErrorRecord) and (out.error_type, out.retryable) == ("connection_error", True)


def test_a_proxy_in_the_environment_keeps_httpx2s_own_pool(monkeypatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    client = new_http_client(4, httpx2.Timeout(5))
    assert not isinstance(client._transport, _PoolTransport)
    monkeypatch.delenv("HTTPS_PROXY")
    for name in ("https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(new_http_client(4, httpx2.Timeout(5))._transport, _PoolTransport)
