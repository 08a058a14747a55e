"""Routes, auth, models and bad request bodies: every refusal in the right status and shape, never a 500."""

from __future__ import annotations

import json

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator import EmulatorConfig, serve_in_thread
from tests.emulator._support import AUTH, CHAT, DEPLOYED, MANAGED, MODEL, PLAIN, user

RECURSIVE = {"type": "object", "properties": {"child": {"$ref": "#"}}}
HELLO = [{"role": "user", "content": "hi"}]

BAD_BODIES = {
    "not json": b"this is not json",
    "empty body": b"",
    "list": b"[1, 2]",
    "string": b'"hello"',
    "too deep": b"[" * 5000 + b"]" * 5000,
    "no messages": {"model": MODEL},
    "empty messages": {"model": MODEL, "messages": []},
    "messages not a list": {"model": MODEL, "messages": "hi"},
    "message not an object": {"model": MODEL, "messages": [None]},
    "unknown role": {"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]},
    "no content": {"model": MODEL, "messages": [{"role": "user"}]},
    "content a number": {"model": MODEL, "messages": [{"role": "user", "content": 5}]},
    "only a system message": {"model": MODEL, "messages": [{"role": "system", "content": "be brief"}]},
    "bad part type": {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "video", "video": {}}]}]},
    "part not an object": {"model": MODEL, "messages": [{"role": "user", "content": ["hi"]}]},
    "text part without text": {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
    "bad base64 image": {"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@not-base64@@"}}]}]},
    "bad base64 audio": {"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"format": "mp3", "data": "%%%"}}]}]},
    "unsupported url scheme": {"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "ftp://host/x.png"}}]}]},
    "image_url without url": {"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {}}]}]},
    "n zero": {"model": MODEL, "messages": HELLO, "n": 0},
    "n a string": {"model": MODEL, "messages": HELLO, "n": "2"},
    "negative max_tokens": {"model": MODEL, "messages": HELLO, "max_tokens": -1},
    "stream a string": {"model": MODEL, "messages": HELLO, "stream": "yes"},
    "unknown response_format": {"model": MODEL, "messages": HELLO, "response_format": {"type": "xml"}},
    "json_schema without schema": {"model": MODEL, "messages": HELLO,
                                   "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
    "recursive schema": {"model": MODEL, "messages": HELLO, "response_format": {
        "type": "json_schema", "json_schema": {"name": "tree", "schema": RECURSIVE}}},
    "dangling $ref": {"model": MODEL, "messages": HELLO, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/Nope"}}}},
    "effort and thinking_config": {"model": MODEL, "messages": HELLO, "reasoning_effort": "low",
                                   "extra_body": {"google": {"thinking_config": {"thinking_budget": 100}}}},
    "google not an object": {"model": MODEL, "messages": HELLO, "google": "thinking"},
    "bad tools": {"model": MODEL, "messages": HELLO, "tools": [{"type": "function"}]},
    "model not a string": {"model": 42, "messages": HELLO},
}


def _send(http: httpx2.Client, path: str, body, headers=AUTH) -> httpx2.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http.post(path + CHAT, content=content, headers={**headers, "content-type": "application/json"})


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_bad_body_is_a_vertex_400(http, emu, name):
    response = _send(http, MANAGED, BAD_BODIES[name])

    assert response.status_code == 400, response.text
    [wrapper] = response.json()  # Vertex wraps the error in a list
    assert wrapper["error"]["code"] == 400 and wrapper["error"]["status"] == "INVALID_ARGUMENT"
    assert wrapper["error"]["message"]
    assert emu.stats()["by_status"] == {"400": 1}


@pytest.mark.parametrize("name", ["not json", "unknown role", "bad part type", "recursive schema"])
def test_bad_body_on_the_plain_route_is_an_openai_400(http, name):
    response = _send(http, PLAIN, BAD_BODIES[name])

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


def test_include_thoughts_on_a_non_thinking_model_is_a_400(http):
    body = {"model": "google/gemini-2.0-flash-001", "messages": HELLO,
            "extra_body": {"google": {"thinking_config": {"include_thoughts": True}}}}
    assert _send(http, MANAGED, body).status_code == 400
    assert _send(http, MANAGED, {**body, "model": MODEL}).status_code == 200
    assert _send(http, MANAGED, {**body, "model": "google/gemini-9"}).status_code == 404  # unknown beats thinking


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["role", "content", "type", "text", "image_url", "url", "messages", "n", "x"]), inner, max_size=3),
    max_leaves=8,
)
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "bot"]),
                                           "content": json_values}), max_size=3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(json_values, st.fixed_dictionaries({"model": st.just(MODEL), "messages": messages})))
