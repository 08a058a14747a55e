"""Pure request building: one InputRecord + the run's ClientConfig -> one ChatRequest for ``chat.completions.create``.

    >>> req = build_request(InputRecord(prompt="Say hi", params={"temperature": 0, "top_k": 5}), config)
    >>> req.messages
    [{'role': 'user', 'content': 'Say hi'}]
    >>> req.kwargs, req.extra_body          # top_k is not a create() parameter, so it rides in the JSON body
    ({'temperature': 0}, {'top_k': 5})
    >>> await client.chat.completions.create(**req.create_args())

Rules:
- A record's ``model``/``params``/``schema``/``google`` override the config's defaults (``google`` dicts are merged
  key by key, nested dicts too). ``system`` (the record's, else the config's for ``prompt`` records) becomes the
  first message.
- Params that ``create()`` accepts go as keyword arguments; any other (``top_k``...) goes into ``extra_body``.
- ``google`` goes DOUBLE-nested, ``extra_body={"extra_body": {"google": {...}}}``, so the JSON body carries
  ``"extra_body": {"google": {...}}`` — what Vertex reads. It is sent whenever it is non-empty, also to plain
  OpenAI-compatible targets (which ignore unknown body fields); nothing is sent when it is empty.
- ``reasoning_effort`` together with ``google.thinking_config`` is refused here (Vertex answers 400).
- ``tools`` / ``tool_choice`` default to the run's (``--tools``, ``--tool_choice``); a record's params override
  them. Each tool must be ``{"type": "function", "function": {"name", "parameters": <JSON schema>}}``.
- A schema is a registry name or the run's ``--schema`` (schemas.registry.record_schema: a record never names code
  or files). It is asked as ``response_format`` json_schema, or with ``structured_output="tool"`` as one forced
  function call whose parameters are the schema (for servers without json_schema support).
- Local media paths (no scheme, or ``file://``) in ``image_url`` / ``input_audio.data`` are inlined as
  ``data:<mime>;base64,...`` only when their real path lies under ``config.media_root`` (relative paths are
  relative to it); gs://, https:// and data: URLs pass through untouched, as do ``extra_content`` fields.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import inspect
import json
import mimetypes
import os
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import openai
import orjson
from openai.resources.chat.completions import AsyncCompletions

from client.config import ClientConfig
from client.constants import REQUEST_KEY_CHARS
from client.errors import BadRequest, MediaError
from schemas.records import InputRecord, canonical_json
from schemas.registry import OutputSchema, load_registry_modules, record_schema, resolve_schema

__all__ = ["ChatRequest", "build_request", "check_tools", "estimate_tokens", "request_key", "request_schema"]

# Keys the core itself controls; a record may not set them through params.
_RESERVED = frozenset({"messages", "model", "stream", "stream_options", "extra_headers", "extra_query",
                       "extra_body", "timeout"})
# What create() accepts, read from the SDK so new SDK parameters are picked up without a code change.
_SDK_PARAMS = frozenset(inspect.signature(AsyncCompletions.create).parameters) - _RESERVED - {"self"}
# Token estimate (see estimate_tokens): Gemini bills an image at 258 tokens; inline media ~1 token per 100 bytes.
_WORDS = re.compile(r"\w+|[^\w\s]")
_MEDIA_URI_TOKENS = 258
_INLINE_BYTES_PER_TOKEN = 100


@dataclass
class ChatRequest:
    """Everything one call needs. ``request_key`` is the identity of the work (resume, caching)."""

    model: str | None
    messages: list[dict[str, Any]]
    kwargs: dict[str, Any] = field(default_factory=dict)
    extra_body: dict[str, Any] = field(default_factory=dict)
    schema: OutputSchema | None = None
    request_key: str = ""
    est_prompt_tokens: int = 0
    thought_marker: str | None = None
    schema_via_tool: bool = False  # the schema is asked as a forced function call (structured_output="tool")
    _body: bytes | None = field(default=None, init=False, repr=False, compare=False)  # body() of the first send

    @property
    def tools(self) -> list[Any] | None:
        """The tool definitions sent (tool-call arguments are validated against their ``parameters``)."""
        return self.kwargs.get("tools")

    def max_output_tokens(self) -> int | None:
        value = self.kwargs.get("max_completion_tokens", self.kwargs.get("max_tokens"))
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def with_max_output_tokens(self, tokens: int) -> "ChatRequest":
        """The same request (same ``request_key``: the same work) asking for up to ``tokens`` output tokens."""
        key = "max_completion_tokens" if "max_completion_tokens" in self.kwargs else "max_tokens"
        return dataclasses.replace(self, kwargs={**self.kwargs, key: tokens})

    def create_args(self, messages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Keyword arguments for ``chat.completions.create`` (``messages`` replaces the request's, for re-asks)."""
        args: dict[str, Any] = {"model": self.model if self.model is not None else openai.omit,
                                "messages": self.messages if messages is None else messages, **self.kwargs}
        if self.extra_body:
            args["extra_body"] = self.extra_body
        return args

    def body(self, messages: list[dict[str, Any]] | None = None) -> bytes:
        """The JSON body ``create(**create_args(messages))`` sends (``extra_body`` merged at the top, as the SDK
        does), serialised once per request: retries of the same messages reuse the bytes; a re-ask's own messages
        are serialised anew. orjson, because the SDK's stdlib encoder was a visible share of CPU per record."""
        if messages is not None and messages is not self.messages:
            return _dumps(self._payload(messages))
        if self._body is None:
            self._body = _dumps(self._payload(self.messages))
        return self._body

    def _payload(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model} if self.model is not None else {}
        payload["messages"] = messages
        payload.update(self.kwargs)
        payload.update(self.extra_body)
        return payload


