"""Function calling through the official openai SDK: parallel calls, ``tool_choice: "auto"`` answering with a call
when the prompt names a function, streamed calls whose arguments are split over many deltas (assembled by the SDK's
own stream accumulator), thought signatures, and the violation fault on arguments."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from tests.emulator._support import MANAGED, MODEL, PLAIN

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string", "enum": ["C", "F"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Local time in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "hour24": {"type": "boolean"}},
                   "required": ["city", "hour24"]}}}
TOOLS = [WEATHER, TIME]
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


@pytest.fixture(params=["managed", "plain"])
def client(request: pytest.FixtureRequest, emu) -> openai.OpenAI:
    base = MANAGED if request.param == "managed" else PLAIN
    return openai.OpenAI(base_url=emu.url + base, api_key="test-token", max_retries=0, timeout=10)


def ask(client: openai.OpenAI, prompt: str, **kwargs):
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompt}], **kwargs)


def check_calls(calls, names: list[str]) -> None:
    assert [c.function.name for c in calls] == names
    assert len({c.id for c in calls}) == len(calls)
    for call in calls:
        jsonschema.validate(json.loads(call.function.arguments), PARAMS[call.function.name])


def test_auto_calls_the_function_the_prompt_names_and_answers_text_otherwise(client):
    called = ask(client, "Use get_weather for Oslo please", tools=TOOLS, tool_choice="auto")
    plain = ask(client, "What is the weather like in Oslo?", tools=TOOLS, tool_choice="auto")
    no_choice = ask(client, "Call get time for Lima", tools=TOOLS)  # no tool_choice means auto; spaces for _

    assert called.choices[0].finish_reason == "tool_calls" and called.choices[0].message.content is None
    check_calls(called.choices[0].message.tool_calls, ["get_weather"])
    assert plain.choices[0].finish_reason == "stop" and plain.choices[0].message.tool_calls is None
    check_calls(no_choice.choices[0].message.tool_calls, ["get_time"])


def test_parallel_calls_one_per_named_function_unless_turned_off(client):
    both = ask(client, "Call get_time and get_weather for Rome", tools=TOOLS, tool_choice="required")
    one = ask(client, "Call get_time and get_weather for Rome", tools=TOOLS, tool_choice="required",
              parallel_tool_calls=False)
    unnamed = ask(client, "Anything for Rome", tools=TOOLS, tool_choice="required")
    none = ask(client, "Call get_weather for Rome", tools=TOOLS, tool_choice="none")

    check_calls(both.choices[0].message.tool_calls, ["get_time", "get_weather"])  # in the order the prompt names
    check_calls(one.choices[0].message.tool_calls, ["get_time"])
    check_calls(unnamed.choices[0].message.tool_calls, ["get_weather"])  # required, nothing named: the first
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content


def test_streamed_parallel_calls_are_split_over_many_deltas_and_the_sdk_assembles_them(client):
    whole = ask(client, "Call get_weather and get_time for Paris", tools=TOOLS, tool_choice="required")
    chunks = list(ask(client, "Call get_weather and get_time for Paris", tools=TOOLS, tool_choice="required",
                      stream=True, stream_options={"include_usage": True}))
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    with client.chat.completions.stream(model=MODEL, messages=[{"role": "user", "content":
                                        "Call get_weather and get_time for Paris"}],
                                        tools=TOOLS, tool_choice="required") as stream:
        final = stream.get_final_completion()

    per_call = {i: [d for d in deltas if d.index == i] for i in (0, 1)}
    assert all(len(ds) > 2 for ds in per_call.values())  # a head, then the arguments in several pieces
    assert all(ds[0].id and ds[0].function.name and not any(d.id for d in ds[1:]) for ds in per_call.values())
    expected = [(c.id, c.function.name, c.function.arguments) for c in whole.choices[0].message.tool_calls]
    assembled = [(c.id, c.function.name, c.function.arguments) for c in final.choices[0].message.tool_calls]
    assert assembled == expected and final.choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_thinking_calls_carry_a_thought_signature_streamed_too(emu):
    client = openai.OpenAI(base_url=emu.url + MANAGED, api_key="t", max_retries=0, timeout=10)
    think = {"extra_body": {"google": {"thinking_config": {"thinking_budget": 64}}}}
    whole = ask(client, "Call get_weather for Oslo", tools=TOOLS, tool_choice="required", extra_body=think)
    chunks = list(ask(client, "Call get_weather for Oslo", tools=TOOLS, tool_choice="required", extra_body=think,
                      stream=True))
    [call] = whole.choices[0].message.tool_calls
    head = next(d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or [])
    assert call.model_extra["extra_content"]["google"]["thought_signature"]
    assert head.model_extra["extra_content"] == call.model_extra["extra_content"]


def test_after_a_tool_answer_auto_gives_the_final_text(client):
    first = ask(client, "Call get_weather for Oslo", tools=TOOLS)
    [call] = first.choices[0].message.tool_calls
    messages = [{"role": "user", "content": "Call get_weather for Oslo"},
                {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
                {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21, "unit": "C"}'}]
    final = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
    assert final.choices[0].finish_reason == "stop" and final.choices[0].message.content


def test_the_violation_fault_breaks_tool_arguments(emu, client):
    emu.set_faults(schema_violation_rate=1.0)
    answer = ask(client, "Call get_weather for Oslo", tools=TOOLS, tool_choice="required")
    [call] = answer.choices[0].message.tool_calls
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(call.function.arguments), PARAMS["get_weather"])
    assert emu.stats()["faults"]["schema_violation"] == 1
