"""Output schemas resolve from a registry name, module:Class or a JSON-schema file; bad specs fail early."""

import json

import pytest

from schemas.registry import SchemaMismatch, UnknownSchema, resolve_schema


def test_registry_name_gives_a_strict_json_schema():
    fmt = resolve_schema("CalendarEvent").response_format()
    schema = fmt["json_schema"]["schema"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"name", "date", "participants"}


def test_module_class_spec_imports_the_model():
    assert resolve_schema("schemas.examples:Sentiment").validate_json(
        '{"label": "neutral", "confidence": 0.5}') == {"label": "neutral", "confidence": 0.5}


def test_pydantic_validation_failure_is_a_schema_mismatch_naming_the_field():
    with pytest.raises(SchemaMismatch, match="confidence"):
        resolve_schema("Sentiment").validate_json('{"label": "neutral", "confidence": 7}')


def test_json_schema_file(tmp_path):
    path = tmp_path / "item.json"
    path.write_text(json.dumps({"type": "object", "properties": {"n": {"type": "integer", "maximum": 3}},
                                "required": ["n"], "additionalProperties": False}))
    schema = resolve_schema(str(path))
    assert schema.validate_json('{"n": 2}') == {"n": 2}
    with pytest.raises(SchemaMismatch, match="n"):
        schema.validate_json('{"n": 9}')
    with pytest.raises(SchemaMismatch, match="not valid JSON"):
        schema.validate_json("{oops")


@pytest.mark.parametrize("spec, fragment", [
    ("NoSuchSchema", "unknown schema"),
    ("no_such_module:Thing", "cannot import"),
    ("schemas.examples:__all__", "not a pydantic"),
    ("/nonexistent/schema.json", "cannot read"),
])
def test_bad_specs_raise_unknown_schema(spec, fragment):
    with pytest.raises(UnknownSchema, match=fragment):
        resolve_schema(spec)


def test_recursive_json_schema_is_refused(tmp_path):
    path = tmp_path / "tree.json"
    path.write_text(json.dumps({"$defs": {"node": {"type": "object", "properties": {
        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}}, "$ref": "#/$defs/node"}))
    with pytest.raises(UnknownSchema, match="recursive"):
        resolve_schema(str(path))