def _dumps(payload: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(payload)
    except TypeError:  # a value orjson does not know (build_request checked the record is JSON): the SDK's encoder
        from openai._utils._json import openapi_dumps

        return openapi_dumps(payload)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _messages(record: InputRecord, config: ClientConfig) -> list[dict[str, Any]]:
    if record.prompt is not None:
        system = record.system if record.system is not None else config.system
        head = [{"role": "system", "content": system}] if system else []
        return head + [{"role": "user", "content": record.prompt}]
    messages = copy.deepcopy(record.messages or [])
    if record.system:
        if any(m.get("role") in ("system", "developer") for m in messages):
            raise BadRequest("the record has both 'system' and a system message; keep one")
        messages.insert(0, {"role": "system", "content": record.system})
    return messages


def _inline_file(spec: str, config: ClientConfig) -> tuple[str, bytes]:
    """(mime, bytes) of a local media file, only if it really lies under media_root."""
    if not config.media_root:
        raise MediaError(f"local media path {spec!r} needs --media_root (a directory local files may come from)")
    path = urllib.request.url2pathname(urllib.parse.urlsplit(spec).path) if spec.startswith("file:") else spec
    root = os.path.realpath(config.media_root)
    real = os.path.realpath(os.path.join(root, path))  # an absolute path replaces root; symlinks are followed
    if os.path.commonpath([root, real]) != root:
        raise MediaError(f"media path {spec!r} resolves outside --media_root")
    if not os.path.isfile(real):
        raise MediaError(f"media file {spec!r} does not exist or is not a regular file")
    with open(real, "rb") as fh:
        data = fh.read(config.max_media_bytes + 1)
    if len(data) > config.max_media_bytes:
        raise MediaError(f"media file {spec!r} is larger than max_media_bytes ({config.max_media_bytes})")
    return mimetypes.guess_type(real)[0] or "application/octet-stream", data


def _is_local(url: Any) -> bool:
    return isinstance(url, str) and urllib.parse.urlsplit(url).scheme.lower() in ("", "file")


def _inline_media(messages: list[dict[str, Any]], config: ClientConfig) -> None:
    for message in messages:
        parts = message.get("content")
        for part in parts if isinstance(parts, list) else []:
            if part.get("type") == "image_url":
                value = part.get("image_url")
                url = value.get("url") if isinstance(value, dict) else value
                if _is_local(url):
                    mime, data = _inline_file(url, config)
                    data_url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
                    if isinstance(value, dict):
                        value["url"] = data_url
                    else:
                        part["image_url"] = data_url
            elif part.get("type") == "input_audio" and isinstance(part.get("input_audio"), dict):
                audio = part["input_audio"]
                if _is_local(audio.get("data")):
                    mime, data = _inline_file(audio["data"], config)
                    encoded = base64.b64encode(data).decode("ascii")
                    if config.target.kind == "openai":
                        audio["data"] = encoded  # OpenAI's own form: bare base64 plus the part's "format"
                    else:
                        fmt = str(audio.get("format") or "")
                        mime = fmt if "/" in fmt else mimetypes.guess_type(f"x.{fmt}")[0] or mime
                        audio["data"] = f"data:{mime};base64,{encoded}"


def _text_tokens(text: str) -> int:
    # One token per word or punctuation mark; a word longer than 8 characters costs ceil(len/4).
    return sum(1 if len(w) <= 8 else -(-len(w) // 4) for w in _WORDS.findall(text))


def _media_tokens(url: Any) -> int:
    if isinstance(url, str) and url.startswith("data:"):
        payload = url.partition(",")[2]
        return max(1, -(-(len(payload) * 3 // 4) // _INLINE_BYTES_PER_TOKEN))
    return _MEDIA_URI_TOKENS


def estimate_tokens(messages: list[dict[str, Any]], schema: OutputSchema | None = None,
                    tools: Any = None) -> int:
    """A cheap prompt-token estimate for the limiter, tuned to the emulator's documented tokenizer
    (docs/emulator.md): 3 + 4 per message + text tokens; a media URI 258; inline media 1 per 100 bytes;
    the schema's and the tools' compact JSON count as text. Tune here, only here."""
    total = 3
    for message in messages:
        total += 4 + _text_tokens(str(message.get("name") or ""))
        content = message.get("content")
        if isinstance(content, str):
            total += _text_tokens(content)
        for part in content if isinstance(content, list) else []:
            if part.get("type") == "text":
                total += _text_tokens(str(part.get("text", "")))
            elif part.get("type") == "image_url":
                value = part.get("image_url")
                total += _media_tokens(value.get("url") if isinstance(value, dict) else value)
            elif part.get("type") == "input_audio":
                total += _media_tokens((part.get("input_audio") or {}).get("data"))
            else:
                total += _text_tokens(canonical_json(part))
        if message.get("tool_calls"):
            total += _text_tokens(canonical_json(message["tool_calls"]))
    if schema is not None:
        total += _text_tokens(canonical_json(schema.json_schema))
    if tools:
        total += _text_tokens(canonical_json(tools))
    return total


def request_key(model: str | None, messages: list[dict[str, Any]], params: dict[str, Any],
                extra_body: dict[str, Any], schema: OutputSchema | None) -> str:
    """sha256 (first 32 hex chars) of the canonical JSON of what is sent: the identity of the work."""
    payload = {"model": model, "messages": messages, "params": params, "extra_body": extra_body,
               "schema": schema.json_schema if schema is not None else None}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()[:REQUEST_KEY_CHARS]


def _check_sendable(messages: list[dict[str, Any]], kwargs: dict[str, Any], extra_body: dict[str, Any]) -> None:
    """A record holding values JSON cannot carry (NaN/Infinity, which Python's json module reads; lone surrogates
    from ``\\ud800`` escapes) is a bad request, not an internal error raised inside the SDK after an attempt."""
    try:
        json.dumps([messages, kwargs, extra_body], allow_nan=False, ensure_ascii=False, default=str).encode("utf-8")
    except ValueError as exc:  # also UnicodeEncodeError
        raise BadRequest(f"the record cannot be sent as JSON (NaN, Infinity or invalid Unicode): {exc}") from None


def request_schema(record: InputRecord, config: ClientConfig) -> OutputSchema | None:
    """The record's schema (only names: UnknownSchema otherwise), else the run's --schema."""
    if record.schema_name:
        return record_schema(record.schema_name, run_schema=config.schema, registry_modules=config.schema_registry)
    if config.schema:
        load_registry_modules(config.schema_registry)  # the run's --schema may be a name its modules register
        return resolve_schema(config.schema)
    return None


def check_tools(tools: Any) -> None:
    """``tools`` must be function definitions whose ``parameters`` are JSON schemas (arguments are validated
    against them); a bad definition is a bad request, not a failure after the call."""
    if tools is None:
        return
    if not isinstance(tools, list):
        raise BadRequest("params.tools must be a list of {'type': 'function', 'function': {...}}")
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise BadRequest(f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ..., "
                             "'parameters': {...}}}")
        parameters = function.get("parameters")
        if parameters is not None:
            try:
                jsonschema.Draft202012Validator.check_schema(parameters)
            except jsonschema.SchemaError as exc:
                raise BadRequest(f"tools[{i}] ({function['name']}): parameters is not a JSON schema: "
                                 f"{exc.message}") from None


def _tool_defaults(config: ClientConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if config.tools is not None:
        out["tools"] = [copy.deepcopy(t) for t in config.tools]
    if config.tool_choice is not None:
        out["tool_choice"] = copy.deepcopy(config.tool_choice)
    return out


def build_request(record: InputRecord, config: ClientConfig) -> ChatRequest:
    """The request for one record. Raises BadRequest, MediaError or UnknownSchema (permanent) for a record that
    cannot be sent."""
    params = {**config.params, **_tool_defaults(config), **record.params}
    reserved = sorted(_RESERVED & params.keys())
    if reserved:
        raise BadRequest(f"params may not set {', '.join(reserved)} (the pipeline controls them)")
    google = _merge(config.google, record.google or {})
    if params.get("reasoning_effort") is not None and google.get("thinking_config") is not None:
        raise BadRequest("reasoning_effort and google.thinking_config cannot be combined (Vertex rejects both); "
                         "use one of them")
    kwargs = {k: v for k, v in params.items() if k in _SDK_PARAMS}
    extra_body = {k: v for k, v in params.items() if k not in _SDK_PARAMS}
    if google:
        extra_body["extra_body"] = {"google": google}

    check_tools(kwargs.get("tools"))
    schema = request_schema(record, config)
    via_tool = schema is not None and config.structured_output == "tool"
    if via_tool:
        if kwargs.get("tools"):
            raise BadRequest("--structured_output tool asks the schema as a function call; the record's own tools "
                             "cannot be combined with it (use --structured_output json_schema)")
        kwargs["tools"], kwargs["tool_choice"] = [schema.tool()], schema.tool_choice()
    elif schema is not None:
        kwargs["response_format"] = schema.response_format()

    messages = _messages(record, config)
    _check_sendable(messages, kwargs, extra_body)
    _inline_media(messages, config)
    model = record.model or config.model
    marker = google.get("thought_tag_marker")
    return ChatRequest(
        model=model, messages=messages, kwargs=kwargs, extra_body=extra_body, schema=schema,
        request_key=request_key(model, messages, kwargs, extra_body, schema),
        est_prompt_tokens=estimate_tokens(messages, None if via_tool else schema, kwargs.get("tools")),
        thought_marker=marker if isinstance(marker, str) and marker else None,
        schema_via_tool=via_tool,
    )
