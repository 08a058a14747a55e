"""Deterministic JSON values that conform to a JSON Schema (for structured output).

Covers what pydantic v2 and the openai SDK's strict mode emit, and more: objects
(required + optional properties, ``additionalProperties``, min/maxProperties), arrays
(``items``, ``prefixItems``, min/maxItems, uniqueItems, contains), ``enum``, ``const``,
integers and numbers with inclusive/exclusive bounds and ``multipleOf``, strings with
min/maxLength, simple ``pattern`` s (see `emulator.regex_gen`) and the formats
date / date-time / time / email / uri / uuid / ipv4 / hostname, booleans, null,
``$defs``/``$ref``, ``allOf`` (merged), ``anyOf``/``oneOf`` (one branch; ``oneOf`` is
treated like ``anyOf``, so overlapping ``oneOf`` branches are not guaranteed) and
``type`` lists.  Strings are drawn from the prompt's words.  Call
`emulator.schema_refs.check_schema` first: recursive schemas are rejected there.

Usage::

    import random
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    generate(schema, random.Random(0), ["Paris", "rain"])   # {'city': 'rain Paris'}
    violate(schema, {"city": "Paris"})                      # {} (a required field dropped)
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from emulator._json import canonical
from emulator.schema_check import matches
from emulator.schema_refs import resolve_ref
from emulator.schema_scalars import integer_value, number_value, string_value

__all__ = ["generate", "violate"]

_FALLBACK_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")
_MAX_DEPTH = 40
_ATTEMPTS = 8  # tries for a value that really matches (oneOf, allOf corner cases)
_NULL_CHANCE = 0.2  # how often an optional (nullable) value comes out as null
_OPTIONAL_CHANCE = 0.6  # how often an optional property is present
_TIGHTER_MIN = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_TIGHTER_MAX = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")


def generate(schema: Any, rng: random.Random, words: Sequence[str] = ()) -> Any:
    """A value valid under ``schema`` (the root, for ``$ref`` resolution); best effort if unsatisfiable."""
    gen = _Gen(schema, rng, [w for w in words if w] or list(_FALLBACK_WORDS))
    value = gen.value(schema, 0)
    for _ in range(_ATTEMPTS - 1):
        if matches(value, schema):
            break
        value = gen.value(schema, 0)
    return value


def violate(schema: Any, value: Any) -> Any:
    """A deliberately invalid variant of ``value``: a required field dropped, else an extra field or wrong type."""
    node = _deref(schema, schema)
    candidates: list[Any] = []
    if isinstance(value, dict) and isinstance(node, dict):
        candidates += [{k: v for k, v in value.items() if k != name} for name in node.get("required", []) if name in value]
        candidates.append({**value, "unexpected_field": "violation"})
    candidates += [["not", "the", "expected", "type"], "not the expected type", 12345, None, {"unexpected": True}]
    return next((c for c in candidates if not matches(c, schema)), candidates[0])


def _deref(node: Any, root: Any) -> Any:
    seen = 0
    while isinstance(node, dict) and "$ref" in node and seen < _MAX_DEPTH:
        target = resolve_ref(node["$ref"], root)
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        node = _merge(target, siblings) if siblings else target
        seen += 1
    return node


def _merge(a: Any, b: Any) -> Any:
    """Both constraints at once (for allOf, and siblings of $ref/anyOf)."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return b if isinstance(a, bool) else a
    out = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = value
        elif key == "properties" and isinstance(value, dict):
            out[key] = {**out[key], **{k: _merge(out[key].get(k, {}), v) for k, v in value.items()}}
        elif key == "required":
            out[key] = list(dict.fromkeys([*out[key], *value]))
        elif key in _TIGHTER_MIN and not isinstance(value, bool):
            out[key] = max(out[key], value)
        elif key in _TIGHTER_MAX and not isinstance(value, bool):
            out[key] = min(out[key], value)
        elif key == "type" and isinstance(value, (str, list)):
            mine = out[key] if isinstance(out[key], list) else [out[key]]
            theirs = value if isinstance(value, list) else [value]
            both = [t for t in mine if t in theirs] or [t for t in mine if t == "integer" and "number" in theirs]
            out[key] = both or mine
        elif key == "additionalProperties" and value is False:
            out[key] = False
        else:
            out[key] = value
    return out


