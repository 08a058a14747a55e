"""Serialise choices as ``chat.completion`` JSON or ``chat.completion.chunk`` SSE events.

Streams: the first chunk of each choice carries only ``role`` (content null); content is split into pieces
of a few characters, with extra cuts inside the thought tags (``<thi`` | ``nk>`` and
``</th`` | ``ink>``) so clients must reassemble split tags; tool calls come as deltas by ``index``, as OpenAI and
llama-server send them: the first delta of a call carries ``id``, ``type``, the function name and empty
``arguments`` (and ``extra_content``), the next ones pieces of ``arguments``; then a chunk with the
``finish_reason``; then, with ``stream_options.include_usage``, a chunk with empty
``choices`` and ``usage``; then ``data: [DONE]``.

Usage::

    body = completion_body("chatcmpl-1", 1700000000, "google/gemini-2.5-flash", choices, 12)
    events = stream_events("chatcmpl-1", 1700000000, "m", choices, 12, include_usage=True)
    events[-1] == b"data: [DONE]\\n\\n"
"""

from __future__ import annotations

from typing import Any, Sequence

from emulator._json import dumps
from emulator.completion import Choice

__all__ = ["completion_body", "stream_events", "tool_call_deltas", "usage", "split_content", "DONE"]

DONE = b"data: [DONE]\n\n"
_MIN_PIECE = 12  # characters per content chunk (more for long content)
_MAX_PIECES = 48  # per choice
_ARGUMENT_PIECE = 8  # characters of tool-call arguments per delta


def usage(prompt_tokens: int, choices: Sequence[Choice], thinking: bool) -> dict[str, Any]:
    completion = sum(c.completion_tokens for c in choices)
    out: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }
    if thinking:
        out["completion_tokens_details"] = {"reasoning_tokens": sum(c.reasoning_tokens for c in choices)}
    return out


def _message(choice: Choice) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": choice.content}
    if choice.tool_calls:
        message["tool_calls"] = choice.tool_calls
    return message


def completion_body(cid: str, created: int, model: str, choices: Sequence[Choice], prompt_tokens: int,
                    thinking: bool = False) -> bytes:
    """A complete non-streaming ``chat.completion`` body."""
    return dumps({
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": i, "message": _message(c), "finish_reason": c.finish_reason, "logprobs": None}
            for i, c in enumerate(choices)
        ],
        "usage": usage(prompt_tokens, choices, thinking),
    })


def split_content(content: str, thought_span: tuple[int, int] | None = None, marker: str = "") -> list[str]:
    """Cut ``content`` into stream pieces; tags around a thought are always cut in two."""
    if not content:
        return [""]
    size = max(_MIN_PIECE, -(-len(content) // _MAX_PIECES))
    cuts = set(range(size, len(content), size))
    if thought_span is not None and marker:
        start, end = thought_span
        cuts.add(start + 1 + min(3, len(marker)))  # inside "<marker>"
        close = end - len(marker) - 3  # start of "</marker>"
        cuts.add(close + 1 + min(3, len(marker)))  # inside "</marker>"
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(content)), len(content)]
    return [content[a:b] for a, b in zip(bounds, bounds[1:])]


def tool_call_deltas(calls: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stream deltas of a choice's tool calls: per call, a head (id, type, name, empty arguments, extra_content)
    and then its arguments in pieces of ``_ARGUMENT_PIECE`` characters, each tagged with the call's ``index``."""
    deltas: list[dict[str, Any]] = []
    for k, call in enumerate(calls):
        head: dict[str, Any] = {"index": k, "id": call["id"], "type": call["type"],
                                "function": {"name": call["function"]["name"], "arguments": ""}}
        if "extra_content" in call:
            head["extra_content"] = call["extra_content"]
        delta: dict[str, Any] = {"tool_calls": [head]}
        if k == 0:
            delta = {"role": "assistant", "content": None, **delta}
        deltas.append(delta)
        arguments = call["function"]["arguments"]
        for start in range(0, len(arguments), _ARGUMENT_PIECE):
            piece = arguments[start:start + _ARGUMENT_PIECE]
            deltas.append({"tool_calls": [{"index": k, "function": {"arguments": piece}}]})
    return deltas


def _sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + dumps(chunk) + b"\n\n"


def stream_events(cid: str, created: int, model: str, choices: Sequence[Choice], prompt_tokens: int, *,
                  include_usage: bool, thinking: bool = False, marker: str = "") -> list[bytes]:
    """Every SSE event of a streamed answer, ``[DONE]`` included."""
    base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
    events: list[bytes] = []
    for i, choice in enumerate(choices):
        if choice.tool_calls:
            for delta in tool_call_deltas(choice.tool_calls):
                events.append(_sse({**base, "choices": [{"index": i, "delta": delta, "finish_reason": None}]}))
        else:
            # A role-only first chunk with null content, as OpenAI and llama-server send it: clients must not
            # take the null for the end of the content.
            role = {"role": "assistant", "content": None}
            events.append(_sse({**base, "choices": [{"index": i, "delta": role, "finish_reason": None}]}))
            for piece in split_content(choice.content or "", choice.thought_span, marker):
                delta = {"content": piece}
                events.append(_sse({**base, "choices": [{"index": i, "delta": delta, "finish_reason": None}]}))
        events.append(_sse({**base, "choices": [{"index": i, "delta": {}, "finish_reason": choice.finish_reason}]}))
    if include_usage:
        events.append(_sse({**base, "choices": [], "usage": usage(prompt_tokens, choices, thinking)}))
    events.append(DONE)
    return events
