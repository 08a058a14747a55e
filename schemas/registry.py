"""Output schemas: resolve a name, a ``module:Class`` or a JSON-schema file into one OutputSchema.

    >>> schema = resolve_schema("CalendarEvent")            # a bundled registry entry
    >>> schema = resolve_schema("myproject.models:Invoice")  # any importable pydantic model (run options only)
    >>> schema = resolve_schema("schemas/invoice.json")      # a JSON-schema file (run options only)
    >>> schema.response_format()["type"]
    'json_schema'
    >>> schema.validate_json('{"name": "x", "date": "y", "participants": []}')  # -> a plain dict, or SchemaMismatch
    >>> record_schema("Invoice", run_schema=None, registry_modules=("myproject.schemas",))  # what a record may name

Who may name what: only the run's own options name code or files (``--schema module:Class`` / ``path.json``,
``--schema_registry MODULE``, a module that calls ``register()`` when imported). A record's ``schema`` is looked up
by ``record_schema`` among names only — the registry (bundled + registered by the run's modules) and the run's own
``--schema`` — and anything else is ``UnknownSchema``: nothing an input line names is ever imported or read.

Resolution happens at the CLI before the run (so a typo is a CLI error, not a million error records) and again in
each worker's ``setup()``; an OutputSchema itself is never pickled, only its spec string.
"""

from __future__ import annotations

import importlib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import jsonschema
from pydantic import BaseModel, ValidationError

from client.errors import UnknownSchema
from schemas import examples

__all__ = ["REGISTRY", "OutputSchema", "SchemaMismatch", "UnknownSchema", "load_registry_modules", "record_schema",
           "register", "resolve_schema"]

REGISTRY: dict[str, type[BaseModel]] = {
    name: getattr(examples, name) for name in examples.__all__
}


class SchemaMismatch(ValueError):
    """Model output that is not valid JSON or does not match the schema. ``str()`` is fit for a re-ask turn."""


def register(name: str, model: type[BaseModel]) -> None:
    """Add a pydantic model to the registry under ``name`` (call it from a module named by ``--schema_registry``)."""
    REGISTRY[name] = model


def _strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    # The openai SDK's own strict-schema builder is what chat.completions.parse() sends (all properties required,
    # additionalProperties false, Optional -> anyOf null); reuse it rather than re-deriving those rules.
    from openai.lib._pydantic import to_strict_json_schema

    return to_strict_json_schema(model)


def _has_ref_cycle(schema: dict[str, Any]) -> bool:
    defs = {**schema.get("$defs", {}), **schema.get("definitions", {})}
    refs: dict[str, set[str]] = {}

    def collect(node: Any, into: set[str]) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                into.add(ref.rsplit("/", 1)[-1])
            for value in node.values():
                collect(value, into)
        elif isinstance(node, list):
            for value in node:
                collect(value, into)

    for name, body in defs.items():
        refs[name] = set()
        collect(body, refs[name])

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in refs.get(start, ()):
            if nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt})):
                return True
        return False

    return any(reaches(name, name, {name}) for name in defs)


