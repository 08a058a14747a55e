"""One error vocabulary: every error_type is a class in client/errors.py, the README's error table lists exactly
those with their stage and retryability, and one builder writes every ErrorRecord."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from client.errors import ERROR_TYPES, BudgetExhausted, InternalError, UnknownSchema, error_class, is_retryable
from schemas.records import InputRecord, Usage, error_record, parse_line, read_error

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| (read|request|response|validate) \| (.+?) \| (yes|no)[^|]*\|", re.M)


def readme_table() -> dict[str, tuple[str, bool]]:
    table = {}
    for stage, types, retryable in ROW.findall(README.read_text()):
        for name in re.findall(r"`([a-z_]+)`", types):
            table[name] = (stage, retryable == "yes")
    return table


def test_the_readme_error_table_is_the_code_vocabulary() -> None:
    table = readme_table()
    assert set(table) == set(ERROR_TYPES)
    for name, cls in ERROR_TYPES.items():
        assert table[name] == (cls.stage, is_retryable(cls("x"))), name


def test_named_classes_exist_and_internal_error_is_retryable() -> None:
    assert ERROR_TYPES["budget_exhausted"] is BudgetExhausted and ERROR_TYPES["unknown_schema"] is UnknownSchema
    assert error_class("internal_error") is InternalError and is_retryable(InternalError("bug"))
    with pytest.raises(ValueError, match="unknown error_type 'made_up'"):
        read_error("made_up", "x")


def test_one_builder_keeps_what_came_back_and_redacts() -> None:
    record = InputRecord(id="r", prompt="hi", metadata={"k": 1})
    exc = error_class("truncated")("cut off; Authorization: Bearer ya29.secret", response_text="partial")
    err = error_record(exc, record=record, request_key="k1", attempts=2, usage=Usage(total_tokens=9))
    assert (err.id, err.stage, err.error_type, err.retryable, err.attempts) == ("r", "response", "truncated", False, 2)
    assert err.response_text == "partial" and err.usage.total_tokens == 9 and err.metadata == {"k": 1}
    assert "ya29.secret" not in err.message and err.record == {"id": "r", "prompt": "hi", "metadata": {"k": 1}}
    bad = parse_line('{"id": "b", "promt": "typo"}')
    assert (bad.stage, bad.error_type, bad.retryable, bad.id) == ("read", "invalid_record", False, "b")
