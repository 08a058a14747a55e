"""The records that flow between chatbeam's stages: input, result, error.

This module is the contract between reading, calling and writing (README "Records").
It has no Beam import so it is tested directly.

    >>> rec = parse_line('{"id": "a1", "prompt": "Say hi"}')
    >>> rec.id, rec.prompt
    ('a1', 'Say hi')
    >>> err = parse_line('{not json')
    >>> err.stage, err.error_type
    ('read', 'invalid_json')

Every input yields exactly one ResultRecord or exactly one ErrorRecord.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticSerializationError

from client.errors import ChatbeamError, error_class, is_retryable, redact

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "RAW_KEEP_BYTES",
    "ErrorRecord",
    "ErrorStage",
    "FunctionCall",
    "InputRecord",
    "ResultRecord",
    "ToolCall",
    "Usage",
    "canonical_json",
    "error_record",
    "parse_line",
    "parse_row",
    "read_error",
    "unwritable",
]

DEFAULT_MAX_RECORD_BYTES = 1 << 20  # 1 MiB: a record larger than this is an error, not a request
RAW_KEEP_BYTES = 4096  # how much of a bad line an error record keeps

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
PART_TYPES = frozenset({"text", "image_url", "input_audio", "file"})

ErrorStage = Literal["read", "request", "response", "validate"]

# Best effort: a line that is not JSON (say, cut off) often still starts with its id; keep it so the error is findable.
_ID_IN_BROKEN_LINE = re.compile(r'^\s*\{\s*"id"\s*:\s*(?:"((?:[^"\\]|\\.){1,200})"|(-?\d{1,30}))')


def canonical_json(value: Any) -> str:
    """Compact, key-sorted JSON: the stable text that ids and request keys hash."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _short_hash(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8", "surrogatepass")).hexdigest()[:16]


class InputRecord(BaseModel):
    """One prompt record: a JSONL line or a BigQuery row.

    Exactly one of ``prompt`` or ``messages``. ``id`` defaults to a stable hash of the content.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=False)

    id: str | None = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    system: str | None = None
    model: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    schema_name: str | None = Field(default=None, alias="schema")
    google: dict[str, Any] | None = None
    metadata: Any = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_to_str(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("id must be a string or a number")
        if isinstance(v, (int, float)):
            return str(v)
        return v

    @field_validator("messages")
    @classmethod
    def _check_messages(cls, messages: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if messages is None:
            return None
        if not messages:
            raise ValueError("messages is empty")
        for i, msg in enumerate(messages):
            role = msg.get("role")
            if role not in ROLES:
                raise ValueError(f"messages[{i}]: unknown role {role!r} (expected one of {sorted(ROLES)})")
            content = msg.get("content")
            if isinstance(content, list):
                for j, part in enumerate(content):
                    if not isinstance(part, dict) or part.get("type") not in PART_TYPES:
                        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                        raise ValueError(f"messages[{i}].content[{j}]: unknown part type {kind!r}")
            elif content is None and role != "assistant":
                raise ValueError(f"messages[{i}]: content is missing")
            elif content is not None and not isinstance(content, str):
                raise ValueError(f"messages[{i}].content must be a string or a list of parts")
        return messages

    @model_validator(mode="after")
    def _one_of_prompt_or_messages(self) -> "InputRecord":
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("a record needs exactly one of 'prompt' or 'messages'")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("prompt is empty")
        if self.id is None:
            self.id = _short_hash(self.model_dump(mode="json", by_alias=True, exclude={"id"}))
        return self

    def to_json_dict(self) -> dict[str, Any]:
        """The record as the user wrote it (by alias, without unset defaults)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True) | {"id": self.id}


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    total_tokens: int = 0


# NaN and ±Infinity (which Python's json reads) are written as the strings "NaN", "Infinity", "-Infinity": standard
# JSON has no literal for them, and null would lose them. BigQuery metadata gets the same mapping.
_OUTPUT_CONFIG = ConfigDict(ser_json_inf_nan="strings")


class FunctionCall(BaseModel):
    """The function a tool call names, and its ``arguments`` exactly as the model sent them (JSON text)."""

    model_config = _OUTPUT_CONFIG

    name: str
    arguments: str = ""


