"""The results contract in ChatCaller (scripted transport, fake clock): tool calls in results (plain and streamed),
run-default tools, argument re-asks, structured output through a forced call, cut-off answers under each
--on_truncation mode, usage and response_text on error records, internal_error, records naming schemas."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest

import client.caller as caller_module
from client.constants import TRUNCATION_RETRY_MAX_TOKENS
from schemas.records import ErrorRecord, InputRecord, ResultRecord
from tests.client._support import completion, sse

pytestmark = pytest.mark.anyio

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
    "additionalProperties": False}}}
SIG = {"google": {"thought_signature": "c2ln"}}
USAGE = {"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26}


def rec(**kw: Any) -> InputRecord:
    return InputRecord.model_validate({"id": "r1", "prompt": "Call get_weather for Oslo", **kw})


def calls_body(*arguments: str, name: str = "get_weather", finish: str = "tool_calls") -> dict[str, Any]:
    calls = [{"id": f"call_{i}", "type": "function", "extra_content": SIG,
              "function": {"name": name, "arguments": a}} for i, a in enumerate(arguments)]
    return {"id": "c1", "object": "chat.completion", "created": 1, "model": "google/gemini-test",
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": None, "tool_calls": calls}}],
            "usage": USAGE}


def tool_chunks(arguments: str) -> bytes:
    base = {"id": "s1", "object": "chat.completion.chunk", "created": 1, "model": "google/gemini-test"}
    head = {"index": 0, "id": "call_0", "type": "function", "extra_content": SIG,
            "function": {"name": "get_weather", "arguments": ""}}
    deltas = [{"role": "assistant", "content": None, "tool_calls": [head]}]
    deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": arguments[i:i + 3]}}]}
               for i in range(0, len(arguments), 3)]
    events = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    events.append({**base, "choices": [], "usage": USAGE})
    return sse(*events)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_forced_tool_call_is_the_result(harness, stream: bool) -> None:
    args = '{"city": "Oslo"}'
    step = (httpx2.Response(200, content=tool_chunks(args), headers={"content-type": "text/event-stream"})
            if stream else calls_body(args))
    h = harness([step], stream=stream)
    out = await h.caller.complete(rec(params={"tools": [WEATHER], "tool_choice": "required"}))
    assert isinstance(out, ResultRecord) and out.finish_reason == "tool_calls"
    [call] = out.tool_calls
    assert (call.id, call.function.name, call.function.arguments) == ("call_0", "get_weather", args)
    assert call.arguments_parsed == {"city": "Oslo"} and call.extra_content == SIG
    assert out.usage.total_tokens == 26
    body = h.script.bodies[0]
    assert body["tools"] == [WEATHER] and body["tool_choice"] == "required"


async def test_run_default_tools_and_a_records_params_override_them(harness) -> None:
    h = harness([calls_body('{"city": "Oslo"}')], tools=(WEATHER,), tool_choice="auto")
    await h.caller.complete(rec())
    await h.caller.complete(rec(params={"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}))
    first, second = h.script.bodies
    assert (first["tools"], first["tool_choice"]) == ([WEATHER], "auto")
    assert second["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


async def test_bad_arguments_are_reasked_as_tool_answers_then_kept_as_an_error(harness) -> None:
    h = harness([calls_body('{"town": "Oslo"}'), calls_body('{"city": "Oslo"}')])
    out = await h.caller.complete(rec(params={"tools": [WEATHER], "tool_choice": "required"}))
    assert isinstance(out, ResultRecord) and out.tool_calls[0].arguments_parsed == {"city": "Oslo"}
    reask = h.script.bodies[1]["messages"]
    assert reask[1] == {"role": "assistant", "content": None, "tool_calls": calls_body('{"town": "Oslo"}')[
        "choices"][0]["message"]["tool_calls"]}  # sent back with its extra_content, untouched
    assert reask[2]["role"] == "tool" and reask[2]["tool_call_id"] == "call_0"
    assert "'city' is a required property" in reask[2]["content"]
    assert out.usage.total_tokens == 52  # both answers were paid for

    h = harness([calls_body('{"town": "Oslo"}')], max_reasks=0)
    err = await h.caller.complete(rec(params={"tools": [WEATHER], "tool_choice": "required"}))
    assert isinstance(err, ErrorRecord) and (err.error_type, err.stage) == ("schema_validation", "validate")
    assert json.loads(err.response_text)[0]["function"]["arguments"] == '{"town": "Oslo"}'
    assert err.usage is not None and err.usage.total_tokens == 26


async def test_structured_output_through_a_forced_function_call(harness) -> None:
    answer = json.dumps({"label": "negative", "confidence": 0.25})
    h = harness([calls_body(answer, name="Sentiment")], structured_output="tool")
    out = await h.caller.complete(rec(prompt="I hated it", schema="Sentiment"))
    assert isinstance(out, ResultRecord) and out.parsed == {"label": "negative", "confidence": 0.25}
    assert out.content == answer
    body = h.script.bodies[0]
    assert "response_format" not in body
    assert body["tool_choice"] == "required" and len(body["tools"]) == 1  # the schema's function, forced
    assert body["tools"][0]["function"]["name"] == "Sentiment"
    assert body["tools"][0]["function"]["parameters"]["properties"]["label"]["enum"] == [
        "positive", "negative", "neutral"]


CUT = completion("Once upon a time there", finish="length", usage=USAGE)


async def test_cut_off_answers_are_results_with_their_text_by_default(harness) -> None:
    h = harness([CUT])
    out = await h.caller.complete(rec(params={"max_tokens": 6}))
    assert isinstance(out, ResultRecord)
    assert (out.content, out.finish_reason, out.usage.total_tokens) == ("Once upon a time there", "length", 26)
    assert h.counters.snapshot()["results_truncated"] == 1 and len(h.script.requests) == 1


async def test_on_truncation_error_keeps_text_and_usage(harness) -> None:
    h = harness([CUT], on_truncation="error")
    out = await h.caller.complete(rec(params={"max_tokens": 6}))
    assert isinstance(out, ErrorRecord) and (out.error_type, out.retryable) == ("truncated", False)
    assert out.response_text == "Once upon a time there" and out.usage.total_tokens == 26


@pytest.mark.parametrize(("params", "sent"), [
    ({"max_tokens": 6}, {"max_tokens": 12}),
    ({"max_completion_tokens": 6}, {"max_completion_tokens": 12}),
    ({}, {"max_tokens": 12}),  # no limit set: twice what the cut answer used (6 completion tokens)
    ({"max_tokens": 6000}, {"max_tokens": TRUNCATION_RETRY_MAX_TOKENS}),  # doubled, but capped
])
async def test_on_truncation_retry_doubles_the_limit_once(harness, params, sent) -> None:
    h = harness([CUT, completion("Once upon a time there was a fox.", usage=USAGE)], on_truncation="retry")
    out = await h.caller.complete(rec(params=params))
    assert isinstance(out, ResultRecord) and out.finish_reason == "stop"
    assert out.content == "Once upon a time there was a fox." and out.attempts == 2
    assert out.usage.total_tokens == 52
    first, second = h.script.bodies
    assert {k: second[k] for k in sent} == sent
    assert out.request_key == (await harness([CUT]).caller.complete(rec(params=params))).request_key


async def test_on_truncation_retry_keeps_the_second_cut_answer_and_stops_at_the_cap(harness) -> None:
    h = harness([CUT, CUT], on_truncation="retry")
    out = await h.caller.complete(rec(params={"max_tokens": 6}))
    assert isinstance(out, ResultRecord) and out.finish_reason == "length" and len(h.script.requests) == 2
    h = harness([CUT], on_truncation="retry")
    out = await h.caller.complete(rec(params={"max_tokens": TRUNCATION_RETRY_MAX_TOKENS}))
    assert isinstance(out, ResultRecord) and out.finish_reason == "length" and len(h.script.requests) == 1


@pytest.mark.parametrize("policy", ["result", "retry"])
async def test_with_a_schema_a_cut_off_answer_is_an_error_keeping_its_text(harness, policy) -> None:
    cut = completion('{"name": "Stand', finish="length", usage=USAGE)
    h = harness([cut, cut], on_truncation=policy)
    out = await h.caller.complete(rec(schema="CalendarEvent", params={"max_tokens": 6}))
    assert isinstance(out, ErrorRecord) and out.error_type == "truncated"
    assert out.response_text == '{"name": "Stand' and out.usage.total_tokens == 26 * len(h.script.requests)
    assert len(h.script.requests) == (2 if policy == "retry" else 1)


async def test_internal_errors_are_retryable_error_records(harness, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(caller_module, "parse_completion", boom)
    h = harness([completion("hi", usage=USAGE)])
    out = await h.caller.complete(rec())
    assert isinstance(out, ErrorRecord) and (out.error_type, out.retryable) == ("internal_error", True)
    assert out.record["prompt"] == "Call get_weather for Oslo"

    from transforms.call import crash_to_error  # the DoFn's crash path builds the same record

    crashed = crash_to_error(rec(), RuntimeError("engine died"))
    assert (crashed.error_type, crashed.retryable, crashed.stage) == ("internal_error", True, "request")


@pytest.mark.parametrize("name", ["os:system", "tests.client.nothing:Model", "/etc/passwd", "schemas/x.json"])
async def test_a_record_naming_code_or_a_file_as_schema_is_unknown_schema_and_nothing_is_sent(harness, name) -> None:
    h = harness([completion("hi")])
    out = await h.caller.complete(rec(schema=name))
    assert isinstance(out, ErrorRecord) and (out.error_type, out.stage, out.retryable) == (
        "unknown_schema", "request", False)
    assert out.attempts == 0 and h.script.requests == []


async def test_multi_turn_function_calling_messages_round_trip_unchanged(harness) -> None:
    messages = [
        {"role": "user", "content": "Call get_weather for Oslo"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_0", "type": "function", "extra_content": SIG,
             "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": '{"temp_c": 21}', "extra_content": SIG},
    ]
    h = harness([completion("It is 21 degrees in Oslo.")])
    out = await h.caller.complete(InputRecord.model_validate({"id": "m", "messages": messages,
                                                              "params": {"tools": [WEATHER]}}))
    assert isinstance(out, ResultRecord) and out.content == "It is 21 degrees in Oslo." and out.tool_calls is None
    assert h.script.bodies[0]["messages"] == messages


async def test_an_answer_that_was_reasked_is_kept_when_the_reask_then_fails(harness) -> None:
    server_error = httpx2.Response(500, json=[{"error": {"code": 500, "message": "boom", "status": "INTERNAL"}}])
    h = harness([completion('{"name": "Standup"}', usage=USAGE), server_error], max_attempts=1)
    out = await h.caller.complete(rec(schema="CalendarEvent"))
    assert isinstance(out, ErrorRecord) and out.error_type == "server_error" and out.retryable
    assert out.response_text == '{"name": "Standup"}' and out.usage.total_tokens == 26
