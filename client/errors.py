"""The core's one error tree, the one place foreign errors are translated into it, and secret redaction.

    ChatbeamError                      error_type          stage
    ├── RetryableError                 (another attempt may succeed; ErrorRecord.retryable true)
    │   ├── RateLimited                rate_limited        request   429 RESOURCE_EXHAUSTED
    │   ├── ServerError                server_error        request   499, 5xx
    │   ├── RequestTimeout             timeout             request   408, client-side timeouts
    │   ├── ConnectionFailed           connection_error    request   connect/reset/TLS, token fetch transport errors
    │   ├── StreamBroken               stream_broken       response  a stream that died after its 200
    │   ├── MalformedResponse          malformed_response  response  a 200 whose body is not a chat completion
    │   ├── BudgetExhausted            budget_exhausted    request   --max_cost_usd / --max_total_tokens reached
    │   ├── InternalError              internal_error      request   a bug in chatbeam; the record is kept
    │   ├── UnsupportedInBatch         unsupported_in_batch request  --mode batch: no native form (send online)
    │   ├── BatchLineFailed            batch_line_failed   request   --mode batch: the job answered with an error
    │   ├── BatchJobFailed             batch_job_failed    request   --mode batch: the job failed before answering
    │   └── BatchJobCancelled          batch_job_cancelled request   --mode batch: the job was cancelled first
    └── PermanentError                 (the same request will fail again)
        ├── BadRequest                 bad_request         request   400, 409, 422, other 4xx; invalid params
        ├── AuthError                  auth_error          request   401 (after one forced refresh), bad credentials
        ├── PermissionDenied           permission_denied   request   403
        ├── NotFound                   not_found           request   404
        ├── MediaError                 media_error         request   a local media file that may not be inlined
        ├── UnknownSchema              unknown_schema      request   a record's schema names no declared schema
        ├── Truncated                  truncated           response  finish_reason "length" (see --on_truncation)
        ├── ContentFiltered            content_filtered    response  finish_reason "content_filter" / refusal
        ├── EmptyResponse              empty_response      response  no content where a schema was asked
        ├── ResponseTooLarge           response_too_large  response  an answer over --max_response_bytes (not read)
        ├── SchemaInvalid              schema_validation   validate  output or tool arguments not matching a schema
        └── ReadError                  (stage read: the input was not a record; nothing was sent)
            ├── InvalidJson            invalid_json
            ├── InvalidEncoding        invalid_encoding
            ├── NotAnObject            not_an_object
            ├── InvalidRecord          invalid_record
            ├── RecordTooLarge         record_too_large
            └── NotAnErrorRecord       not_an_error_record (--replay_errors)

Every error carries ``status_code``, Google's ``status`` (e.g. RESOURCE_EXHAUSTED), a redacted ``message``,
``retry_after`` (seconds or None), ``response_text`` (what the model answered, when it answered) and the stable
``error_type`` / ``stage`` written to the ErrorRecord. ``ERROR_TYPES`` maps every error_type to its class: the one
vocabulary (schemas.records.error_record builds every ErrorRecord from one of these).

    >>> async with map_errors():                # or ``with map_errors():`` around sync SDK calls
    ...     await client.chat.completions.create(...)   # openai.RateLimitError -> RateLimited(retry_after=39.0)
    >>> is_retryable(RateLimited("busy")), is_retryable(BadRequest("no"))
    (True, False)
    >>> redact("Authorization: Bearer ya29.abc")
    'Authorization: Bearer [REDACTED]'
"""

from __future__ import annotations

import collections
import email.utils
import json
import re
import threading
import time
from types import TracebackType
from typing import Any, Mapping

import httpx2
import openai

from client.constants import MAX_ERROR_MESSAGE_CHARS, RETRYABLE_STATUS

