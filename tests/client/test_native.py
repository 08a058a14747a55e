"""Translation between the online request/answer and Gemini's native format (client/native_request.py,
client/native_response.py): table-driven, pure, no network."""

from __future__ import annotations

import json

import pytest

from client.config import ClientConfig, Target
from client.errors import BadRequest, ContentFiltered, MalformedResponse, RateLimited, SchemaInvalid, ServerError, \
    Truncated
from client.native_request import UnsupportedInBatch, to_native
from client.native_response import parse_output_line, to_completion
from client.parsing import parse_completion
from client.requests import build_request
from schemas.records import InputRecord
from schemas.registry import resolve_schema

CONFIG = ClientConfig(target=Target.managed("p"), model="google/gemini-2.0-flash-001")
PNG = "data:image/png;base64,iVBORw0KGgo="
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def native(record: dict, config: ClientConfig = CONFIG) -> dict:
    return to_native(build_request(InputRecord.model_validate(record), config))


def user(*parts) -> dict:
    return {"role": "user", "parts": list(parts)}


CASES = [
    ("prompt", {"prompt": "Hi"}, {"contents": [user({"text": "Hi"})]}),
    ("system", {"prompt": "Hi", "system": "Be brief."},
     {"systemInstruction": {"parts": [{"text": "Be brief."}]}, "contents": [user({"text": "Hi"})]}),
    ("chat", {"messages": [{"role": "developer", "content": "Rules."}, {"role": "user", "content": "A"},
                           {"role": "assistant", "content": "B"}, {"role": "user", "content": "C"}]},
     {"systemInstruction": {"parts": [{"text": "Rules."}]},
      "contents": [user({"text": "A"}), {"role": "model", "parts": [{"text": "B"}]}, user({"text": "C"})]}),
    ("params", {"prompt": "Hi", "params": {"max_tokens": 50, "temperature": 0.2, "top_p": 0.9, "top_k": 5,
                                           "stop": "END", "n": 2, "seed": 7, "presence_penalty": 0.1,
                                           "frequency_penalty": 0.3, "user": "ignored"}},
     {"contents": [user({"text": "Hi"})],
      "generationConfig": {"maxOutputTokens": 50, "temperature": 0.2, "topP": 0.9, "topK": 5,
                           "stopSequences": ["END"], "candidateCount": 2, "seed": 7, "presencePenalty": 0.1,
                           "frequencyPenalty": 0.3}}),
    ("media", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Look"}, {"type": "image_url", "image_url": "gs://b/cat.jpg"},
        {"type": "image_url", "image_url": {"url": PNG}},
        {"type": "input_audio", "input_audio": {"format": "audio/mp3", "data": "gs://b/clip"}},
        {"type": "input_audio", "input_audio": {"format": "wav", "data": "data:audio/wav;base64,UklGRg=="}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}}]}]},
     {"contents": [user(
         {"text": "Look"}, {"fileData": {"fileUri": "gs://b/cat.jpg", "mimeType": "image/jpeg"}},
         {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
         {"fileData": {"fileUri": "gs://b/clip", "mimeType": "audio/mp3"}},
         {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
         {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}})]}),
    ("thinking", {"prompt": "Why?", "model": "google/gemini-2.5-flash",
                  "google": {"thinking_config": {"thinking_budget": 256, "include_thoughts": True},
                             "thought_tag_marker": "think", "safety_settings": [
                                 {"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_ONLY_HIGH"}],
                             "cached_content": "projects/p/locations/l/cachedContents/1"}},
     {"contents": [user({"text": "Why?"})],
      "generationConfig": {"thinkingConfig": {"thinkingBudget": 256, "includeThoughts": True}},
      "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_ONLY_HIGH"}],
      "cachedContent": "projects/p/locations/l/cachedContents/1"}),
    ("effort", {"prompt": "Why?", "params": {"reasoning_effort": "low"}},
     {"contents": [user({"text": "Why?"})], "generationConfig": {"thinkingConfig": {"thinkingBudget": 1024}}}),
    ("json_object", {"prompt": "Hi", "params": {"response_format": {"type": "json_object"}}},
     {"contents": [user({"text": "Hi"})], "generationConfig": {"responseMimeType": "application/json"}}),
    ("tools", {"prompt": "Weather?", "params": {"tools": [WEATHER], "tool_choice": {
        "type": "function", "function": {"name": "get_weather"}}}},
     {"contents": [user({"text": "Weather?"})],
      "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather",
                                           "parametersJsonSchema": WEATHER["function"]["parameters"]}]}],
      "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}}),
    ("tool turn", {"messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
             "extra_content": {"google": {"thought_signature": "sig"}}},
            {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "rain"},
        {"role": "tool", "tool_call_id": "c2", "content": "noon"}], "params": {"tools": [WEATHER],
                                                                        "tool_choice": "required"}},
     {"contents": [user({"text": "Weather?"}), {"role": "model", "parts": [
         {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}, "thoughtSignature": "sig"},
         {"functionCall": {"name": "get_time", "args": {}}}]},
         user({"functionResponse": {"name": "get_weather", "response": {"content": "rain"}}},
              {"functionResponse": {"name": "get_time", "response": {"content": "noon"}}})],
      "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather",
                                           "parametersJsonSchema": WEATHER["function"]["parameters"]}]}],
      "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}),
]


