"""The real pipeline against a real OpenAI-compatible server: llama-server serving SmolLM2-135M on the CPU.

What is asserted is structure, never wording: each input id ends in exactly one result or one error; results carry
usage and a finish_reason; structured output parses and validates against the JSON-schema file with jsonschema;
a run cut by ``max_tokens`` is a result with its text and finish_reason ``length``, not retried for being cut.
The direct-SDK tests pin the peer's own behaviour that the client relies on (grammar-enforced ``json_schema``,
``stream_options.include_usage``, error bodies), so a llama-server upgrade that changes it fails here first.

Figures (tokens/s, wall times) are printed in the terminal summary; see docs/reliability.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import openai
import pytest

from client.errors import AuthError, BadRequest, ServerError, translate
from tests.realmodel.conftest import API_KEY, SERVER_MAX_TOKENS

# Generous: on a quiet 2-core box the slowest test takes ~8 s, but when other jobs load the CPU llama.cpp's two
# threads slow down 10-20x (measured: 154 s for the 16-record structured run).
pytestmark = [pytest.mark.realmodel, pytest.mark.e2e, pytest.mark.timeout(600)]

HERE = Path(__file__).resolve().parent
SCHEMA_PATH = HERE / "person.schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text())
PEOPLE = [json.loads(line) for line in (HERE / "people.jsonl").read_text().splitlines() if line.strip()]

SHORT_PROMPTS = ["Say hello.", "Name a colour.", "What is 2 + 2?", "Name a fruit.", "Name a planet.",
                 "Say yes or no.", "Name one animal.", "What is the capital of France?"]
PLAIN_MAX_TOKENS = 64


def plain_records() -> list[dict]:
    records = [{"id": f"plain-{i}", "prompt": p, "metadata": {"i": i}} for i, p in enumerate(SHORT_PROMPTS)]
    # Cannot finish in 3 tokens: a result with its text and finish_reason "length", not retried for being cut
    # (--on_truncation result, the default).
    records.append({"id": "cut-short", "prompt": "Write a long story about a dragon and a knight.",
                    "params": {"max_tokens": 3}})
    return records


def assert_each_id_once(records: list[dict], out) -> None:
    got = [r["id"] for r in out.results] + [e["id"] for e in out.errors]
    assert sorted(got) == sorted(r["id"] for r in records), "every input id exactly once in results + errors"


def assert_usage(result: dict, max_tokens: int) -> None:
    usage = result["usage"]
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= max_tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def check_plain_run(records: list[dict], out) -> None:
    assert_each_id_once(records, out)
    by_id = out.by_id()
    cut = by_id["cut-short"]
    # Kept, not retried for being cut: a truncation retry would ask for twice the tokens (client/caller.py), so the
    # answer kept is the 3-token one. attempts may still be 2 when llama-server closed a pooled keep-alive connection
    # under load (a connection_error, retried; see below) -- CI saw it once on this record, 2026-11-30.
    assert (cut.get("finish_reason"), cut["usage"]["completion_tokens"]) == ("length", 3)
    assert cut.get("attempts") in (1, 2)
    assert cut["content"].strip()  # the text that was paid for is kept
    assert out.errors == []
    for result in (r for r in out.results if r["id"] != "cut-short"):
        assert result["finish_reason"] in ("stop", "length")  # this model sometimes rambles past the bound
        assert isinstance(result["content"], str) and result["content"].strip()
        # 1, or 2 when a pooled keep-alive connection was closed by llama-server under load ("Server disconnected
        # without sending a response": a connection_error, retried) -- seen on a busy 2-core machine.
        assert result["attempts"] in (1, 2) and result["parsed"] is None
        assert result["model"]  # llama-server reports its GGUF path, not the requested name
        assert result["metadata"] == {"i": int(result["id"].split("-")[1])}
        assert_usage(result, PLAIN_MAX_TOKENS)
    ended = [r for r in out.results if r["finish_reason"] == "stop"]
    assert len(ended) >= len(SHORT_PROMPTS) // 2, "most short prompts should end on their own"


def test_plain_run(run_pipeline):
    records = plain_records()
    out = run_pipeline(records, "--temperature", "0", "--max_tokens", str(PLAIN_MAX_TOKENS), label="plain")
    check_plain_run(records, out)


def test_streamed_run_takes_usage_from_the_include_usage_chunk(run_pipeline):
    records = plain_records()
    out = run_pipeline(records, "--stream", "--temperature", "0", "--max_tokens", str(PLAIN_MAX_TOKENS),
                       label="plain --stream")
    check_plain_run(records, out)  # includes: usage present and consistent, which only the final chunk carries


def test_structured_output_from_a_json_schema_file(run_pipeline):
    out = run_pipeline(PEOPLE, "--schema", str(SCHEMA_PATH), "--temperature", "0", "--max_tokens", "120",
                       label="structured (--schema person.schema.json)")
    assert_each_id_once(PEOPLE, out)
    validator = jsonschema.Draft202012Validator(SCHEMA)
    valid = []
    for result in out.results:
        assert json.loads(result["content"]) == result["parsed"]
        errors = [e.message for e in validator.iter_errors(result["parsed"])]
        assert not errors, (result["id"], errors)  # the pipeline never passes off invalid output as a result
        assert result["finish_reason"] == "stop"
        assert result["metadata"] == {"row": int(result["id"].split("-")[1])}
        assert_usage(result, 120 * 2)  # a re-ask pays for both answers
        valid.append(result["id"])
    assert len(valid) >= 0.8 * len(PEOPLE), f"only {len(valid)}/{len(PEOPLE)} schema-valid: {out.errors}"
    for error in out.errors:
        assert error["error_type"] in ("truncated", "schema_validation", "empty_response"), error


def test_structured_output_streamed(run_pipeline):
    people = PEOPLE[:4]
    out = run_pipeline(people, "--stream", "--schema", str(SCHEMA_PATH), "--temperature", "0", "--max_tokens",
                       "120", label="structured --stream")
    assert_each_id_once(people, out)
    validator = jsonschema.Draft202012Validator(SCHEMA)
    assert len(out.results) >= 3
    for result in out.results:
        assert validator.is_valid(result["parsed"]) and result["finish_reason"] == "stop"
        assert_usage(result, 240)


def test_wrong_api_key_is_final_and_never_echoed(run_pipeline, capsys, caplog):
    wrong = "sk-wrong-realmodel-key-93a7f1"
    records = [{"id": f"k{i}", "prompt": f"hello {i}"} for i in range(3)]
    out = run_pipeline(records, "--max_tokens", "8", api_key=wrong)
    assert_each_id_once(records, out)
    assert out.results == []
    for error in out.errors:
        assert (error["error_type"], error["status_code"], error["retryable"], error["attempts"]) == \
            ("auth_error", 401, False, 1), error  # a fixed key cannot be refreshed: no retry
        assert "Invalid API Key" in error["message"]
    captured = capsys.readouterr()
    blob = json.dumps(out.results + out.errors) + captured.out + captured.err + caplog.text
    assert wrong not in blob and API_KEY not in blob


# ---------------------------------------------------------------------------------------------- the peer itself

@pytest.fixture
def sdk(llama_server):
    client = openai.OpenAI(base_url=llama_server.base_url, api_key=API_KEY, max_retries=0, timeout=60)
    yield client
    client.close()


def test_peer_enforces_json_schema_with_a_grammar(sdk):
    """llama-server turns response_format json_schema into a grammar: the bounds hold even when the prompt begs
    to break them (ten fruits asked, maxItems 2; a long name asked, maxLength 12)."""
    schema = {"type": "object", "additionalProperties": False, "required": ["fruits", "title"],
              "properties": {"fruits": {"type": "array", "maxItems": 2,
                                        "items": {"type": "string", "enum": ["apple", "pear", "plum"]}},
                             "title": {"type": "string", "maxLength": 12}}}
    resp = sdk.chat.completions.create(
        model="smollm2", temperature=0, max_tokens=80,
        messages=[{"role": "user", "content": "List ten different fruits and give a very long title."}],
        response_format={"type": "json_schema", "json_schema": {"name": "fruits", "strict": True, "schema": schema}})
    choice = resp.choices[0]
    assert choice.finish_reason == "stop"
    jsonschema.validate(json.loads(choice.message.content), schema)
    assert resp.usage.completion_tokens > 0


def test_peer_stream_usage_only_with_include_usage(sdk):
    def chunks(**extra):
        return list(sdk.chat.completions.create(model="smollm2", temperature=0, max_tokens=8, stream=True,
                                                messages=[{"role": "user", "content": "Count to twenty."}], **extra))

    with_usage = chunks(stream_options={"include_usage": True})
    last = with_usage[-1]
    assert last.choices == [] and last.usage is not None and last.usage.completion_tokens == 8
    assert [c.choices[0].finish_reason for c in with_usage[:-1]][-1] == "length"
    assert all(c.usage is None for c in with_usage[:-1])
    without = chunks()
    assert all(c.usage is None for c in without)  # no usage at all unless asked


def test_peer_error_bodies_map_to_our_errors(sdk, llama_server):
    """llama-server's error bodies are dicts ``{"error": {"code": 400, "message", "type"}}``; the core must map
    them by status and keep the message, and never echo a key."""
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.chat.completions.create(model="smollm2", max_tokens=4, messages=[{"role": "user", "content": "x"}],
                                    response_format={"type": "bogus"})
    mapped = translate(bad.value)
    assert isinstance(mapped, BadRequest) and mapped.status_code == 400 and "response_format" in mapped.message

    wrong = openai.OpenAI(base_url=llama_server.base_url, api_key="sk-not-the-key-4417", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as denied:
        wrong.chat.completions.create(model="smollm2", max_tokens=4, messages=[{"role": "user", "content": "x"}])
    mapped = translate(denied.value)
    assert isinstance(mapped, AuthError) and mapped.status_code == 401 and "sk-not-the-key" not in mapped.message

    # An image sent to a text-only model is a 500 "image input is not supported" here (Vertex would say 400):
    # the core treats every 5xx as retryable, so such a record costs --max_attempts attempts. Pinned, documented.
    with pytest.raises(openai.InternalServerError) as image:
        sdk.chat.completions.create(model="smollm2", max_tokens=4, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}])
    assert isinstance(translate(image.value), ServerError)


def test_server_side_token_cap_bounds_a_request_without_max_tokens(sdk):
    """The fixture's -n cap: even with no max_tokens a looping answer ends (finish_reason length)."""
    resp = sdk.chat.completions.create(model="smollm2", temperature=0, response_format={"type": "json_object"},
                                       messages=[{"role": "user", "content": "Give a JSON object with a key 'k'."}])
    assert resp.usage.completion_tokens <= SERVER_MAX_TOKENS