__all__ = [
    "ERROR_TYPES", "AuthError", "BadRequest", "BatchJobCancelled", "BatchJobFailed", "BatchLineFailed",
    "BudgetExhausted", "ChatbeamError", "ConnectionFailed",
    "ContentFiltered", "EmptyResponse", "InternalError", "InvalidEncoding", "InvalidJson", "InvalidRecord",
    "MalformedResponse", "MediaError", "NotAnErrorRecord", "NotAnObject", "NotFound", "PermanentError",
    "PermissionDenied", "RateLimited", "ReadError", "RecordTooLarge", "RequestTimeout", "ResponseTooLarge",
    "RetryableError", "SchemaInvalid", "ServerError", "StreamBroken", "Truncated", "UnknownSchema",
    "UnsupportedInBatch", "error_class", "is_retryable", "live_secrets", "map_errors", "parse_retry_after", "redact",
    "register_secret", "translate",
]


# ---------------------------------------------------------------------------------------------- redaction

_PATTERNS = [
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [REDACTED]"),
    (re.compile(r"\bya29\.[A-Za-z0-9._~+/=-]+"), "ya29.[REDACTED]"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{6,}"), "sk-[REDACTED]"),
    (re.compile(r"(?i)\b((?:api_?)?key|access_token|token)=[^&\s\"',;]+"), r"\1=[REDACTED]"),
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?!bearer\b)(?:(?:basic|token)\s+)?[^\s\"',}]+"),
     r"\1[REDACTED]"),
    (re.compile(r"(?i)\b((?:x-goog-)?api-key[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"), r"\1[REDACTED]"),
]
_SECRETS: collections.deque[str] = collections.deque(maxlen=16)
_SECRETS_LOCK = threading.Lock()


def register_secret(value: str) -> None:
    """Remember a live credential (a minted token, an API key) so ``redact`` removes it even as a bare string."""
    if value and len(value) >= 8:
        with _SECRETS_LOCK:
            if value not in _SECRETS:
                _SECRETS.append(value)


def live_secrets() -> list[str]:
    """The live credentials ``register_secret`` has seen (for scrubbing model output: client/scrub.py)."""
    with _SECRETS_LOCK:
        return list(_SECRETS)


def redact(text: str) -> str:
    """Remove bearer tokens, ``ya29.`` tokens, ``sk-`` keys, ``key=`` query values and known live secrets."""
    with _SECRETS_LOCK:
        secrets = list(_SECRETS)
    for secret in secrets:
        text = text.replace(secret, "[REDACTED]")
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


# ---------------------------------------------------------------------------------------------- the tree

class ChatbeamError(Exception):
    """Base of the tree. ``str(e)`` is the redacted message."""

    error_type = "error"
    stage = "request"

    def __init__(self, message: str, *, status_code: int | None = None, status: str | None = None,
                 retry_after: float | None = None, error_type: str | None = None,
                 response_text: str | None = None) -> None:
        message = redact(message)
        if len(message) > MAX_ERROR_MESSAGE_CHARS:
            message = message[:MAX_ERROR_MESSAGE_CHARS] + "…[truncated]"
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.status = status
        self.retry_after = retry_after
        self.response_text = response_text
        if error_type is not None:
            self.error_type = error_type


class RetryableError(ChatbeamError):
    """Another attempt of the same request may succeed."""


class PermanentError(ChatbeamError):
    """The same request will fail again; retrying wastes quota."""


class RateLimited(RetryableError):
    error_type = "rate_limited"


class ServerError(RetryableError):
    error_type = "server_error"


class RequestTimeout(RetryableError):
    error_type = "timeout"


class ConnectionFailed(RetryableError):
    error_type = "connection_error"


class StreamBroken(RetryableError):
    error_type, stage = "stream_broken", "response"


class MalformedResponse(RetryableError):
    error_type, stage = "malformed_response", "response"


class BudgetExhausted(RetryableError):
    """The run's budget is spent: the record was not sent. A later run (``--replay_errors``) can send it."""

    error_type = "budget_exhausted"


class InternalError(RetryableError):
    """A bug in chatbeam, not a problem of the record: the record is kept, and a rerun after the fix sends it."""

    error_type = "internal_error"


class UnsupportedInBatch(RetryableError):
    """``--mode batch``: the record cannot be written as a native batch line; it can still be sent online."""

    error_type = "unsupported_in_batch"


class BatchLineFailed(RetryableError):
    """``--mode batch --batch_fallback error``: the job answered the line with an error."""

    error_type = "batch_line_failed"


class BatchJobFailed(RetryableError):
    """``--mode batch --batch_fallback error``: the job failed or expired before answering the line."""

    error_type = "batch_job_failed"


