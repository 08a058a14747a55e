"""Pure response parsing: thought tags, stream assembly, finish reasons, usage, structured output.

    >>> split_thoughts("<think>2+2 is 4</think>The answer is 4.", "think")
    ('The answer is 4.', '2+2 is 4')
    >>> splitter = ThoughtTagSplitter("think")
    >>> splitter.feed("<thi"), splitter.feed("nk>hm</th"), splitter.feed("ink>Hi"), splitter.finish()
    (('', ''), ('', 'hm'), ('Hi', ''), ('', ''))
    >>> assembler = StreamAssembler()
    >>> for chunk in stream: assembler.feed(chunk)
    >>> parsed = parse_completion(assembler.completion(), schema=schema, thought_marker="think")
    >>> parsed.content, parsed.parsed, parsed.usage.reasoning_tokens

``parse_completion`` raises, in this order: MalformedResponse (no choices), Truncated (finish_reason ``length``),
ContentFiltered (``content_filter`` and Gemini's safety reasons, or a refusal), and — only when a schema was
asked — EmptyResponse (no content) and SchemaInvalid (carrying ``response_text``). Plain empty text is a result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice

from client.errors import ContentFiltered, EmptyResponse, MalformedResponse, SchemaInvalid, Truncated
from schemas.records import Usage
from schemas.registry import OutputSchema, SchemaMismatch

__all__ = ["ParsedCompletion", "StreamAssembler", "ThoughtTagSplitter", "parse_completion", "split_thoughts",
           "usage_of"]

_FILTERED = frozenset({"content_filter", "safety", "recitation", "blocklist", "prohibited_content", "spii",
                       "image_safety"})
_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*[ \t]*\n?(.*?)\n?```\s*$", re.DOTALL)


class ThoughtTagSplitter:
    """Incrementally separates ``<marker>…</marker>`` spans (thoughts) from the answer, chunk by chunk.

    Tags may be split anywhere across chunks; a possible partial tag at the end of a chunk is held back until
    the next chunk decides it. An unclosed thought runs to the end of the text.
    """

    def __init__(self, marker: str) -> None:
        self._open, self._close = f"<{marker}>", f"</{marker}>"
        self._buffer = ""
        self.in_thought = False
        self.saw_tag = False

    def feed(self, chunk: str) -> tuple[str, str]:
        """Consume a chunk; return the (answer, thought) text that is now certain."""
        answer: list[str] = []
        thought: list[str] = []
        buf = self._buffer + chunk
        while True:
            tag = self._close if self.in_thought else self._open
            out = thought if self.in_thought else answer
            index = buf.find(tag)
            if index >= 0:
                out.append(buf[:index])
                buf = buf[index + len(tag):]
                self.in_thought = not self.in_thought
                self.saw_tag = True
                continue
            keep = _partial_suffix(buf, tag)
            out.append(buf[:len(buf) - keep])
            self._buffer = buf[len(buf) - keep:]
            return "".join(answer), "".join(thought)

    def finish(self) -> tuple[str, str]:
        """End of text: whatever was held back is plain text of the current kind."""
        rest, self._buffer = self._buffer, ""
        return ("", rest) if self.in_thought else (rest, "")


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for size in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


def split_thoughts(text: str, marker: str | None) -> tuple[str, str | None]:
    """(answer, thoughts) of a whole text; thoughts is None when there were no tags (or no marker)."""
    if not marker or not text:
        return text, None
    splitter = ThoughtTagSplitter(marker)
    answer, thought = splitter.feed(text)
    tail_answer, tail_thought = splitter.finish()
    if not splitter.saw_tag:
        return text, None
    return answer + tail_answer, thought + tail_thought


class StreamAssembler:
    """Assembles ChatCompletionChunks into one ChatCompletion: content per choice, finish_reason, model, and the
    LAST non-null usage (the include_usage chunk; never summed).

    Written here rather than using the SDK's ChatCompletionStreamState because that one re-serialises the whole
    snapshot on every chunk and raises on ``length`` before the usage chunk has arrived.
    """

    def __init__(self) -> None:
        self.id: str | None = None
        self.model: str | None = None
        self.created = 0
        self.usage: Any = None
        self._content: dict[int, list[str]] = {}
        self._reasoning: dict[int, list[str]] = {}
        self.finish_reasons: dict[int, str | None] = {}
        self.chunks = 0

    def feed(self, chunk: ChatCompletionChunk) -> None:
        # The SDK builds chunks without validation, so any field may be missing: read them defensively.
        self.chunks += 1
        self.id = self.id or getattr(chunk, "id", None)
        self.model = getattr(chunk, "model", None) or self.model
        self.created = self.created or getattr(chunk, "created", None) or 0
        if getattr(chunk, "usage", None) is not None:
            self.usage = chunk.usage
        for choice in getattr(chunk, "choices", None) or []:
            index = getattr(choice, "index", None) or 0
            self._content.setdefault(index, [])
            self.finish_reasons.setdefault(index, None)
            delta = getattr(choice, "delta", None)
            text = getattr(delta, "content", None)
            if isinstance(text, str) and text:
                self._content[index].append(text)
            reasoning = getattr(delta, "reasoning_content", None)
            if isinstance(reasoning, str) and reasoning:
                self._reasoning.setdefault(index, []).append(reasoning)
            if getattr(choice, "finish_reason", None):
                self.finish_reasons[index] = choice.finish_reason

    @property
    def finished(self) -> bool:
        """Every choice seen has a finish_reason (a stream cut short has not)."""
        return bool(self.finish_reasons) and all(self.finish_reasons.values())

    def completion(self) -> ChatCompletion:
        choices = []
        for index in sorted(self._content):
            message: dict[str, Any] = {"role": "assistant", "content": "".join(self._content[index])}
            if index in self._reasoning:
                message["reasoning_content"] = "".join(self._reasoning[index])
            choices.append({"index": index, "message": message, "finish_reason": self.finish_reasons[index]})
        return ChatCompletion.model_construct(
            id=self.id or "", object="chat.completion", created=self.created, model=self.model or "",
            choices=[Choice.model_construct(index=c["index"], finish_reason=c["finish_reason"],
                                            message=ChatCompletionMessage.model_construct(**c["message"]))
                     for c in choices],
            usage=self.usage)


def usage_of(usage: Any) -> Usage:
    """Our Usage from the SDK's CompletionUsage (or None): reasoning and cached tokens from the details."""
    if usage is None:
        return Usage()
    prompt = getattr(usage, "prompt_tokens", None) or 0
    completion = getattr(usage, "completion_tokens", None) or 0
    details = getattr(usage, "completion_tokens_details", None)
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    return Usage(prompt_tokens=prompt, completion_tokens=completion,
                 reasoning_tokens=getattr(details, "reasoning_tokens", None) or 0,
                 cached_tokens=getattr(prompt_details, "cached_tokens", None) or 0,
                 total_tokens=getattr(usage, "total_tokens", None) or prompt + completion)


