"""BigQuery input with the response cache, against the BigQuery emulator: the whole job (pipelines.extract.run) reads
a table twice; the second night, after some rows changed, calls only those, and the answers served from the cache
carry today's row ids and metadata columns."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import read_jsonl

pytestmark = pytest.mark.e2e
PROJECT = "chatbeam-test"


def _table(bq_client, dataset: str, name: str, rows: list[dict]) -> str:
    from google.cloud import bigquery

    table_id = f"{PROJECT}.{dataset}.{name}"
    bq_client.create_table(bigquery.Table(table_id, schema=[bigquery.SchemaField("qid", "INT64"),
                                                            bigquery.SchemaField("question", "STRING"),
                                                            bigquery.SchemaField("night", "STRING")]))
    assert bq_client.insert_rows_json(table_id, rows) == []
    return f"{PROJECT}:{dataset}.{name}"


def test_bigquery_input_is_served_from_the_cache(bq_client, bq_endpoint, bigquery_emulator, gcs_emulator, tmp_path):
    from pipelines.extract import run

    dataset = f"cache_{uuid.uuid4().hex[:8]}"
    bq_client.create_dataset(f"{PROJECT}.{dataset}")
    nights = {night: _table(bq_client, dataset, f"prompts_{night}",
                            [{"qid": i, "question": f"question {i}" + (" (edited)" if night == 2 and i < 5 else ""),
                              "night": str(night)} for i in range(50)])
              for night in (1, 2)}

    def job(night: int):
        out = tmp_path / f"n{night}"
        result = run(["--input_table", nights[night], "--id_column", "qid", "--prompt_column", "question",
                      "--metadata_columns", "night", "--output", str(out / "results"), "--errors", str(out / "errors"),
                      "--emulator", "--cache", str(tmp_path / "cache"), "--project", PROJECT,
                      "--temp_location", f"gs://{gcs_emulator.bucket}/tmp", "--progress_interval_s", "0",
                      "--bigquery_endpoint", bigquery_emulator.rest_url,
                      "--bigquery_storage_endpoint", bigquery_emulator.grpc_target])
        return result.summary, read_jsonl(str(out / "results-"))

    first, _ = job(1)
    assert first["records_called"] == 50
    second, results = job(2)
    assert second["records_called"] == 5 and second["cache"]["hits"] == 45
    assert sorted(int(r["id"]) for r in results) == list(range(50))
    served = [r for r in results if r["cached"]]
    assert len(served) == 45 and all(r["metadata"] == {"night": "2"} for r in served)