class BatchJobCancelled(RetryableError):
    """``--mode batch --batch_fallback error``: the job was cancelled before answering the line."""

    error_type = "batch_job_cancelled"


class BadRequest(PermanentError):
    error_type = "bad_request"


class AuthError(PermanentError):
    error_type = "auth_error"


class PermissionDenied(PermanentError):
    error_type = "permission_denied"


class NotFound(PermanentError):
    error_type = "not_found"


class MediaError(PermanentError):
    error_type = "media_error"


class UnknownSchema(PermanentError):
    """A record's ``schema`` names neither a registry entry nor a schema the run declared. Input data never names
    code or files: nothing it names is imported or read."""

    error_type = "unknown_schema"


class Truncated(PermanentError):
    error_type, stage = "truncated", "response"


class ContentFiltered(PermanentError):
    error_type, stage = "content_filtered", "response"


class EmptyResponse(PermanentError):
    error_type, stage = "empty_response", "response"


class ResponseTooLarge(PermanentError):
    error_type, stage = "response_too_large", "response"


class SchemaInvalid(PermanentError):
    error_type, stage = "schema_validation", "validate"


class ReadError(PermanentError):
    """The input was not a record (nothing was sent)."""

    error_type, stage = "read_error", "read"


class InvalidJson(ReadError):
    error_type = "invalid_json"


class InvalidEncoding(ReadError):
    error_type = "invalid_encoding"


class NotAnObject(ReadError):
    error_type = "not_an_object"


class InvalidRecord(ReadError):
    error_type = "invalid_record"


class RecordTooLarge(ReadError):
    error_type = "record_too_large"


class NotAnErrorRecord(ReadError):
    error_type = "not_an_error_record"


def _leaves(cls: type[ChatbeamError]) -> list[type[ChatbeamError]]:
    subs = cls.__subclasses__()
    return [cls] if not subs else [leaf for sub in subs for leaf in _leaves(sub)]


# error_type -> class, for every concrete type in the tree above (the README's error table lists exactly these).
# A snapshot taken here: define every new error type in this module.
ERROR_TYPES: dict[str, type[ChatbeamError]] = {
    cls.error_type: cls for cls in _leaves(ChatbeamError) if cls.error_type not in ("error", "read_error")}


def error_class(error_type: str) -> type[ChatbeamError]:
    """The class of a known ``error_type``; ValueError for a name outside the vocabulary."""
    try:
        return ERROR_TYPES[error_type]
    except KeyError:
        raise ValueError(f"unknown error_type {error_type!r}; known: {', '.join(sorted(ERROR_TYPES))}") from None


# ---------------------------------------------------------------------------------------------- translation

