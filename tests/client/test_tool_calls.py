"""Tool calls in the pure core: streamed deltas assembled by index, ToolCall records, argument validation, and the
cut-off rules of parse_completion."""

from __future__ import annotations

import json

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from client.errors import ContentFiltered, SchemaInvalid, Truncated
from client.parsing import StreamAssembler, check_tool_calls, parse_completion, tool_calls_of
from schemas.registry import resolve_schema

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"], "additionalProperties": False}}}
SIG = {"google": {"thought_signature": "c2lnbmF0dXJl"}}


def chunk(delta: dict, finish: str | None = None, index: int = 0) -> ChatCompletionChunk:
    return ChatCompletionChunk.model_validate({
        "id": "s", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}]})


def tool_delta(index: int, *, id: str | None = None, name: str | None = None, arguments: str | None = None,
               **extra) -> dict:
    function = {k: v for k, v in (("name", name), ("arguments", arguments)) if v is not None}
    out = {"index": index, **({"id": id, "type": "function"} if id else {}), "function": function, **extra}
    return {"tool_calls": [out]}


def completion(message: dict, finish: str = "tool_calls") -> ChatCompletion:
    return ChatCompletion.model_validate({
        "id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})


def test_streamed_calls_are_assembled_by_index_with_arguments_split_and_interleaved() -> None:
    assembler = StreamAssembler()
    for delta in [{"role": "assistant", "content": None},
                  tool_delta(0, id="call_a", name="get_weather", arguments="", extra_content=SIG),
                  tool_delta(1, id="call_b", name="get_weather", arguments='{"ci'),
                  tool_delta(0, arguments='{"city": '),
                  tool_delta(1, arguments='ty": "Rome"}'),
                  tool_delta(0, arguments='"Oslo", "days": 2}')]:
        assembler.feed(chunk(delta))
    assembler.feed(chunk({}, finish="tool_calls"))

    parsed = parse_completion(assembler.completion(), tools=[WEATHER])
    a, b = parsed.tool_calls
    assert (a.id, a.function.name, a.function.arguments) == ("call_a", "get_weather", '{"city": "Oslo", "days": 2}')
    assert a.arguments_parsed == {"city": "Oslo", "days": 2} and a.extra_content == SIG
    assert (b.id, b.arguments_parsed, b.extra_content) == ("call_b", {"city": "Rome"}, None)
    assert parsed.finish_reason == "tool_calls" and parsed.content == ""


def test_non_streamed_calls_keep_arguments_text_and_extra_content_untouched() -> None:
    arguments = '{"city":"Oslo" , "days":3}'  # odd spacing: kept byte for byte
    message = {"content": None, "tool_calls": [{"id": "c1", "type": "function", "extra_content": SIG,
                                                "function": {"name": "get_weather", "arguments": arguments}}]}
    [call] = tool_calls_of(completion(message).choices[0].message)
    assert call.function.arguments == arguments and call.arguments_parsed == {"city": "Oslo", "days": 3}
    assert call.extra_content == SIG
    assert call.to_message_dict() == message["tool_calls"][0]  # sendable back as the assistant turn


@pytest.mark.parametrize(("name", "arguments", "complaint"), [
    ("get_weather", '{"days": 2}', "'city' is a required property"),
    ("get_weather", '{"city": "Oslo", "extra": 1}', "Additional properties"),
    ("get_weather", '{"city": "Os', "not valid JSON"),
    ("get_time", '{}', "not a declared function"),
])
def test_arguments_are_validated_against_the_functions_parameters(name, arguments, complaint) -> None:
    message = {"content": None, "tool_calls": [{"id": "c1", "type": "function",
                                                "function": {"name": name, "arguments": arguments}}]}
    with pytest.raises(SchemaInvalid, match=complaint) as info:
        parse_completion(completion(message), tools=[WEATHER])
    assert info.value.tool_calls[0]["function"] == {"name": name, "arguments": arguments}  # for the re-ask
    assert json.loads(info.value.response_text)[0]["function"]["arguments"] == arguments
    check_tool_calls(tool_calls_of(completion({"content": None, "tool_calls": [
        {"id": "ok", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "x"}'}}]})
        .choices[0].message), [WEATHER])  # a valid call passes


def test_cut_off_text_is_kept_only_when_asked_and_never_with_a_schema() -> None:
    cut = completion({"content": "The answer is a long"}, finish="length")
    kept = parse_completion(cut, keep_truncated=True)
    assert (kept.content, kept.finish_reason, kept.usage.total_tokens) == ("The answer is a long", "length", 15)
    with pytest.raises(Truncated) as info:
        parse_completion(cut)
    assert info.value.response_text == "The answer is a long" and info.value.partial.content == kept.content
    with pytest.raises(Truncated) as info:
        parse_completion(completion({"content": '{"name": "x", "da'}, finish="length"),
                         schema=resolve_schema("CalendarEvent"), keep_truncated=True)
    assert info.value.response_text == '{"name": "x", "da'


def test_filtered_answers_keep_their_text() -> None:
    with pytest.raises(ContentFiltered) as info:
        parse_completion(completion({"content": "partial"}, finish="content_filter"))
    assert info.value.response_text == "partial"


def test_structured_output_through_a_forced_call_validates_the_arguments() -> None:
    schema = resolve_schema("Sentiment")
    args = json.dumps({"label": "positive", "confidence": 0.9})
    call = {"id": "c1", "type": "function", "function": {"name": schema.name, "arguments": args}}
    parsed = parse_completion(completion({"content": None, "tool_calls": [call]}), schema=schema,
                              schema_via_tool=True, tools=[schema.tool()])
    assert parsed.parsed == json.loads(args) and parsed.content == args and parsed.tool_calls[0].id == "c1"
    bad = {**call, "function": {"name": schema.name, "arguments": '{"label": 3}'}}
    with pytest.raises(SchemaInvalid) as info:
        parse_completion(completion({"content": None, "tool_calls": [bad]}), schema=schema, schema_via_tool=True,
                         tools=[schema.tool()])
    assert info.value.tool_calls  # re-asked as a tool answer
