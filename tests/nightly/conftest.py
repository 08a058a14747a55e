"""Fixtures for the nightly-job tests: anyio on asyncio for the core's async tests, and a ChatCaller wired to a
scripted transport (the same double as tests/unit) with a budget."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from client.config import ClientConfig, Target
from tests.unit.conftest import BASE_URL, FakeClock, Script


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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
