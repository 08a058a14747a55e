"""Gemini's native format: a GenerateContentRequest read as the equivalent chat request, and choices written back
as a GenerateContentResponse.

The native routes (``…/publishers/google/models/{model}:generateContent`` and the lines of a batch prediction
job) answer the same question the same way as the chat routes: `to_chat` rewrites the native body into the chat
body it is equivalent to, `emulator.request.parse_chat` validates it, and the answer is seeded from the request's
meaning (``ChatRequest.answer_key``), not from its wire format. So a record sent online and in a batch job gets
the same answer.

Like Google's JSON-to-proto parsing, unknown fields are a 400 ("Unknown name ..."), so a client that writes a
field Vertex does not know is caught here. ``labels`` follow Vertex's label rules (at most 64, keys and values
up to 63 lowercase letters, digits, ``_`` or ``-``; keys start with a letter).

Usage::

    chat_body = to_chat(native_body, model="google/gemini-2.5-flash")     # ApiError 400 when invalid
    req = parse_chat(chat_body, can_think=True)
    response = to_response(choices, req, "gemini-2.5-flash", tier="flex", response_id="abc")
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from emulator._json import dumps, loads
from emulator.completion import Choice
from emulator.errors import ApiError, invalid_argument
from emulator.request import ChatRequest
from emulator.tiers import TRAFFIC_TYPE

__all__ = ["to_chat", "to_response", "FINISH_REASON"]

FINISH_REASON = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "content_filter": "SAFETY"}
_REQUEST_KEYS = frozenset({"contents", "systemInstruction", "generationConfig", "safetySettings", "tools",
                           "toolConfig", "labels", "cachedContent", "model"})
_CONFIG_KEYS = frozenset({"temperature", "topP", "topK", "candidateCount", "maxOutputTokens", "stopSequences",
                          "seed", "presencePenalty", "frequencyPenalty", "responseMimeType", "responseSchema",
                          "responseJsonSchema", "thinkingConfig", "responseLogprobs", "logprobs"})
_THINKING_KEYS = frozenset({"thinkingBudget", "includeThoughts", "thinkingLevel"})
_PART_KEYS = frozenset({"text", "inlineData", "fileData", "functionCall", "functionResponse", "thought",
                        "thoughtSignature"})
_LABEL = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_LEVELS = {"minimal": "minimal", "low": "low", "medium": "medium", "high": "high"}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def _fields(value: Any, known: frozenset[str], where: str) -> dict[str, Any]:
    """An object's fields by their JSON (lowerCamelCase) names: proto3 JSON parsers accept the proto field names
    (``include_thoughts``) too, as google-genai sends some; any other name is a 400, as on Google's side."""
    value = _obj(value, where)
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = key if key in known else _camel(key)
        if name not in known:
            raise invalid_argument(f'Invalid JSON payload received. Unknown name "{key}" at \'{where}\': '
                                   "Cannot find field.")
        out[name] = item
    return out


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid_argument(f"{where} must be an object.")
    return value


def _labels(labels: Any) -> None:
    labels = _obj(labels, "labels")
    if len(labels) > 64:
        raise invalid_argument("labels: at most 64 labels are allowed.")
    for key, value in labels.items():
        if not _LABEL.match(key) or not isinstance(value, str) or not _LABEL_VALUE.match(value):
            raise invalid_argument(f"labels: invalid label {key!r}: keys and values must be at most 63 lowercase "
                                   "letters, digits, '_' or '-' (keys start with a letter).")


def _text_parts(content: Any, where: str) -> list[str]:
    parts = _obj(content, where).get("parts")
    if not isinstance(parts, list) or not parts:
        raise invalid_argument(f"{where}.parts must be a non-empty list.")
    out = []
    for j, part in enumerate(parts):
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise invalid_argument(f"{where}.parts[{j}]: only text parts are allowed here.")
        out.append(part["text"])
    return out


def _media(part: dict[str, Any], where: str) -> dict[str, Any]:
    if "inlineData" in part:
        data = _fields(part["inlineData"], frozenset({"mimeType", "data", "displayName"}), f"{where}.inlineData")
        if not isinstance(data.get("mimeType"), str) or not isinstance(data.get("data"), str):
            raise invalid_argument(f"{where}.inlineData needs mimeType and data.")
        return {"type": "image_url", "image_url": f"data:{data['mimeType']};base64,{data['data']}"}
    ref = _fields(part["fileData"], frozenset({"mimeType", "fileUri", "displayName"}), f"{where}.fileData")
    if not isinstance(ref.get("fileUri"), str) or not isinstance(ref.get("mimeType"), str):
        raise invalid_argument(f"{where}.fileData needs fileUri and mimeType.")
    return {"type": "image_url", "image_url": ref["fileUri"]}


