"""Validate a Chat Completions request body into a `ChatRequest` (or raise a 400 `ApiError`).

Everything a bad client can send ends here as 400 INVALID_ARGUMENT, never a 500:
not an object, no/empty ``messages``, unknown role, bad part type, bad base64, a
recursive schema, both ``reasoning_effort`` and ``thinking_config``, ...

Google-only options are read from ``body["extra_body"]["google"]`` (what the openai SDK
sends for ``extra_body={"extra_body": {"google": {...}}}``) and from a top-level ``google``.

Usage::

    req = parse_chat({"messages": [{"role": "user", "content": "Hi"}]}, can_think=True)
    req.prompt_tokens, req.words, req.n
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from emulator import tokens
from emulator._json import canonical, dumps
from emulator.errors import ApiError, invalid_argument
from emulator.parts import parse_content
from emulator.schema_refs import SchemaError, check_schema

__all__ = ["ChatRequest", "Thinking", "parse_chat", "ROLES", "MAX_N"]

ROLES = frozenset({"system", "user", "assistant", "tool"})
MAX_N = 8
_EFFORTS = ("none", "minimal", "low", "medium", "high")
_WORD = re.compile(r"\w+")


class Thinking:
    """What the request asked of thinking: on/off, shown or not, budget, tag marker, effort."""

    __slots__ = ("enabled", "include_thoughts", "budget", "marker", "effort")

    def __init__(self, enabled: bool = False, include_thoughts: bool = False, budget: int | None = None,
                 marker: str | None = None, effort: str = "medium") -> None:
        self.enabled = enabled
        self.include_thoughts = include_thoughts
        self.budget = budget
        self.marker = marker
        self.effort = effort


class ChatRequest:
    """A validated request: the parts of the body the emulator acts on."""

    __slots__ = ("model", "n", "max_tokens", "stream", "include_usage", "format", "schema", "thinking",
                 "words", "acks", "prompt_tokens", "extra_content", "stop", "calls", "last_role", "last_user",
                 "answer_key")

    def __init__(self) -> None:
        self.model: str | None = None
        self.n = 1
        self.max_tokens: int | None = None
        self.stream = False
        self.include_usage = False
        self.format = "text"  # "text" | "json_object" | "json_schema"
        self.schema: Any = None
        self.thinking = Thinking()
        self.words: list[str] = []  # words of the last user message
        self.acks: list[str] = []  # one acknowledgement per media part, in order
        self.prompt_tokens = 0
        self.extra_content = [0, 0, 0]  # messages, parts, tool calls carrying extra_content
        self.stop: tuple[str, ...] = ()
        self.calls: list[dict[str, Any]] = []  # the functions to call ({"name", "parameters"}), in order
        self.last_role: str | None = None  # role of the last message (no "auto" call right after a tool answer)
        self.last_user = ""  # text of the last user message
        self.answer_key = ""  # seeds the answer: the request's meaning (model, texts, media), not its wire format

    @property
    def tool(self) -> dict[str, Any] | None:
        """The first function to call, or None when the answer is not a tool call."""
        return self.calls[0] if self.calls else None


def _fail(message: str) -> ApiError:
    return invalid_argument(message)


def _int(body: dict[str, Any], key: str, low: int, high: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise _fail(f"Invalid value for '{key}': must be an integer {bound}.")
    return value


def _messages(req: ChatRequest, messages: Any) -> list[str]:
    if not isinstance(messages, list) or not messages:
        raise _fail("'messages' must be a non-empty list.")
    texts: list[str] = []
    last_user = None
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise _fail(f"messages[{i}] must be an object.")
        role = msg.get("role")
        if role not in ROLES:
            raise _fail(f"messages[{i}].role must be one of {sorted(ROLES)}, got {role!r}.")
        if "extra_content" in msg:
            req.extra_content[0] += 1
        content = msg.get("content")
        tool_calls = msg.get("tool_calls")
        if content is None and not (role == "assistant"):
            raise _fail(f"messages[{i}].content is required for role {role!r}.")
        text = parse_content(req, content, i, texts) if content is not None else ""
        if role == "user":
            last_user = text
        if isinstance(msg.get("name"), str):
            texts.append(msg["name"])
        if tool_calls is not None:
            if role != "assistant" or not isinstance(tool_calls, list):
                raise _fail(f"messages[{i}].tool_calls must be a list on an assistant message.")
            for call in tool_calls:
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise _fail(f"messages[{i}].tool_calls entries need function.name.")
                if "extra_content" in call:
                    req.extra_content[2] += 1
                texts.append(fn["name"])
                texts.append(fn.get("arguments") if isinstance(fn.get("arguments"), str) else "")
    if all(m.get("role") == "system" for m in messages):
        raise _fail("At least one non-system message is required.")
    req.words = _WORD.findall(last_user or "")
    req.last_user = last_user or ""
    req.last_role = messages[-1].get("role")
    req.prompt_tokens += (tokens.REQUEST_OVERHEAD + tokens.MESSAGE_OVERHEAD * len(messages)
                          + tokens.count_text("\n".join(texts)))
    return texts


def _schema(schema: Any, what: str) -> None:
    try:
        check_schema(schema)
    except SchemaError as exc:
        raise _fail(f"{what}: {exc}") from None


def _response_format(req: ChatRequest, rf: Any) -> None:
    if rf is None:
        return
    if not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema"):
        raise _fail("response_format.type must be 'text', 'json_object' or 'json_schema'.")
    req.format = rf["type"]
    if req.format == "json_schema":
        spec = rf.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), (dict, bool)):
            raise _fail("response_format.json_schema.schema must be a JSON schema object.")
        _schema(spec["schema"], "response_format.json_schema.schema")
        req.schema = spec["schema"]
        req.prompt_tokens += tokens.count_text(dumps(spec["schema"]).decode())


def _named_in(text: str, functions: dict[str, Any]) -> list[str]:
    """The functions the text names (``get_weather``, or ``get weather``), in the order they appear."""
    lowered = text.lower()
    found = []
    for name in functions:
        spots = [lowered.find(form) for form in {name.lower(), name.lower().replace("_", " ")}]
        spots = [i for i in spots if i >= 0]
        if spots:
            found.append((min(spots), name))
    return [name for _, name in sorted(found)]


def _tools(req: ChatRequest, body: dict[str, Any]) -> None:
    """Which functions the answer calls: ``tool_choice`` a named function -> that one; ``required`` -> the functions
    the last user message names (all of them: parallel calls), else the first; ``auto`` or none given -> the named
    ones when the last message is the user's (after a tool answer, text); ``none`` -> none.
    ``parallel_tool_calls: false`` keeps only the first call."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if tools is None:
        return
    if not isinstance(tools, list):
        raise _fail("'tools' must be a list.")
    functions: dict[str, Any] = {}
    for k, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _fail(f"tools[{k}] must be {{'type': 'function', 'function': {{'name': ...}}}}.")
        params = fn.get("parameters", {"type": "object", "properties": {}})
        _schema(params, f"tools[{k}].function.parameters")
        functions[fn["name"]] = params
    req.prompt_tokens += tokens.count_text(dumps(tools).decode())
    if choice not in (None, "auto", "required", "none") and not isinstance(choice, dict):
        raise _fail("tool_choice must be 'auto', 'required', 'none' or {'type': 'function', 'function': {...}}.")
    named = _named_in(req.last_user, functions) if req.last_role == "user" else []
    if isinstance(choice, dict):
        name = choice.get("function", {}).get("name") if isinstance(choice.get("function"), dict) else None
        if name not in functions:
            raise _fail(f"tool_choice names an unknown function {name!r}.")
        names = [name]
    elif choice == "required" and functions:
        names = named or [next(iter(functions))]
    elif choice in (None, "auto"):
        names = named
    else:
        names = []
    if body.get("parallel_tool_calls") is False:
        names = names[:1]
    req.calls = [{"name": name, "parameters": functions[name]} for name in names]


