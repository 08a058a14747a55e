"""The options of the results contract: function calling, structured output, cut-off answers, declared schemas.

    add_answer_arguments(parser)                    # from ChatbeamOptions._add_argparse_args
    settings = answer_settings(options_view)        # ClientConfig keyword arguments; ValueError (one line) if bad

``--tools FILE.json`` (local or gs://: a JSON list of ``{"type": "function", "function": {...}}``, or of bare
``{"name", "description", "parameters"}`` functions) and ``--tool_choice`` (``auto``, ``required``, ``none``, a
function name, or JSON) are run defaults that a record's ``params`` override. ``--structured_output tool`` asks a
schema as one forced function call instead of ``response_format``. ``--on_truncation result|error|retry``.
``--schema_registry MODULE`` (repeatable) imports a module of the run's choosing that calls
``schemas.registry.register(name, Model)``: records may then name those schemas. Only these run options name code or
files; a record never does (schemas.registry.record_schema).
"""

from __future__ import annotations

import json
from typing import Any

from apache_beam.io.filesystems import FileSystems

from client.errors import ChatbeamError
from client.requests import check_tools
from schemas.registry import load_registry_modules, resolve_schema

__all__ = ["add_answer_arguments", "answer_settings", "load_tools", "parse_tool_choice"]

ON_TRUNCATION = ("result", "error", "retry")
STRUCTURED_OUTPUT = ("json_schema", "tool")
_TOOL_CHOICE_WORDS = ("auto", "required", "none")


def add_answer_arguments(parser: Any) -> None:
    group = parser.add_argument_group("answers: function calling, structured output, cut-off answers")
    group.add_argument("--tools", help="JSON file (local or gs://) with the default tools: a list of "
                                       "{'type': 'function', 'function': {name, description, parameters}}")
    group.add_argument("--tool_choice", help="default tool_choice: auto, required, none, a function name, or JSON")
    group.add_argument("--structured_output", default="json_schema", choices=STRUCTURED_OUTPUT,
                       help="how a schema is asked: json_schema (response_format, default) or tool (one forced "
                            "function call, for servers without json_schema support)")
    group.add_argument("--on_truncation", default="result", choices=ON_TRUNCATION,
                       help="a cut-off answer (finish_reason length): result (default: keep it with its text), "
                            "error, or retry (once, max_tokens doubled up to 8192)")
    group.add_argument("--schema_registry", action="append", default=None,
                       help="a module that registers schemas (schemas.registry.register) records may name; repeatable")


def _read_text(path: str) -> str:
    with FileSystems.open(path) as fh:
        return fh.read().decode("utf-8")


def load_tools(path: str) -> tuple[dict[str, Any], ...]:
    """The tools in ``path``; ValueError (one line) when the file is unreadable or holds no valid tools."""
    try:
        data = json.loads(_read_text(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--tools {path!r} is not a readable JSON file: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - Beam's filesystems raise their own types for a bad path or scheme
        raise ValueError(f"--tools {path!r} cannot be read: {exc}") from None
    if isinstance(data, dict) and "tools" in data:
        data = data["tools"]
    if not isinstance(data, list) or not data:
        raise ValueError(f"--tools {path!r} must hold a non-empty JSON list of tools")
    tools = [t if isinstance(t, dict) and "function" in t else {"type": "function", "function": t} for t in data]
    try:
        check_tools(tools)
    except ChatbeamError as exc:
        raise ValueError(f"--tools {path!r}: {exc.message}") from None
    return tuple(tools)


def parse_tool_choice(text: str) -> Any:
    """``auto`` / ``required`` / ``none``, a JSON object, or a function name (forced)."""
    text = text.strip()
    if text in _TOOL_CHOICE_WORDS:
        return text
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--tool_choice is not valid JSON: {exc}") from None
    if not text:
        raise ValueError("--tool_choice is empty")
    return {"type": "function", "function": {"name": text}}


def answer_settings(o: Any) -> dict[str, Any]:
    """ClientConfig keyword arguments from the parsed options; ValueError with one line when something is wrong.
    Imports the ``--schema_registry`` modules and resolves ``--schema`` (so a typo is a CLI error)."""
    modules = tuple(o.schema_registry or ())
    try:
        load_registry_modules(modules)
        if o.schema:
            resolve_schema(o.schema)
    except ChatbeamError as exc:
        raise ValueError(exc.message) from None
    tools = load_tools(o.tools) if o.tools else None
    tool_choice = parse_tool_choice(o.tool_choice) if o.tool_choice is not None else None
    if o.structured_output == "tool" and tools:
        raise ValueError("--structured_output tool sends the schema as the only tool; it cannot be combined with "
                         "--tools")
    return {"tools": tools, "tool_choice": tool_choice, "structured_output": o.structured_output,
            "on_truncation": o.on_truncation, "schema_registry": modules}
