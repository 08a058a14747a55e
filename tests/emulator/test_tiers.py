"""Service tiers on the emulator: Vertex's tier headers select flex / priority; flex is slower and throttled sooner;
the stats count requests, 429s and tokens per tier."""

from __future__ import annotations

import time

import pytest

from emulator.config import FaultConfig
from emulator.errors import ApiError
from emulator.faults import FaultState
from emulator.tiers import tier_of
from tests.emulator._support import AUTH, CHAT, user

GLOBAL = "/v1/projects/p/locations/global/endpoints/openapi"
REGIONAL = "/v1/projects/p/locations/us-central1/endpoints/openapi"
FLEX = {**AUTH, "X-Vertex-AI-LLM-Request-Type": "shared", "X-Vertex-AI-LLM-Shared-Request-Type": "flex"}
PRIORITY = {**AUTH, "X-Vertex-AI-LLM-Shared-Request-Type": "priority"}


@pytest.mark.parametrize("headers, location, tier", [
    ({}, "us-central1", "standard"),
    ({"X-Vertex-AI-LLM-Request-Type": "shared"}, "us-central1", "standard"),
    ({"X-Vertex-AI-LLM-Request-Type": "dedicated"}, "us-central1", "standard"),
    ({"x-vertex-ai-llm-request-type": "shared", "x-vertex-ai-llm-shared-request-type": "flex"}, "global", "flex"),
    ({"x-vertex-ai-llm-shared-request-type": "flex"}, "global", "flex"),  # PT first, then flex
    ({"x-vertex-ai-llm-shared-request-type": "Priority"}, "global", "priority"),
])
def test_tier_of_reads_vertex_headers(headers, location, tier):
    assert tier_of({k.lower(): v for k, v in headers.items()}, location=location) == tier


@pytest.mark.parametrize("headers, location, needle", [
    ({"x-vertex-ai-llm-shared-request-type": "flex"}, "us-central1", "only available on the global endpoint"),
    ({"x-vertex-ai-llm-shared-request-type": "cheap"}, "global", "Shared-Request-Type"),
    ({"x-vertex-ai-llm-request-type": "spot"}, "global", "X-Vertex-AI-LLM-Request-Type"),
    ({"x-vertex-ai-llm-request-type": "dedicated", "x-vertex-ai-llm-shared-request-type": "flex"}, "global",
     "dedicated"),
])
def test_bad_tier_headers_are_400(headers, location, needle):
    with pytest.raises(ApiError) as err:
        tier_of(headers, location=location)
    assert err.value.code == 400 and needle in err.value.message


def test_flex_is_answered_and_counted_per_tier(emu, http):
    answers = [http.post(GLOBAL + CHAT, json=user(f"q{i}"), headers=h) for i, h in
               enumerate((FLEX, FLEX, PRIORITY, AUTH))]
    assert [a.status_code for a in answers] == [200] * 4
    by_tier = emu.stats(fingerprints=False)["by_tier"]
    assert by_tier["flex"]["requests"] == by_tier["flex"]["ok"] == 2
    assert by_tier["priority"]["ok"] == by_tier["standard"]["ok"] == 1
    flex_prompt = sum(a.json()["usage"]["prompt_tokens"] for a in answers[:2])
    assert by_tier["flex"]["prompt_tokens"] == flex_prompt
    assert by_tier["flex"]["completion_tokens"] == sum(a.json()["usage"]["completion_tokens"] for a in answers[:2])


def test_flex_outside_global_is_refused_and_the_plain_route_ignores_tier_headers(emu, http):
    refused = http.post(REGIONAL + CHAT, json=user("q"), headers=FLEX)
    assert refused.status_code == 400 and "global endpoint" in refused.json()[0]["error"]["message"]
    assert http.post("/v1" + CHAT, json=user("q"), headers=FLEX).status_code == 200
    emu.set_faults(flex_global_only=False)
    assert http.post(REGIONAL + CHAT, json=user("q"), headers=FLEX).status_code == 200


def test_flex_is_slower(emu, http):
    emu.set_faults(latency_ms=100, flex_latency_factor=4)
    started = time.perf_counter()
    assert http.post(GLOBAL + CHAT, json=user("slow"), headers=FLEX).status_code == 200
    assert time.perf_counter() - started >= 0.4  # 100 ms x 4 (a lower bound: never flaky on a loaded box)


def test_flex_is_throttled_sooner_and_priority_later():
    now = [10.0]
    state = FaultState(FaultConfig(capacity_rps=4, flex_capacity_share=0.5, priority_capacity_share=1.5),
                       clock=lambda: now[0])
    flex = [state.admit(0.5) for _ in range(3)]          # 2 of the pool's 4 for flex
    standard = [state.admit(1.0) for _ in range(3)]      # the pool fills at 4
    priority = [state.admit(1.5) for _ in range(3)]      # priority goes on to 6
    assert flex == [None, None, "capacity_429"]
    assert standard == [None, None, "capacity_429"]
    assert priority == [None, None, "capacity_429"]


def test_flex_429_rate_throttles_flex_only(emu, http):
    emu.set_faults(flex_429_rate=1.0)
    flex = http.post(GLOBAL + CHAT, json=user("q"), headers=FLEX)
    standard = http.post(GLOBAL + CHAT, json=user("q"), headers=AUTH)
    assert flex.status_code == 429 and flex.json()[0]["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert standard.status_code == 200
    stats = emu.stats(fingerprints=False)
    assert stats["by_tier"]["flex"] == {"requests": 1, "throttled": 1, "ok": 0, "prompt_tokens": 0,
                                        "completion_tokens": 0, "reasoning_tokens": 0}
    assert stats["faults"] == {"flex_429": 1}