class _Gen:
    def __init__(self, root: Any, rng: random.Random, words: list[str]) -> None:
        self.root = root
        self.rng = rng
        self.words = words

    def value(self, schema: Any, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            return None
        if schema is True or schema == {}:
            return self.word()
        node = _deref(schema, self.root)
        if not isinstance(node, dict):
            return self.word()
        if "allOf" in node:
            merged = {k: v for k, v in node.items() if k != "allOf"}
            for part in node["allOf"]:
                merged = _merge(merged, _deref(part, self.root))
            return self.value(merged, depth + 1)
        if "const" in node:
            return node["const"]
        if isinstance(node.get("enum"), list) and node["enum"]:
            return self.rng.choice(node["enum"])
        for key in ("anyOf", "oneOf"):
            if isinstance(node.get(key), list) and node[key]:
                rest = {k: v for k, v in node.items() if k != key}
                for _ in range(_ATTEMPTS):  # a oneOf value must match exactly one branch
                    branch = self.pick_branch(node[key])
                    value = self.value(_merge(_deref(branch, self.root), rest), depth + 1)
                    if matches(value, node, self.root):
                        break
                return value
        kind = self.pick_type(node)
        return getattr(self, "gen_" + kind, self.gen_string)(node, depth)

    def pick_branch(self, branches: list[Any]) -> Any:
        def is_null(b: Any) -> bool:
            return isinstance(b, dict) and b.get("type") == "null"

        non_null = [b for b in branches if not is_null(b)]
        if not non_null or (len(non_null) < len(branches) and self.rng.random() < _NULL_CHANCE):
            return {"type": "null"}
        return self.rng.choice(non_null)

    def pick_type(self, node: dict[str, Any]) -> str:
        t = node.get("type")
        if isinstance(t, list):
            non_null = [x for x in t if x != "null"]
            if not non_null or (len(non_null) < len(t) and self.rng.random() < _NULL_CHANCE):
                return "null"
            return self.rng.choice(non_null)
        if isinstance(t, str):
            return t
        if any(k in node for k in ("properties", "required", "additionalProperties", "minProperties")):
            return "object"
        if any(k in node for k in ("items", "prefixItems", "minItems", "maxItems", "contains")):
            return "array"
        if any(k in node for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")):
            return "number"
        return "string"

    def word(self) -> str:
        return self.rng.choice(self.words)

    # -- object / array ------------------------------------------------------------------
    def gen_object(self, node: dict[str, Any], depth: int) -> dict[str, Any]:
        props = node.get("properties") or {}
        required = [r for r in node.get("required", []) if isinstance(r, str)]
        extra = node.get("additionalProperties", True)
        out: dict[str, Any] = {}
        for name, sub in props.items():
            if name in required or self.rng.random() < _OPTIONAL_CHANCE:
                out[name] = self.value(sub, depth + 1)
        for name in required:
            if name not in out:
                out[name] = self.value(extra if isinstance(extra, dict) else True, depth + 1)
        max_props = node.get("maxProperties")
        if isinstance(max_props, int) and len(out) > max_props:
            for name in [n for n in out if n not in required][: len(out) - max_props]:
                del out[name]
        want = node.get("minProperties", 0)
        if not props and isinstance(extra, dict) and not want:
            want = self.rng.randint(0, 2)
        if extra is not False:
            optional = [n for n in props if n not in out]
            i = 0
            while len(out) < want and i < 100:
                name = optional.pop(0) if optional else f"{self.word()}_{i}"
                i += 1
                if name in out:
                    continue
                sub = props.get(name, extra if isinstance(extra, dict) else True)
                out[name] = self.value(sub, depth + 1)
        return out

    def gen_array(self, node: dict[str, Any], depth: int) -> list[Any]:
        prefix = node.get("prefixItems") if isinstance(node.get("prefixItems"), list) else []
        items = node.get("items", True)
        if isinstance(items, list):  # draft-4 tuple form
            prefix, items = items, node.get("additionalItems", True)
        lo = int(node.get("minItems", 0))
        hi = int(node.get("maxItems", lo + 3 if depth < 6 else lo))
        count = self.rng.randint(lo, max(lo, min(hi, lo + (3 if depth < 6 else 0))))
        out = [self.value(s, depth + 1) for s in prefix[:max(count, lo)]]
        if "contains" in node and items is not False and len(out) < max(hi, 1):
            out.append(self.value(node["contains"], depth + 1))
        unique = node.get("uniqueItems") is True
        seen = {canonical(v) for v in out}
        attempts = 0
        while len(out) < count and items is not False and attempts < 4 * count + 10:
            attempts += 1
            item = self.value(items, depth + 1)
            key = canonical(item)
            if unique and key in seen:
                continue
            seen.add(key)
            out.append(item)
        return out

    # -- scalars (emulator.schema_scalars) -----------------------------------------------
    def gen_string(self, node: dict[str, Any], depth: int) -> str:
        return string_value(node, self.rng, self.words)

    def gen_integer(self, node: dict[str, Any], depth: int) -> int:
        return integer_value(node, self.rng)

    def gen_number(self, node: dict[str, Any], depth: int) -> float | int:
        return number_value(node, self.rng)

    def gen_boolean(self, node: dict[str, Any], depth: int) -> bool:
        return self.rng.random() < 0.5

    def gen_null(self, node: dict[str, Any], depth: int) -> None:
        return None
