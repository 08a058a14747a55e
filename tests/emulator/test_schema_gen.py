"""Structured output: generated values validate against generated schemas and against the SDK's strict schemas."""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from enum import Enum
from typing import Literal, Optional, Union

import httpx2
import jsonschema
import openai
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.regex_gen import Unsupported
from emulator.regex_gen import generate as regex_generate
from emulator.schema_gen import generate, violate
from emulator.schema_refs import SchemaError, check_schema

WORDS = ["Ada", "Lovelace", "London", "engine", "notes", "1843"]
FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER
PATTERNS = [r"^[a-z]{3,8}$", r"^\d{4}-\d{2}$", r"^[A-Z][a-z]+$", r"^(foo|bar)_\d+$", r"^[A-Z]{2}-\d{3}$",
            r"^\w+@\w+\.com$", r"[0-9a-f]{6}", r"^(?:ab|cd)*x?$"]


def validate(value, schema) -> None:
    jsonschema.Draft202012Validator(schema, format_checker=FORMATS).validate(value)


# -- hypothesis: a wide range of schemas ---------------------------------------------------------

@st.composite
def integer_schemas(draw):
    schema = {"type": "integer"}
    low = draw(st.integers(-1000, 1000))
    high = low + draw(st.integers(2, 500))
    if draw(st.booleans()):
        schema["exclusiveMinimum" if draw(st.booleans()) else "minimum"] = low
    if draw(st.booleans()):
        schema["exclusiveMaximum" if draw(st.booleans()) else "maximum"] = high
    if draw(st.booleans()):
        return {"type": "integer", "minimum": low, "maximum": low + 100, "multipleOf": draw(st.sampled_from([2, 5, 10]))}
    return schema


@st.composite
def number_schemas(draw):
    schema = {"type": "number"}
    low = draw(st.floats(-1e6, 1e6, allow_nan=False)) if draw(st.booleans()) else draw(st.integers(-50, 50))
    high = low + draw(st.sampled_from([0.001, 0.5, 1, 7.25, 1e5]))
    if draw(st.booleans()):
        schema["exclusiveMinimum" if draw(st.booleans()) else "minimum"] = low
    if draw(st.booleans()):
        schema["exclusiveMaximum" if draw(st.booleans()) else "maximum"] = high
    return schema


@st.composite
def string_schemas(draw):
    kind = draw(st.sampled_from(["plain", "lengths", "pattern", "format", "enum", "const"]))
    if kind == "lengths":
        low = draw(st.integers(0, 12))
        return {"type": "string", "minLength": low, "maxLength": low + draw(st.integers(0, 20))}
    if kind == "pattern":
        return {"type": "string", "pattern": draw(st.sampled_from(PATTERNS))}
    if kind == "format":
        return {"type": "string", "format": draw(st.sampled_from(["date", "date-time", "email", "uuid", "ipv4", "time"]))}
    if kind == "enum":
        return {"type": "string", "enum": draw(st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=4, unique=True))}
    if kind == "const":
        return {"const": draw(st.text(max_size=6) | st.integers() | st.booleans())}
    return {"type": "string"}


leaves = st.one_of(
    integer_schemas(), number_schemas(), string_schemas(),
    st.just({"type": "boolean"}), st.just({"type": "null"}), st.just({}),
    st.just({"type": ["string", "null"]}), st.just({"type": ["integer", "string"]}),
)
names = st.sampled_from(["id", "name", "tags", "when", "score", "kind", "note", "a-b", "value"])


def containers(inner):
    @st.composite
    def object_schema(draw):
        props = draw(st.dictionaries(names, inner, max_size=4))
        schema = {"type": "object", "properties": props,
                  "required": draw(st.lists(st.sampled_from(sorted(props)), unique=True)) if props else []}
        if draw(st.booleans()):
            schema["additionalProperties"] = False
        return schema

    @st.composite
    def array_schema(draw):
        low = draw(st.integers(0, 3))
        schema = {"type": "array", "items": draw(inner), "minItems": low}
        if draw(st.booleans()):
            schema["maxItems"] = low + draw(st.integers(0, 3))
        return schema

    @st.composite
    def tuple_schema(draw):
        prefix = draw(st.lists(inner, min_size=1, max_size=3))
        return {"type": "array", "prefixItems": prefix, "items": False, "minItems": len(prefix), "maxItems": len(prefix)}

    nullable = inner.map(lambda s: {"anyOf": [s, {"type": "null"}]})
    # oneOf needs branches that don't overlap, or no value can match exactly one of them
    one_of_null = inner.filter(lambda s: not jsonschema.Draft202012Validator(s).is_valid(None)).map(
        lambda s: {"oneOf": [s, {"type": "null"}]})
    all_of = st.tuples(inner, inner).map(lambda pair: {"allOf": [pair[0]]})
    return object_schema() | array_schema() | tuple_schema() | nullable | one_of_null | all_of


schemas = st.recursive(leaves, containers, max_leaves=12)


@st.composite
def rooted(draw):
    """Schemas, some with the building blocks moved into $defs and referenced by $ref."""
    body = draw(schemas)
    if not draw(st.booleans()):
        return body
    defs = draw(st.dictionaries(st.sampled_from(["A", "B", "C"]), schemas, min_size=1, max_size=3))
    props = {f"p_{name}": {"$ref": f"#/$defs/{name}"} for name in defs}
    props["body"] = body
    return {"$defs": defs, "type": "object", "properties": props, "required": sorted(props), "additionalProperties": False}


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=rooted(), seed=st.integers(0, 2**32))
def test_generated_values_validate(schema, seed):
    check_schema(schema)
    value = generate(schema, random.Random(seed), WORDS)
    validate(value, schema)
    json.dumps(value)  # plain JSON


