"""Every fault: its status code and body shape as the client sees it, and its trace in the stats."""

from __future__ import annotations

import json
import random
import time

import httpx2
import jsonschema
import openai
import pydantic
import pytest

from emulator import EmulatorConfig, FaultConfig, serve_in_thread
from emulator.faults import FaultState
from tests.emulator._support import AUTH, CHAT, MANAGED, MODEL, PLAIN, user

RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


class City(pydantic.BaseModel):
    name: str
    population: int
    capital: bool


def post(http: httpx2.Client, body, path: str = MANAGED, headers=AUTH) -> httpx2.Response:
    return http.post(path + CHAT, json=body, headers=headers)


def sdk(emu, base: str = MANAGED, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=emu.url + base, api_key="test-token", max_retries=0, **{"timeout": 10, **kwargs})


def vertex_error(response: httpx2.Response) -> dict:
    body = response.json()
    assert isinstance(body, list) and len(body) == 1, body
    return body[0]["error"]


# -- 429: capacity and storm ---------------------------------------------------------------

def test_capacity_rejects_beyond_n_per_second_at_once_with_retry_info(clocked, clocked_http):
    emu, _ = clocked  # the clock stands still: all three requests fall in one capacity window
    emu.set_faults(capacity_rps=2, latency_ms=1000)
    answers = []
    for i in range(3):
        started = time.perf_counter()
        answers.append((post(clocked_http, user(f"request {i}")), time.perf_counter() - started))

    assert [r.status_code for r, _ in answers] == [200, 200, 429]
    # rejected requests skip the latency: a second of margin for a loaded machine
    assert answers[0][1] >= 1.0 and answers[2][1] < 1.0
    error = vertex_error(answers[2][0])
    assert error["code"] == 429 and error["status"] == "RESOURCE_EXHAUSTED"
    assert error["message"].startswith("Resource exhausted. Please try again later.")
    assert error["details"] == [{"@type": RETRY_INFO, "retryDelay": "1s"}]
    stats = emu.stats()
    assert stats["by_status"] == {"200": 2, "429": 1} and stats["faults"] == {"capacity_429": 1}


def test_capacity_window_slides():
    now = [100.0]
    state = FaultState(FaultConfig(capacity_rps=2), clock=lambda: now[0])
    decisions = []
    for t in (100.0, 100.4, 100.9, 101.05, 101.3, 101.45):
        now[0] = t
        decisions.append(state.admit())
    # admitted at 100.0 and 100.4; 100.9 refused; 101.05: 100.0 left the window; 101.3 refused; 101.45: 100.4 left
    assert decisions == [None, None, "capacity_429", None, "capacity_429", None]


def test_retry_info_can_be_switched_off_or_delayed(emu, http):
    emu.set_faults(storm_429_s=5, retry_info=False)
    assert "details" not in vertex_error(post(http, user("a")))
    emu.set_faults(storm_429_s=5, retry_delay_s=2.5)
    assert vertex_error(post(http, user("a")))["details"][0]["retryDelay"] == "2.500s"


def test_plain_route_429_is_an_openai_dict_with_retry_after(emu, http):
    emu.set_faults(storm_429_s=5, retry_delay_s=3)
    response = post(http, user("a"), path=PLAIN)

    assert response.status_code == 429 and response.headers["retry-after"] == "3"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_storm_starts_when_set_and_ends_after_its_window(clocked):
    emu, clock = clocked
    client = sdk(emu)
    emu.set_faults(storm_429_s=0.5)  # steps in binary fractions: the sums are exact
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "during"}])
    clock.advance(0.375)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "still during"}])
    clock.advance(0.125)
    after = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "after"}])

    assert caught.value.status_code == 429
    assert isinstance(caught.value.body, list)  # the SDK leaves Vertex's list alone
    assert caught.value.body[0]["error"]["details"][0]["@type"] == RETRY_INFO
    assert after.choices[0].message.content
    assert emu.stats()["faults"] == {"storm_429": 2}


