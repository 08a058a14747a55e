"""The results contract end to end (the real job, in-process, against the emulator): function calling plain and
streamed, a call → tool answer → final text exchange over two runs, structured output through a forced call, cut-off
answers under each --on_truncation mode, usage on error records and in the summary, unknown options refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                       "required": ["city"]}}}
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}


def summary(out) -> dict:
    return out.result_obj.summary


def check_call(call: dict) -> None:
    assert call["id"] and call["type"] == "function"
    assert json.loads(call["function"]["arguments"]) == call["arguments_parsed"]
    jsonschema.validate(call["arguments_parsed"], PARAMS[call["function"]["name"]])


@pytest.mark.parametrize("stream", [False, True])
def test_forced_and_auto_tool_calls_come_back_as_results(run_job, stream):
    records = [
        {"id": "forced", "prompt": "What is the weather in Oslo?",
         "params": {"tools": [WEATHER], "tool_choice": "required"}},
        {"id": "named", "prompt": "Weather in Rome?",
         "params": {"tools": [WEATHER, TIME], "tool_choice": {"type": "function", "function": {"name": "get_time"}}}},
        {"id": "parallel", "prompt": "Call get_weather and get_time for Lima", "params": {"tools": [WEATHER, TIME]}},
        {"id": "text", "prompt": "Tell me a joke", "params": {"tools": [WEATHER]}},
        {"id": "thinking", "model": "google/gemini-2.5-flash", "prompt": "Call get_weather for Oslo",
         "params": {"tools": [WEATHER]}, "google": {"thinking_config": {"thinking_budget": 64}}},
    ]
    out = run_job(records, *(["--stream"] if stream else []))
    assert out.errors == []
    by_id = out.by_id()
    assert [c["function"]["name"] for c in by_id["forced"]["tool_calls"]] == ["get_weather"]
    assert [c["function"]["name"] for c in by_id["named"]["tool_calls"]] == ["get_time"]
    assert [c["function"]["name"] for c in by_id["parallel"]["tool_calls"]] == ["get_weather", "get_time"]
    for rid in ("forced", "named", "parallel", "thinking"):
        assert by_id[rid]["finish_reason"] == "tool_calls"
        for call in by_id[rid]["tool_calls"]:
            check_call(call)
    assert by_id["thinking"]["tool_calls"][0]["extra_content"]["google"]["thought_signature"]
    assert by_id["text"]["tool_calls"] is None and by_id["text"]["content"]


def test_streamed_and_plain_tool_calls_are_identical(run_job):
    records = [{"id": "p", "prompt": "Call get_weather and get_time for Quito", "params": {"tools": [WEATHER, TIME]}}]
    plain, streamed = run_job(records), run_job(records, "--stream")
    assert plain.results[0]["tool_calls"] == streamed.results[0]["tool_calls"]
    assert plain.results[0]["usage"] == streamed.results[0]["usage"]


def test_a_call_then_the_tool_answer_then_the_final_text(run_job, tmp_path):
    """Night one asks; the caller runs the function; night two sends the whole exchange back and gets text. The
    assistant turn (with Gemini's thought signature) is sent back exactly as the result gave it."""
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([WEATHER]))
    ask = {"id": "w1", "model": "google/gemini-2.5-flash", "prompt": "What is the weather in Oslo?",
           "google": {"thinking_config": {"thinking_budget": 64}}}
    first = run_job([ask], "--tools", str(tools), "--tool_choice", "get_weather")
    [call] = first.results[0]["tool_calls"]
    assistant_call = {k: call[k] for k in ("id", "type", "function", "extra_content")}
    follow_up = {"id": "w1-final", "model": "google/gemini-2.5-flash", "messages": [
        {"role": "user", "content": "What is the weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [assistant_call]},
        {"role": "tool", "tool_call_id": call["id"], "content": json.dumps({"temp": 21, "unit": "celsius"})}],
        "google": {"thinking_config": {"thinking_budget": 64}}}
    second = run_job([follow_up], "--tools", str(tools), "--tool_choice", "auto")
    [final] = second.results
    assert final["finish_reason"] == "stop" and final["content"] and final["tool_calls"] is None
    assert second.errors == []


def test_invalid_arguments_are_reasked_then_an_error_with_what_came_back(run_job, vertex_emulator):
    vertex_emulator.set_faults(schema_violation_rate=1.0)
    records = [{"id": "bad", "prompt": "Weather?", "params": {"tools": [WEATHER], "tool_choice": "required"}}]
    out = run_job(records, "--max_reasks", "1")
    [err] = out.errors
    assert (err["error_type"], err["stage"], err["attempts"]) == ("schema_validation", "validate", 2)
    assert json.loads(err["response_text"])[0]["function"]["name"] == "get_weather"
    assert err["usage"]["total_tokens"] > 0
    stats = vertex_emulator.stats()
    assert stats["ok"] == 2 and stats["faults"]["schema_violation"] == 2


def test_structured_output_through_a_forced_function_call(run_job):
    records = [{"id": f"e{i}", "prompt": f"Lunch with Ann and Bo on day {i}", "schema": "CalendarEvent"}
               for i in range(4)]
    out = run_job(records, "--structured_output", "tool")
    assert out.errors == [] and len(out.results) == 4
    for r in out.results:
        assert r["parsed"].keys() == {"name", "date", "participants"}
        assert json.loads(r["content"]) == r["parsed"]
        assert r["tool_calls"][0]["function"]["name"] == "CalendarEvent"


CUT = [{"id": "cut", "prompt": "Tell me a long story about a fox in the forest", "params": {"max_tokens": 5}},
       {"id": "whole", "prompt": "Say hi"}]


def test_cut_off_answers_are_results_with_their_text_by_default(run_job):
    out = run_job(CUT)
    by_id = out.by_id()
    cut = by_id["cut"]
    assert cut["finish_reason"] == "length" and cut["content"].startswith("Emulated answer")
    assert cut["usage"]["completion_tokens"] == 5
    s = summary(out)
    assert (s["results"], s["results_truncated"], s["errors"]) == (2, 1, 0)


def test_on_truncation_error_keeps_the_text_and_the_usage(run_job):
    out = run_job(CUT, "--on_truncation", "error")
    [err] = out.errors
    assert (err["id"], err["error_type"], err["retryable"]) == ("cut", "truncated", False)
    assert err["response_text"].startswith("Emulated answer") and err["usage"]["completion_tokens"] == 5
    s = summary(out)
    assert (s["results"], s["errors"], s["errors_by_type"]) == (len(out.results), len(out.errors), {"truncated": 1})
    # Tokens count failed records too, and the summary says how many went to them.
    assert s["tokens"]["on_errors"] == err["usage"]["total_tokens"]
    assert s["tokens"]["total"] == sum(r["usage"]["total_tokens"] for r in out.results) + s["tokens"]["on_errors"]


def test_on_truncation_retry_sends_once_more_with_twice_the_limit(run_job, vertex_emulator):
    out = run_job(CUT, "--on_truncation", "retry")
    cut = out.by_id()["cut"]
    assert cut["attempts"] == 2 and cut["usage"]["completion_tokens"] == 5 + 10
    assert cut["finish_reason"] == "length" and summary(out)["results_truncated"] == 1  # 10 tokens still too few
    assert vertex_emulator.stats()["requests"] == 3


def test_a_misspelt_option_exits_2_naming_the_right_one_before_any_work(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "hi"}\n')
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "--input", str(src), "--output",
                           str(tmp_path / "out" / "r"), "--emulator", "--max_cots_usd", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "chatbeam: error: unknown option --max_cots_usd (did you mean --max_cost_usd?)"]
    assert not (tmp_path / "out").exists()


def test_dataflow_and_runner_options_still_pass(run_job):
    out = run_job([{"id": "a", "prompt": "hi"}], "--max_num_workers", "3", "--worker_machine_type", "n2-standard-4",
                  "--sdk_container_image", "gcr.io/p/img:1", "--experiments", "use_runner_v2",
                  "--experiments=enable_data_sampling", "--num_workers", "2", "--disk_size_gb", "50",
                  "--service_account_email", "sa@p.iam.gserviceaccount.com", "--labels", "team=data")
    assert [r["id"] for r in out.results] == ["a"]
