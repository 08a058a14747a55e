"""A nightly run appending to results and errors tables made by an older chatbeam (without the columns the record
models gained since) on the real BigQuery emulator: the run adds the missing columns before any request, keeps the
old rows, and fills the new columns for the new rows; a column whose type clashes is a one-line exit 2 before any
request. See transforms/bigquery_schema.py."""

from __future__ import annotations

import logging

import pytest

from transforms.bigquery_rows import ERRORS_SCHEMA, RESULTS_SCHEMA

pytestmark = pytest.mark.e2e

PROJECT = "chatbeam-test"
N = 30
# What the record models gained after the first BigQuery release (README "BigQuery and GCS").
NEW_RESULT_COLUMNS = ("tool_calls", "started_at", "finished_at", "service_tier", "cached")
NEW_ERROR_COLUMNS = ("usage", "started_at", "finished_at", "service_tier")


def _prompt(i: int) -> str | None:
    return None if i % 10 == 3 else f"old table question {i}"


@pytest.fixture(scope="module")
def prompts(bq_client, dataset):
    from google.cloud import bigquery

    table_id = f"{PROJECT}.{dataset}.prompts"
    bq_client.create_table(bigquery.Table(table_id, schema=[bigquery.SchemaField("qid", "INT64"),
                                                            bigquery.SchemaField("question", "STRING")]))
    assert bq_client.insert_rows_json(table_id, [{"qid": i, "question": _prompt(i)} for i in range(N)]) == []
    return f"{PROJECT}:{dataset}.prompts"


def _old_table(bq_client, table_id: str, fields, dropped: tuple[str, ...], retype: dict[str, str] | None = None,
               rows: list[dict] | None = None) -> None:
    """A table as an older chatbeam made it: the derived schema without ``dropped`` (and ``retype`` applied)."""
    from google.cloud import bigquery

    schema = [bigquery.SchemaField.from_api_repr({**f, "type": (retype or {}).get(f["name"], f["type"])})
              for f in fields if f["name"] not in dropped]
    bq_client.create_table(bigquery.Table(table_id, schema=schema))
    if rows:
        assert bq_client.insert_rows_json(table_id, rows) == []


def _argv(bq_endpoint, gcs_emulator, prompts: str, results: str, errors: str, vertex_url: str, *extra: str):
    return ["--project", PROJECT, "--temp_location", f"gs://{gcs_emulator.bucket}/tmp",
            "--input_table", prompts, "--id_column", "qid", "--prompt_column", "question",
            "--output_table", results, "--errors_table", errors,
            "--bigquery_endpoint", bq_endpoint.rest_url, "--bigquery_storage_endpoint", bq_endpoint.storage_target,
            "--emulator_url", vertex_url, "--progress_interval_s", "0", *extra]


def _rows(bq_client, table_id: str) -> list[dict]:
    return [dict(r) for r in bq_client.list_rows(table_id)]


@pytest.mark.parametrize("method", ["FILE_LOADS", "STREAMING_INSERTS"])
def test_appending_to_an_older_chatbeams_tables_adds_the_new_columns(bq_client, bq_endpoint, gcs_emulator, dataset,
                                                                     prompts, vertex_emulator, method, capsys,
                                                                     caplog):
    from pipelines.extract import main

    results_id, errors_id = (f"{PROJECT}.{dataset}.{kind}_{method.lower()}" for kind in ("results", "errors"))
    _old_table(bq_client, results_id, RESULTS_SCHEMA.fields, NEW_RESULT_COLUMNS,
               rows=[{"id": "old-1", "request_key": "k1", "content": "an old answer", "attempts": 1}])
    _old_table(bq_client, errors_id, ERRORS_SCHEMA.fields, NEW_ERROR_COLUMNS,
               rows=[{"id": "old-2", "stage": "call", "error_type": "http_500", "message": "an old error"}])
    with caplog.at_level(logging.INFO, logger="chatbeam"):
        code = main(_argv(bq_endpoint, gcs_emulator, prompts, results_id.replace(".", ":", 1),
                          errors_id.replace(".", ":", 1), vertex_emulator.url, "--bigquery_write_method", method))
    assert code == 0, capsys.readouterr().err[-3000:]

    res, err = _rows(bq_client, results_id), _rows(bq_client, errors_id)
    assert {"old-1"} == {r["id"] for r in res if r["id"].startswith("old")}  # the old rows are still there
    assert {"old-2"} == {e["id"] for e in err if e["id"].startswith("old")}
    new_res = [r for r in res if not r["id"].startswith("old")]
    new_err = [e for e in err if not e["id"].startswith("old")]
    bad = {str(i) for i in range(N) if _prompt(i) is None}
    assert sorted(r["id"] for r in new_res) == sorted(str(i) for i in range(N) if str(i) not in bad)
    assert {e["id"] for e in new_err} == bad and len(new_err) == len(bad)  # every row once, in one table
    assert vertex_emulator.stats(fingerprints=False)["requests"] == len(new_res)

    columns = {f.name for f in bq_client.get_table(results_id).schema}
    assert set(NEW_RESULT_COLUMNS) <= columns
    assert set(NEW_ERROR_COLUMNS) <= {f.name for f in bq_client.get_table(errors_id).schema}
    for r in new_res:  # the new columns are filled for the new rows
        assert r["started_at"] and r["finished_at"] and r["cached"] is False and r["service_tier"], r
    old = next(r for r in res if r["id"] == "old-1")
    assert old["content"] == "an old answer" and old["started_at"] is None and old["cached"] is None
    added = [m for m in caplog.messages if "added columns" in m]
    assert len(added) == 2 and all(name in added[0] + added[1] for name in NEW_RESULT_COLUMNS + NEW_ERROR_COLUMNS)


def test_a_column_of_another_type_is_a_usage_error_before_any_request(bq_client, bq_endpoint, gcs_emulator, dataset,
                                                                       prompts, vertex_emulator, capsys):
    from pipelines.extract import main

    results_id, errors_id = f"{PROJECT}.{dataset}.clash_results", f"{PROJECT}.{dataset}.clash_errors"
    _old_table(bq_client, results_id, RESULTS_SCHEMA.fields, ("tool_calls",), retype={"attempts": "STRING"})
    _old_table(bq_client, errors_id, ERRORS_SCHEMA.fields, NEW_ERROR_COLUMNS)
    code = main(_argv(bq_endpoint, gcs_emulator, prompts, results_id.replace(".", ":", 1),
                      errors_id.replace(".", ":", 1), vertex_emulator.url))
    err = capsys.readouterr().err
    assert code == 2
    line = [x for x in err.splitlines() if x.startswith("chatbeam: error:")]
    assert len(line) == 1, err
    assert f"table {results_id.replace('.', ':', 1)}: column attempts is STRING, chatbeam writes INT64" in line[0]
    assert vertex_emulator.stats(fingerprints=False)["requests"] == 0
    # Nothing changed: neither the clashing table nor the other one got columns.
    assert "tool_calls" not in {f.name for f in bq_client.get_table(results_id).schema}
    assert not set(NEW_ERROR_COLUMNS) & {f.name for f in bq_client.get_table(errors_id).schema}
