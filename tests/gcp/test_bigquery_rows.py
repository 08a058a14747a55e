"""row_to_record, ColumnMapping and the schema derivation: pure, no Beam pipeline, no emulator."""

from __future__ import annotations

import datetime as dt
import decimal
import json

import pytest

from schemas.records import ErrorRecord, FunctionCall, InputRecord, ResultRecord, ToolCall, Usage
from transforms.bigquery_rows import (ERRORS_SCHEMA, RESULTS_SCHEMA, ColumnMapping, MissingColumnsError, json_safe,
                                      row_schema, row_to_record)

MAP = ColumnMapping(id_column="qid", prompt_column="question", system_column="sys", metadata_columns=("lang", "n"))


def test_prompt_row_maps_every_column():
    rec = row_to_record({"qid": 7, "question": "Why?", "sys": "Be brief.", "lang": "en", "n": 3, "other": "x"}, MAP)
    assert isinstance(rec, InputRecord)
    assert (rec.id, rec.prompt, rec.system, rec.metadata) == ("7", "Why?", "Be brief.", {"lang": "en", "n": 3})


@pytest.mark.parametrize("prompt, message", [(None, "column 'question' is NULL"), ("", "prompt is empty"),
                                             ("   ", "prompt is empty"), (42, "holds int, not STRING")])
def test_null_or_empty_prompt_is_a_read_error_that_keeps_the_row(prompt, message):
    row = {"qid": "q1", "question": prompt, "sys": None, "lang": "fr", "n": 1}
    err = row_to_record(row, MAP)
    assert isinstance(err, ErrorRecord)
    assert (err.stage, err.error_type, err.id, err.retryable) == ("read", "invalid_record", "q1", False)
    assert message in err.message
    assert err.record == row
    assert err.metadata == {"lang": "fr", "n": 1}


def test_null_id_gets_the_stable_content_hash():
    m = ColumnMapping(id_column="qid")
    a = row_to_record({"qid": None, "prompt": "hi"}, m)
    b = row_to_record({"qid": None, "prompt": "hi"}, m)
    assert a.id == b.id and len(a.id) == 16


def test_column_names_match_case_insensitively():
    rec = row_to_record({"QID": "a", "Question": "q", "SYS": None, "Lang": "en", "N": 0}, MAP)
    assert (rec.id, rec.prompt, rec.metadata) == ("a", "q", {"lang": "en", "n": 0})


def test_missing_column_raises_naming_it():
    with pytest.raises(MissingColumnsError, match=r"no column 'question' \(--prompt_column\), 'n' "
                                                   r"\(--metadata_columns\)"):
        row_to_record({"qid": 1, "sys": None, "lang": "en"}, MAP)


MSGS = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}]


def test_messages_as_json_text():
    rec = row_to_record({"m": json.dumps(MSGS)}, ColumnMapping(prompt_column=None, messages_column="m"))
    assert rec.messages == MSGS and rec.prompt is None


def test_messages_as_repeated_record_drops_null_struct_fields():
    rows = [{"role": "user", "content": "Hi", "name": None}]
    rec = row_to_record({"m": rows}, ColumnMapping(prompt_column=None, messages_column="m"))
    assert rec.messages == [{"role": "user", "content": "Hi"}]


def test_messages_with_parts_as_json_text():
    parts = [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                          {"type": "image_url", "image_url": {"url": "gs://b/cat.png"}}]}]
    rec = row_to_record({"m": json.dumps(parts)}, ColumnMapping(prompt_column=None, messages_column="m"))
    assert rec.messages == parts


@pytest.mark.parametrize("value, message", [
    (None, "column 'm' is NULL"), ("[{bad", "is not valid JSON"), ([], "messages is empty"),
    (json.dumps([{"role": "wizard", "content": "x"}]), "unknown role"), ('{"role": "user"}', "messages"),
])
def test_bad_messages_are_read_errors(value, message):
    err = row_to_record({"m": value, "k": 1}, ColumnMapping(prompt_column=None, messages_column="m"))
    assert isinstance(err, ErrorRecord) and err.stage == "read"
    assert message in err.message
    assert err.record == {"m": value, "k": 1}


def test_metadata_values_become_json_safe():
    ts = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    row = {"prompt": "p", "ts": ts, "d": dt.date(2026, 1, 2), "num": decimal.Decimal("1.10"), "b": b"\x00\xff",
           "f": float("nan"), "s": {"k": [1, 2]}}
    rec = row_to_record(row, ColumnMapping(metadata_columns=("ts", "d", "num", "b", "f", "s")))
    assert rec.metadata == {"ts": "2026-01-02T03:04:05+00:00", "d": "2026-01-02", "num": "1.10", "b": "AP8=",
                            "f": "NaN", "s": {"k": [1, 2]}}
    json.dumps(rec.metadata)  # plain JSON all the way down


def test_json_safe_leaves_plain_values_alone():
    assert json_safe({"a": [1, 2.5, True, None, "x"]}) == {"a": [1, 2.5, True, None, "x"]}