def _tool_call(part: dict[str, Any], where: str, k: int) -> dict[str, Any]:
    call = _obj(part["functionCall"], f"{where}.functionCall")
    if not isinstance(call.get("name"), str):
        raise invalid_argument(f"{where}.functionCall.name must be a string.")
    out: dict[str, Any] = {"id": f"call_{k}", "type": "function",
                           "function": {"name": call["name"], "arguments": dumps(call.get("args") or {}).decode()}}
    if "thoughtSignature" in part:
        out["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
    return out


def _tool_result(part: dict[str, Any], where: str, k: int) -> dict[str, Any]:
    result = _obj(part["functionResponse"], f"{where}.functionResponse")
    response = result.get("response")
    if not isinstance(result.get("name"), str) or not isinstance(response, dict):
        raise invalid_argument(f"{where}.functionResponse needs name and an object response.")
    text = response["content"] if set(response) == {"content"} and isinstance(response["content"], str) \
        else dumps(response).decode()
    return {"role": "tool", "tool_call_id": f"call_{k}", "name": result["name"], "content": text}


def _content(content: Any, i: int, calls: list[int]) -> list[dict[str, Any]]:
    """One native content → the chat messages it stands for (function responses become tool messages)."""
    where = f"contents[{i}]"
    content = _obj(content, where)
    role = content.get("role", "user")
    if role not in ("user", "model"):
        raise invalid_argument(f"{where}.role must be 'user' or 'model', got {role!r}.")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise invalid_argument(f"{where}.parts must be a non-empty list.")
    chat_parts: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    tool_messages: list[dict[str, Any]] = []
    for j, part in enumerate(parts):
        pw = f"{where}.parts[{j}]"
        part = _fields(part, _PART_KEYS, pw)
        if part.get("thought"):
            continue  # an earlier turn's thought: context for the model, not prompt text here
        if isinstance(part.get("text"), str):
            chat_parts.append({"type": "text", "text": part["text"]})
        elif "inlineData" in part or "fileData" in part:
            chat_parts.append(_media(part, pw))
        elif "functionCall" in part and role == "model":
            calls.append(len(calls))
            tool_calls.append(_tool_call(part, pw, calls[-1]))
        elif "functionResponse" in part and role == "user":
            tool_messages.append(_tool_result(part, pw, len(tool_messages)))
        else:
            raise invalid_argument(f"{pw}: a part needs one of text, inlineData, fileData, functionCall (model) "
                                   "or functionResponse (user).")
    out: list[dict[str, Any]] = list(tool_messages)
    if chat_parts or tool_calls:
        text_only = all(p["type"] == "text" for p in chat_parts)
        message: dict[str, Any] = {"role": "assistant" if role == "model" else "user",
                                   "content": (" ".join(p["text"] for p in chat_parts) if text_only and len(chat_parts) == 1
                                               else chat_parts or None)}
        if tool_calls:
            message["tool_calls"] = tool_calls
        out.append(message)
    return out


def _lower_types(schema: Any) -> Any:
    """``responseSchema`` (Google's OpenAPI subset) spells types in capitals: ``"OBJECT"`` → ``"object"``."""
    if isinstance(schema, dict):
        return {k: (v.lower() if k == "type" and isinstance(v, str) else _lower_types(v)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_lower_types(v) for v in schema]
    return schema


def _generation(body: dict[str, Any], config: Any) -> None:
    config = _fields(config, _CONFIG_KEYS, "generationConfig")
    for native, chat in (("maxOutputTokens", "max_tokens"), ("candidateCount", "n"), ("stopSequences", "stop"),
                         ("temperature", "temperature"), ("topP", "top_p"), ("seed", "seed")):
        if native in config:
            body[chat] = config[native]
    schema = config.get("responseJsonSchema", config.get("responseSchema"))
    if schema is not None:
        if config.get("responseMimeType") != "application/json":
            raise invalid_argument("responseJsonSchema / responseSchema need responseMimeType application/json.")
        if "responseSchema" in config:
            schema = _lower_types(schema)
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    elif config.get("responseMimeType") == "application/json":
        body["response_format"] = {"type": "json_object"}
    thinking = config.get("thinkingConfig")
    if thinking is not None:
        thinking = _fields(thinking, _THINKING_KEYS, "generationConfig.thinkingConfig")
        google: dict[str, Any] = {}
        if "thinkingBudget" in thinking:
            google["thinking_budget"] = thinking["thinkingBudget"]
        if "includeThoughts" in thinking:
            google["include_thoughts"] = thinking["includeThoughts"]
        level = thinking.get("thinkingLevel")
        if level is not None:
            if str(level).lower() not in _LEVELS or "thinkingBudget" in thinking:
                raise invalid_argument("thinkingLevel must be one of MINIMAL, LOW, MEDIUM, HIGH, without "
                                       "thinkingBudget.")
            body["reasoning_effort"] = _LEVELS[str(level).lower()]
        if google:
            body.setdefault("google", {})["thinking_config"] = google


def _tools(body: dict[str, Any], tools: Any, tool_config: Any) -> None:
    if not isinstance(tools, list):
        raise invalid_argument("tools must be a list.")
    out = []
    for k, tool in enumerate(tools):
        tool = _fields(tool, frozenset({"functionDeclarations"}), f"tools[{k}]")
        for fn in tool.get("functionDeclarations") or []:
            fn = _fields(fn, frozenset({"name", "description", "parameters", "parametersJsonSchema", "response",
                                        "responseJsonSchema"}), f"tools[{k}].functionDeclarations[]")
            params = fn.get("parametersJsonSchema", _lower_types(fn.get("parameters")))
            spec: dict[str, Any] = {"name": fn.get("name"), "parameters": params or {"type": "object", "properties": {}}}
            if "description" in fn:
                spec["description"] = fn["description"]
            out.append({"type": "function", "function": spec})
    body["tools"] = out
    tool_config = _fields(tool_config or {}, frozenset({"functionCallingConfig"}), "toolConfig")
    mode_config = _fields(tool_config.get("functionCallingConfig") or {}, frozenset({"mode", "allowedFunctionNames"}),
                          "toolConfig.functionCallingConfig")
    mode = str(mode_config.get("mode", "AUTO")).upper()
    names = mode_config.get("allowedFunctionNames") or []
    if mode == "ANY" and len(names) == 1:
        body["tool_choice"] = {"type": "function", "function": {"name": names[0]}}
    elif mode in ("ANY", "NONE", "AUTO"):
        body["tool_choice"] = {"ANY": "required", "NONE": "none", "AUTO": "auto"}[mode]
    else:
        raise invalid_argument("toolConfig.functionCallingConfig.mode must be AUTO, ANY or NONE.")


def to_chat(native: Any, *, model: str) -> dict[str, Any]:
    """The chat body ``native`` (a GenerateContentRequest) is equivalent to; raises a 400 `ApiError`."""
    native = _fields(native, _REQUEST_KEYS, "GenerateContentRequest")
    messages: list[dict[str, Any]] = []
    if native.get("systemInstruction") is not None:
        messages += [{"role": "system", "content": text}
                     for text in _text_parts(native["systemInstruction"], "systemInstruction")]
    contents = native.get("contents")
    if not isinstance(contents, list) or not contents:
        raise invalid_argument("contents must be a non-empty list.")
    calls: list[int] = []
    for i, content in enumerate(contents):
        messages += _content(content, i, calls)
    body: dict[str, Any] = {"model": model, "messages": messages}
    if native.get("generationConfig") is not None:
        _generation(body, native["generationConfig"])
    if native.get("tools") is not None:
        _tools(body, native["tools"], native.get("toolConfig"))
    if native.get("labels") is not None:
        _labels(native["labels"])
    if native.get("safetySettings") is not None and not isinstance(native["safetySettings"], list):
        raise invalid_argument("safetySettings must be a list.")
    return body


def _parts(choice: Choice, req: ChatRequest) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if req.thinking.include_thoughts and choice.thought:
        parts.append({"text": choice.thought, "thought": True})
    for call in choice.tool_calls or []:
        part: dict[str, Any] = {"functionCall": {"name": call["function"]["name"],
                                                 "args": loads(call["function"]["arguments"])}}
        signature = call.get("extra_content", {}).get("google", {}).get("thought_signature")
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    if not choice.tool_calls:
        parts.append({"text": choice.content or ""})
    return parts


def to_response(choices: Sequence[Choice], req: ChatRequest, model_id: str, *, tier: str,
                response_id: str, create_time: str) -> dict[str, Any]:
    """A GenerateContentResponse for ``choices`` (thought parts only when ``includeThoughts``)."""
    candidates = [{"index": i, "content": {"role": "model", "parts": _parts(c, req)},
                   "finishReason": FINISH_REASON.get(c.finish_reason, "OTHER")} for i, c in enumerate(choices)]
    reasoning = sum(c.reasoning_tokens for c in choices)
    completion = sum(c.completion_tokens for c in choices)
    usage: dict[str, Any] = {"promptTokenCount": req.prompt_tokens, "candidatesTokenCount": completion - reasoning,
                             "totalTokenCount": req.prompt_tokens + completion, "trafficType": TRAFFIC_TYPE[tier]}
    if req.thinking.enabled:
        usage["thoughtsTokenCount"] = reasoning
    return {"candidates": candidates, "usageMetadata": usage, "modelVersion": model_id,
            "createTime": create_time, "responseId": response_id}


def error_status(err: ApiError) -> str:
    """How a batch output line reports a failed request (the ``status`` field): HTTP reason + the error JSON."""
    reason = {400: "Bad Request", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
              503: "Service Unavailable"}.get(err.code, "Error")
    return f"{reason}: " + dumps({"error": {"code": err.code, "message": err.message, "status": err.status}}).decode()