def _google(body: dict[str, Any]) -> dict[str, Any]:
    extra = body.get("extra_body")
    nested = extra.get("google") if isinstance(extra, dict) else None
    top = body.get("google")
    for value, where in ((nested, "extra_body.google"), (top, "google")):
        if value is not None and not isinstance(value, dict):
            raise _fail(f"'{where}' must be an object.")
    return {**(top or {}), **(nested or {})}


def _effort_of_budget(budget: int | None) -> str:
    """The thought length a budget buys, on the budgets Google maps ``reasoning_effort`` to for the OpenAI-compatible
    API (low 1024, medium 8192, high 24576), so an effort sent as a native thinkingBudget thinks alike."""
    if budget is None or budget <= 0:
        return "medium"  # -1 is "dynamic"
    return "minimal" if budget <= 512 else "low" if budget <= 1024 else "medium" if budget <= 8192 else "high"


def _thinking(req: ChatRequest, body: dict[str, Any], can_think: bool, by_default: bool) -> None:
    google = _google(body)
    config = google.get("thinking_config")
    effort = body.get("reasoning_effort")
    marker = google.get("thought_tag_marker")
    if config is not None and effort is not None:
        raise _fail("reasoning_effort and thinking_config cannot be set at the same time.")
    if config is not None and not isinstance(config, dict):
        raise _fail("thinking_config must be an object.")
    if effort is not None and effort not in _EFFORTS:
        raise _fail(f"reasoning_effort must be one of {list(_EFFORTS)}.")
    if marker is not None and (not isinstance(marker, str) or not marker.strip()):
        raise _fail("thought_tag_marker must be a non-empty string.")
    config = config or {}
    include = config.get("include_thoughts", False)
    budget = config.get("thinking_budget")
    if not isinstance(include, bool):
        raise _fail("thinking_config.include_thoughts must be a boolean.")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < -1):
        raise _fail("thinking_config.thinking_budget must be an integer >= -1.")
    if not can_think and (include or budget not in (None, 0)):
        raise _fail("Thinking is not supported by this model.")
    asked = include or budget not in (None, 0) or effort not in (None, "none")
    default = by_default and budget != 0 and effort != "none"
    if not effort:
        effort = _effort_of_budget(budget)
    req.thinking = Thinking(can_think and (asked or default), include, budget if budget and budget > 0 else None,
                            marker.strip() if marker else None, effort)