def test_a_storm_from_the_first_request_waits_for_it(clocked, clocked_http):
    emu, clock = clocked
    emu.set_faults(storm_429_s=0.5, storm_from_first_request=True)
    clock.advance(60)  # a job that takes a minute to start still meets the whole storm
    assert post(clocked_http, user("first")).status_code == 429
    clock.advance(0.375)
    assert post(clocked_http, user("during")).status_code == 429
    clock.advance(0.125)
    assert post(clocked_http, user("after")).status_code == 200
    assert emu.stats()["faults"] == {"storm_429": 2}


def test_a_storm_can_be_ended_early(emu, http):
    emu.set_faults(storm_429_s=600)
    assert post(http, user("during")).status_code == 429
    emu.set_faults({})
    assert post(http, user("after")).status_code == 200


def test_latency_jitter_is_seeded_and_bounded():
    state = FaultState(FaultConfig(latency_ms=200, latency_jitter_ms=50))
    draws = [state.draw(random.Random(f"1:fp:{attempt}")).latency_s for attempt in range(200)]
    again = [state.draw(random.Random(f"1:fp:{attempt}")).latency_s for attempt in range(200)]

    assert draws == again
    assert all(0.15 <= d <= 0.25 for d in draws) and max(draws) - min(draws) > 0.08
    assert abs(sum(draws) / len(draws) - 0.2) < 0.01


# -- 500 / 503 and determinism --------------------------------------------------------------

@pytest.mark.parametrize("key,code,status", [("error_500_rate", 500, "INTERNAL"), ("error_503_rate", 503, "UNAVAILABLE")])
def test_server_errors(emu, http, key, code, status):
    emu.set_faults({key: 1.0})
    response = post(http, user("hello"))

    assert response.status_code == code
    assert vertex_error(response)["status"] == status
    assert emu.stats()["faults"] == {f"error_{code}": 1}


def _statuses(emu, http, n: int = 16) -> list[int]:
    return [post(http, user("the same body every time")).status_code for _ in range(n)]


def test_fault_draws_are_seeded_and_retries_draw_afresh(emu, http):
    emu.set_faults(error_500_rate=0.3, error_503_rate=0.3)
    first = _statuses(emu, http)
    emu.reset()  # forgets attempt counters: the same sequence again
    second = _statuses(emu, http)
    with serve_in_thread(EmulatorConfig(seed=2, faults=FaultConfig(error_500_rate=0.3, error_503_rate=0.3))) as other, \
            httpx2.Client(base_url=other.url) as other_http:
        third = _statuses(other, other_http)

    assert first == second
    assert {200, 500, 503} <= set(first)  # retries of one body get fresh draws
    assert third != first  # another seed, another sequence
    stats = emu.stats()
    [entry] = stats["fingerprints"].values()
    assert entry == {"received": 16, "ok": first.count(200)}


# -- hang, reset, stream drop, malformed ----------------------------------------------------

def test_hang_outlasts_the_client_timeout_and_is_cancelled_on_disconnect(emu):
    emu.set_faults(hang_rate=1.0)
    started = time.perf_counter()
    with pytest.raises(openai.APITimeoutError):
        sdk(emu, timeout=0.3).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert time.perf_counter() - started < 30  # the client's 0.3 s timeout, not the 3600 s hang (a loaded machine)

    deadline = time.time() + 10
    while (stats := emu.stats())["in_flight"] and time.time() < deadline:
        time.sleep(0.02)
    assert stats["in_flight"] == 0 and stats["faults"] == {"hang": 1, "hang_cancelled": 1}
    assert stats["by_status"] == {"499": 1}


def test_a_short_hang_is_answered_late(emu, http):
    emu.set_faults(hang_rate=1.0, hang_s=0.3)
    started = time.perf_counter()
    assert post(http, user("slow")).status_code == 200
    assert time.perf_counter() - started >= 0.3


