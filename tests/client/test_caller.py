"""ChatCaller end to end against a scripted Vertex double (httpx2.MockTransport): retries, 401 refresh, streaming,
re-asks, error records, the limiter seam, counters. No real sleeps: the fake clock's sleep records and advances."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any, AsyncIterator

import httpx2
import pytest

from client.auth import EnvKeySource, NoAuth
from client.config import Target
from client.metrics import RunCounters
from client.tiers import tier_headers
from schemas.records import ErrorRecord, InputRecord, ResultRecord
from tests.client._support import chunk, completion, sse, vertex_error

pytestmark = pytest.mark.anyio

EVENT = {"name": "Standup", "date": "2024-05-01", "participants": ["Ana", "Bo"]}


def rec(**kw: Any) -> InputRecord:
    return InputRecord.model_validate({"id": "r1", "prompt": "Say hi", "metadata": {"row": 7}, **kw})


def error(code: int, status: str, message: str = "boom", retry_delay: str | None = None, **kw) -> httpx2.Response:
    return httpx2.Response(code, json=vertex_error(code, status, message, retry_delay), **kw)


def stream_response(body: bytes) -> httpx2.Response:
    return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})


class BrokenStream(httpx2.AsyncByteStream):
    """A 200 stream that sends ``first`` and then loses the connection."""

    def __init__(self, first: bytes) -> None:
        self.first = first

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.first
        raise httpx2.ReadError("connection reset by peer")


class RecordingLimiter:
    def __init__(self) -> None:
        self.acquired: list[int] = []
        self.done: list[tuple[str, int | None]] = []

    async def acquire(self, est_tokens: int) -> "RecordingLimiter._Permit":
        self.acquired.append(est_tokens)
        return self._Permit(self)

    class _Permit:
        def __init__(self, owner: "RecordingLimiter") -> None:
            self.owner = owner

        def done(self, outcome: str, tokens_used: int | None = None) -> None:
            self.owner.done.append((outcome, tokens_used))


# ------------------------------------------------------------------------------------------ success & retries

async def test_success_result_record(harness) -> None:
    h = harness([completion("Hi!", model="google/gemini-2.5-flash-001")])
    out = await h.caller.complete(rec())
    assert isinstance(out, ResultRecord)
    assert (out.id, out.content, out.finish_reason, out.attempts) == ("r1", "Hi!", "stop", 1)
    assert out.model == "google/gemini-2.5-flash-001"  # what the server reported
    assert out.metadata == {"row": 7} and len(out.request_key) == 32
    assert h.script.bodies[0]["messages"] == [{"role": "user", "content": "Say hi"}]
    assert h.script.auth_headers[0].startswith("Bearer local-")


async def test_the_request_carries_the_headers_httpx2_would_add(harness) -> None:
    # The request is built from per-tier headers and a body stream (ChatCaller._new_request): it must still say
    # what httpx2.Request(content=...) says, and be resendable (its content is loaded).
    h = harness([completion("Hi!")], service_tier="flex")
    await h.caller.complete(rec())
    sent = h.script.requests[0]
    expected = httpx2.Request("POST", sent.url, content=sent.content,
                              headers={"Accept": "application/json", "Content-Type": "application/json"})
    for name in ("host", "content-length", "accept", "content-type"):
        assert sent.headers.get_list(name) == expected.headers.get_list(name), name
    assert json.loads(sent.content)["messages"] == [{"role": "user", "content": "Say hi"}]
    assert sent.headers["authorization"].startswith("Bearer local-")
    for name, value in tier_headers("flex").items():  # the tier's headers, once
        assert sent.headers.get_list(name) == [value]


async def test_a_compressed_answer_is_decoded(harness) -> None:
    # chatbeam asks for identity encoding; a server that compresses anyway is still read (the plain body is read
    # straight from the stream, an encoded one through httpx2's decoder).
    body = gzip.compress(json.dumps(completion("Hi, zipped!")).encode())
    h = harness([httpx2.Response(200, content=body, headers={"Content-Encoding": "gzip",
                                                              "Content-Type": "application/json"})])
    out = await h.caller.complete(rec())
    assert isinstance(out, ResultRecord) and out.content == "Hi, zipped!"


async def test_429_with_retry_info_waits_at_least_the_delay(harness) -> None:
    h = harness([error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", retry_delay="39s"), completion("ok")],
                max_retry_delay=1)
    out = await h.caller.complete(rec())
    assert isinstance(out, ResultRecord) and out.attempts == 2
    assert len(h.clock.sleeps) == 1 and h.clock.sleeps[0] >= 39
    assert out.latency_ms >= 39_000  # wall time of the record, on the injected clock
    snap = h.counters.snapshot()
    assert snap["status_429"] == 1 and snap["retries"] == 1 and snap["throttled"] == 1 and snap["attempts"] == 2
    assert snap["backoff_ms"] >= 39_000 and isinstance(snap["backoff_ms"], int)


@pytest.mark.parametrize("first", [error(500, "INTERNAL"), error(503, "UNAVAILABLE"), error(504, "DEADLINE_EXCEEDED"),
                                   httpx2.ReadTimeout("slow"), httpx2.ConnectError("refused"),
                                   httpx2.Response(200, content=b"{broken", headers={"content-type": "application/json"}),
                                   httpx2.Response(200, text="<html>proxy</html>", headers={"content-type": "text/html"}),
                                   httpx2.Response(200, json={"id": "x", "choices": []})],
                         ids=["500", "503", "504", "timeout", "connect", "bad-json", "html", "no-choices"])
async def test_transient_failures_are_retried(harness, first) -> None:
    h = harness([first, completion("ok")])
    out = await h.caller.complete(rec())
    assert isinstance(out, ResultRecord) and out.content == "ok" and out.attempts == 2
    assert len(h.script.requests) == 2


async def test_400_is_not_retried(harness) -> None:
    h = harness([error(400, "INVALID_ARGUMENT", "Invalid JSON payload: unknown field 'foo'"), completion("never")])
    out = await h.caller.complete(rec())
    assert isinstance(out, ErrorRecord)
    assert len(h.script.requests) == 1 and h.clock.sleeps == []
    assert (out.stage, out.error_type, out.status_code, out.status) == ("request", "bad_request", 400,
                                                                        "INVALID_ARGUMENT")
    assert "unknown field 'foo'" in out.message
    assert (out.retryable, out.attempts, out.metadata) == (False, 1, {"row": 7})
    assert out.record == rec().to_json_dict() and out.request_key


async def test_persistent_timeouts_use_all_attempts(harness) -> None:
    h = harness([httpx2.ReadTimeout("slow")], max_attempts=4)
    out = await h.caller.complete(rec())
    assert isinstance(out, ErrorRecord) and out.error_type == "timeout" and out.retryable
    assert out.attempts == 4 and len(h.script.requests) == 4 and len(h.clock.sleeps) == 3


async def test_record_deadline_stops_retrying(harness) -> None:
    h = harness([error(429, "RESOURCE_EXHAUSTED", retry_delay="100s")], max_attempts=50, record_deadline_s=250)
    out = await h.caller.complete(rec())
    assert isinstance(out, ErrorRecord) and out.error_type == "rate_limited" and out.status_code == 429
    assert out.retryable and out.attempts == 3  # t=0, 100, 200; the next sleep would pass 250 s


# ------------------------------------------------------------------------------------------ auth

async def test_401_forces_one_refresh_and_repeats_the_attempt(harness) -> None:
    h = harness([error(401, "UNAUTHENTICATED", "ACCESS_TOKEN_EXPIRED"), completion("ok")])
    out = await h.caller.complete(rec())
    assert isinstance(out, ResultRecord) and out.attempts == 2
    first, second = h.script.auth_headers
    assert first != second  # the handler saw a fresh token
    assert h.counters.get("auth_refreshes") == 1 and h.counters.get("retries") == 0 and h.clock.sleeps == []


async def test_second_401_is_a_permanent_auth_error(harness) -> None:
    h = harness([error(401, "UNAUTHENTICATED", "ACCESS_TOKEN_EXPIRED")])
    out = await h.caller.complete(rec())
    assert isinstance(out, ErrorRecord)
    assert (out.error_type, out.status_code, out.retryable) == ("auth_error", 401, False)
    assert len(h.script.requests) == 2


async def test_token_is_fetched_on_every_attempt(harness) -> None:
    # Tokens live 5 s on the fake clock; the server asks for 10 s between attempts, so each attempt needs a new one.
    h = harness([error(503, "UNAVAILABLE", retry_delay="10s")] * 2 + [completion("ok")], max_retry_delay=0.01)
    h.tokens.lifetime_s = 5
    out = await h.caller.complete(rec())
    assert isinstance(out, ResultRecord)
    assert len(set(h.script.auth_headers)) == 3


async def test_concurrent_401s_with_one_expired_token_refresh_it_once(harness) -> None:
    first_token: list[str] = []
    all_arrived = asyncio.Event()

    async def server(request: httpx2.Request) -> httpx2.Response:
        token = request.headers["authorization"]
        first_token.append(token)
        if token != first_token[0]:
            return httpx2.Response(200, json=completion("ok"))
        if len(first_token) == 5:
            all_arrived.set()
        await all_arrived.wait()  # all five are in flight with the same token before any 401 is answered
        return error(401, "UNAUTHENTICATED", "ACCESS_TOKEN_EXPIRED")

    h = harness([server])
    outs = await asyncio.gather(*(h.caller.complete(rec(id=str(i))) for i in range(5)))
    assert all(isinstance(o, ResultRecord) for o in outs)
    assert h.tokens.minted == 2 and len(h.script.requests) == 10


async def test_api_key_and_no_auth_headers(harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_LLM_KEY", "key-abcdefgh")
    target = Target.openai_compatible("http://llm.test/v1", "TEST_LLM_KEY")
    h = harness([completion("ok")], target=target, token_source=EnvKeySource("TEST_LLM_KEY"))
    await h.caller.complete(rec())
    assert h.script.auth_headers == ["Bearer key-abcdefgh"]
    h = harness([completion("ok")], target=Target.openai_compatible("http://llm.test/v1"), token_source=NoAuth())
    assert isinstance(await h.caller.complete(rec()), ResultRecord)
    assert h.script.auth_headers == [None]


async def test_tokens_never_reach_error_messages(harness) -> None:
    def echo(request: httpx2.Request) -> httpx2.Response:
        header = request.headers["authorization"]
        return error(401, "UNAUTHENTICATED", f"rejected {header}; raw token {header.split()[1]}")

    h = harness([echo])
    out = await h.caller.complete(rec())
    assert isinstance(out, ErrorRecord) and "rejected" in out.message
    for header in h.script.auth_headers:
        token = header.split()[1]
        assert token not in out.model_dump_json()


# ------------------------------------------------------------------------------------------ request body

async def test_json_body_has_double_nested_google_and_top_level_unknown_params(harness) -> None:
    h = harness([completion("ok")], google={"thinking_config": {"thinking_budget": 512}})
    await h.caller.complete(rec(params={"temperature": 0, "top_k": 4},
                                google={"thinking_config": {"include_thoughts": True}}))
    body = h.script.bodies[0]
    assert body["extra_body"] == {"google": {"thinking_config": {"thinking_budget": 512, "include_thoughts": True}}}
    assert body["top_k"] == 4 and body["temperature"] == 0 and body["model"] == "google/gemini-test"
    assert "google" not in body


async def test_bad_records_fail_before_any_request(harness) -> None:
    h = harness([completion("never")])
    out = await h.caller.complete(rec(params={"reasoning_effort": "low"}, google={"thinking_config": {}}))
    assert isinstance(out, ErrorRecord) and out.error_type == "bad_request" and out.attempts == 0
    out = await h.caller.complete(InputRecord(id="m", messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": "../../etc/passwd"}]}]))
    assert isinstance(out, ErrorRecord) and out.error_type == "media_error" and out.stage == "request"
    assert h.script.requests == []


# ------------------------------------------------------------------------------------------ streaming

async def test_streaming_with_thought_tags_split_across_chunks(harness) -> None:
    usage = {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21,
             "completion_tokens_details": {"reasoning_tokens": 8}, "prompt_tokens_details": {"cached_tokens": 4}}
    body = sse(chunk("<thi"), chunk("nk>adding up</th"), chunk("ink>The answer"), chunk(" is 4.", finish="stop"),
               chunk(choices=False, usage=usage))
    h = harness([stream_response(body)], stream=True, google={"thought_tag_marker": "think"})
    out = await h.caller.complete(rec())
    assert isinstance(out, ResultRecord)
    assert (out.content, out.thoughts) == ("The answer is 4.", "adding up")
    assert out.usage.model_dump() == {"prompt_tokens": 9, "completion_tokens": 12, "reasoning_tokens": 8,
                                      "cached_tokens": 4, "total_tokens": 21}
    sent = h.script.bodies[0]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    snap = h.counters.snapshot()
    assert (snap["tokens_reasoning"], snap["tokens_cached"], snap["tokens_total"]) == (8, 4, 21)


async def test_a_stream_that_breaks_midway_is_retried_whole(harness) -> None:
    broken = httpx2.Response(200, headers={"content-type": "text/event-stream"},
                             stream=BrokenStream(sse(chunk("Hel"), done=False)))
    cut_short = stream_response(sse(chunk("Hel"), done=False))  # closed cleanly, but no finish_reason
    h = harness([broken, cut_short, stream_response(sse(chunk("Hello"), chunk(finish="stop")))], stream=True)
    out = await h.caller.complete(rec())
    assert isinstance(out, ResultRecord) and out.content == "Hello" and out.attempts == 3
    assert h.counters.get("retries") == 2


async def test_a_stream_that_keeps_breaking_is_a_stream_broken_error(harness) -> None:
    h = harness([stream_response(sse(chunk("Hel"), done=False))], stream=True, max_attempts=2)
    out = await h.caller.complete(rec())
    assert isinstance(out, ErrorRecord)
    assert (out.error_type, out.stage, out.retryable, out.attempts) == ("stream_broken", "response", True, 2)


async def test_streamed_error_status_is_mapped(harness) -> None:
    h = harness([error(429, "RESOURCE_EXHAUSTED", retry_delay="2s"), stream_response(sse(chunk("ok", finish="stop")))],
                stream=True)
    out = await h.caller.complete(rec())
    assert isinstance(out, ResultRecord) and h.clock.sleeps[0] >= 2


# ------------------------------------------------------------------------------------------ response problems

@pytest.mark.parametrize(("finish", "error_type", "on_truncation"),
                         [("length", "truncated", "error"), ("content_filter", "content_filtered", "result")])
async def test_truncated_and_filtered_are_permanent(harness, finish: str, error_type: str, on_truncation: str) -> None:
    h = harness([completion("cut off he", finish=finish)], on_truncation=on_truncation)
    out = await h.caller.complete(rec())
    assert isinstance(out, ErrorRecord)
    assert (out.error_type, out.stage, out.retryable, out.attempts) == (error_type, "response", False, 1)
    # What the model answered and what it cost are kept on the error record.
    assert out.response_text == "cut off he"
    assert out.usage is not None and out.usage.total_tokens == 7


async def test_schema_invalid_answer_is_reasked_with_the_error(harness) -> None:
    h = harness([completion('{"name": "Standup"}'), completion(json.dumps(EVENT))], schema="CalendarEvent")
    out = await h.caller.complete(rec(prompt="Extract the event"))
    assert isinstance(out, ResultRecord) and out.parsed == EVENT and out.attempts == 2
    first, second = h.script.bodies
    assert first["response_format"]["type"] == "json_schema"
    assert second["messages"][:1] == first["messages"]
    assert second["messages"][1] == {"role": "assistant", "content": '{"name": "Standup"}'}
    reask = second["messages"][2]
    assert reask["role"] == "user" and "did not match the JSON schema" in reask["content"]
    assert "date" in reask["content"]  # the validator's complaint is passed on
    assert out.usage.total_tokens == 14  # both answers were paid for
    assert h.counters.get("reasks") == 1 and h.counters.get("parse_failures") == 1


async def test_schema_invalid_after_all_reasks_is_a_validate_error(harness) -> None:
    h = harness([completion("not json")], schema="CalendarEvent", max_reasks=2)
    out = await h.caller.complete(rec())
    assert isinstance(out, ErrorRecord)
    assert (out.stage, out.error_type, out.response_text, out.attempts) == ("validate", "schema_validation",
                                                                            "not json", 3)
    assert not out.retryable


async def test_alternatives_from_n_choices(harness) -> None:
    h = harness([completion("a", extra_choices=["b", "c"])])
    out = await h.caller.complete(rec(params={"n": 3}))
    assert out.content == "a" and out.alternatives == ["b", "c"] and h.script.bodies[0]["n"] == 3


# ------------------------------------------------------------------------------------------ limiter & counters

async def test_limiter_gets_a_permit_per_attempt_and_each_outcome(harness) -> None:
    limiter = RecordingLimiter()
    h = harness([error(429, "RESOURCE_EXHAUSTED"), error(500, "INTERNAL"), completion("ok")], limiter=limiter)
    await h.caller.complete(rec())
    assert len(limiter.acquired) == 3 and all(n > 0 for n in limiter.acquired)
    assert limiter.done == [("throttled", None), ("error", None), ("ok", 7)]


async def test_a_bug_still_yields_one_error_record(harness) -> None:
    class BrokenLimiter:
        async def acquire(self, est_tokens: int):
            raise RuntimeError("limiter bug")

    h = harness([completion("ok")], limiter=BrokenLimiter())
    out = await h.caller.complete(rec())
    assert isinstance(out, ErrorRecord) and out.error_type == "internal_error" and "limiter bug" in out.message
    assert out.retryable  # a bug is worth a rerun once fixed: the same answer as the DoFn's crash path


async def test_counters_and_deltas(harness) -> None:
    h = harness([completion("ok")])
    before = h.counters.snapshot()
    await h.caller.complete(rec())
    await h.caller.complete(rec(id="r2", schema="NoSuchSchema"))
    delta = h.counters.delta_since(before)
    assert delta["requests"] == 2 and delta["results"] == 1 and delta["errors"] == 1
    assert delta["error_unknown_schema"] == 1 and delta["status_200"] == 1 and delta["tokens_total"] == 7
    assert h.counters.delta_since(h.counters.snapshot()) == {}


def test_counters_survive_pickling() -> None:
    import pickle

    counters = RunCounters()
    counters.inc("attempts", 3)
    assert pickle.loads(pickle.dumps(counters)).snapshot() == {"attempts": 3}
