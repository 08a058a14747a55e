"""BigQuery rows ⇄ chatbeam records, with no Beam import (unit-tested directly).

Reading: a ``ColumnMapping`` says which columns hold the id, the prompt (or the messages), the system prompt and
the metadata; ``row_to_record`` turns one row (a dict, as Beam's ReadFromBigQuery yields it) into an InputRecord,
or into a read-stage ErrorRecord that keeps the row::

    >>> m = ColumnMapping(id_column="qid", prompt_column="question", metadata_columns=("lang",))
    >>> row_to_record({"qid": 7, "question": "Why?", "lang": "en"}, m).metadata
    {'lang': 'en'}
    >>> row_to_record({"qid": 8, "question": None, "lang": "fr"}, m).error_type
    'invalid_record'

Writing: ``RESULTS_SCHEMA`` and ``ERRORS_SCHEMA`` are BigQuery table schemas derived from the record models; fields
whose values have no fixed shape (``parsed``, ``metadata``, ``record``) are STRING columns holding compact JSON
text (query them with ``PARSE_JSON`` / ``JSON_VALUE``)::

    >>> RESULTS_SCHEMA.json_fields >= {"parsed", "metadata"}
    True
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Sequence

from pydantic import BaseModel

from schemas.records import ErrorRecord, InputRecord, ResultRecord, canonical_json, parse_row, read_error

__all__ = [
    "ERRORS_SCHEMA",
    "RESULTS_SCHEMA",
    "ColumnMapping",
    "MissingColumnsError",
    "RowSchema",
    "json_safe",
    "row_schema",
    "row_to_record",
]


class MissingColumnsError(ValueError):
    """The input has no column that the mapping names: a configuration error, raised (never an error record)."""


# --------------------------------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class ColumnMapping:
    """Which input columns feed which record fields.

    Exactly one of ``prompt_column`` / ``messages_column``. ``metadata_columns`` are copied, values untouched
    (made JSON-safe, see ``json_safe``), into ``metadata`` as ``{column: value}``, and from there into every result
    and error. Column names match case-insensitively, as in BigQuery.
    """

    id_column: str | None = None
    prompt_column: str | None = "prompt"
    messages_column: str | None = None
    system_column: str | None = None
    metadata_columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.metadata_columns, str):  # a caller passing "a,b" instead of ("a", "b")
            object.__setattr__(self, "metadata_columns", _split_columns(self.metadata_columns))
        else:
            object.__setattr__(self, "metadata_columns", tuple(self.metadata_columns))
        if (self.prompt_column is None) == (self.messages_column is None):
            raise ValueError("give exactly one of --prompt_column or --messages_column")
        seen: dict[str, str] = {}
        for flag, col in self._flags():
            if not col or not col.strip():
                raise ValueError(f"{flag}: empty column name")
            if col.lower() in seen and seen[col.lower()] != flag:
                raise ValueError(f"column {col!r} is mapped twice ({seen[col.lower()]} and {flag})")
            seen[col.lower()] = flag

    @classmethod
    def from_options(cls, *, id_column: str | None = None, prompt_column: str | None = None,
                     messages_column: str | None = None, system_column: str | None = None,
                     metadata_columns: str | Sequence[str] | None = None) -> "ColumnMapping":
        """Build from command-line values: the prompt column defaults to ``prompt`` unless messages are mapped."""
        if prompt_column is None and messages_column is None:
            prompt_column = "prompt"
        if isinstance(metadata_columns, str):
            metadata_columns = _split_columns(metadata_columns)
        return cls(id_column=id_column or None, prompt_column=prompt_column, messages_column=messages_column,
                   system_column=system_column or None, metadata_columns=tuple(metadata_columns or ()))

    def _flags(self) -> list[tuple[str, str]]:
        pairs = [("--id_column", self.id_column), ("--prompt_column", self.prompt_column),
                 ("--messages_column", self.messages_column), ("--system_column", self.system_column)]
        out = [(flag, col) for flag, col in pairs if col is not None]
        return out + [("--metadata_columns", col) for col in self.metadata_columns]

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the mapping reads, in a stable order (what DIRECT_READ needs to select)."""
        return tuple(col for _, col in self._flags())

    def missing(self, available: Iterable[str]) -> list[str]:
        """The mapped columns that ``available`` lacks, each with the option that named it."""
        have = {name.lower() for name in available}
        return [f"{col!r} ({flag})" for flag, col in self._flags() if col.lower() not in have]

    def check(self, available: Iterable[str], where: str = "the input") -> None:
        """Raise MissingColumnsError (one line, naming the missing columns) unless every mapped column exists."""
        available = list(available)
        missing = self.missing(available)
        if missing:
            have = ", ".join(available) if available else "no columns"
            raise MissingColumnsError(f"{where} has no column {', '.join(missing)}; it has: {have}")