def test_reset_is_a_connection_error_not_a_500(emu, http):
    emu.set_faults(reset_rate=1.0)
    with pytest.raises(openai.APIConnectionError) as caught:
        sdk(emu).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert not isinstance(caught.value, openai.APIStatusError)
    with pytest.raises(httpx2.TransportError):
        post(http, user("hi again"))

    stats = emu.stats()
    assert stats["faults"] == {"reset": 2} and stats["by_status"] == {}


def test_stream_drop_stops_without_done(emu, http):
    emu.set_faults(stream_drop_rate=1.0)
    received: list[str] = []
    with pytest.raises(httpx2.TransportError):
        with http.stream("POST", MANAGED + CHAT, json=user("a long story", stream=True), headers=AUTH) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                received.append(line)
    with pytest.raises(openai.APIConnectionError):
        for _ in sdk(emu).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True):
            pass

    data = [line for line in received if line.startswith("data: ")]
    assert data and "data: [DONE]" not in data
    stats = emu.stats()
    assert stats["faults"] == {"stream_drop": 2} and stats["ok"] == 0


def test_malformed_body_is_a_truncated_200(emu, http):
    emu.set_faults(malformed_rate=1.0)
    response = post(http, user("hello"))

    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)
    assert emu.stats()["ok"] == 0 and emu.stats()["faults"] == {"malformed": 1}


def test_malformed_stream_has_a_broken_chunk(emu, http):
    emu.set_faults(malformed_rate=1.0)
    response = post(http, user("hello", stream=True))
    chunks = [line[6:] for line in response.text.split("\n\n") if line.startswith("data: ") and line != "data: [DONE]"]

    broken = []
    for chunk in chunks:
        try:
            json.loads(chunk)
        except json.JSONDecodeError:
            broken.append(chunk)
    assert len(broken) == 1


# -- structured output faults ---------------------------------------------------------------

def _schema_request(prompt: str) -> dict:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "population": {"type": "integer"},
                                                "capital": {"type": "boolean"}},
              "required": ["name", "population", "capital"], "additionalProperties": False}
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "City", "strict": True, "schema": schema}}}


def _valid(body: dict, content: str) -> bool:
    try:
        jsonschema.validate(json.loads(content), body["response_format"]["json_schema"]["schema"])
        return True
    except (jsonschema.ValidationError, json.JSONDecodeError):
        return False


def test_schema_violation_then_reask_is_answered_afresh(emu, http):
    emu.set_faults(schema_violation_rate=0.5)
    violated, reasks_valid = 0, 0
    for i in range(30):
        body = _schema_request(f"Describe city number {i}")
        content = post(http, body).json()["choices"][0]["message"]["content"]
        if _valid(body, content):
            continue
        violated += 1
        reask = {**body, "messages": body["messages"] + [
            {"role": "assistant", "content": content},
            {"role": "user", "content": "Your answer failed validation: a required field is missing. Answer again."}]}
        reasks_valid += _valid(reask, post(http, reask).json()["choices"][0]["message"]["content"])

    assert 5 <= violated <= 25
    assert 0 < reasks_valid and reasks_valid >= violated // 3  # each re-ask draws afresh (about half hit again)
    assert emu.stats()["faults"]["schema_violation"] == violated + (violated - reasks_valid)


def test_schema_violation_fails_sdk_parsing(emu):
    emu.set_faults(schema_violation_rate=1.0)
    with pytest.raises(pydantic.ValidationError):
        sdk(emu).chat.completions.parse(model=MODEL, messages=[{"role": "user", "content": "Paris"}], response_format=City)


