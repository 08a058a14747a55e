"""Named constants of the core: backoff bounds, token lifetimes, message limits.

    >>> from client.constants import MAX_RETRY_AFTER
    >>> MAX_RETRY_AFTER
    120.0

One place for the numbers, so a reader finds each rule's bound without hunting through the code.
"""

from __future__ import annotations

__all__ = [
    "CLOUD_PLATFORM_SCOPE",
    "INITIAL_RETRY_DELAY",
    "LOCAL_TOKEN_LIFETIME_S",
    "MAX_ERROR_MESSAGE_CHARS",
    "MAX_RESPONSE_BYTES",
    "MAX_RETRY_AFTER",
    "REASK_TEMPLATE",
    "REQUEST_KEY_CHARS",
    "RETRYABLE_STATUS",
    "THROTTLE_STATUS",
    "TOOL_REASK_TEMPLATE",
    "TRUNCATION_RETRY_MAX_TOKENS",
]

# Honour server-directed delays (Retry-After, google.rpc.RetryInfo) up to two minutes, like the openai SDK.
MAX_RETRY_AFTER = 120.0
# The first full-jitter backoff window is [0, INITIAL_RETRY_DELAY] seconds; it doubles per retry.
INITIAL_RETRY_DELAY = 0.5

# HTTP statuses worth another attempt: request timeout, rate limit / shared-quota pressure, cancelled, 5xx.
RETRYABLE_STATUS = frozenset({408, 429, 499, 500, 502, 503, 504})
# Statuses that tell the limiter "back off": quota pressure and overload.
THROTTLE_STATUS = frozenset({429, 503})

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# The emulator's stand-in tokens are re-minted this often (keep it below the emulator's --token_ttl_s).
LOCAL_TOKEN_LIFETIME_S = 60.0

# --max_response_bytes default: 8 MiB, ~30x Gemini's largest text answer (65,536 output tokens); up to
# --max_concurrency answers may be in memory at once (client/http_cap.py).
MAX_RESPONSE_BYTES = 8 * 1024 * 1024

# Error messages are cut to this many characters (an HTML 502 page is not a useful error message).
MAX_ERROR_MESSAGE_CHARS = 2000
# Hex characters of sha256 kept in a request_key.
REQUEST_KEY_CHARS = 32

# The user turn appended after a schema-invalid answer; {error} is the validator's message.
REASK_TEMPLATE = (
    "Your previous answer did not match the JSON schema: {error}\n"
    "Reply again with only JSON that matches the schema."
)

# The tool message answering each call whose arguments did not match the function's parameters (the re-ask of a
# tool call: every call of an assistant turn must be answered by a tool message before the model is asked again).
TOOL_REASK_TEMPLATE = (
    "Error: the arguments did not match the function's parameters schema: {error}\n"
    "Call the function again with arguments that match the schema."
)

# --on_truncation retry: the one retry of a cut-off answer doubles the output limit up to this many tokens. 8192 is
# the smallest maximum output of the Gemini 2.x models (2.0 Flash / Flash-Lite), so the retry never asks a model for
# more than it can give; a request already at or above it is not retried.
TRUNCATION_RETRY_MAX_TOKENS = 8192