def test_fuzzed_bodies_never_give_a_500(http, body):
    response = _send(http, MANAGED, body)
    assert response.status_code in (200, 400), response.text


def test_missing_or_non_bearer_auth_is_401_unauthenticated(http):
    for headers in ({}, {"authorization": "Basic dXNlcjpwdw=="}, {"authorization": "Bearer"}):
        response = _send(http, MANAGED, user("hi"), headers=headers)
        assert response.status_code == 401
        [wrapper] = response.json()
        assert wrapper["error"]["status"] == "UNAUTHENTICATED"
        assert wrapper["error"]["details"][0]["reason"] == "CREDENTIALS_MISSING"


def test_plain_route_needs_no_key_unless_configured(http):
    assert _send(http, PLAIN, user("hi"), headers={}).status_code == 200
    with serve_in_thread(EmulatorConfig(api_key="k-123")) as guarded, httpx2.Client(base_url=guarded.url) as client:
        wrong = _send(client, PLAIN, user("hi"), headers={"authorization": "Bearer nope"})
        right = _send(client, PLAIN, user("hi"), headers={"authorization": "Bearer k-123"})
        models = client.get("/v1/models")
        vertex = _send(client, MANAGED, user("hi"))  # the Vertex routes take any bearer token

    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert right.status_code == 200 and models.status_code == 401 and vertex.status_code == 200


def test_unknown_managed_model_is_404_and_malformed_model_400(http):
    unknown = _send(http, MANAGED, user("hi", model="google/gemini-9-ultra"))
    bare = _send(http, MANAGED, user("hi", model="gemini-2.5-flash"))
    missing = _send(http, MANAGED, {"messages": HELLO})

    assert unknown.status_code == 404
    assert unknown.json()[0]["error"]["status"] == "NOT_FOUND" and "gemini-9-ultra" in unknown.json()[0]["error"]["message"]
    assert bare.status_code == 400 and missing.status_code == 400


def test_v1beta1_and_self_deployed_routes(http):
    beta = _send(http, MANAGED.replace("/v1/", "/v1beta1/"), user("hi"))
    deployed = _send(http, DEPLOYED, {"messages": HELLO})  # no model: fine on a self-deployed endpoint
    named = _send(http, DEPLOYED.replace("/v1/", "/v1beta1/"), {"model": "gemma-2-9b-it", "messages": HELLO})
    not_numeric = _send(http, DEPLOYED.replace("1234", "abc"), {"messages": HELLO})

    assert beta.status_code == 200 and beta.json()["model"] == MODEL
    assert deployed.status_code == 200 and deployed.json()["model"] == "endpoint-1234"
    assert named.status_code == 200 and named.json()["model"] == "gemma-2-9b-it"
    assert not_numeric.status_code == 404


def test_deployed_endpoints_restrict_the_ids():
    with serve_in_thread(EmulatorConfig(deployed_endpoints={"42": "gemma-2-9b-it"})) as emu, \
            httpx2.Client(base_url=emu.url) as client:
        known = _send(client, DEPLOYED.replace("1234", "42"), {"messages": HELLO})
        other = _send(client, DEPLOYED, {"messages": HELLO})

    assert known.status_code == 200 and known.json()["model"] == "gemma-2-9b-it"
    assert other.status_code == 404 and other.json()[0]["error"]["status"] == "NOT_FOUND"


def test_models_list(http):
    data = http.get("/v1/models").json()["data"]
    assert MODEL in {m["id"] for m in data}