@pytest.mark.parametrize("name, record, expected", CASES, ids=[c[0] for c in CASES])
def test_records_translate_to_native_requests(name, record, expected):
    assert native(record) == expected


def test_the_schema_becomes_response_json_schema_and_labels_carry_the_key():
    request = build_request(InputRecord(prompt="Alice meets Bob on Friday", schema="CalendarEvent"), CONFIG)
    out = to_native(request, labels={"chatbeam_key": "abc123"})
    assert out["generationConfig"] == {"responseMimeType": "application/json",
                                       "responseJsonSchema": resolve_schema("CalendarEvent").json_schema}
    assert out["labels"] == {"chatbeam_key": "abc123"}


UNSUPPORTED = [
    ("not gemini", {"prompt": "Hi", "model": "meta/llama-3.1-8b"}, "not a Gemini model"),
    ("https media", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": "https://example.com/x.png"}]}]}, "only gs:// URIs"),
    ("no extension", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": "gs://b/blob"}]}]}, "MIME type"),
    ("late system", {"messages": [{"role": "user", "content": "A"}, {"role": "system", "content": "B"}]},
     "system message after"),
    ("name", {"messages": [{"role": "user", "content": "A", "name": "ann"}]}, "'name'"),
    ("logprobs", {"prompt": "Hi", "params": {"logprobs": True}}, "'logprobs'"),
    ("google option", {"prompt": "Hi", "google": {"labels": {"a": "b"}}}, "google.labels"),
    ("orphan tool", {"messages": [{"role": "user", "content": "A"},
                                  {"role": "tool", "tool_call_id": "x", "content": "B"}]}, "no earlier tool call"),
    ("file id", {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f1"}}]}]},
     "file_id"),
    ("part extra_content", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "A", "extra_content": {"google": {"x": 1}}}]}]}, "extra_content"),
]


@pytest.mark.parametrize("name, record, needle", UNSUPPORTED, ids=[c[0] for c in UNSUPPORTED])
def test_what_has_no_native_form_is_unsupported_in_batch_and_retryable(name, record, needle):
    with pytest.raises(UnsupportedInBatch) as err:
        native(record)
    assert needle in err.value.message
    assert err.value.error_type == "unsupported_in_batch" and err.value.stage == "request"
    from client.errors import is_retryable
    assert is_retryable(err.value)  # it can still be sent online


# ---------------------------------------------------------------------------------------------- answers back

def answer(parts, finish="STOP", usage=None, **extra) -> dict:
    return {"candidates": [{"index": 0, "content": {"role": "model", "parts": parts}, "finishReason": finish}],
            "usageMetadata": usage or {"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 3,
                                       "totalTokenCount": 18, "trafficType": "ON_DEMAND_FLEX"}, **extra}