@settings(max_examples=80, deadline=None)
@given(schema=st.builds(lambda props: {"type": "object", "properties": props, "required": sorted(props),
                                       "additionalProperties": False},
                        st.dictionaries(names, leaves, min_size=1, max_size=4)), seed=st.integers(0, 2**32))
def test_violations_really_violate(schema, seed):
    value = generate(schema, random.Random(seed), WORDS)
    with pytest.raises(jsonschema.ValidationError):
        validate(violate(schema, value), schema)


def test_generation_is_deterministic_per_seed():
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}
    values = {json.dumps(generate(schema, random.Random(seed), WORDS), sort_keys=True) for seed in range(12)}
    again = {json.dumps(generate(schema, random.Random(seed), WORDS), sort_keys=True) for seed in range(12)}
    assert values == again and len(values) > 3


# -- recursion and refs ---------------------------------------------------------------------------

@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"child": {"$ref": "#"}}},
    {"$defs": {"Node": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}}},
     "$ref": "#/$defs/Node"},
    {"$defs": {"A": {"anyOf": [{"$ref": "#/$defs/B"}, {"type": "null"}]}, "B": {"properties": {"a": {"$ref": "#/$defs/A"}}}},
     "properties": {"x": {"$ref": "#/$defs/A"}}},
])
def test_recursive_schemas_are_rejected(schema):
    with pytest.raises(SchemaError, match="recursive"):
        check_schema(schema)


def test_shared_non_recursive_refs_are_fine():
    shared = {"$defs": {"P": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}},
              "properties": {"a": {"$ref": "#/$defs/P"}, "b": {"$ref": "#/$defs/P"},
                             "c": {"type": "array", "items": {"$ref": "#/$defs/P"}}}, "required": ["a", "b", "c"]}
    check_schema(shared)
    validate(generate(shared, random.Random(3), WORDS), shared)


def test_recursive_pydantic_model_is_a_400(emu):
    class Node(pydantic.BaseModel):
        name: str
        children: list["Node"]

    client = openai.OpenAI(base_url=emu.url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.parse(model="m", messages=[{"role": "user", "content": "tree"}], response_format=Node)


# -- patterns -------------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern", PATTERNS)
def test_regex_generator_matches(pattern):
    rng = random.Random(5)
    for _ in range(20):
        assert re.search(pattern, regex_generate(pattern, rng))


@pytest.mark.parametrize("pattern", [r"(?=a)b", r"(a)\1", r"(?P<x>a)"])
def test_regex_generator_refuses_what_it_cannot_do(pattern):
    with pytest.raises(Unsupported):
        regex_generate(pattern, random.Random(0))


def test_unsupported_pattern_falls_back_to_a_matching_prompt_word():
    schema = {"type": "string", "pattern": r"^(?=L)\w+on$"}
    assert generate(schema, random.Random(0), WORDS) == "London"


# -- what the openai SDK actually sends for pydantic models ----------------------------------------

class Level(str, Enum):
    low = "low"
    high = "high"


class Item(pydantic.BaseModel):
    sku: str = pydantic.Field(pattern=r"^[A-Z]{3}-\d{4}$")
    qty: int = pydantic.Field(ge=1, le=99)
    price: float = pydantic.Field(gt=0)


class Order(pydantic.BaseModel):
    order_id: str = pydantic.Field(min_length=3, max_length=12)
    placed: dt.datetime
    ship_by: dt.date
    items: list[Item] = pydantic.Field(min_length=1, max_length=4)
    level: Level
    channel: Literal["web", "store", "phone"]
    note: Optional[str] = None
    gift: Optional[Item] = None
    codes: tuple[int, str]
    mixed: Union[int, str]
    paid: bool


def _captured_schema(model: type[pydantic.BaseModel]) -> dict:
    sent = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(json.loads(request.content))
        return httpx2.Response(500, json={"error": {"message": "captured"}})

    client = openai.OpenAI(base_url="http://capture.test/v1", api_key="k", max_retries=0,
                           http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.parse(model="m", messages=[{"role": "user", "content": "x"}], response_format=model)
    return sent[0]["response_format"]["json_schema"]["schema"]


def test_values_validate_against_the_sdks_strict_schema():
    schema = _captured_schema(Order)
    assert schema["additionalProperties"] is False and set(schema["required"]) == set(Order.model_fields)
    for seed in range(40):
        value = generate(schema, random.Random(seed), WORDS)
        validate(value, schema)
        Order.model_validate(value)


def test_parse_through_the_emulator_with_a_rich_model(emu):
    client = openai.OpenAI(base_url=emu.url + "/v1/projects/p/locations/us-central1/endpoints/openapi",
                           api_key="t", max_retries=0)
    for i in range(5):
        completion = client.chat.completions.parse(
            model="google/gemini-2.5-flash", response_format=Order,
            messages=[{"role": "user", "content": f"Order {i}: three lamps for Ada, ship soon"}])
        assert isinstance(completion.choices[0].message.parsed, Order)
