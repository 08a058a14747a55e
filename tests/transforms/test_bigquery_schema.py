"""plan_new_columns: what an older table lacks, inside RECORDs too; legacy type names are not conflicts."""

import pytest

from transforms.bigquery_rows import ERRORS_SCHEMA
from transforms.bigquery_schema import ColumnConflict, plan_new_columns


def _old(drop_usage_fields=("cached_tokens",)):
    out = []
    for f in ERRORS_SCHEMA.fields:
        f = dict(f, type={"INT64": "INTEGER", "BOOL": "BOOLEAN"}.get(f["type"], f["type"]))  # REST's legacy names
        if f["name"] == "usage":
            f["fields"] = [g for g in f["fields"] if g["name"] not in drop_usage_fields]
        if f["name"] not in ("started_at", "service_tier"):
            out.append(f)
    return out


def test_adds_top_level_and_nested_columns_at_the_end_keeping_the_tables_order():
    plan = plan_new_columns(_old(), ERRORS_SCHEMA.fields, table="p:d.errors")
    assert plan.added == ("usage.cached_tokens", "started_at", "service_tier")
    names = [f["name"] for f in plan.fields]
    assert names[:len(_old())] == [f["name"] for f in _old()] and names[-2:] == ["started_at", "service_tier"]
    usage = next(f for f in plan.fields if f["name"] == "usage")
    assert usage["fields"][-1]["name"] == "cached_tokens" and usage["fields"][-1]["mode"] == "NULLABLE"
    assert plan_new_columns(plan.fields, ERRORS_SCHEMA.fields, table="t").added == ()  # nothing left to add


def test_a_clashing_type_names_table_column_and_both_types_on_one_line():
    old = [dict(f, type="STRING") if f["name"] == "usage" else f for f in _old()]
    with pytest.raises(ColumnConflict) as info:
        plan_new_columns(old, ERRORS_SCHEMA.fields, table="p:d.errors")
    assert str(info.value).startswith("table p:d.errors: column usage is STRING, chatbeam writes RECORD")
    assert "\n" not in str(info.value)