def test_mapping_from_options():
    m = ColumnMapping.from_options(metadata_columns="a, b,,c")
    assert (m.prompt_column, m.messages_column, m.metadata_columns) == ("prompt", None, ("a", "b", "c"))
    m = ColumnMapping.from_options(messages_column="msgs", id_column="id")
    assert (m.prompt_column, m.messages_column, m.columns) == (None, "msgs", ("id", "msgs"))


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompt_column="p", messages_column="m"), "exactly one of"),
    (dict(prompt_column=None), "exactly one of"),
    (dict(prompt_column="p", metadata_columns=("P",)), "mapped twice"),
    (dict(prompt_column=" "), "empty column name"),
])
def test_bad_mappings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ColumnMapping(**kwargs)


def test_mapping_check_is_one_line_naming_what_is_missing():
    with pytest.raises(MissingColumnsError) as info:
        MAP.check(["qid", "question", "lang"], where="--input_table p:d.t")
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("--input_table p:d.t has no column 'sys' (--system_column), 'n' (--metadata_columns)")


# --- schema derivation --------------------------------------------------------------------------------------------


def _by_name(schema):
    return {f["name"]: f for f in schema.fields}


def test_results_schema_covers_every_field_with_bigquery_types():
    fields = _by_name(RESULTS_SCHEMA)
    assert list(fields) == list(ResultRecord.model_fields)
    assert fields["id"] == {"name": "id", "type": "STRING", "mode": "NULLABLE"}
    assert fields["attempts"]["type"] == "INT64"
    assert fields["latency_ms"]["type"] == "FLOAT64"
    assert fields["alternatives"] == {"name": "alternatives", "type": "STRING", "mode": "REPEATED"}
    assert fields["usage"]["type"] == "RECORD"
    assert [f["name"] for f in fields["usage"]["fields"]] == list(Usage.model_fields)
    assert RESULTS_SCHEMA.json_fields == {"parsed", "metadata"}
    assert all(fields[n]["type"] == "STRING" for n in RESULTS_SCHEMA.json_fields)


def test_tool_calls_are_a_repeated_record_with_json_text_for_free_form_values():
    fields = _by_name(RESULTS_SCHEMA)["tool_calls"]
    assert (fields["type"], fields["mode"]) == ("RECORD", "REPEATED")
    sub = {f["name"]: f for f in fields["fields"]}
    assert [f["name"] for f in sub["function"]["fields"]] == ["name", "arguments"]
    assert sub["arguments_parsed"]["type"] == sub["extra_content"]["type"] == "STRING"  # JSON text
    call = ToolCall(id="c1", function=FunctionCall(name="f", arguments='{"x": 1}'), arguments_parsed={"x": 1},
                    extra_content={"google": {"thought_signature": "s"}})
    row = RESULTS_SCHEMA.to_row(ResultRecord(id="a", request_key="k", tool_calls=[call]))
    [out] = row["tool_calls"]
    assert out["function"] == {"name": "f", "arguments": '{"x": 1}'} and json.loads(out["arguments_parsed"]) == {"x": 1}
    assert json.loads(out["extra_content"]) == {"google": {"thought_signature": "s"}}
    assert _by_name(ERRORS_SCHEMA)["usage"]["type"] == "RECORD"  # what a failed record spent


def test_errors_schema():
    fields = _by_name(ERRORS_SCHEMA)
    assert list(fields) == list(ErrorRecord.model_fields)
    assert fields["stage"]["type"] == "STRING"  # a Literal of strings
    assert fields["retryable"]["type"] == "BOOL"
    assert fields["status_code"]["type"] == "INT64"
    assert ERRORS_SCHEMA.json_fields == {"record", "metadata"}


def test_to_row_encodes_json_fields_as_text():
    res = ResultRecord(id="a", request_key="k", content="hi", parsed={"b": 1, "a": [1]}, metadata={"lang": "en"},
                       usage=Usage(prompt_tokens=3, total_tokens=5))
    row = RESULTS_SCHEMA.to_row(res)
    assert set(row) == set(RESULTS_SCHEMA.column_names)
    assert row["parsed"] == '{"a":[1],"b":1}'
    assert json.loads(row["metadata"]) == {"lang": "en"}
    assert row["usage"]["prompt_tokens"] == 3
    assert row["alternatives"] == []  # REPEATED: NULL is written as an empty array
    none = RESULTS_SCHEMA.to_row(ResultRecord(id="b", request_key="k"))
    assert none["parsed"] is None and none["metadata"] is None


def test_error_rows_keep_the_record_as_json_text():
    err = row_to_record({"qid": "q", "question": None, "sys": None, "lang": "en", "n": 2}, MAP)
    row = ERRORS_SCHEMA.to_row(err)
    assert json.loads(row["record"]) == {"qid": "q", "question": None, "sys": None, "lang": "en", "n": 2}
    assert (row["stage"], row["error_type"], row["retryable"]) == ("read", "invalid_record", False)


def test_to_row_refuses_the_other_kind():
    with pytest.raises(TypeError):
        ERRORS_SCHEMA.to_row(ResultRecord(id="a", request_key="k"))


def test_row_schema_of_a_new_model():
    from pydantic import BaseModel

    class Extra(BaseModel):
        when: dt.datetime | None = None
        tags: list[str] = []
        blob: dict | None = None
        score: float | int = 0  # a union of shapes: JSON text

    fields = _by_name(row_schema(Extra))
    assert fields["when"]["type"] == "TIMESTAMP"
    assert fields["tags"]["mode"] == "REPEATED"
    assert fields["blob"]["type"] == "STRING" and fields["score"]["type"] == "STRING"
