"""Round trip through the emulator: each example record sent online (chat route) and as its native translation
(``:generateContent``, the format of batch lines) parses to the same content, thoughts and ``parsed``."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest
from openai.types.chat import ChatCompletion

from client.config import ClientConfig, Target
from client.estimate import render_body
from client.native_request import to_native
from client.native_response import to_completion
from client.parsing import parse_completion
from client.requests import build_request
from emulator import EmulatorConfig, serve_in_thread
from schemas.records import InputRecord, parse_line

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "prompts.jsonl"
AUTH = {"authorization": "Bearer t"}
CONFIG = ClientConfig(target=Target.managed("p"), model="google/gemini-2.0-flash-001")
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}}


def _records() -> list[InputRecord]:
    records = [r for r in map(parse_line, EXAMPLES.read_text().splitlines()) if isinstance(r, InputRecord)]
    records.append(InputRecord(id="tool", prompt="Weather in Oslo for 3 days",
                               params={"tools": [TOOL], "tool_choice": "required"}))
    records.append(InputRecord(id="effort", prompt="Plan a trip", model="google/gemini-2.5-flash",
                               params={"reasoning_effort": "high"}, schema="CalendarEvent"))
    return records


@pytest.fixture(scope="module")
def http():
    with serve_in_thread(EmulatorConfig(seed=5)) as emu, httpx2.Client(base_url=emu.url, timeout=10) as client:
        yield client


@pytest.mark.parametrize("record", _records(), ids=lambda r: r.id)
def test_online_and_native_give_the_same_answer(http, record):
    request = build_request(record, CONFIG)
    online = http.post("/v1/projects/p/locations/us-central1/endpoints/openapi/chat/completions",
                       json=render_body(request), headers=AUTH)
    model_id = request.model.removeprefix("google/")
    native = http.post(f"/v1/projects/p/locations/us-central1/publishers/google/models/{model_id}:generateContent",
                       json=to_native(request, labels={"chatbeam_key": "k"}), headers=AUTH)
    assert online.status_code == native.status_code == 200, (online.text, native.text)

    a = parse_completion(ChatCompletion.model_validate(online.json()), schema=request.schema,
                         thought_marker=request.thought_marker)
    completion, traffic = to_completion(native.json(), model=request.model)
    b = parse_completion(completion, schema=request.schema)
    assert (b.content, b.parsed, b.finish_reason, b.alternatives) == (a.content, a.parsed, a.finish_reason,
                                                                      a.alternatives)
    assert b.usage.completion_tokens == a.usage.completion_tokens
    assert b.usage.reasoning_tokens == a.usage.reasoning_tokens
    if a.thoughts is not None:  # shown online only with a thought_tag_marker; natively always as thought parts
        assert b.thoughts == a.thoughts
    if record.id == "tool":
        online_call = online.json()["choices"][0]["message"]["tool_calls"][0]["function"]
        native_call = completion.choices[0].message.tool_calls[0].function
        assert native_call.name == online_call["name"]
        assert json.loads(native_call.arguments) == json.loads(online_call["arguments"])
    assert traffic == "ON_DEMAND"
