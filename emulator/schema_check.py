"""A small JSON Schema matcher: does a value satisfy a schema? (no dependency on jsonschema)

Used by the generator to make ``oneOf`` values match exactly one branch.  Covers the
keywords the generator produces values for; unknown keywords (and ``format``) are
ignored, i.e. treated as satisfied.

Usage::

    matches(3, {"type": "integer", "minimum": 1})                     # True
    matches(3, {"oneOf": [{"type": "integer"}, {"type": "number"}]})  # False: both match
"""

from __future__ import annotations

import math
import re
from typing import Any

from emulator.schema_refs import resolve_ref

__all__ = ["matches"]

_TYPES = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
}


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but True != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b


def matches(value: Any, schema: Any, root: Any = None) -> bool:
    """True if ``value`` satisfies ``schema`` (``root`` resolves ``$ref``; defaults to ``schema``)."""
    return _ok(value, schema, schema if root is None else root, 0)


def _ok(v: Any, s: Any, root: Any, depth: int) -> bool:
    if s is True or s == {}:
        return True
    if s is False or not isinstance(s, dict) or depth > 64:
        return s is not False and depth <= 64
    if "$ref" in s and not _ok(v, resolve_ref(s["$ref"], root), root, depth + 1):
        return False
    if "const" in s and not _equal(v, s["const"]):
        return False
    if "enum" in s and not any(_equal(v, e) for e in s["enum"]):
        return False
    t = s.get("type")
    if t is not None and not any(_TYPES.get(name, lambda _: True)(v) for name in (t if isinstance(t, list) else [t])):
        return False
    if any(not _ok(v, sub, root, depth + 1) for sub in s.get("allOf", ())):
        return False
    if "anyOf" in s and not any(_ok(v, sub, root, depth + 1) for sub in s["anyOf"]):
        return False
    if "oneOf" in s and sum(_ok(v, sub, root, depth + 1) for sub in s["oneOf"]) != 1:
        return False
    if "not" in s and _ok(v, s["not"], root, depth + 1):
        return False
    if isinstance(v, dict):
        return _object(v, s, root, depth)
    if isinstance(v, list):
        return _array(v, s, root, depth)
    if isinstance(v, str):
        return _string(v, s)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return _number(v, s)
    return True


def _object(v: dict[str, Any], s: dict[str, Any], root: Any, depth: int) -> bool:
    props = s.get("properties", {})
    patterns = s.get("patternProperties", {})
    extra = s.get("additionalProperties", True)
    if any(name not in v for name in s.get("required", ())):
        return False
    if not s.get("minProperties", 0) <= len(v) <= s.get("maxProperties", math.inf):
        return False
    for key, item in v.items():
        matched = False
        if key in props:
            matched = True
            if not _ok(item, props[key], root, depth + 1):
                return False
        for pattern, sub in patterns.items():
            if re.search(pattern, key):
                matched = True
                if not _ok(item, sub, root, depth + 1):
                    return False
        if not matched and not _ok(item, extra, root, depth + 1):
            return False
    return True


def _array(v: list[Any], s: dict[str, Any], root: Any, depth: int) -> bool:
    if not s.get("minItems", 0) <= len(v) <= s.get("maxItems", math.inf):
        return False
    prefix = s.get("prefixItems", [])
    if any(not _ok(item, sub, root, depth + 1) for item, sub in zip(v, prefix)):
        return False
    items = s.get("items", True)
    if any(not _ok(item, items, root, depth + 1) for item in v[len(prefix):]):
        return False
    if "contains" in s and not any(_ok(item, s["contains"], root, depth + 1) for item in v):
        return False
    if s.get("uniqueItems") is True:
        for i, a in enumerate(v):
            if any(_equal(a, b) for b in v[i + 1:]):
                return False
    return True


def _string(v: str, s: dict[str, Any]) -> bool:
    if not s.get("minLength", 0) <= len(v) <= s.get("maxLength", math.inf):
        return False
    pattern = s.get("pattern")
    if isinstance(pattern, str):
        try:
            return re.search(pattern, v) is not None
        except re.error:
            return True
    return True


def _number(v: float, s: dict[str, Any]) -> bool:
    def num(key: str) -> Any:
        x = s.get(key)
        return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None

    if (x := num("minimum")) is not None and v < x:
        return False
    if (x := num("maximum")) is not None and v > x:
        return False
    if (x := num("exclusiveMinimum")) is not None and v <= x:
        return False
    if (x := num("exclusiveMaximum")) is not None and v >= x:
        return False
    if s.get("exclusiveMinimum") is True and num("minimum") is not None and v <= s["minimum"]:
        return False
    if s.get("exclusiveMaximum") is True and num("maximum") is not None and v >= s["maximum"]:
        return False
    step = num("multipleOf")
    if step:
        q = v / step
        return abs(q - round(q)) < 1e-9
    return True
