"""create_app in-process, through httpx2.ASGITransport (no sockets, no threads)."""

from __future__ import annotations

import asyncio

import httpx2
import openai

from emulator import EmulatorConfig, FaultConfig, create_app
from tests.emulator._support import AUTH, CHAT, MANAGED, MODEL, user


async def _run(app, body):
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://emulator.test") as client:
        return await client.post(MANAGED + CHAT, json=body, headers=AUTH)


def test_in_process_answers_and_counts():
    app = create_app(EmulatorConfig(seed=3))
    plain = asyncio.run(_run(app, user("in process")))
    streamed = asyncio.run(_run(app, user("in process", stream=True)))

    assert plain.status_code == 200 and "in process" in plain.json()["choices"][0]["message"]["content"]
    assert streamed.text.endswith("data: [DONE]\n\n")
    stats = app.state.emulator.stats.snapshot()
    assert stats["ok"] == 2 and stats["in_flight"] == 0 and stats["by_route"] == {"managed_chat": 2}


def test_in_process_with_the_async_sdk():
    app = create_app(EmulatorConfig(faults=FaultConfig(error_503_rate=1.0)))

    async def call():
        http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app))
        client = openai.AsyncOpenAI(base_url="http://emulator.test" + MANAGED, api_key="t", max_retries=0,
                                    http_client=http)
        try:
            await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        except openai.InternalServerError as exc:
            return exc

    error = asyncio.run(call())
    assert error.status_code == 503 and error.body[0]["error"]["status"] == "UNAVAILABLE"


def test_stdlib_json_fallback_matches_orjson(monkeypatch):
    import importlib
    import sys

    import emulator._json as fast

    value = {"b": [1, 2.5, None, True], "a": {"é": "ü", "z": "x"}}
    expected = b'{"a":{"z":"x","\xc3\xa9":"\xc3\xbc"},"b":[1,2.5,null,true]}'
    try:
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, "orjson", None)  # import orjson -> ImportError
            slow = importlib.reload(fast)
            assert slow.JSONDecodeError is ValueError
            assert slow.canonical(value) == expected and slow.loads(slow.dumps(value)) == value
    finally:
        importlib.reload(fast)  # orjson is back in sys.modules
    assert fast.JSONDecodeError is not ValueError and fast.canonical(value) == expected
