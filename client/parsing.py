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

``parse_completion`` raises, in this order: MalformedResponse (no choices), Truncated (finish_reason ``length``,
unless ``keep_truncated`` and the answer is plain text: then it is a result with finish_reason ``length``),
ContentFiltered (``content_filter`` and Gemini's safety reasons, or a refusal), SchemaInvalid for tool calls whose
arguments do not match their function's ``parameters`` (or name no declared function), and — only when a schema
was asked — EmptyResponse (no content) and SchemaInvalid. Plain empty text is a result. Every error raised after
an answer carries ``response_text`` (the content, or the tool calls' arguments).

Tool calls (``message.tool_calls``, or streamed deltas by index) become ``ToolCall`` records: id, type, function
name, ``arguments`` as the JSON text the model sent, ``arguments_parsed`` when it parses, ``extra_content`` untouched.
With ``schema_via_tool`` (``--structured_output tool``) the schema was asked as one forced function: its
arguments are the structured answer (``content`` and ``parsed``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import jsonschema
import orjson
import pydantic
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice

from client.errors import ContentFiltered, EmptyResponse, MalformedResponse, SchemaInvalid, Truncated
from schemas.records import FunctionCall, ToolCall, Usage
from schemas.registry import OutputSchema, SchemaMismatch

__all__ = ["ParsedCompletion", "StreamAssembler", "ThoughtTagSplitter", "completion_from_json", "parse_completion",
           "split_thoughts", "tool_calls_of", "usage_of"]

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

    Tool calls arrive as deltas by ``index``: the first carries ``id``, ``type`` and the function name, later ones
    append to ``arguments``; several calls interleave by index; ``extra_content`` is kept as sent (the last one).

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
        self._tools: dict[int, dict[int, dict[str, Any]]] = {}  # choice index -> tool index -> call being built
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
            for call in _get(delta, "tool_calls") or []:
                self._feed_tool_call(self._tools.setdefault(index, {}), call)
            if getattr(choice, "finish_reason", None):
                self.finish_reasons[index] = choice.finish_reason

    @staticmethod
    def _feed_tool_call(calls: dict[int, dict[str, Any]], delta: Any) -> None:
        position = _get(delta, "index")
        position = position if isinstance(position, int) else len(calls)
        call = calls.setdefault(position, {"id": None, "type": None, "name": "", "arguments": [],
                                           "extra_content": None})
        for key in ("id", "type"):
            value = _get(delta, key)
            if isinstance(value, str) and value and not call[key]:
                call[key] = value
        function = _get(delta, "function")
        name = _get(function, "name")
        if isinstance(name, str) and name and name != call["name"]:
            call["name"] += name  # the first delta names the function; a server that splits the name appends
        arguments = _get(function, "arguments")
        if isinstance(arguments, str) and arguments:
            call["arguments"].append(arguments)
        extra = _get(delta, "extra_content")
        if extra is not None:
            call["extra_content"] = extra

    def _tool_calls(self, index: int) -> list[dict[str, Any]] | None:
        calls = self._tools.get(index)
        if not calls:
            return None
        out = []
        for _, call in sorted(calls.items()):
            entry: dict[str, Any] = {"id": call["id"], "type": call["type"] or "function",
                                     "function": {"name": call["name"], "arguments": "".join(call["arguments"])}}
            if call["extra_content"] is not None:
                entry["extra_content"] = call["extra_content"]
            out.append(entry)
        return out

    @property
    def finished(self) -> bool:
        """Every choice seen has a finish_reason (a stream cut short has not)."""
        return bool(self.finish_reasons) and all(self.finish_reasons.values())

    def partial_text(self) -> str:
        """The first choice's content so far (kept as ``response_text`` when a stream breaks)."""
        return "".join(self._content.get(min(self._content), [])) if self._content else ""

    def completion(self) -> ChatCompletion:
        choices = []
        for index in sorted(self._content):
            message: dict[str, Any] = {"role": "assistant", "content": "".join(self._content[index])}
            if index in self._reasoning:
                message["reasoning_content"] = "".join(self._reasoning[index])
            tool_calls = self._tool_calls(index)
            if tool_calls:
                message["tool_calls"] = tool_calls
            choices.append({"index": index, "message": message, "finish_reason": self.finish_reasons[index]})
        return ChatCompletion.model_construct(
            id=self.id or "", object="chat.completion", created=self.created, model=self.model or "",
            choices=[Choice.model_construct(index=c["index"], finish_reason=c["finish_reason"],
                                            message=ChatCompletionMessage.model_construct(**c["message"]))
                     for c in choices],
            usage=self.usage)


def completion_from_json(body: bytes) -> ChatCompletion:
    """The SDK's ChatCompletion from a response body, the JSON parsed once.

    A well-formed answer is validated by pydantic-core straight from the bytes (``model_validate_json``: ~25 µs).
    An answer the model types do not admit — a Gemini ``finish_reason`` such as ``SAFETY``, a field of the wrong
    type — is built the SDK's own lenient way (``construct``, what ``create()`` does for every answer, ~20× dearer)
    so parse_completion judges it exactly as before. A body that is not JSON is a MalformedResponse."""
    try:
        return ChatCompletion.model_validate_json(body)
    except pydantic.ValidationError:
        pass
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedResponse(f"response is not a chat completion: {body[:200]!r} ({exc})") from None
    if not isinstance(data, dict):
        raise MalformedResponse(f"response is not a chat completion: {body[:200]!r}")
    return ChatCompletion.construct(**data)


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


def _get(obj: Any, key: str) -> Any:
    """A field of an SDK object or a plain dict (streamed deltas and extra fields come either way)."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    value = getattr(obj, key, None)
    if value is None:
        extra = getattr(obj, "model_extra", None)  # the SDK keeps fields it does not model (extra_content) here
        value = extra.get(key) if isinstance(extra, dict) else None
    return value


def _plain(value: Any) -> Any:
    """SDK objects (extra fields) → plain JSON data, so they pass through into records untouched."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_unset=True)
    return value


def tool_calls_of(message: Any) -> list[ToolCall] | None:
    """The message's tool calls as ToolCall records (``arguments_parsed`` when the arguments are JSON)."""
    calls = _get(message, "tool_calls")
    if not calls:
        return None
    out = []
    for call in calls:
        function = _get(call, "function")
        arguments = _get(function, "arguments")
        arguments = arguments if isinstance(arguments, str) else json.dumps(_plain(arguments) or {})
        try:
            parsed = json.loads(arguments) if arguments.strip() else None
        except (json.JSONDecodeError, RecursionError):
            parsed = None
        out.append(ToolCall(id=_get(call, "id"), type=_get(call, "type") or "function",
                            function=FunctionCall(name=str(_get(function, "name") or ""), arguments=arguments),
                            arguments_parsed=parsed, extra_content=_plain(_get(call, "extra_content"))))
    return out


@dataclass
class ParsedCompletion:
    content: str
    thoughts: str | None
    finish_reason: str | None
    usage: Usage
    model: str | None
    parsed: Any = None
    alternatives: list[str] | None = field(default=None)
    tool_calls: list[ToolCall] | None = field(default=None)


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


def _response_text(content: str, calls: list[ToolCall] | None) -> str | None:
    """What the model answered, for error records: the content, else the tool calls as JSON."""
    if content:
        return content
    if calls:
        return json.dumps([c.to_message_dict() for c in calls], ensure_ascii=False)
    return None


def _tool_mismatch(message: str, calls: list[ToolCall]) -> SchemaInvalid:
    exc = SchemaInvalid(message, response_text=_response_text("", calls))
    exc.tool_calls = [c.to_message_dict() for c in calls]  # the re-ask answers each call with the error
    return exc


def check_tool_calls(calls: list[ToolCall], tools: Sequence[Any]) -> None:
    """Each call names a declared function and its arguments validate against that function's ``parameters``
    (jsonschema); raises SchemaInvalid (carrying the calls, for a re-ask) otherwise."""
    functions = {}
    for tool in tools or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            functions[function["name"]] = function.get("parameters") or {"type": "object"}
    problems = []
    for call in calls:
        name = call.function.name
        if name not in functions:
            problems.append(f"{name or '(no name)'}: not a declared function ({', '.join(sorted(functions))})")
            continue
        if call.arguments_parsed is None and call.function.arguments.strip() not in ("", "null"):
            problems.append(f"{name}: arguments are not valid JSON: {call.function.arguments[:200]!r}")
            continue
        validator = jsonschema.Draft202012Validator(functions[name])
        errors = sorted(validator.iter_errors(call.arguments_parsed if call.arguments_parsed is not None else {}),
                        key=lambda e: list(e.path))
        problems += [f"{name}: {'/'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors[:5]]
    if problems:
        raise _tool_mismatch("; ".join(problems), calls)


def _structured(result: ParsedCompletion, schema: OutputSchema, schema_via_tool: bool) -> None:
    """Validate the structured answer into ``result.parsed`` (through the forced call's arguments in tool mode;
    a server that answered with text instead is validated from its content)."""
    calls = [c for c in result.tool_calls or [] if c.function.name == schema.name] if schema_via_tool else []
    text = calls[0].function.arguments if calls else result.content
    if not text.strip():
        raise EmptyResponse(f"empty answer where JSON was asked (finish_reason={result.finish_reason})")
    try:
        result.parsed = schema.validate_json(_strip_fence(text))
    except SchemaMismatch as exc:
        if calls:
            raise _tool_mismatch(str(exc), calls) from None
        raise SchemaInvalid(str(exc), response_text=text) from None
    if calls and not result.content:
        result.content = text  # the same shape as a json_schema answer: content is the JSON text


def parse_completion(completion: Any, *, schema: OutputSchema | None = None, thought_marker: str | None = None,
                     tools: Sequence[Any] | None = None, schema_via_tool: bool = False,
                     keep_truncated: bool = False) -> ParsedCompletion:
    """Turn a ChatCompletion into content/thoughts/tool calls/usage (and ``parsed`` with a schema), or raise (see
    the module docstring). ``tools``: the request's tool definitions, to validate tool-call arguments against."""
    choices = getattr(completion, "choices", None)
    if not isinstance(choices, list) or not choices or getattr(choices[0], "message", None) is None:
        raise MalformedResponse("the response has no choices")
    first = choices[0]
    usage = usage_of(getattr(completion, "usage", None))
    finish = first.finish_reason
    content, thoughts = _answer(first.message, thought_marker)
    result = ParsedCompletion(content=content, thoughts=thoughts, finish_reason=finish, usage=usage,
                              model=getattr(completion, "model", None) or None,
                              tool_calls=tool_calls_of(first.message))
    if len(choices) > 1:
        result.alternatives = [_answer(c.message, thought_marker)[0] for c in choices[1:]]
    response_text = _response_text(content, result.tool_calls)
    if finish == "length" and (schema is not None or result.tool_calls or not keep_truncated):
        exc = Truncated(f"output hit the token limit (finish_reason=length, {usage.completion_tokens} completion "
                        f"tokens, {usage.reasoning_tokens} of them thinking); raise max_tokens or lower the budget",
                        response_text=response_text)
        exc.partial = result  # what came back, for --on_truncation retry to fall back on
        raise exc
    refusal = getattr(first.message, "refusal", None)
    if (isinstance(finish, str) and finish.lower() in _FILTERED) or refusal:
        raise ContentFiltered(f"output was blocked (finish_reason={finish}){': ' + refusal if refusal else ''}",
                              response_text=response_text)
    if result.tool_calls and tools:
        check_tool_calls(result.tool_calls, tools)
    if schema is not None:
        _structured(result, schema, schema_via_tool)
    return result