def test_text_thoughts_usage_and_traffic_type():
    completion, traffic = to_completion(answer([{"text": "pondering", "thought": True}, {"text": "Hello "},
                                                {"text": "there"}]), model="google/gemini-2.5-flash")
    parsed = parse_completion(completion)
    assert (parsed.content, parsed.thoughts, parsed.finish_reason) == ("Hello there", "pondering", "stop")
    assert parsed.usage.model_dump() == {"prompt_tokens": 10, "completion_tokens": 8, "reasoning_tokens": 3,
                                         "cached_tokens": 0, "total_tokens": 18}
    assert traffic == "ON_DEMAND_FLEX" and parsed.model == "google/gemini-2.5-flash"


@pytest.mark.parametrize("response, error", [
    (answer([{"text": "cut"}], finish="MAX_TOKENS"), Truncated),
    (answer([{"text": ""}], finish="SAFETY"), ContentFiltered),
    (answer([{"text": ""}], finish="RECITATION"), ContentFiltered),
    ({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": 4}},
     ContentFiltered),
    ({"usageMetadata": {}}, MalformedResponse),
    ("not an object", MalformedResponse),
])
def test_finish_reasons_and_blocked_prompts_raise_as_online(response, error):
    with pytest.raises(error):
        completion, _ = to_completion(response, model="google/gemini-2.0-flash-001")
        parse_completion(completion)


def test_function_calls_become_tool_calls():
    completion, _ = to_completion(answer([{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
                                           "thoughtSignature": "sig"}]), model="m")
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls" and message.content is None
    [call] = message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}
    assert call.model_extra["extra_content"] == {"google": {"thought_signature": "sig"}}


def test_structured_output_is_validated_like_online():
    schema = resolve_schema("Sentiment")
    good = json.dumps({"label": "negative", "confidence": 0.9})
    completion, _ = to_completion(answer([{"text": good}]), model="m")
    assert parse_completion(completion, schema=schema).parsed == schema.validate_json(good)
    completion, _ = to_completion(answer([{"text": '{"label": "angry"}'}]), model="m")
    with pytest.raises(SchemaInvalid) as err:
        parse_completion(completion, schema=schema)
    assert err.value.response_text == '{"label": "angry"}'


def test_several_candidates_become_alternatives():
    response = answer([{"text": "one"}])
    response["candidates"].append({"index": 1, "content": {"parts": [{"text": "two"}]}, "finishReason": "STOP"})
    completion, _ = to_completion(response, model="m")
    assert parse_completion(completion).alternatives == ["two"]


# ---------------------------------------------------------------------------------------------- output lines

def request_line(key):
    return {"contents": [user({"text": "q"})], "labels": {"chatbeam_key": key}}


@pytest.mark.parametrize("line, key, error, code", [
    ({"status": "", "request": request_line("k1"), "response": answer([{"text": "a"}])}, "k1", None, None),
    ({"status": 'Bad Request: {"error": {"code": 400, "message": "bad schema", "status": "INVALID_ARGUMENT"}}',
      "request": request_line("k2")}, "k2", BadRequest, 400),
    ({"status": 'Too Many Requests: {"error": {"code": 429, "message": "busy", "status": "RESOURCE_EXHAUSTED"}}',
      "request": request_line("k3")}, "k3", RateLimited, 429),
    ({"status": "Internal error occurred", "request": request_line("k4")}, "k4", ServerError, None),
    ({"status": "", "request": request_line("k5")}, "k5", MalformedResponse, None),
    ({"status": "", "request": {"contents": []}, "response": answer([{"text": "a"}])}, None, None, None),
])
def test_output_lines(line, key, error, code):
    out = parse_output_line(json.dumps(line).encode())
    assert out.key == key
    if error is None:
        assert out.error is None and out.response == line["response"]
    else:
        assert isinstance(out.error, error) and out.error.status_code == code and out.response is None


def test_a_line_that_is_not_json_has_no_key():
    out = parse_output_line(b'{"status": "", "request": {"labels": {"chatbeam')
    assert out.key is None and isinstance(out.error, MalformedResponse)
