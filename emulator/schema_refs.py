"""JSON Schema plumbing: local ``$ref`` resolution and Vertex's "no recursive schemas" check.

Gemini rejects recursive schemas (a ``$ref`` cycle) with 400 INVALID_ARGUMENT;
`check_schema` finds such cycles (and dangling or non-local refs) before any generation.

Usage::

    root = {"$defs": {"A": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/A"}}}
    resolve_ref("#/$defs/A", root)    # {"type": "integer"}
    check_schema(root)                # None; raises SchemaError on a cycle
"""

from __future__ import annotations

from typing import Any, Iterator

__all__ = ["SchemaError", "resolve_ref", "check_schema", "subschemas"]

# Keywords whose value is one subschema, a list of subschemas, or a name -> subschema map.
_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
        "unevaluatedProperties", "unevaluatedItems", "additionalItems")
_MANY = ("anyOf", "oneOf", "allOf", "prefixItems", "items")
_MAP = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")


class SchemaError(ValueError):
    """The schema cannot be used (recursive, bad ``$ref``, not an object)."""


def resolve_ref(ref: str, root: Any) -> Any:
    """Follow a local JSON-pointer ``$ref`` (``#``, ``#/$defs/X``) inside ``root``."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        raise SchemaError(f"only local $ref values are supported, got {ref!r}")
    node = root
    for raw in filter(None, ref[1:].split("/")):
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            raise SchemaError(f"$ref {ref!r} does not resolve")
    return node


def subschemas(schema: dict[str, Any]) -> Iterator[Any]:
    """The direct subschemas of a schema object (not following ``$ref``)."""
    for key in _ONE:
        value = schema.get(key)
        if isinstance(value, (dict, bool)):
            yield value
    for key in _MANY:
        value = schema.get(key)
        if isinstance(value, list):
            yield from value
    for key in _MAP:
        value = schema.get(key)
        if isinstance(value, dict):
            yield from value.values()


def check_schema(schema: Any) -> None:
    """Raise `SchemaError` if ``schema`` is not an object/boolean or contains a ``$ref`` cycle."""
    if not isinstance(schema, (dict, bool)):
        raise SchemaError("schema must be a JSON object")
    done: set[str] = set()
    stack: list[str] = []

    def walk(node: Any, depth: int) -> None:
        if not isinstance(node, dict):
            return
        if depth > 200:
            raise SchemaError("schema is nested too deeply")
        ref = node.get("$ref")
        if ref is not None:
            if ref in stack:
                raise SchemaError(f"recursive schemas are not supported ($ref cycle through {ref!r})")
            if ref not in done:
                target = resolve_ref(ref, schema)
                stack.append(ref)
                walk(target, depth + 1)
                stack.pop()
                done.add(ref)
        for sub in subschemas(node):
            walk(sub, depth + 1)

    walk(schema, 0)
