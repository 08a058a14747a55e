"""Pure translation of one online request (the ChatRequest ``build_request`` makes) into Gemini's native
GenerateContentRequest, the format of Vertex batch prediction lines. No Beam import.

    >>> request = build_request(InputRecord(id="a", prompt="Hi", params={"max_tokens": 50}), config)
    >>> to_native(request, labels={"chatbeam_key": "0f3a..."})
    {'contents': [{'role': 'user', 'parts': [{'text': 'Hi'}]}], 'generationConfig': {'maxOutputTokens': 50},
     'labels': {'chatbeam_key': '0f3a...'}}

Starting from ``build_request`` keeps one meaning for a record in both modes: the run's defaults merged with the
record's own ``params`` / ``google`` / ``schema``, the same validation, media inlining and ``request_key``.

What maps to what:

* ``system`` / ``developer`` messages (before any other) → ``systemInstruction``; ``user`` → role ``user``;
  ``assistant`` → role ``model``; ``tool`` messages → ``functionResponse`` parts (``{"content": <text>}``), named by
  the earlier tool call they answer.
* parts: ``text`` → ``text``; ``gs://`` image / audio / file → ``fileData`` (MIME type from the audio ``format``
  or the file extension); ``data:`` URLs → ``inlineData``; assistant ``tool_calls`` → ``functionCall`` parts (with
  ``extra_content.google.thought_signature`` as ``thoughtSignature``).
* params → ``generationConfig``: ``max_tokens`` / ``max_completion_tokens`` → ``maxOutputTokens``, ``temperature``,
  ``top_p`` → ``topP``, ``top_k`` → ``topK``, ``stop`` → ``stopSequences``, ``n`` → ``candidateCount``, ``seed``,
  ``presence_penalty`` / ``frequency_penalty``; the schema → ``responseMimeType: application/json`` +
  ``responseJsonSchema`` (``json_object`` → the MIME type alone); ``reasoning_effort`` → ``thinkingConfig
  .thinkingBudget`` on the budgets Google maps it to for the OpenAI-compatible API (none 0, minimal 512, low 1024,
  medium 8192, high 24576); ``google.thinking_config`` → ``thinkingConfig``; ``tools`` →
  ``functionDeclarations`` (``parametersJsonSchema``) and ``tool_choice`` → ``toolConfig``.
* ``google.safety_settings`` → ``safetySettings``; ``google.cached_content`` → ``cachedContent``;
  ``google.thought_tag_marker`` needs nothing (native answers carry thoughts as separate parts).

Anything else raises `UnsupportedInBatch` (error_type ``unsupported_in_batch``, retryable: the record can still be
sent online): a model that is not ``google/gemini-*`` (OpenAI-format batch lines are for partner models), http(s)
media, a system message after the conversation started, a message ``name``, a parameter or ``google`` option with
no native counterpart. Nothing is dropped silently; ``user`` (ignored online too) is the one parameter skipped.
"""

from __future__ import annotations

import json
import mimetypes
import re
from typing import Any

from client.errors import UnsupportedInBatch
from client.requests import ChatRequest

__all__ = ["LABEL_KEY", "REASONING_BUDGETS", "UnsupportedInBatch", "is_gemini", "to_native"]

LABEL_KEY = "chatbeam_key"
# Google's mapping of reasoning_effort to thinking budgets on the OpenAI-compatible API; "minimal" is our guess.
REASONING_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576}
_GEMINI = re.compile(r"^google/gemini-[A-Za-z0-9._-]+$")
_DATA_URL = re.compile(r"^data:([^;,]+)((?:;[^;,]*)*),(.*)$", re.S)
_SIMPLE = {"temperature": "temperature", "top_p": "topP", "top_k": "topK", "seed": "seed", "n": "candidateCount",
           "presence_penalty": "presencePenalty", "frequency_penalty": "frequencyPenalty",
           "max_tokens": "maxOutputTokens", "max_completion_tokens": "maxOutputTokens"}
_IGNORED = frozenset({"user"})  # accepted and ignored online as well
_GOOGLE = frozenset({"thinking_config", "thought_tag_marker", "safety_settings", "cached_content"})


def is_gemini(model: str | None) -> bool:
    return bool(model) and bool(_GEMINI.match(model))


