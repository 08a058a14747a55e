"""Answer shapes on the wire: SSE framing, split thought tags, n choices, tool calls, stop, JSON after thoughts."""

from __future__ import annotations

import json

import jsonschema

from tests.emulator._support import AUTH, CHAT, MANAGED, MODEL, user

THINK = {"extra_body": {"google": {"thinking_config": {"include_thoughts": True}, "thought_tag_marker": "think"}}}
CITY = {"type": "object", "properties": {"city": {"type": "string"}, "rank": {"type": "integer", "minimum": 1}},
        "required": ["city", "rank"], "additionalProperties": False}
CITY_FORMAT = {"type": "json_schema", "json_schema": {"name": "City", "strict": True, "schema": CITY}}
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
    "required": ["city", "unit"], "additionalProperties": False}}}


def events(http, body) -> list:
    response = http.post(MANAGED + CHAT, json=body, headers=AUTH)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("data: [DONE]\n\n")
    frames = response.text.split("\n\n")
    assert frames[-1] == "" and all(f.startswith("data: ") for f in frames[:-1])
    return [json.loads(f[6:]) for f in frames[:-2]]  # without [DONE]


def test_stream_framing_and_split_thought_tags(http):
    chunks = events(http, user("Why do cats purr?", stream=True, **THINK))
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    text = "".join(p for p in pieces if p)

    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["choices"][0]["delta"] == {}
    assert text.startswith("<think>") and "</think>" in text
    assert "<think>" not in pieces and not any(p and "<think>" in p for p in pieces)  # the opening tag is split
    assert not any(p and "</think>" in p for p in pieces)  # so is the closing tag
    assert "usage" not in chunks[-1]  # no include_usage, no usage chunk


def test_stream_with_n_choices(http):
    chunks = events(http, user("Pick a number", stream=True, n=2, stream_options={"include_usage": True}))
    by_index: dict[int, str] = {0: "", 1: ""}
    for chunk in chunks[:-1]:
        choice = chunk["choices"][0]
        by_index[choice["index"]] += choice["delta"].get("content") or ""
    whole = http.post(MANAGED + CHAT, json=user("Pick a number", n=2), headers=AUTH).json()

    assert [by_index[0], by_index[1]] == [c["message"]["content"] for c in whole["choices"]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


def test_structured_output_after_the_thought(http):
    answer = http.post(MANAGED + CHAT, json=user("Biggest city in Japan?", response_format=CITY_FORMAT, **THINK),
                       headers=AUTH).json()
    content = answer["choices"][0]["message"]["content"]

    assert content.startswith("<think>")
    value = json.loads(content.split("</think>", 1)[1])
    jsonschema.validate(value, CITY)
    assert set(value["city"].split()) <= {"Biggest", "city", "in", "Japan"}  # words of the prompt


def test_json_object_mode(http):
    answer = http.post(MANAGED + CHAT, json=user("List fruit: apple pear", response_format={"type": "json_object"}),
                       headers=AUTH).json()
    value = json.loads(answer["choices"][0]["message"]["content"])
    assert isinstance(value, dict) and "apple" in value["keywords"]


def test_required_tool_call_has_valid_arguments(http):
    body = user("Weather in Oslo?", tools=[WEATHER_TOOL], tool_choice="required")
    answer = http.post(MANAGED + CHAT, json=body, headers=AUTH).json()
    choice = answer["choices"][0]
    [call] = choice["message"]["tool_calls"]

    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert call["type"] == "function" and call["function"]["name"] == "get_weather" and call["id"].startswith("call_")
    jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER_TOOL["function"]["parameters"])
    assert "extra_content" not in call


def test_tool_call_with_thinking_carries_a_thought_signature_and_streams(http):
    body = user("Weather in Oslo?", tools=[WEATHER_TOOL],
                tool_choice={"type": "function", "function": {"name": "get_weather"}},
                extra_body={"google": {"thinking_config": {"thinking_budget": 64}}})
    call = http.post(MANAGED + CHAT, json=body, headers=AUTH).json()["choices"][0]["message"]["tool_calls"][0]
    chunks = events(http, {**body, "stream": True})

    assert call["extra_content"]["google"]["thought_signature"]
    deltas = [d for c in chunks if c["choices"] for d in c["choices"][0]["delta"].get("tool_calls", [])]
    head = deltas[0]
    assert (head["index"], head["id"], head["function"]["name"]) == (0, call["id"], "get_weather")
    assert head["extra_content"] == call["extra_content"]
    assert len(deltas) > 2  # the arguments arrive in several pieces, as real servers send them
    assert "".join(d["function"].get("arguments", "") for d in deltas) == call["function"]["arguments"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_auto_tool_choice_answers_in_text(http):
    answer = http.post(MANAGED + CHAT, json=user("Weather in Oslo?", tools=[WEATHER_TOOL]), headers=AUTH).json()
    assert "Oslo" in answer["choices"][0]["message"]["content"]


def test_stop_sequences_cut_the_answer(http):
    answer = http.post(MANAGED + CHAT, json=user("Capital of Peru", stop=["Peru"]), headers=AUTH).json()
    assert answer["choices"][0]["message"]["content"] == "Emulated answer about: Capital of "
    assert answer["choices"][0]["finish_reason"] == "stop"


def test_assistant_turns_with_tool_calls_and_extra_content_are_accepted(http, emu):
    body = {"model": MODEL, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Weather?", "extra_content": {"google": {"x": 1}}}]},
        {"role": "assistant", "content": None, "extra_content": {"google": {"y": 2}}, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"},
             "extra_content": {"google": {"thought_signature": "abc"}}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12 C"},
    ]}
    assert http.post(MANAGED + CHAT, json=body, headers=AUTH).status_code == 200
    assert emu.stats()["extra_content"] == {"messages": 1, "parts": 1, "tool_calls": 1}