_STATUS_CLASS: dict[int, type[ChatbeamError]] = {
    400: BadRequest, 401: AuthError, 403: PermissionDenied, 404: NotFound, 408: RequestTimeout, 429: RateLimited,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")  # google.protobuf.Duration JSON form: "39s", "1.5s"


def _class_for_status(code: int) -> type[ChatbeamError]:
    if code in _STATUS_CLASS:
        return _STATUS_CLASS[code]
    if code in RETRYABLE_STATUS or code >= 500:
        return ServerError
    return BadRequest


def parse_retry_after(headers: Mapping[str, str] | None, details: Any = None, *,
                      now: float | None = None) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms``, ``Retry-After`` (seconds or HTTP date), or a
    ``google.rpc.RetryInfo`` ``retryDelay`` in the error's ``details``. None when the server said nothing."""
    delays: list[float] = []
    for item in details if isinstance(details, list) else []:
        if isinstance(item, dict) and str(item.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(item.get("retryDelay", "")))
            if match:
                delays.append(float(match.group(1)))
    if headers:
        lowered = {k.lower(): v for k, v in headers.items()}
        try:
            delays.append(float(lowered["retry-after-ms"]) / 1000)
        except (KeyError, ValueError):
            pass
        value = lowered.get("retry-after")
        if value:
            try:
                delays.append(float(value))
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(value)
                except (TypeError, ValueError, IndexError):
                    when = None
                if when is not None:
                    delays.append(when.timestamp() - (time.time() if now is None else now))
    delays = [max(0.0, d) for d in delays]
    return max(delays) if delays else None


def _error_object(body: Any) -> dict[str, Any] | None:
    """The ``error`` object of a Vertex list body ``[{"error": {...}}]``, an OpenAI/Vertex dict body, or None."""
    if isinstance(body, list) and body:
        body = body[0]
    if isinstance(body, dict):
        inner = body.get("error", body)
        return inner if isinstance(inner, dict) else None
    return None


def _from_status(code: int, body: Any, headers: Mapping[str, str] | None) -> ChatbeamError:
    # The SDK hands us the decoded JSON (a Vertex list, or an OpenAI dict already unwrapped from "error"), or the
    # raw text when the body was not JSON (a proxy's HTML page).
    err = _error_object(body)
    status = str(err["status"]) if err and err.get("status") else None
    if err and err.get("message"):
        detail = str(err["message"])
    elif isinstance(body, str):
        detail = body.strip()[:500]
    else:
        detail = json.dumps(body, default=str)[:500] if body is not None else ""
    head = f"HTTP {code} {status}" if status else f"HTTP {code}"
    message = f"{head}: {detail}" if detail else head
    retry_after = parse_retry_after(headers, err.get("details") if err else None)
    return _class_for_status(code)(message, status_code=code, status=status, retry_after=retry_after)


def translate(exc: BaseException, *, streaming: bool = False) -> ChatbeamError | None:
    """The ChatbeamError for a foreign exception (openai, httpx2, JSON decoding), or None if it is not ours to map.

    ``streaming``: the exception was raised while reading a 200 stream, so a dropped connection is StreamBroken.
    """
    if isinstance(exc, ChatbeamError):
        return exc
    if isinstance(exc, openai.APIStatusError):
        return _from_status(exc.status_code, exc.body, exc.response.headers)
    if isinstance(exc, openai.APIResponseValidationError):
        return MalformedResponse(f"HTTP {exc.status_code} body is not a chat completion: {exc.message}",
                                 status_code=exc.status_code)
    if isinstance(exc, (openai.APITimeoutError, httpx2.TimeoutException)):
        return RequestTimeout(f"request timed out ({type(exc.__cause__ or exc).__name__})")
    if isinstance(exc, (openai.APIConnectionError, httpx2.TransportError)):
        cause = exc.__cause__ if isinstance(exc, openai.APIConnectionError) and exc.__cause__ else exc
        if streaming:
            return StreamBroken(f"stream broke after the response started: {type(cause).__name__}: {cause}")
        return ConnectionFailed(f"connection failed: {type(cause).__name__}: {cause}")
    if isinstance(exc, openai.LengthFinishReasonError):
        return Truncated("output hit the token limit (finish_reason=length)")
    if isinstance(exc, openai.ContentFilterFinishReasonError):
        return ContentFiltered("output was blocked by the content filter")
    if isinstance(exc, openai.APIError):
        # An error event inside a 200 stream: the body is the event's ``error`` object.
        err = _error_object(exc.body) or {}
        code = err.get("code")
        if isinstance(code, int) and 400 <= code < 600:
            return _from_status(code, [{"error": err}], None)
        return StreamBroken(f"error event in the stream: {exc.message}") if streaming else ServerError(exc.message)
    if isinstance(exc, json.JSONDecodeError):
        return MalformedResponse(f"response body is not valid JSON: {exc.msg} at position {exc.pos}")
    return None


def is_retryable(exc: BaseException) -> bool:
    """Could another attempt of the same request succeed? Pure; foreign exceptions are translated first."""
    mapped = translate(exc)
    return isinstance(mapped, RetryableError)


class map_errors:  # noqa: N801 - used like a function: ``with map_errors():``
    """Context manager (sync and async) that re-raises foreign errors as ChatbeamError, ``from`` the original."""

    def __init__(self, *, streaming: bool = False) -> None:
        self.streaming = streaming

    def __enter__(self) -> "map_errors":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, ChatbeamError):
            return False
        mapped = translate(exc, streaming=self.streaming)
        if mapped is None:
            return False
        raise mapped from exc

    async def __aenter__(self) -> "map_errors":
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool:
        return self.__exit__(exc_type, exc, tb)