class ToolCall(BaseModel):
    """One tool call of the answer, in the OpenAI shape (so ``id``, ``type``, ``function`` and ``extra_content`` can be
    sent back as the assistant turn's ``tool_calls``), plus ``arguments_parsed``: the arguments as JSON data when
    they parse (None when they do not). ``extra_content`` (Gemini's ``thought_signature``) is passed through
    untouched: a later turn must send it back verbatim."""

    model_config = _OUTPUT_CONFIG

    id: str | None = None
    type: str = "function"
    function: FunctionCall
    arguments_parsed: Any = None
    extra_content: Any = None

    def to_message_dict(self) -> dict[str, Any]:
        """The call as an assistant message's ``tool_calls`` entry (what a follow-up turn sends back)."""
        out: dict[str, Any] = {"id": self.id, "type": self.type, "function": self.function.model_dump()}
        if self.extra_content is not None:
            out["extra_content"] = self.extra_content
        return out


class ResultRecord(BaseModel):
    """What came back for one record."""

    model_config = _OUTPUT_CONFIG

    id: str
    request_key: str
    model: str | None = None
    content: str | None = None
    thoughts: str | None = None
    parsed: Any = None
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    attempts: int = 1
    latency_ms: float = 0.0
    alternatives: list[str] | None = None  # contents of choices 2..n when params.n > 1
    tool_calls: list[ToolCall] | None = None  # the answer's function calls (finish_reason "tool_calls")
    metadata: Any = None
    # When the call step took the record and when it finished (ISO-8601 UTC, milliseconds): the run report's timeline.
    started_at: str | None = None
    finished_at: str | None = None
    service_tier: str | None = None  # standard, flex or priority (online), batch (a batch prediction job)
    # Served from the response cache (--cache, client/cache.py) instead of a call: the answer, usage and timestamps
    # are the original call's; id and metadata are this run's input's.
    cached: bool = False


class ErrorRecord(BaseModel):
    """Why one record has no result.

    ``error_type`` is a short stable code (see README "Error types"); ``retryable`` says whether a later rerun
    (``--replay_errors``) could succeed.
    """

    model_config = _OUTPUT_CONFIG

    id: str | None = None
    request_key: str | None = None
    stage: ErrorStage
    error_type: str
    status_code: int | None = None
    status: str | None = None  # Google's status string, e.g. RESOURCE_EXHAUSTED
    message: str
    retryable: bool = False
    attempts: int = 0
    record: dict[str, Any] | None = None
    raw: str | None = None
    response_text: str | None = None
    usage: Usage | None = None  # what the record's answered attempts cost (None when nothing was answered)
    metadata: Any = None
    # Set by the call step (like ResultRecord's); None for errors written at read time, which never reached it.
    started_at: str | None = None
    finished_at: str | None = None
    service_tier: str | None = None  # the tier of the last attempt; None when nothing was sent


def unwritable(record: BaseModel) -> str | None:
    """Why ``record`` cannot be written as JSON (a lone surrogate from a ``\\ud800`` escape, nesting deeper than the
    serializer's limit), or None. Checked at read time: a value that cannot be written would otherwise crash the
    sink and lose the whole run."""
    try:
        record.model_dump_json()
    except (PydanticSerializationError, ValueError) as exc:
        return str(exc).removeprefix("Error serializing to JSON: ")
    return None


def _writable_text(text: str) -> str:
    # Lone surrogates (a str line that held one) become visible \udxxx escapes instead of an unwritable character.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_record(exc: ChatbeamError, *, record: "InputRecord | Mapping[str, Any] | None" = None,
                 record_id: str | None = None, request_key: str | None = None, attempts: int = 0,
                 usage: Usage | None = None, raw: str | None = None, service_tier: str | None = None,
                 started_at: str | None = None, finished_at: str | None = None,
                 retryable: bool | None = None) -> ErrorRecord:
    """The one way an ErrorRecord is built (caller, call DoFn crash path, read errors, dry run): ``error_type``,
    ``stage`` and ``retryable`` come from the error's class (client/errors.py), the message is redacted,
    ``response_text`` is what the model answered (when it did). ``record`` is the input record (an InputRecord, or
    the raw mapping of one that did not validate); ``raw`` the line when it was not a record (kept up to
    RAW_KEEP_BYTES). ``retryable`` overrides the class's only where the caller knows a rerun path the class cannot
    (a batch line that failed validation can still succeed online). The result is always writable: what cannot be
    written (``record``, ``metadata``) is dropped."""
    if isinstance(record, InputRecord):
        record_id = record.id if record_id is None else record_id
        metadata, record_dict = record.metadata, record.to_json_dict()
    else:
        metadata = record.get("metadata") if isinstance(record, Mapping) else None
        record_dict = dict(record) if record is not None else None
        if record_id is None and isinstance(record, Mapping) and isinstance(record.get("id"), (str, int)):
            record_id = str(record["id"])
    if raw is not None:
        raw = _writable_text(raw)
        if len(raw.encode("utf-8")) > RAW_KEEP_BYTES:
            raw = raw.encode("utf-8")[:RAW_KEEP_BYTES].decode("utf-8", "ignore") + "…[truncated]"
    error = ErrorRecord(
        id=_writable_text(record_id) if record_id is not None else None, request_key=request_key,
        stage=exc.stage, error_type=exc.error_type, status_code=exc.status_code, status=exc.status,
        message=_writable_text(redact(exc.message)),
        retryable=is_retryable(exc) if retryable is None else retryable, attempts=attempts,
        record=record_dict, raw=raw, response_text=exc.response_text, usage=usage, metadata=metadata,
        service_tier=service_tier, started_at=started_at, finished_at=finished_at)
    if unwritable(error) is not None:
        error.record = error.metadata = None
        if error.response_text is not None and unwritable(error) is not None:
            error.response_text = _writable_text(error.response_text)
    return error