def _split_columns(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def json_safe(value: Any) -> Any:
    """A BigQuery value as plain JSON: TIMESTAMP/DATE/TIME → ISO 8601 text, NUMERIC → decimal text (no precision
    lost), BYTES → base64 text (BigQuery's own JSON encoding), NaN/±inf → "NaN"/"Infinity"/"-Infinity", STRUCT and
    ARRAY recursively; anything else unknown → ``str(value)``."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return str(value)


def _drop_nulls(value: Any) -> Any:
    """A REPEATED RECORD cannot tell an absent STRUCT field from a NULL one: drop NULL fields, recursively."""
    if isinstance(value, Mapping):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _lookup(row: Mapping[str, Any]) -> dict[str, str]:
    return {key.lower(): key for key in row}


class _BadRow(ValueError):
    """A mapped cell that cannot make a record: the row becomes an error record with this message."""


def _prompt(value: Any, column: str) -> str:
    if value is None:
        raise _BadRow(f"prompt: column {column!r} is NULL")
    if not isinstance(value, str):
        raise _BadRow(f"prompt: column {column!r} holds {type(value).__name__}, not STRING")
    return value


def _messages(value: Any, column: str) -> Any:
    """JSON text (STRING, JSON or BYTES) or a REPEATED RECORD → the messages list (validated later by parse_row)."""
    if value is None:
        raise _BadRow(f"messages: column {column!r} is NULL")
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    if not isinstance(value, str):
        return _drop_nulls(json_safe(value))
    try:
        return json.loads(value)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise _BadRow(f"messages: column {column!r} is not valid JSON: {exc}") from None


def _record_fields(row: Mapping[str, Any], keys: Mapping[str, str], mapping: ColumnMapping, record_id: str | None,
                   metadata: dict[str, Any] | None) -> dict[str, Any]:
    """The JSONL-record object of one row (what parse_row checks); raises _BadRow for a cell that cannot be one."""
    def cell(col: str | None) -> Any:
        return None if col is None else row[keys[col.lower()]]

    obj: dict[str, Any] = {}
    if record_id is not None:
        obj["id"] = record_id
    if mapping.prompt_column is not None:
        obj["prompt"] = _prompt(cell(mapping.prompt_column), mapping.prompt_column)
    else:
        obj["messages"] = _messages(cell(mapping.messages_column), mapping.messages_column)
    system = cell(mapping.system_column)
    if system is not None:
        obj["system"] = system
    if metadata is not None:
        obj["metadata"] = metadata
    return obj


def row_to_record(row: Mapping[str, Any], mapping: ColumnMapping) -> InputRecord | ErrorRecord:
    """One input row → an InputRecord, or a read-stage ErrorRecord whose ``record`` is the whole row (JSON-safe).

    * prompt column: a STRING; NULL or empty → error record.
    * messages column: JSON text (a STRING or JSON column holding an OpenAI ``messages`` array) or a REPEATED
      RECORD (``ARRAY<STRUCT<role STRING, content STRING, ...>>``; NULL struct fields are dropped). NULL, an empty
      array, or text that is not JSON → error record.
    * id column: STRING or INT64; NULL → the record's stable content hash (as for JSONL records without ``id``).

    Raises MissingColumnsError when the row lacks a mapped column (a wrong mapping, not bad data).
    """
    keys = _lookup(row)
    missing = mapping.missing(row.keys())
    if missing:
        raise MissingColumnsError(f"input row has no column {', '.join(missing)}; it has: {', '.join(row)}")
    safe_row = json_safe(dict(row))
    metadata = {col: safe_row[keys[col.lower()]] for col in mapping.metadata_columns} or None
    raw_id = None if mapping.id_column is None else row[keys[mapping.id_column.lower()]]
    record_id = None if raw_id is None else str(json_safe(raw_id))
    try:
        out = parse_row(_record_fields(row, keys, mapping, record_id, metadata))
        message = out.message if isinstance(out, ErrorRecord) else None
    except _BadRow as bad:
        message = str(bad)
    if message is None:
        return out
    err = read_error("invalid_record", message, record=safe_row, record_id=record_id)
    err.metadata = metadata
    return err


# --------------------------------------------------------------------------------------------------------------------
# Writing

_SCALARS: dict[Any, str] = {str: "STRING", int: "INT64", float: "FLOAT64", bool: "BOOL",
                            _dt.datetime: "TIMESTAMP", _dt.date: "DATE"}
_JSON_DESCRIPTION = "JSON text"


@dataclass(frozen=True)
class RowSchema:
    """A BigQuery table schema for one record model, and the conversion of a record into a row of it.

    ``fields`` are TableFieldSchema dicts (``name``, ``type``, ``mode``, ``fields``, ``description``); every column
    is NULLABLE (or REPEATED), so appending rows from a newer model version only ever adds columns.
    ``json_fields`` are the top-level columns that hold JSON text.
    """

    model: type[BaseModel]
    fields: tuple[dict[str, Any], ...]
    json_fields: frozenset[str] = field(default_factory=frozenset)

    def table_schema(self) -> dict[str, Any]:
        """The schema as WriteToBigQuery takes it: ``{"fields": [...]}``."""
        return {"fields": [dict(f) for f in self.fields]}

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(f["name"] for f in self.fields)

    def to_row(self, record: BaseModel) -> dict[str, Any]:
        """A record → a row dict for WriteToBigQuery (JSON fields as compact, key-sorted JSON text)."""
        if not isinstance(record, self.model):
            raise TypeError(f"expected {self.model.__name__}, got {type(record).__name__}")
        return _encode(record.model_dump(mode="json"), self.fields)


def _encode(values: Mapping[str, Any], fields: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for f in fields:
        value = values.get(f["name"])
        if value is None:
            row[f["name"]] = [] if f["mode"] == "REPEATED" else None
        elif f.get("description") == _JSON_DESCRIPTION:
            row[f["name"]] = canonical_json(value)
        elif f["type"] == "RECORD":
            sub = f["fields"]
            row[f["name"]] = [_encode(v, sub) for v in value] if f["mode"] == "REPEATED" else _encode(value, sub)
        else:
            row[f["name"]] = value
    return row


def _strip_optional(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _field_schema(name: str, annotation: Any) -> dict[str, Any]:
    annotation = _strip_optional(annotation)
    origin = typing.get_origin(annotation)
    mode = "NULLABLE"
    if origin in (list, tuple, typing.Sequence):
        args = typing.get_args(annotation)
        inner = _strip_optional(args[0]) if args else Any
        if inner in _SCALARS or (isinstance(inner, type) and issubclass(inner, BaseModel)):
            annotation, origin, mode = inner, typing.get_origin(inner), "REPEATED"
    if origin is Literal and all(isinstance(a, str) for a in typing.get_args(annotation)):
        annotation = str
    if annotation in _SCALARS:
        return {"name": name, "type": _SCALARS[annotation], "mode": mode}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        sub = [_field_schema(n, f.annotation) for n, f in annotation.model_fields.items()]
        return {"name": name, "type": "RECORD", "mode": mode, "fields": sub}
    # Any, dicts, unions of shapes, lists of objects: no fixed column type, so JSON text.
    return {"name": name, "type": "STRING", "mode": "NULLABLE", "description": _JSON_DESCRIPTION}


def row_schema(model: type[BaseModel]) -> RowSchema:
    """Derive the BigQuery schema of a record model (column names are the field names, not aliases)."""
    fields = tuple(_field_schema(name, f.annotation) for name, f in model.model_fields.items())
    json_fields = frozenset(f["name"] for f in fields if f.get("description") == _JSON_DESCRIPTION)
    return RowSchema(model=model, fields=fields, json_fields=json_fields)


RESULTS_SCHEMA = row_schema(ResultRecord)
ERRORS_SCHEMA = row_schema(ErrorRecord)
