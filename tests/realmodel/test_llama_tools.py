"""Function calling and structured output through a forced function call, against a real OpenAI-compatible server
(llama-server ``--jinja`` serving SmolLM2-135M): what the emulator stands in for, checked on the real thing.

Asserted is structure, not wording: every id once; each result's tool calls name a declared function and their
arguments parse and validate against its ``parameters``; ``--structured_output tool`` results validate against the
JSON-schema file. Figures go to the terminal summary (see tests/realmodel/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import openai
import pytest

from tests.realmodel.conftest import API_KEY

pytestmark = [pytest.mark.realmodel, pytest.mark.e2e, pytest.mark.timeout(900)]

HERE = Path(__file__).resolve().parent
SCHEMA_PATH = HERE / "person.schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text())
PEOPLE = [json.loads(line) for line in (HERE / "people.jsonl").read_text().splitlines() if line.strip()]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                   "required": ["city"], "additionalProperties": False}}}
CITIES = ["Paris", "Oslo", "Lima", "Rome"]


def each_id_once(records, out) -> None:
    got = sorted([r["id"] for r in out.results] + [e["id"] for e in out.errors])
    assert got == sorted(r["id"] for r in records)


def test_structured_output_through_a_forced_function_call(run_pipeline):
    out = run_pipeline(PEOPLE, "--schema", str(SCHEMA_PATH), "--structured_output", "tool", "--temperature", "0",
                       "--max_tokens", "160", label="structured (--structured_output tool)")
    each_id_once(PEOPLE, out)
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for result in out.results:
        assert not list(validator.iter_errors(result["parsed"])), result  # never an invalid result
        assert json.loads(result["content"]) == result["parsed"]
        [call] = [c for c in result["tool_calls"] if c["function"]["name"] == "Person"]
        assert call["arguments_parsed"] == result["parsed"]
    for error in out.errors:
        assert error["error_type"] in ("truncated", "schema_validation", "empty_response"), error
        assert error["usage"]["completion_tokens"] > 0  # what the failed record spent is on it
    assert len(out.results) >= 0.5 * len(PEOPLE), f"only {len(out.results)}/{len(PEOPLE)}: {out.errors}"


@pytest.mark.parametrize("stream", [False, True])
def test_records_with_forced_tool_calls(run_pipeline, stream):
    records = [{"id": f"w{i}", "prompt": f"What is the weather in {city}?",
                "params": {"tools": [WEATHER], "tool_choice": "required"}} for i, city in enumerate(CITIES)]
    out = run_pipeline(records, *(["--stream"] if stream else []), "--temperature", "0", "--max_tokens", "96",
                       label=f"forced tool calls{' --stream' if stream else ''}")
    each_id_once(records, out)
    assert len(out.results) >= len(records) - 1, out.errors
    for result in out.results:
        assert result["finish_reason"] == "tool_calls" and result["tool_calls"], result
        for call in result["tool_calls"]:
            assert call["id"] and call["function"]["name"] == "get_weather"
            jsonschema.validate(call["arguments_parsed"], WEATHER["function"]["parameters"])
            assert json.loads(call["function"]["arguments"]) == call["arguments_parsed"]


def test_peer_streams_a_tool_call_as_deltas(llama_server):
    """Pins what the stream assembler must handle from this server: tool-call deltas by index, the id and name in
    the first, the arguments in pieces."""
    sdk = openai.OpenAI(base_url=llama_server.base_url, api_key=API_KEY, max_retries=0, timeout=120)
    chunks = list(sdk.chat.completions.create(
        model="smollm2", temperature=0, max_tokens=96, stream=True, tools=[WEATHER], tool_choice="required",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}]))
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas and deltas[0].id and deltas[0].function.name == "get_weather"
    arguments = "".join(d.function.arguments or "" for d in deltas)
    jsonschema.validate(json.loads(arguments), WEATHER["function"]["parameters"])
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
