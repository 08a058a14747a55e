"""Errors as values, rendered in Vertex's list shape or OpenAI's dict shape.

An `ApiError` is raised anywhere below the route handler and rendered once, by the
route, in the shape that route's real server uses:

* Vertex routes (``/v1/projects/...``) answer a JSON **list**::

    [{"error": {"code": 429, "message": "...", "status": "RESOURCE_EXHAUSTED",
                "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]}}]

* the plain ``/v1/chat/completions`` route answers OpenAI's dict::

    {"error": {"message": "...", "type": "invalid_request_error", "param": null, "code": null}}

Usage::

    err = invalid_argument("messages must be a non-empty list")
    body = vertex_body(err)          # list-wrapped bytes
    body = openai_body(err)          # dict bytes
"""

from __future__ import annotations

from typing import Any

from emulator._json import dumps

__all__ = [
    "ApiError",
    "invalid_argument",
    "not_found",
    "unauthenticated",
    "token_expired",
    "resource_exhausted",
    "internal",
    "unavailable",
    "vertex_body",
    "openai_body",
    "format_duration",
]

_AUTH_HINT = (
    "Expected OAuth 2 access token, login cookie or other valid authentication credential. "
    "See https://developers.google.com/identity/sign-in/web/devconsole-project."
)
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"

# OpenAI's (type, code) for each HTTP status, used on the plain route.
_OPENAI_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}


class ApiError(Exception):
    """An HTTP error answer: status code, Google status name, message and ``details``.

    ``headers`` are extra response headers (the plain route adds ``Retry-After``).
    """

    def __init__(
        self,
        code: int,
        status: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message
        self.details = details or []
        self.headers = headers or {}

    def __repr__(self) -> str:
        return f"ApiError({self.code}, {self.status!r}, {self.message!r})"


def format_duration(seconds: float) -> str:
    """A google.protobuf.Duration in JSON form: ``1`` -> ``"1s"``, ``0.25`` -> ``"0.250s"``."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds:.3f}s"


def invalid_argument(message: str) -> ApiError:
    return ApiError(400, "INVALID_ARGUMENT", message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", message)


def unauthenticated() -> ApiError:
    return ApiError(
        401,
        "UNAUTHENTICATED",
        "Request is missing required authentication credential. " + _AUTH_HINT,
        [{"@type": _ERROR_INFO, "reason": "CREDENTIALS_MISSING", "domain": "googleapis.com"}],
    )


def token_expired() -> ApiError:
    return ApiError(
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. " + _AUTH_HINT,
        [
            {
                "@type": _ERROR_INFO,
                "reason": "ACCESS_TOKEN_EXPIRED",
                "domain": "googleapis.com",
                "metadata": {"service": "aiplatform.googleapis.com"},
            }
        ],
    )


def resource_exhausted(retry_info: bool, retry_delay_s: float) -> ApiError:
    """The shared-pool 429, optionally with a RetryInfo detail (and Retry-After on the plain route)."""
    details = [{"@type": _RETRY_INFO, "retryDelay": format_duration(retry_delay_s)}] if retry_info else []
    headers = {"retry-after": format_duration(retry_delay_s)[:-1]} if retry_info else {}
    return ApiError(
        429,
        "RESOURCE_EXHAUSTED",
        "Resource exhausted. Please try again later. Please refer to "
        "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details.",
        details,
        headers,
    )


def internal() -> ApiError:
    return ApiError(500, "INTERNAL", "Internal error encountered.")


def unavailable() -> ApiError:
    return ApiError(503, "UNAVAILABLE", "The service is currently unavailable.")


def vertex_body(err: ApiError) -> bytes:
    """Vertex's list-wrapped error body."""
    error: dict[str, Any] = {"code": err.code, "message": err.message, "status": err.status}
    if err.details:
        error["details"] = err.details
    return dumps([{"error": error}])


def openai_body(err: ApiError) -> bytes:
    """OpenAI's dict error body (``type``/``code`` from the HTTP status)."""
    kind, code = _OPENAI_KINDS.get(err.code, ("api_error", None))
    return dumps({"error": {"message": err.message, "type": kind, "param": None, "code": code}})