def _media_part(url: Any, mime: str | None, where: str) -> dict[str, Any]:
    if not isinstance(url, str):
        raise UnsupportedInBatch(f"{where}: a media part without a URL")
    match = _DATA_URL.match(url)
    if match:
        if ";base64" not in match.group(2):
            raise UnsupportedInBatch(f"{where}: only base64 data URLs can be inlined in a batch line")
        return {"inlineData": {"mimeType": match.group(1), "data": match.group(3)}}
    if url.startswith("gs://"):
        mime = mime or mimetypes.guess_type(url)[0]
        if not mime:
            raise UnsupportedInBatch(f"{where}: cannot tell the MIME type of {url} (give the file an extension)")
        return {"fileData": {"fileUri": url, "mimeType": mime}}
    raise UnsupportedInBatch(f"{where}: only gs:// URIs and data: URLs can be used in a batch job, not {url[:60]!r}")


def _audio_mime(fmt: Any) -> str | None:
    if not isinstance(fmt, str) or not fmt:
        return None
    return fmt if "/" in fmt else mimetypes.guess_type(f"x.{fmt}")[0] or f"audio/{fmt}"


def _part(part: dict[str, Any], where: str) -> dict[str, Any]:
    if part.get("extra_content"):
        raise UnsupportedInBatch(f"{where}: extra_content on a content part has no native counterpart")
    kind = part.get("type")
    if kind == "text":
        return {"text": str(part.get("text", ""))}
    if kind == "image_url":
        value = part.get("image_url")
        return _media_part(value.get("url") if isinstance(value, dict) else value, None, where)
    if kind == "input_audio":
        audio = part.get("input_audio") or {}
        data = audio.get("data")
        if isinstance(data, str) and not data.startswith(("gs://", "data:", "http")):  # bare base64 (OpenAI's form)
            mime = _audio_mime(audio.get("format")) or "audio/wav"
            return {"inlineData": {"mimeType": mime, "data": data}}
        return _media_part(data, _audio_mime(audio.get("format")), where)
    if kind == "file":
        file = part.get("file") or {}
        if "file_data" not in file:
            raise UnsupportedInBatch(f"{where}: a file part needs file_data (file_id has no batch counterpart)")
        return _media_part(file["file_data"], mimetypes.guess_type(str(file.get("filename") or ""))[0], where)
    raise UnsupportedInBatch(f"{where}: part type {kind!r} has no native counterpart")


def _parts(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}]
    return [_part(part, f"{where}.content[{j}]") for j, part in enumerate(content)]


def _function_call(call: dict[str, Any], where: str) -> dict[str, Any]:
    fn = call.get("function") or {}
    try:
        args = json.loads(fn.get("arguments") or "{}")
    except (TypeError, json.JSONDecodeError):
        raise UnsupportedInBatch(f"{where}: tool call arguments are not JSON") from None
    part: dict[str, Any] = {"functionCall": {"name": fn.get("name"), "args": args}}
    signature = ((call.get("extra_content") or {}).get("google") or {}).get("thought_signature")
    if signature:
        part["thoughtSignature"] = signature
    return part


def _contents(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(systemInstruction parts, contents)."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for i, message in enumerate(messages):
        where, role = f"messages[{i}]", message.get("role")
        if message.get("name") is not None:
            raise UnsupportedInBatch(f"{where}: a message 'name' has no native counterpart")
        if message.get("extra_content"):
            raise UnsupportedInBatch(f"{where}: extra_content on a message has no native counterpart")
        if role in ("system", "developer"):
            if contents:
                raise UnsupportedInBatch(f"{where}: a system message after the conversation started cannot be "
                                         "a native systemInstruction")
            system += _parts(message.get("content"), where)
        elif role == "user":
            contents.append({"role": "user", "parts": _parts(message.get("content"), where)})
        elif role == "assistant":
            parts = _parts(message.get("content"), where)
            for k, call in enumerate(message.get("tool_calls") or []):
                parts.append(_function_call(call, f"{where}.tool_calls[{k}]"))
                call_names[str(call.get("id"))] = (call.get("function") or {}).get("name")
            contents.append({"role": "model", "parts": parts})
        elif role == "tool":
            name = call_names.get(str(message.get("tool_call_id")))
            if name is None:
                raise UnsupportedInBatch(f"{where}: the tool message answers no earlier tool call")
            content = message.get("content")
            text = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content or [])
            part = {"functionResponse": {"name": name, "response": {"content": text}}}
            if contents and contents[-1]["role"] == "user" and "functionResponse" in contents[-1]["parts"][-1]:
                contents[-1]["parts"].append(part)  # the answers to one turn's calls go back together
            else:
                contents.append({"role": "user", "parts": [part]})
        else:
            raise UnsupportedInBatch(f"{where}: role {role!r} has no native counterpart")
    return system, contents