def parse_chat(body: Any, *, can_think: bool = True, think_by_default: bool = False) -> ChatRequest:
    """Validate ``body``; raise a 400 `ApiError` for anything the real API would reject."""
    if not isinstance(body, dict):
        raise _fail("Request body must be a JSON object.")
    req = ChatRequest()
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _fail("'model' must be a string.")
    req.model = model
    texts = _messages(req, body.get("messages"))
    # The same question asked through the chat route, the native route or a batch job gets the same answer.
    req.answer_key = hashlib.sha256(canonical([model, texts, req.acks])).hexdigest()
    req.n = _int(body, "n", 1, MAX_N) or 1
    req.max_tokens = _int(body, "max_completion_tokens", 1) or _int(body, "max_tokens", 1)
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise _fail("'stream' must be a boolean.")
    req.stream = bool(stream)
    options = body.get("stream_options")
    req.include_usage = isinstance(options, dict) and options.get("include_usage") is True
    stop = body.get("stop")
    if isinstance(stop, str):
        req.stop = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        req.stop = tuple(s for s in stop if s)
    elif stop is not None:
        raise _fail("'stop' must be a string or a list of strings.")
    _response_format(req, body.get("response_format"))
    _tools(req, body)
    _thinking(req, body, can_think, think_by_default)
    return req
