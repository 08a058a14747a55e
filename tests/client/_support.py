"""Shared helpers for the core's tests (import as ``tests.client._support``; tests/client/conftest.py makes the
fixtures visible): a scripted Vertex double behind httpx2.MockTransport, a fake clock, `harness`, `budget_caller`.

Async tests use anyio's pytest plugin (shipped with anyio, a dependency of openai) on the asyncio backend.
Nothing here sleeps or touches the network.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx2
import pytest

from client.config import ClientConfig, Target

BASE_URL = "http://vertex.test/v1/projects/p/locations/us-central1/endpoints/openapi"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def completion(content: str | None = "hello", *, finish: str | None = "stop", model: str = "google/gemini-test",
               usage: dict[str, Any] | None = None, extra_choices: list[str] = ()) -> dict[str, Any]:
    choices = [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}]
    choices += [{"index": i + 1, "message": {"role": "assistant", "content": c}, "finish_reason": "stop"}
                for i, c in enumerate(extra_choices)]
    body = {"id": "c1", "object": "chat.completion", "created": 1, "model": model, "choices": choices}
    body["usage"] = usage if usage is not None else {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    return body


def vertex_error(code: int, status: str, message: str = "boom", retry_delay: str | None = None) -> list[Any]:
    """Vertex's openapi error shape: a JSON list holding one {"error": ...}."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if retry_delay is not None:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}]
    return [{"error": error}]


def sse(*events: dict[str, Any], done: bool = True) -> bytes:
    text = "".join(f"data: {json.dumps(e)}\n\n" for e in events)
    return (text + ("data: [DONE]\n\n" if done else "")).encode()


def chunk(content: str | None = None, *, finish: str | None = None, index: int = 0,
          usage: dict[str, Any] | None = None, choices: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"id": "s1", "object": "chat.completion.chunk", "created": 1, "model": "google/gemini-test",
                            "choices": []}
    if choices:
        delta = {"content": content} if content is not None else {}
        body["choices"] = [{"index": index, "delta": delta, "finish_reason": finish}]
    if usage is not None:
        body["usage"] = usage
    return body


@dataclass
class Script:
    """Answers requests in order from ``steps``: an httpx2.Response, a dict/list (JSON 200 or error), an
    exception instance (raised), or a (sync or async) callable(request) -> Response. The last step repeats."""

    steps: list[Any]
    requests: list[httpx2.Request] = field(default_factory=list)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]

    @property
    def auth_headers(self) -> list[str | None]:
        return [r.headers.get("authorization") for r in self.requests]

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        step = self.steps[min(len(self.requests) - 1, len(self.steps) - 1)]
        if isinstance(step, BaseException):
            raise step
        if callable(step):
            response = step(request)
            return await response if inspect.isawaitable(response) else response
        if isinstance(step, httpx2.Response):
            return step
        return httpx2.Response(200, json=step)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class Harness:
    caller: Any  # ChatCaller
    script: Script
    clock: FakeClock
    tokens: Any  # the token source
    counters: Any  # RunCounters


@pytest.fixture
def harness() -> Callable[..., Harness]:
    """harness(steps, **config_overrides) -> Harness with a ChatCaller wired to a scripted transport."""

    def make(steps: list[Any], *, target: Target | None = None, token_source: Any = None,
             limiter: Any = None, **overrides: Any) -> Harness:
        from client.auth import LocalTokenSource
        from client.caller import ChatCaller
        from client.metrics import RunCounters

        script = Script(list(steps))
        clock = FakeClock()
        tokens = token_source if token_source is not None else LocalTokenSource(clock=clock)
        counters = RunCounters()
        config = ClientConfig(target=target or Target(BASE_URL, "local_tokens"),
                              **{"model": "google/gemini-test", **overrides})
        http = httpx2.AsyncClient(transport=httpx2.MockTransport(script))
        caller = ChatCaller(config, http_client=http, token_source=tokens, limiter=limiter, counters=counters,
                            sleep=clock.sleep, clock=clock)
        return Harness(caller, script, clock, tokens, counters)

    return make


@pytest.fixture
def budget_caller():
    """budget_caller(steps, budget, **config) -> (ChatCaller, Script): a budgeted caller on a scripted transport."""
    from client.auth import LocalTokenSource
    from client.caller import ChatCaller

    def make(steps: list[Any], budget: Any, **overrides: Any):
        script = Script(list(steps))
        clock = FakeClock()
        config = ClientConfig(target=Target(BASE_URL, "local_tokens"), **{"model": "google/gemini-test", **overrides})
        http = httpx2.AsyncClient(transport=httpx2.MockTransport(script))
        caller = ChatCaller(config, http_client=http, token_source=LocalTokenSource(clock=clock), budget=budget,
                            counters=budget.counters, sleep=clock.sleep, clock=clock)
        return caller, script

    return make