def _response_format(config: dict[str, Any], fmt: Any) -> None:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_schema":
        config["responseMimeType"] = "application/json"
        config["responseJsonSchema"] = fmt["json_schema"]["schema"]
    elif kind == "json_object":
        config["responseMimeType"] = "application/json"
    elif kind != "text":
        raise UnsupportedInBatch(f"response_format {fmt!r} has no native counterpart")


def _tools(native: dict[str, Any], tools: Any, choice: Any) -> None:
    declarations = []
    for k, tool in enumerate(tools or []):
        fn = tool.get("function") if isinstance(tool, dict) and tool.get("type", "function") == "function" else None
        if not isinstance(fn, dict):
            raise UnsupportedInBatch(f"tools[{k}]: only function tools have a native counterpart")
        spec = {"name": fn.get("name"), "parametersJsonSchema": fn.get("parameters") or {"type": "object"}}
        if fn.get("description"):
            spec["description"] = fn["description"]
        declarations.append(spec)
    if declarations:
        native["tools"] = [{"functionDeclarations": declarations}]
    if choice is None or choice == "auto":
        return
    if choice in ("required", "none"):
        mode = {"mode": "ANY" if choice == "required" else "NONE"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        mode = {"mode": "ANY", "allowedFunctionNames": [choice["function"].get("name")]}
    else:
        raise UnsupportedInBatch(f"tool_choice {choice!r} has no native counterpart")
    native["toolConfig"] = {"functionCallingConfig": mode}


def _thinking(config: dict[str, Any], effort: Any, thinking: Any) -> None:
    out: dict[str, Any] = {}
    if effort is not None:
        if effort not in REASONING_BUDGETS:
            raise UnsupportedInBatch(f"reasoning_effort {effort!r} has no native thinking budget")
        out["thinkingBudget"] = REASONING_BUDGETS[effort]
    if isinstance(thinking, dict):
        unknown = set(thinking) - {"thinking_budget", "include_thoughts"}
        if unknown:
            raise UnsupportedInBatch(f"google.thinking_config.{sorted(unknown)[0]} has no native counterpart")
        if "thinking_budget" in thinking:
            out["thinkingBudget"] = thinking["thinking_budget"]
        if "include_thoughts" in thinking:
            out["includeThoughts"] = thinking["include_thoughts"]
    if out:
        config["thinkingConfig"] = out


def _generation(params: dict[str, Any], google: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for name, value in params.items():
        if name in _SIMPLE:
            config[_SIMPLE[name]] = value
        elif name == "stop":
            config["stopSequences"] = [value] if isinstance(value, str) else list(value)
        elif name == "response_format":
            _response_format(config, value)
        elif name not in ("tools", "tool_choice", "reasoning_effort") and name not in _IGNORED:
            raise UnsupportedInBatch(f"parameter {name!r} has no native counterpart in a batch line")
    _thinking(config, params.get("reasoning_effort"), google.get("thinking_config"))
    return config


def to_native(request: ChatRequest, *, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The GenerateContentRequest for ``request``; raises `UnsupportedInBatch` for what has no native form."""
    if not is_gemini(request.model):
        raise UnsupportedInBatch(f"model {request.model!r} is not a Gemini model (google/gemini-*): Gemini batch "
                                 "lines use the native format; partner models' OpenAI-format lines are not built")
    extra = dict(request.extra_body)
    google = (extra.pop("extra_body", None) or {}).get("google") or {}
    unknown = sorted(set(google) - _GOOGLE)
    if unknown:
        raise UnsupportedInBatch(f"google.{unknown[0]} has no native counterpart in a batch line")
    params = {**request.kwargs, **extra}
    system, contents = _contents(request.messages)
    if not contents:
        raise UnsupportedInBatch("a batch line needs at least one user or assistant message")
    native: dict[str, Any] = {"contents": contents}
    if system:
        native["systemInstruction"] = {"parts": system}
    config = _generation(params, google)
    if config:
        native["generationConfig"] = config
    _tools(native, params.get("tools"), params.get("tool_choice"))
    if google.get("safety_settings") is not None:
        native["safetySettings"] = google["safety_settings"]
    if google.get("cached_content") is not None:
        native["cachedContent"] = google["cached_content"]
    if labels:
        native["labels"] = dict(labels)
    return native
