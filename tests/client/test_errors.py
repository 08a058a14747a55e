"""The error tree, the SDK->tree translation, retry hints, is_retryable and redaction."""

from __future__ import annotations

import email.utils
import time

import httpx2
import openai
import pytest

from client.errors import (AuthError, BadRequest, ChatbeamError, ConnectionFailed, ContentFiltered, EmptyResponse,
                           MalformedResponse, MediaError, NotFound, PermissionDenied, RateLimited, RequestTimeout,
                           SchemaInvalid, ServerError, StreamBroken, Truncated, is_retryable, map_errors,
                           parse_retry_after, redact, register_secret, translate)
from tests.client._support import vertex_error

URL = "http://vertex.test/v1/projects/p/locations/l/endpoints/openapi"


def sdk_error(step) -> Exception:
    """Run one real (sync) SDK call against a transport that answers ``step``; return what the SDK raised."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        if isinstance(step, BaseException):
            raise step
        return step

    client = openai.OpenAI(api_key="k", base_url=URL, max_retries=0,
                           http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    try:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    except Exception as exc:  # noqa: BLE001 - the point is to capture it
        return exc
    raise AssertionError("the SDK call did not fail")


def status(code: int, gstatus: str = "X", **kw) -> Exception:
    return sdk_error(httpx2.Response(code, json=vertex_error(code, gstatus, **kw)))


@pytest.mark.parametrize(("exc", "retryable"), [
    (status(408), True), (status(429), True), (status(499), True), (status(500), True), (status(502), True),
    (status(503), True), (status(504), True),
    (status(400), False), (status(401), False), (status(403), False), (status(404), False), (status(409), False),
    (status(422), False),
    (sdk_error(httpx2.ReadTimeout("slow")), True),
    (sdk_error(httpx2.ConnectError("refused")), True),
    (sdk_error(httpx2.Response(200, content=b"{not json", headers={"content-type": "application/json"})), True),
    (RateLimited("x"), True), (ServerError("x"), True), (RequestTimeout("x"), True), (ConnectionFailed("x"), True),
    (StreamBroken("x"), True), (MalformedResponse("x"), True),
    (BadRequest("x"), False), (AuthError("x"), False), (PermissionDenied("x"), False), (NotFound("x"), False),
    (Truncated("x"), False), (ContentFiltered("x"), False), (SchemaInvalid("x"), False), (MediaError("x"), False),
    (EmptyResponse("x"), False),
    (KeyError("a bug"), False), (ValueError("a bug"), False),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v))
def test_is_retryable_table(exc: BaseException, retryable: bool) -> None:
    assert is_retryable(exc) is retryable


@pytest.mark.parametrize(("code", "cls", "error_type"), [
    (400, BadRequest, "bad_request"), (401, AuthError, "auth_error"), (403, PermissionDenied, "permission_denied"),
    (404, NotFound, "not_found"), (408, RequestTimeout, "timeout"), (422, BadRequest, "bad_request"),
    (429, RateLimited, "rate_limited"), (499, ServerError, "server_error"), (503, ServerError, "server_error"),
])
def test_status_codes_map_to_classes(code: int, cls: type, error_type: str) -> None:
    mapped = translate(status(code, "SOME_STATUS"))
    assert type(mapped) is cls
    assert (mapped.status_code, mapped.status, mapped.error_type, mapped.stage) == (code, "SOME_STATUS",
                                                                                 error_type, "request")


def test_vertex_list_body_gives_status_message_and_retry_delay() -> None:
    exc = status(429, "RESOURCE_EXHAUSTED", message="Quota exceeded for aiplatform", retry_delay="39s")
    assert isinstance(exc, openai.RateLimitError) and exc.code is None  # the SDK could not read the list
    mapped = translate(exc)
    assert isinstance(mapped, RateLimited)
    assert mapped.status == "RESOURCE_EXHAUSTED"
    assert mapped.retry_after == 39.0
    assert "Quota exceeded for aiplatform" in mapped.message and "429" in mapped.message


def test_openai_dict_body() -> None:
    body = {"error": {"message": "Unknown parameter: 'foo'", "type": "invalid_request_error", "code": "unknown"}}
    mapped = translate(sdk_error(httpx2.Response(400, json=body)))
    assert isinstance(mapped, BadRequest)
    assert "Unknown parameter: 'foo'" in mapped.message
    assert mapped.status is None and mapped.retry_after is None


def test_vertex_dict_body_is_also_read() -> None:
    body = {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}
    mapped = translate(sdk_error(httpx2.Response(503, json=body)))
    assert isinstance(mapped, ServerError) and mapped.status == "UNAVAILABLE" and "overloaded" in mapped.message


def test_non_json_body_is_kept_short() -> None:
    page = "<html><body>502 Bad Gateway" + "x" * 5000 + "</body></html>"
    mapped = translate(sdk_error(httpx2.Response(502, text=page)))
    assert isinstance(mapped, ServerError) and mapped.status_code == 502
    assert "502 Bad Gateway" in mapped.message and len(mapped.message) < 700


@pytest.mark.parametrize(("headers", "expected"), [
    ({"Retry-After": "7"}, 7.0),
    ({"retry-after-ms": "1500"}, 1.5),
    ({"Retry-After": "soon"}, None),
    ({}, None),
])
def test_retry_after_headers(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_retry_after_http_date() -> None:
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=now) == pytest.approx(30, abs=1.0)


def test_retry_info_fractional_and_largest_hint_wins() -> None:
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]
    assert parse_retry_after(None, details) == 1.5
    assert parse_retry_after({"Retry-After": "4"}, details) == 4.0


def test_retry_after_header_on_a_real_response() -> None:
    response = httpx2.Response(429, json=vertex_error(429, "RESOURCE_EXHAUSTED"), headers={"Retry-After": "12"})
    assert translate(sdk_error(response)).retry_after == 12.0


def test_transport_errors() -> None:
    assert isinstance(translate(sdk_error(httpx2.ReadTimeout("slow"))), RequestTimeout)
    assert isinstance(translate(sdk_error(httpx2.ConnectError("refused"))), ConnectionFailed)
    # Raised while reading a 200 stream, a dropped connection is a broken stream.
    assert isinstance(translate(httpx2.RemoteProtocolError("peer closed"), streaming=True), StreamBroken)
    assert isinstance(translate(httpx2.ReadError("reset"), streaming=False), ConnectionFailed)


def test_malformed_200_bodies() -> None:
    bad_json = sdk_error(httpx2.Response(200, content=b"{not json", headers={"content-type": "application/json"}))
    assert isinstance(translate(bad_json), MalformedResponse)


def test_error_event_inside_a_stream() -> None:
    request = httpx2.Request("POST", URL)
    event = openai.APIError("An error occurred during streaming", request,
                            body={"code": 503, "message": "overloaded", "status": "UNAVAILABLE"})
    mapped = translate(event, streaming=True)
    assert isinstance(mapped, ServerError) and mapped.status_code == 503
    assert isinstance(translate(openai.APIError("odd", request, body=None), streaming=True), StreamBroken)


def test_map_errors_sync_raises_from_the_original() -> None:
    original = status(429, "RESOURCE_EXHAUSTED")
    with pytest.raises(RateLimited) as info:
        with map_errors():
            raise original
    assert info.value.__cause__ is original


@pytest.mark.anyio
async def test_map_errors_async() -> None:
    with pytest.raises(RequestTimeout):
        async with map_errors():
            raise sdk_error(httpx2.ReadTimeout("slow"))


def test_map_errors_leaves_bugs_and_own_errors_alone() -> None:
    with pytest.raises(KeyError):
        with map_errors():
            raise KeyError("bug")
    mine = SchemaInvalid("bad", response_text="{}")
    with pytest.raises(SchemaInvalid) as info:
        with map_errors():
            raise mine
    assert info.value is mine


def test_stages_and_codes_are_stable() -> None:
    assert (Truncated("x").stage, ContentFiltered("x").stage, EmptyResponse("x").stage) == ("response",) * 3
    assert (SchemaInvalid("x").stage, SchemaInvalid("x").error_type) == ("validate", "schema_validation")
    assert BadRequest("x", error_type="unknown_schema").error_type == "unknown_schema"
    assert BadRequest("y").error_type == "bad_request"


@pytest.mark.parametrize(("text", "secret"), [
    ("Authorization: Bearer abc.DEF-123_xyz", "abc.DEF-123_xyz"),
    ("token ya29.a0AfH6SMBx-secret_tok is expired", "a0AfH6SMBx-secret_tok"),
    ("Incorrect API key provided: sk-proj-AbCdEf123456", "AbCdEf123456"),
    ("GET https://x.googleapis.com/v1/m?key=AIzaSyDUMMY123&alt=json", "AIzaSyDUMMY123"),
    ('{"authorization": "Basic dXNlcjpwYXNz"}', "dXNlcjpwYXNz"),
    ("x-goog-api-key: AIzaSyOTHER999", "AIzaSyOTHER999"),
])
def test_redact(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out and "[REDACTED]" in out
    assert redact(out) == out  # idempotent


def test_registered_secrets_are_redacted_even_bare() -> None:
    register_secret("local-OpaqueToken12345")
    assert "OpaqueToken12345" not in redact("server said: token local-OpaqueToken12345 unknown")


def test_error_messages_are_redacted_on_construction() -> None:
    exc = AuthError("HTTP 401: rejected header Authorization: Bearer ya29.leaky")
    assert "leaky" not in exc.message and "leaky" not in str(exc)
    assert isinstance(exc, ChatbeamError)

