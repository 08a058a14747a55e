"""The input-record contract: every line becomes a record or a read error that says why and keeps the line."""

import json

import pytest

from schemas.records import RAW_KEEP_BYTES, ErrorRecord, InputRecord, parse_line


def test_prompt_record_keeps_its_fields():
    rec = parse_line(json.dumps({"id": "a", "prompt": "hi", "system": "s", "model": "m", "params": {"n": 2},
                                 "schema": "CalendarEvent", "google": {"x": 1}, "metadata": {"k": [1]}}))
    assert isinstance(rec, InputRecord)
    assert (rec.id, rec.prompt, rec.system, rec.model, rec.params, rec.schema_name, rec.google, rec.metadata) == (
        "a", "hi", "s", "m", {"n": 2}, "CalendarEvent", {"x": 1}, {"k": [1]})


def test_numeric_id_becomes_string():
    assert parse_line('{"id": 7, "prompt": "x"}').id == "7"


def test_missing_id_is_derived_stably_from_content():
    a = parse_line('{"prompt": "same"}')
    b = parse_line('{ "prompt" :  "same" }')
    c = parse_line('{"prompt": "other"}')
    assert a.id == b.id and a.id != c.id and len(a.id) == 16


def test_multimodal_messages_pass_through_untouched():
    msg = {"role": "user", "content": [
        {"type": "text", "text": "look", "extra_content": {"google": {"a": 1}}},
        {"type": "image_url", "image_url": "gs://b/x.jpg"},
        {"type": "input_audio", "input_audio": {"format": "audio/mp3", "data": "gs://b/a.mp3"}}]}
    rec = parse_line(json.dumps({"messages": [msg]}))
    assert rec.messages == [msg]


@pytest.mark.parametrize("line, error_type, fragment", [
    ("{not json", "invalid_json", "not valid JSON"),
    ("[1, 2]", "not_an_object", "expected a JSON object"),
    ('"just a string"', "not_an_object", "got str"),
    ('{"id": "x"}', "invalid_record", "exactly one of 'prompt' or 'messages'"),
    ('{"prompt": "a", "messages": [{"role": "user", "content": "b"}]}', "invalid_record", "exactly one"),
    ('{"prompt": "   "}', "invalid_record", "prompt is empty"),
    ('{"messages": []}', "invalid_record", "messages is empty"),
    ('{"messages": [{"role": "robot", "content": "x"}]}', "invalid_record", "unknown role 'robot'"),
    ('{"messages": [{"role": "user", "content": [{"type": "video"}]}]}', "invalid_record", "unknown part type"),
    ('{"prompt": "x", "promt": "typo"}', "invalid_record", "promt: unknown field"),
    ('{"prompt": 5}', "invalid_record", "prompt"),
])
def test_bad_lines_are_read_errors_that_keep_the_line(line, error_type, fragment):
    err = parse_line(line)
    assert isinstance(err, ErrorRecord)
    assert (err.stage, err.error_type, err.retryable) == ("read", error_type, False)
    assert fragment in err.message
    assert err.raw == line


def test_cut_off_line_still_names_its_id():
    assert parse_line('{"id": "r7", "prompt": "cut of').id == "r7"
    assert parse_line('{"id": 12, "prompt": "cut of').id == "12"
    assert parse_line('{"prompt": "x", "id": "late"').id is None


def test_error_keeps_id_when_the_line_had_one():
    assert parse_line('{"id": "r9", "metadata": {"m": 1}}').id == "r9"
    assert parse_line('{"id": "r9", "metadata": {"m": 1}}').metadata == {"m": 1}


def test_oversized_record_is_an_error_with_bounded_raw():
    line = json.dumps({"prompt": "x" * 5000})
    err = parse_line(line, max_record_bytes=1000)
    assert err.error_type == "record_too_large" and "limit is 1000" in err.message
    assert len(err.raw.encode()) <= RAW_KEEP_BYTES + 20


def test_non_utf8_bytes_are_an_error_not_a_crash():
    err = parse_line(b'{"prompt": "\xff\xfe"}')
    assert err.error_type == "invalid_encoding"


def test_deep_nesting_is_an_error_not_a_crash():
    line = '{"prompt": "x", "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}"
    err = parse_line(line, max_record_bytes=10**7)
    assert isinstance(err, ErrorRecord) and err.stage == "read"


def test_bom_on_first_line_is_tolerated():
    assert parse_line('\ufeff{"prompt": "x"}'.encode()).prompt == "x"


def test_nan_and_infinity_in_metadata_are_carried_as_strings_not_null():
    from schemas.records import ResultRecord

    rec = parse_line('{"id": "n", "prompt": "x", "metadata": {"a": NaN, "b": Infinity, "c": -Infinity}}')
    out = json.loads(ResultRecord(id=rec.id, request_key="k", metadata=rec.metadata).model_dump_json())
    assert out["metadata"] == {"a": "NaN", "b": "Infinity", "c": "-Infinity"}