def _ref_problem(schema: dict[str, Any]) -> str | None:
    """Why the schema's ``$ref``s cannot be sent, or None: a ref that is not local (``#...``), one that points at
    nothing, or any recursion (``"$ref": "#"``, a definition reaching itself). Gemini accepts none of them, and
    each would otherwise cost one 400 per record.

    Recursion test: a ref at location L pointing at T expands T's subtree, which holds the refs located under T;
    the schema is finite iff this ref -> ref graph has no cycle (a ref inside its own target is a cycle of one).
    """
    refs: list[tuple[str, str]] = []  # (location, target) as JSON pointers "#/a/b"

    def collect(node: Any, at: str) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref is not None:
                refs.append((at, ref))
            for key, value in node.items():
                collect(value, f"{at}/{str(key).replace('~', '~0').replace('/', '~1')}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                collect(value, f"{at}/{i}")

    collect(schema, "#")
    for _at, target in refs:
        if not isinstance(target, str) or not (target == "#" or target.startswith("#/")):
            return f"$ref {target!r} is not a local reference ('#/$defs/...'); only local refs are supported"
        if _resolve_pointer(schema, target) is _MISSING_REF:
            return f"$ref {target!r} points at nothing in the schema"

    def inside(location: str, target: str) -> bool:
        return location == target or location.startswith(target.rstrip("/") + "/")

    edges = {i: [j for j, (loc, _) in enumerate(refs) if inside(loc, refs[i][1])] for i in range(len(refs))}
    state: dict[int, int] = {}  # 1 visiting, 2 done

    def cycle_from(i: int) -> bool:
        state[i] = 1
        for j in edges[i]:
            if state.get(j) == 1 or (state.get(j) is None and cycle_from(j)):
                return True
        state[i] = 2
        return False

    for i in range(len(refs)):
        if state.get(i) is None and cycle_from(i):
            return f"$ref {refs[i][1]!r} makes the schema recursive; Gemini does not support recursive schemas"
    return None


_MISSING_REF = object()


def _resolve_pointer(schema: Any, pointer: str) -> Any:
    node = schema
    for part in pointer[2:].split("/") if pointer != "#" else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING_REF
    return node


class OutputSchema:
    """A structured-output schema: what to send as ``response_format`` and how to validate the answer."""

    def __init__(self, name: str, json_schema: dict[str, Any], model: type[BaseModel] | None = None) -> None:
        self.name = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "output"
        self.json_schema = json_schema
        self.model = model
        self._validator = None if model is not None else jsonschema.Draft202012Validator(json_schema)

    def response_format(self) -> dict[str, Any]:
        return {"type": "json_schema", "json_schema": {"name": self.name, "strict": True, "schema": self.json_schema}}

    def tool(self) -> dict[str, Any]:
        """The schema as one function to call (``--structured_output tool``): its parameters are the schema."""
        return {"type": "function", "function": {
            "name": self.name, "description": f"Record the answer as a {self.name} object.",
            "parameters": self.json_schema}}

    def tool_choice(self) -> str:
        """Forces the call of ``tool()``: ``"required"`` with ``tool()`` as the only tool. The named form
        (``{"type": "function", "function": {"name": ...}}``) means the same to OpenAI and Gemini, but llama-server
        reads only the strings and takes an object for ``auto``."""
        return "required"

    def validate_json(self, text: str) -> Any:
        """Parse and validate model output; returns plain JSON data or raises SchemaMismatch."""
        if self.model is not None:
            try:
                return self.model.model_validate_json(text).model_dump(mode="json")
            except ValidationError as exc:
                raise SchemaMismatch(_pydantic_message(exc)) from None
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise SchemaMismatch(f"output is not valid JSON: {exc}") from None
        errors = sorted(self._validator.iter_errors(data), key=lambda e: list(e.path))
        if errors:
            raise SchemaMismatch("; ".join(
                f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors[:5]))
        return data


def _pydantic_message(exc: ValidationError) -> str:
    out = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        out.append(f"{loc}: {err['msg']}")
    return "; ".join(out)


@lru_cache(maxsize=256)
def resolve_schema(spec: str) -> OutputSchema:
    """A registry name, ``package.module:Class`` or a path to a ``.json`` JSON-schema file."""
    spec = spec.strip()
    if spec in REGISTRY:
        model = REGISTRY[spec]
        return OutputSchema(spec, _strict_schema(model), model)
    if spec.endswith(".json") or "/" in spec or spec.startswith("gs://"):
        return _from_file(spec)
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise UnknownSchema(f"cannot import schema {spec!r}: {exc}") from None
        if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
            raise UnknownSchema(f"{spec!r} is not a pydantic BaseModel subclass")
        return OutputSchema(attr, _strict_schema(obj), obj)
    known = ", ".join(sorted(REGISTRY))
    raise UnknownSchema(f"unknown schema {spec!r}: not a registry name ({known}), not module:Class, not a .json file")


def _from_file(path: str) -> OutputSchema:
    try:
        if path.startswith("gs://"):
            from apache_beam.io.filesystems import FileSystems  # only for gs:// paths; keeps the core Beam-free

            with FileSystems.open(path) as fh:
                text = fh.read().decode("utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        schema = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnknownSchema(f"cannot read JSON schema file {path!r}: {exc}") from None
    if not isinstance(schema, dict):
        raise UnknownSchema(f"JSON schema file {path!r} does not hold an object")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise UnknownSchema(f"{path!r} is not a valid JSON schema: {exc.message}") from None
    if _has_ref_cycle(schema):
        raise UnknownSchema(f"{path!r} is recursive; Gemini does not support recursive schemas")
    problem = _ref_problem(schema)
    if problem:
        raise UnknownSchema(f"{path!r}: {problem}")
    name = schema.get("title") or Path(path).stem
    return OutputSchema(str(name), schema)


@lru_cache(maxsize=64)
def _import_registry_module(module: str) -> None:
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any failure of the run's own module is reported as a bad option
        raise UnknownSchema(f"--schema_registry {module!r} cannot be imported: {type(exc).__name__}: {exc}") from None


def load_registry_modules(modules: Sequence[str]) -> None:
    """Import the run's ``--schema_registry`` modules (once per process); each registers its models when imported.
    Only the run's own options reach here, never a record."""
    for module in modules:
        _import_registry_module(module)


def record_schema(name: str, *, run_schema: str | None = None, registry_modules: Sequence[str] = ()) -> OutputSchema:
    """The schema a record's ``schema`` field names: a registry name (bundled, or registered by the run's
    ``--schema_registry`` modules) or the run's own ``--schema`` (its spec, or the name it resolves to).

    Input data never names code or files: a ``module:Class`` or a path in a record is UnknownSchema, and nothing it
    names is imported or read."""
    if name not in REGISTRY and registry_modules:
        load_registry_modules(tuple(registry_modules))
    if name in REGISTRY:
        return resolve_schema(name)
    if run_schema:
        if name == run_schema.strip():
            return resolve_schema(run_schema)
        declared = resolve_schema(run_schema)
        if name == declared.name:
            return declared
    known = ", ".join(sorted(REGISTRY) + ([run_schema] if run_schema and run_schema not in REGISTRY else []))
    raise UnknownSchema(f"unknown schema {name!r}: a record may name only a registry schema or the run's --schema "
                        f"({known}); declare others with --schema_registry MODULE")
