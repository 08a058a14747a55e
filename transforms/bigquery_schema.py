"""Before a run appends to a results or errors table made by an older chatbeam: add the columns it lacks.

    plan = plan_new_columns(table_fields, RESULTS_SCHEMA.fields, table="p.ds.results")  # ColumnConflict, or
    plan.added                                   # ("tool_calls", "usage.cached_tokens", ...)
    plan.fields                                  # the table's fields, then the new ones: for update_table
    added = add_missing_columns({"p:ds.results": RESULTS_SCHEMA, ...}, project="p", endpoint=None)

The record models gain fields (``tool_calls``, ``started_at``, ...), and BigQuery refuses rows carrying columns the
table lacks: insertAll answers "no such field" for those rows, a load job "Provided Schema does not match Table".
Both come at the write, after every call of the run was paid for. So before the run each existing table being
appended to is compared with the schema chatbeam writes (transforms/bigquery_rows.py, from the models), and the
missing columns -- top-level and inside RECORDs -- are added, NULLABLE (the derived schema's own mode; REPEATED stays
REPEATED). Additive only: nothing is dropped, retyped, reordered or relaxed. A column whose type or repeatedness
conflicts is a ColumnConflict (a one-line ValueError: table, column, both types) and no table is changed.

``WRITE_TRUNCATE`` needs none of this: a load job that truncates takes the schema from the load (BigQuery's
JobConfigurationLoad.writeDisposition), so ``--write_disposition truncate`` is left alone; ``empty`` appends into an
existing empty table and is treated as ``append``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

__all__ = ["ColumnConflict", "NewColumns", "add_missing_columns", "plan_new_columns"]

log = logging.getLogger("chatbeam")

# BigQuery's legacy and standard-SQL names for one type (tables made through the REST API report the legacy ones).
_SAME_TYPE = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "STRUCT": "RECORD"}


class ColumnConflict(ValueError):
    """An existing table has a column chatbeam writes, with another type or repeatedness; one line."""


@dataclass(frozen=True)
class NewColumns:
    """One table's plan: ``fields`` (API repr: the table's own, in order, then the new ones) and the dotted names of
    the columns ``added`` (empty: the table already has every column)."""

    table: str
    fields: tuple[dict[str, Any], ...]
    added: tuple[str, ...]


def _type(f: Mapping[str, Any]) -> str:
    t = str(f.get("type", "STRING")).upper()
    return _SAME_TYPE.get(t, t)


def _repeated(f: Mapping[str, Any]) -> bool:
    return str(f.get("mode") or "NULLABLE").upper() == "REPEATED"


def _describe(f: Mapping[str, Any]) -> str:
    return f"{'REPEATED ' if _repeated(f) else ''}{_type(f)}"


def _merge(have: Sequence[Mapping[str, Any]], want: Sequence[Mapping[str, Any]], *, table: str,
           prefix: str = "") -> tuple[list[dict[str, Any]], list[str]]:
    """The fields ``have`` plus those of ``want`` it lacks (recursing into RECORDs both hold); names compare without
    case, as BigQuery's do."""
    merged = [dict(f) for f in have]
    by_name = {f["name"].lower(): i for i, f in enumerate(merged)}
    added: list[str] = []
    for w in want:
        name = f"{prefix}{w['name']}"
        i = by_name.get(w["name"].lower())
        if i is None:
            merged.append({k: v for k, v in w.items() if k != "description" or v})  # no empty description
            added.append(name)
            continue
        h = merged[i]
        if _type(h) != _type(w) or _repeated(h) != _repeated(w):
            raise ColumnConflict(f"table {table}: column {name} is {_describe(h)}, chatbeam writes {_describe(w)}; "
                                 "write to another table, or change that column")
        if _type(w) == "RECORD":
            sub, sub_added = _merge(h.get("fields") or [], w.get("fields") or [], table=table, prefix=f"{name}.")
            if sub_added:
                merged[i] = {**h, "fields": sub}
                added.extend(sub_added)
    return merged, added


def plan_new_columns(table_fields: Sequence[Mapping[str, Any]], write_fields: Sequence[Mapping[str, Any]], *,
                     table: str) -> NewColumns:
    """Compare a table's schema (API repr fields) with the one chatbeam writes; ColumnConflict on a clash."""
    fields, added = _merge(table_fields, write_fields, table=table)
    return NewColumns(table=table, fields=tuple(fields), added=tuple(added))


def add_missing_columns(tables: Mapping[str, Sequence[Mapping[str, Any]]], client, *,
                        project: str | None = None) -> dict[str, tuple[str, ...]]:
    """``{table name: the fields chatbeam writes}`` → ``{table: columns added}`` for the tables that exist (a missing
    one is left to CREATE_IF_NEEDED). Every table is checked before any is changed, so a ColumnConflict changes
    nothing. One INFO line per table changed. ``client``: a google-cloud-bigquery Client."""
    from google.api_core import exceptions as gexc
    from google.cloud import bigquery

    from transforms.bigquery import _one_line, _table_id

    plans: list[tuple[Any, NewColumns]] = []
    for name, write_fields in tables.items():
        table_id = _table_id(name, project)
        try:
            found = client.get_table(table_id)
        except gexc.NotFound:
            continue
        except gexc.GoogleAPICallError as exc:
            raise ValueError(f"table {name}: {_one_line(exc)}") from None
        have = [f.to_api_repr() for f in found.schema]
        plans.append((found, plan_new_columns(have, write_fields, table=name)))
    done: dict[str, tuple[str, ...]] = {}
    for found, plan in plans:
        if not plan.added:
            continue
        found.schema = [bigquery.SchemaField.from_api_repr(f) for f in plan.fields]
        try:
            client.update_table(found, ["schema"])
        except gexc.GoogleAPICallError as exc:
            raise ValueError(f"table {plan.table}: could not add columns {', '.join(plan.added)}: "
                             f"{_one_line(exc)}") from None
        log.info("table %s: added columns %s (NULLABLE) for this chatbeam's records", plan.table,
                 ", ".join(plan.added))
        done[plan.table] = plan.added
    return done
