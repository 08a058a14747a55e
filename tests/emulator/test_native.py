"""The native ``:generateContent`` route, through google-genai (Google's own client): answers as on the chat route
for the same question, thought parts, schema, tools, token limits, trafficType, and Google's field checks."""

from __future__ import annotations

import base64

import jsonschema
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from google.oauth2.credentials import Credentials

from tests.emulator._support import AUTH, CHAT, MANAGED

NATIVE = "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "year": {"type": "integer"}},
          "required": ["city", "year"], "additionalProperties": False}
PNG = base64.b64encode(b"\x89PNG fake image bytes " * 20).decode()


@pytest.fixture
def client(emu):
    return genai.Client(vertexai=True, project="p", location="us-central1", credentials=Credentials(token="t"),
                        http_options=types.HttpOptions(base_url=emu.url, api_version="v1"))


def chat(http, messages, **extra):
    body = {"model": "google/gemini-2.5-flash", "messages": messages, **extra}
    answer = http.post(MANAGED + CHAT, json=body, headers=AUTH)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_same_question_same_answer_as_the_chat_route(client, http):
    parts = [types.Part.from_text(text="Describe these"),
             types.Part.from_uri(file_uri="gs://bucket/cat.jpg", mime_type="image/jpeg"),
             types.Part.from_bytes(data=base64.b64decode(PNG), mime_type="image/png")]
    native = client.models.generate_content(
        model="gemini-2.5-flash", contents=[types.Content(role="user", parts=parts)],
        config=types.GenerateContentConfig(system_instruction="Be brief."))
    online = chat(http, [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": [{"type": "text", "text": "Describe these"},
                                                      {"type": "image_url", "image_url": "gs://bucket/cat.jpg"},
                                                      {"type": "image_url",
                                                       "image_url": f"data:image/png;base64,{PNG}"}]}])
    assert native.text == online["choices"][0]["message"]["content"]
    assert "[gs://bucket/cat.jpg]" in native.text and "[image/png 440 bytes]" in native.text
    assert native.usage_metadata.prompt_token_count == online["usage"]["prompt_tokens"]
    assert native.usage_metadata.traffic_type == types.TrafficType.ON_DEMAND
    assert native.candidates[0].finish_reason == types.FinishReason.STOP


def test_schema_and_thoughts_match_the_chat_answer(client, http):
    config = types.GenerateContentConfig(
        response_mime_type="application/json", response_json_schema=SCHEMA,
        thinking_config=types.ThinkingConfig(include_thoughts=True, thinking_budget=1024))
    native = client.models.generate_content(model="gemini-2.5-flash", contents="Where was the treaty signed?",
                                            config=config)
    fmt = {"type": "json_schema", "json_schema": {"name": "Place", "schema": SCHEMA}}
    question = [{"role": "user", "content": "Where was the treaty signed?"}]
    online = chat(http, question, response_format=fmt, google={
        "thinking_config": {"include_thoughts": True, "thinking_budget": 1024}, "thought_tag_marker": "think"})
    by_effort = chat(http, question, response_format=fmt, reasoning_effort="low")
    thought, answer = native.candidates[0].content.parts
    jsonschema.validate(native.parsed, SCHEMA)
    assert thought.thought and not answer.thought
    assert online["choices"][0]["message"]["content"] == f"<think>{thought.text}</think>{answer.text}"
    reasoning = native.usage_metadata.thoughts_token_count
    assert reasoning == online["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0
    # reasoning_effort "low" thinks like thinkingBudget 1024, the budget Google maps "low" to
    assert by_effort["choices"][0]["message"]["content"] == answer.text
    assert by_effort["usage"]["completion_tokens_details"]["reasoning_tokens"] == reasoning


def test_max_output_tokens_and_candidate_count(client):
    short = client.models.generate_content(model="gemini-2.5-flash", contents="Tell me a long story",
                                           config=types.GenerateContentConfig(max_output_tokens=3))
    assert short.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert short.usage_metadata.candidates_token_count <= 3
    two = client.models.generate_content(model="gemini-2.5-flash", contents="Two ideas",
                                         config=types.GenerateContentConfig(candidate_count=2))
    assert len(two.candidates) == 2 and two.candidates[0].content.parts[0].text != two.candidates[1].content.parts[0].text


def test_function_call_follows_the_declaration(client):
    tool = types.Tool(function_declarations=[types.FunctionDeclaration(
        name="get_weather", description="Weather for a city",
        parameters_json_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})])
    config = types.GenerateContentConfig(tools=[tool], tool_config=types.ToolConfig(
        function_calling_config=types.FunctionCallingConfig(mode="ANY", allowed_function_names=["get_weather"])),
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    answer = client.models.generate_content(model="gemini-2.5-flash", contents="Weather in Oslo?", config=config)
    [call] = answer.function_calls
    assert call.name == "get_weather" and isinstance(call.args["city"], str)


def test_flex_header_is_reported_as_traffic_type(emu):
    client = genai.Client(vertexai=True, project="p", location="global", credentials=Credentials(token="t"),
                          http_options=types.HttpOptions(base_url=emu.url, api_version="v1", headers={
                              "X-Vertex-AI-LLM-Request-Type": "shared",
                              "X-Vertex-AI-LLM-Shared-Request-Type": "flex"}))
    answer = client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert answer.usage_metadata.traffic_type == types.TrafficType.ON_DEMAND_FLEX
    assert emu.stats(fingerprints=False)["by_tier"]["flex"]["ok"] == 1


@pytest.mark.parametrize("body, needle", [
    ({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {"maxTokens": 5}},
     'Unknown name "maxTokens"'),
    ({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "labels": {"Key": "v"}}, "labels"),
    ({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "labels": {"k": "a value"}}, "labels"),
    ({"contents": []}, "contents must be a non-empty list"),
    ({"contents": [{"role": "system", "parts": [{"text": "hi"}]}]}, "role must be"),
    ({"contents": [{"role": "user", "parts": [{"fileData": {"fileUri": "gs://b/x"}}]}]}, "fileData needs"),
    ({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
      "generationConfig": {"responseJsonSchema": {"type": "object"}}}, "responseMimeType"),
])
def test_invalid_native_bodies_are_400(http, body, needle):
    answer = http.post(NATIVE, json=body, headers=AUTH)
    assert answer.status_code == 400 and needle in answer.json()[0]["error"]["message"]


def test_proto_field_names_are_accepted_and_unknown_models_are_404(http, client):
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "generation_config": {"max_output_tokens": 5, "thinking_config": {"include_thoughts": False}},
            "labels": {"chatbeam_key": "0123abcd"}}
    assert http.post(NATIVE, json=body, headers=AUTH).status_code == 200
    assert http.post(NATIVE, json=body).status_code == 401
    with pytest.raises(genai_errors.ClientError) as err:
        client.models.generate_content(model="gemini-9-ultra", contents="hi")
    assert err.value.code == 404