def test_truncate_gives_finish_reason_length(emu, http):
    normal = post(http, user("Tell me a story")).json()
    emu.set_faults(truncate_rate=1.0)
    cut = post(http, user("Tell me a story")).json()

    assert cut["choices"][0]["finish_reason"] == "length"
    assert normal["choices"][0]["message"]["content"].startswith(cut["choices"][0]["message"]["content"])
    assert cut["usage"]["completion_tokens"] < normal["usage"]["completion_tokens"]
    with pytest.raises(openai.LengthFinishReasonError):
        sdk(emu).chat.completions.parse(model=MODEL, messages=[{"role": "user", "content": "Paris"}], response_format=City)


# -- tokens expire ----------------------------------------------------------------------------

def test_token_expires_after_ttl_and_a_fresh_token_works(clocked, clocked_http):
    emu, clock = clocked
    http = clocked_http
    emu.set_faults(token_ttl_s=0.5)  # steps in binary fractions: the sums are exact
    old = {"authorization": "Bearer token-1"}
    assert post(http, user("a"), headers=old).status_code == 200
    clock.advance(0.375)
    assert post(http, user("a again"), headers=old).status_code == 200
    clock.advance(0.125)
    expired = post(http, user("b"), headers=old)
    fresh = post(http, user("c"), headers={"authorization": "Bearer token-2"})

    assert expired.status_code == 401
    error = vertex_error(expired)
    assert error["status"] == "UNAUTHENTICATED" and error["message"].startswith("Request had invalid authentication")
    assert error["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert error["details"][0]["reason"] == "ACCESS_TOKEN_EXPIRED" and error["details"][0]["domain"] == "googleapis.com"
    assert fresh.status_code == 200
    assert emu.stats()["faults"] == {"token_expired": 1}
    emu.reset()  # forgets first-use times
    assert post(http, user("d"), headers=old).status_code == 200


def test_sdk_with_a_refreshing_api_key_carries_on(clocked):
    emu, clock = clocked
    emu.set_faults(token_ttl_s=0.2)
    issued = []

    def fresh_token() -> str:  # a fresh token when the last one is 0.1 s old, on the emulator's clock
        if not issued or clock() - issued[-1][1] > 0.1:
            issued.append((f"token-{len(issued)}", clock()))
        return issued[-1][0]

    frozen, refreshing = sdk(emu), openai.OpenAI(base_url=emu.url + MANAGED, api_key=fresh_token, max_retries=0)
    frozen.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "1"}])
    refreshing.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "2"}])
    clock.advance(0.25)
    with pytest.raises(openai.AuthenticationError):
        frozen.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "3"}])
    refreshing.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "4"}])
    assert len(issued) >= 2


# -- latency and the faults endpoint ------------------------------------------------------------

def test_latency_is_applied_and_spread_over_a_stream(emu, http):
    emu.set_faults(latency_ms=300)
    started = time.perf_counter()
    post(http, user("plain"))
    plain = time.perf_counter() - started

    started = time.perf_counter()
    with http.stream("POST", MANAGED + CHAT, json=user("streamed", stream=True), headers=AUTH) as response:
        lines = response.iter_lines()
        next(line for line in lines if line.startswith("data: "))
        first = time.perf_counter() - started
        list(lines)
    total = time.perf_counter() - started

    assert plain >= 0.3 and total >= 0.28 and first < total / 2


def test_faults_endpoint_replaces_settings_and_rejects_bad_ones(emu, http):
    assert emu.set_faults(latency_ms=5)["latency_ms"] == 5
    assert emu.set_faults(error_500_rate=0.1)["latency_ms"] == 0  # replaced, not merged
    assert http.post("/emulator/faults", json={"nope": 1}).status_code == 400
    assert http.post("/emulator/faults", json={"error_500_rate": 2}).status_code == 400
    assert http.post("/emulator/faults", json={"reset_rate": 0.6, "hang_rate": 0.6}).status_code == 400
    assert http.post("/emulator/faults", content=b"{").status_code == 400
    assert http.get("/emulator/faults").json()["error_500_rate"] == 0.1