def read_error(error_type: str, message: str, *, raw: str | None = None, record: Mapping[str, Any] | None = None,
               record_id: str | None = None) -> ErrorRecord:
    """An error record for input that never became a request; ``error_type`` is a read-stage type of
    client/errors.py (``invalid_json``, ``invalid_record``, ...). ``raw`` keeps the line."""
    return error_record(error_class(error_type)(message), record=record, record_id=record_id, raw=raw)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "record"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (put extra data under 'metadata')"
        parts.append(f"{loc}: {msg}" if err["loc"] else msg)
    return "; ".join(parts)


def parse_row(obj: Any, *, raw: str | None = None) -> InputRecord | ErrorRecord:
    """Validate one decoded object (a JSON line or a table row) into an InputRecord or a read error."""
    if not isinstance(obj, dict):
        return read_error("not_an_object", f"expected a JSON object, got {type(obj).__name__}",
                          raw=raw if raw is not None else canonical_json(obj))
    try:
        record = InputRecord.model_validate(obj)
    except RecursionError:
        return read_error("invalid_record", "record is nested too deeply", raw=raw)
    except ValidationError as exc:
        # Keep the record only when it is small enough to be useful; the raw line is always kept (bounded).
        small = raw is None or len(raw) <= RAW_KEEP_BYTES
        return read_error("invalid_record", _validation_message(exc), raw=raw,
                          record=obj if small else None,
                          record_id=str(obj["id"]) if isinstance(obj.get("id"), (str, int)) else None)
    why = unwritable(record)
    if why is not None:
        return read_error("invalid_record", f"record cannot be written as JSON: {why}", raw=raw,
                          record_id=record.id)
    return record


_ID_SCAN_CHARS = 512  # an id is looked for at the start of a line that could not be read whole


def _id_of_broken_line(text: str) -> str | None:
    found = _ID_IN_BROKEN_LINE.match(text)
    if not found:
        return None
    if found.group(2):
        return found.group(2)
    try:
        return json.loads(f'"{found.group(1)}"')  # decode JSON escapes: "caf\u00e9" is the id café
    except json.JSONDecodeError:
        return found.group(1)


def parse_line(line: str | bytes, *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> InputRecord | ErrorRecord:
    """One JSONL line → an InputRecord, or an ErrorRecord with stage ``read`` that keeps the (bounded) raw line."""
    if isinstance(line, bytes):
        size = len(line)
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            readable = line.decode("utf-8", "replace")
            found = _id_of_broken_line(readable[:_ID_SCAN_CHARS])
            return read_error("invalid_encoding", f"line is not UTF-8: {exc}", raw=readable,
                              record_id=found if found and "\ufffd" not in found else None)
        text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark on the first line is not part of the JSON
    else:
        text = line
        size = len(text.encode("utf-8", "replace"))
    if size > max_record_bytes:
        return read_error("record_too_large", f"record is {size} bytes; the limit is {max_record_bytes} "
                          "(--max_record_bytes)", raw=text, record_id=_id_of_broken_line(text[:_ID_SCAN_CHARS]))
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        return read_error("invalid_json", f"not valid JSON: {exc}", raw=text, record_id=_id_of_broken_line(text))
    return parse_row(obj, raw=text)