@dataclass
class ParsedCompletion:
    content: str
    thoughts: str | None
    finish_reason: str | None
    usage: Usage
    model: str | None
    parsed: Any = None
    alternatives: list[str] | None = field(default=None)


def _answer(message: Any, marker: str | None) -> tuple[str, str | None]:
    content, thoughts = split_thoughts(getattr(message, "content", None) or "", marker)
    if thoughts is not None:
        content, thoughts = content.strip(), thoughts.strip()
    reasoning = getattr(message, "reasoning_content", None)  # llama-server / DeepSeek-style separate field
    if isinstance(reasoning, str) and reasoning:
        thoughts = reasoning if thoughts is None else reasoning + "\n" + thoughts
    return content, thoughts


def _strip_fence(text: str) -> str:
    match = _FENCE.match(text)
    return match.group(1) if match else text


def parse_completion(completion: Any, *, schema: OutputSchema | None = None,
                     thought_marker: str | None = None) -> ParsedCompletion:
    """Turn a ChatCompletion into content/thoughts/usage (and ``parsed`` with a schema), or raise (see module)."""
    choices = getattr(completion, "choices", None)
    if not isinstance(choices, list) or not choices or getattr(choices[0], "message", None) is None:
        raise MalformedResponse("the response has no choices")
    first = choices[0]
    usage = usage_of(getattr(completion, "usage", None))
    finish = first.finish_reason
    if finish == "length":
        raise Truncated(f"output hit the token limit (finish_reason=length, {usage.completion_tokens} completion "
                        f"tokens, {usage.reasoning_tokens} of them thinking); raise max_tokens or lower the budget")
    refusal = getattr(first.message, "refusal", None)
    if (isinstance(finish, str) and finish.lower() in _FILTERED) or refusal:
        raise ContentFiltered(f"output was blocked (finish_reason={finish}){': ' + refusal if refusal else ''}")
    content, thoughts = _answer(first.message, thought_marker)
    result = ParsedCompletion(content=content, thoughts=thoughts, finish_reason=finish, usage=usage,
                              model=getattr(completion, "model", None) or None)
    if len(choices) > 1:
        result.alternatives = [_answer(c.message, thought_marker)[0] for c in choices[1:]]
    if schema is not None:
        if not content.strip():
            raise EmptyResponse(f"empty answer where JSON was asked (finish_reason={finish})")
        try:
            result.parsed = schema.validate_json(_strip_fence(content))
        except SchemaMismatch as exc:
            raise SchemaInvalid(str(exc), response_text=content) from None
    return result
