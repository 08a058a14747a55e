"""Build the choices of an answer: thought, content or tool call, token counts, finish_reason.

Rules, in order, per choice:

1. thinking on -> a thought (`emulator.answers.thought_text`), capped at ``thinking_budget``;
2. the answer: tool calls (``tool_choice`` required/named, or ``auto`` when the prompt names a function; one call
   per function named, so several are parallel calls; arguments broken when ``violate``), a JSON value
   (json_schema / json_object; deliberately broken when ``violate``) or text;
3. ``stop`` sequences cut the text (finish_reason ``stop``);
4. ``max_tokens`` covers reasoning + answer tokens: thinking first, the answer gets the
   rest; anything cut gives finish_reason ``length`` (thought longer than the limit ->
   empty answer);
5. ``truncate`` (fault) cuts the answer to half its tokens with finish_reason ``length``;
6. with ``include_thoughts`` and a ``thought_tag_marker`` the content is
   ``<marker>thought</marker>answer``; without a marker thoughts are billed but not shown.

Usage::

    choices = make_choices(req, random.Random("0:ab12"), violate=False, truncate=False)
    choices[0].content, choices[0].completion_tokens, choices[0].finish_reason
"""

from __future__ import annotations

import random
from typing import Any

from emulator import schema_gen
from emulator._json import dumps
from emulator.answers import ECHO_WORDS, answer_text, thought_text
from emulator.request import ChatRequest
from emulator.tokens import count_text, truncate_text

__all__ = ["Choice", "make_choices"]


class Choice:
    """One generated choice."""

    __slots__ = ("content", "reasoning_tokens", "completion_tokens", "finish_reason", "tool_calls", "thought_span",
                 "thought")

    def __init__(self) -> None:
        self.content: str | None = ""
        self.reasoning_tokens = 0
        self.completion_tokens = 0
        self.finish_reason = "stop"
        self.tool_calls: list[dict[str, Any]] | None = None
        self.thought_span: tuple[int, int] | None = None  # [start, end) of the tagged thought in content
        self.thought = ""  # the thought text (the native API returns it as a thought part)


def _answer(req: ChatRequest, rng: random.Random, violate: bool) -> str:
    if req.format == "json_schema":
        value = schema_gen.generate(req.schema, rng, req.words)
        return dumps(schema_gen.violate(req.schema, value) if violate else value).decode()
    if req.format == "json_object":
        value: Any = {"answer": " ".join(req.words[:ECHO_WORDS]), "keywords": req.words[:5]}
        return dumps(["not", "an", "object"] if violate else value).decode()
    return answer_text(rng, req.words, req.acks)


def _tool_call(function: dict[str, Any], req: ChatRequest, rng: random.Random, thinking: bool,
               violate: bool) -> dict[str, Any]:
    args = schema_gen.generate(function["parameters"], rng, req.words)
    if violate:
        args = schema_gen.violate(function["parameters"], args)
    call: dict[str, Any] = {
        "id": "call_%016x" % rng.getrandbits(64),
        "type": "function",
        "function": {"name": function["name"], "arguments": dumps(args).decode()},
    }
    if thinking:  # Gemini signs the thought behind a function call; clients must send it back
        call["extra_content"] = {"google": {"thought_signature": "%032x" % rng.getrandbits(128)}}
    return call


def _one(req: ChatRequest, rng: random.Random, violate: bool, truncate: bool) -> Choice:
    choice = Choice()
    th = req.thinking
    thought, reasoning = "", 0
    if th.enabled:
        thought = thought_text(rng, req.words, th.effort)
        reasoning = count_text(thought)
        if th.budget is not None and reasoning > th.budget:
            thought, reasoning = truncate_text(thought, th.budget)
    limit = req.max_tokens
    if limit is not None and reasoning >= limit:
        thought, reasoning = truncate_text(thought, limit)

    if req.calls:
        choice.tool_calls = [_tool_call(f, req, rng, th.enabled, violate) for f in req.calls]
        answer, answer_tokens = "", sum(count_text(c["function"]["name"] + " " + c["function"]["arguments"])
                                        for c in choice.tool_calls)
        choice.content = None
        choice.finish_reason = "tool_calls"
    else:
        answer = _answer(req, rng, violate)
        for stop in req.stop:
            cut = answer.find(stop)
            if cut >= 0:
                answer = answer[:cut]
        answer_tokens = count_text(answer)
        if limit is not None and answer_tokens + reasoning > limit:
            answer, answer_tokens = truncate_text(answer, limit - reasoning)
            choice.finish_reason = "length"
        elif truncate:
            answer, answer_tokens = truncate_text(answer, answer_tokens // 2)
            choice.finish_reason = "length"
        if th.enabled and th.include_thoughts and th.marker:
            head = f"<{th.marker}>"
            choice.thought_span = (0, len(head) + len(thought) + len(head) + 1)
            answer = f"{head}{thought}</{th.marker}>{answer}"
        choice.content = answer
    choice.thought = thought
    choice.reasoning_tokens = reasoning
    choice.completion_tokens = answer_tokens + reasoning
    return choice


def make_choices(req: ChatRequest, rng: random.Random, *, violate: bool, truncate: bool) -> list[Choice]:
    """``req.n`` choices, each drawn from ``rng`` in turn."""
    return [_one(req, rng, violate, truncate) for _ in range(req.n)]
