"""Function calling against a real OpenAI-compatible server: llama-server ``--jinja`` with a tool-capable ChatML
template (tests/realmodel/chatml-tools.jinja; SmolLM2's bundled template renders no tools, and this llama.cpp then
ignores them), serving SmolLM2-135M.

What the real server verifies: it accepts the requests chatbeam builds with ``tools`` / ``tool_choice`` and
``--structured_output tool``, and a multi-turn record carrying an assistant ``tool_calls`` turn and a ``tool``
answer round-trips into a final text answer. What it cannot: SmolLM2-135M never starts a ``<tool_call>`` (measured:
it writes prose until ``max_tokens``, also with a system instruction or two worked examples in the history, and
llama.cpp's grammar for ``tool_choice: "required"`` allows text before the call), so forced calls with parsed
arguments are verified against the emulator (tests/e2e/test_results_contract.py), not here. Here the pipeline must
stay honest: no answer that is not a valid call becomes a result, and each failure keeps what was paid for."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

pytestmark = [pytest.mark.realmodel, pytest.mark.e2e, pytest.mark.timeout(900)]

HERE = Path(__file__).resolve().parent
SCHEMA_PATH = HERE / "person.schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text())
PEOPLE = [json.loads(line) for line in (HERE / "people.jsonl").read_text().splitlines() if line.strip()][:4]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                   "required": ["city"], "additionalProperties": False}}}


def each_id_once(records, out) -> None:
    got = sorted([r["id"] for r in out.results] + [e["id"] for e in out.errors])
    assert got == sorted(r["id"] for r in records)


def test_structured_output_through_a_forced_function_call_never_passes_off_an_invalid_answer(run_pipeline):
    out = run_pipeline(PEOPLE, "--schema", str(SCHEMA_PATH), "--structured_output", "tool", "--temperature", "0",
                       "--max_tokens", "48", "--max_reasks", "0", label="structured (--structured_output tool)")
    each_id_once(PEOPLE, out)
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for result in out.results:  # a call (or JSON text) that validates: the only way to become a result
        assert not list(validator.iter_errors(result["parsed"])), result
    for error in out.errors:
        assert error["error_type"] in ("truncated", "schema_validation", "empty_response"), error
        assert error["usage"]["completion_tokens"] > 0 and error["response_text"], error  # what was paid for


def test_a_multi_turn_function_calling_record_gets_its_final_answer(run_pipeline):
    """The call → tool answer → final text exchange, sent to the real server exactly as a result gives it back
    (id, type, function, extra_content), with the tools declared: the template renders the call and the answer."""
    call = {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            "extra_content": {"google": {"thought_signature": "c2ln"}}}
    records = [{"id": "oslo", "messages": [
        {"role": "user", "content": "What is the weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_0", "content": '{"temp_c": 21, "sky": "clear"}'}],
        "params": {"tools": [WEATHER]}}]
    out = run_pipeline(records, "--temperature", "0", "--max_tokens", "32", label="multi-turn tool history")
    assert out.errors == [], out.errors
    [result] = out.results
    assert result["content"].strip() and result["tool_calls"] is None
    assert result["finish_reason"] in ("stop", "length")
    # The history was rendered into the prompt: far more prompt tokens than the three short turns' text alone.
    assert result["usage"]["prompt_tokens"] > 60
