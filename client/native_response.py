"""Pure translation of Gemini's native answers back into the online shape, and of batch output lines. No Beam import.

    >>> completion, traffic = to_completion(line_response, model="google/gemini-2.5-flash")
    >>> parsed = parse_completion(completion, schema=request.schema)     # the online parser: same checks, same fields
    >>> outcome = parse_output_line(b'{"status": "", "request": {...}, "response": {...}}')
    >>> outcome.key, outcome.error                                       # the chatbeam_key label; None when answered

A GenerateContentResponse becomes a chat completion (built with ``model_construct``, as the stream assembler
does), so the online ``parse_completion`` validates it: finish reasons, thoughts, structured output, re-asks and
errors behave alike in both modes.

* candidates → choices; ``thought: true`` parts → ``reasoning_content`` (the result's ``thoughts``); text parts →
  ``content``; ``functionCall`` parts → ``tool_calls`` (arguments as JSON text, ``thoughtSignature`` kept as
  ``extra_content.google.thought_signature``).
* ``finishReason``: ``STOP`` → ``stop`` (``tool_calls`` when the candidate called a function), ``MAX_TOKENS`` →
  ``length``, ``SAFETY`` / ``RECITATION`` / ``BLOCKLIST`` / ``PROHIBITED_CONTENT`` / ``SPII`` / ``IMAGE_SAFETY`` →
  ``content_filter``, others lower-cased. No candidates and ``promptFeedback.blockReason`` → `ContentFiltered`.
* ``usageMetadata``: ``promptTokenCount`` → prompt tokens, ``candidatesTokenCount + thoughtsTokenCount`` →
  completion tokens (thinking is billed as output), ``thoughtsTokenCount`` → reasoning, ``cachedContentTokenCount``
  → cached; ``trafficType`` (``ON_DEMAND``, ``ON_DEMAND_FLEX``, ``ON_DEMAND_PRIORITY``, ...) is returned beside.
* A batch output line's ``status`` is empty when it was answered, else ``"<reason>: {"error": {...}}"`` (the
  emulator's form; Vertex's exact text could not be checked): the error JSON's code picks the error class.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from openai.types.chat import ChatCompletion, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.completion_usage import CompletionTokensDetails, CompletionUsage, PromptTokensDetails

from client.errors import (BadRequest, ChatbeamError, ContentFiltered, MalformedResponse, NotFound, PermissionDenied,
                           RateLimited, ServerError)
from client.native_request import LABEL_KEY

__all__ = ["OutputLine", "TIER_OF_TRAFFIC", "line_error", "parse_output_line", "to_completion"]

_FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"})
TIER_OF_TRAFFIC = {"ON_DEMAND": "standard", "ON_DEMAND_FLEX": "flex", "ON_DEMAND_PRIORITY": "priority",
                   "PROVISIONED_THROUGHPUT": "provisioned"}
_STATUS_CLASS: dict[int, type[ChatbeamError]] = {400: BadRequest, 403: PermissionDenied, 404: NotFound,
                                                 429: RateLimited}


def _finish(reason: Any, called: bool) -> str | None:
    if not isinstance(reason, str) or not reason or reason == "FINISH_REASON_UNSPECIFIED":
        return None
    if reason == "STOP":
        return "tool_calls" if called else "stop"
    if reason == "MAX_TOKENS":
        return "length"
    return "content_filter" if reason in _FILTERED else reason.lower()


def _choice(candidate: dict[str, Any], index: int) -> Choice:
    texts, thoughts, calls = [], [], []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if "functionCall" in part:
            call = part["functionCall"] or {}
            entry: dict[str, Any] = {"id": f"call_{index}_{len(calls)}", "type": "function",
                                     "function": {"name": call.get("name"),
                                                  "arguments": json.dumps(call.get("args") or {}, ensure_ascii=False)}}
            if part.get("thoughtSignature"):
                entry["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
            calls.append(entry)
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") else texts).append(part["text"])
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if calls:
        message["tool_calls"] = calls
    # The message is validated (typed tool calls, as the SDK would return them); the choice is constructed, so a
    # finish reason outside OpenAI's list survives for the parser to judge.
    return Choice.model_construct(index=candidate.get("index", index),
                                  finish_reason=_finish(candidate.get("finishReason"), bool(calls)),
                                  message=ChatCompletionMessage.model_validate(message))


def _usage(meta: dict[str, Any]) -> CompletionUsage:
    prompt = int(meta.get("promptTokenCount") or 0)
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    completion = int(meta.get("candidatesTokenCount") or 0) + thoughts
    return CompletionUsage.model_construct(
        prompt_tokens=prompt, completion_tokens=completion,
        total_tokens=int(meta.get("totalTokenCount") or prompt + completion),
        completion_tokens_details=CompletionTokensDetails.model_construct(reasoning_tokens=thoughts),
        prompt_tokens_details=PromptTokensDetails.model_construct(
            cached_tokens=int(meta.get("cachedContentTokenCount") or 0)))


def to_completion(response: Any, *, model: str | None) -> tuple[ChatCompletion, str | None]:
    """(the chat completion ``response`` stands for, its trafficType); raises ContentFiltered for a blocked
    prompt and MalformedResponse for something that is not a GenerateContentResponse."""
    if not isinstance(response, dict):
        raise MalformedResponse("the batch line's response is not a GenerateContentResponse object")
    candidates = response.get("candidates")
    if not candidates:
        blocked = (response.get("promptFeedback") or {}).get("blockReason")
        if blocked:
            raise ContentFiltered(f"the prompt was blocked (promptFeedback.blockReason={blocked})")
        raise MalformedResponse("the batch line's response has no candidates")
    meta = response.get("usageMetadata") or {}
    completion = ChatCompletion.model_construct(
        id=str(response.get("responseId") or ""), object="chat.completion", created=0,
        model=model or str(response.get("modelVersion") or ""),
        choices=[_choice(c, i) for i, c in enumerate(candidates) if isinstance(c, dict)],
        usage=_usage(meta) if meta else None)
    return completion, meta.get("trafficType")


def line_error(status: str) -> ChatbeamError:
    """The error a failed batch line's ``status`` text describes (its code picks the class: 400 BadRequest, 429
    RateLimited, 5xx ServerError, ...)."""
    head, _, rest = status.partition(": ")
    code, google_status, message = None, None, status
    try:
        error = json.loads(rest).get("error") or {}
        code, google_status, message = error.get("code"), error.get("status"), error.get("message") or status
    except (ValueError, AttributeError):
        pass
    cls = _STATUS_CLASS.get(code, ServerError) if isinstance(code, int) else ServerError
    return cls(f"batch line failed: {head}: {message}" if rest else f"batch line failed: {status}",
               status_code=code if isinstance(code, int) else None, status=google_status)


@dataclass
class OutputLine:
    """One line of a batch job's output: the key it carries and either its response or why it failed."""

    key: str | None
    response: dict[str, Any] | None = None
    error: ChatbeamError | None = None
    status: str = ""
    seconds: float = 0.0  # the job's time from submission to its end (the result's latency)
    processed_time: str | None = None  # when Vertex answered the line (its own field)
    started_at: str | None = None  # set by the runner: when the job was submitted
    finished_at: str | None = None  # set by the runner: processed_time, else the job's end


def parse_output_line(line: bytes | str) -> OutputLine:
    """Parse one output line; never raises (a line that is not JSON is an OutputLine with no key and an error)."""
    try:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError) as exc:
        return OutputLine(None, error=MalformedResponse(f"a batch output line is not JSON: {exc}"))
    labels = (data.get("request") or {}).get("labels") if isinstance(data.get("request"), dict) else None
    key = labels.get(LABEL_KEY) if isinstance(labels, dict) else None
    status = data.get("status") or ""
    processed = data.get("processed_time") if isinstance(data.get("processed_time"), str) else None
    if status:
        return OutputLine(key, error=line_error(str(status)), status=str(status), processed_time=processed)
    if not isinstance(data.get("response"), dict):
        return OutputLine(key, error=MalformedResponse("a batch output line has neither a response nor a status"),
                          processed_time=processed)
    return OutputLine(key, response=data["response"], processed_time=processed)
