"""Beam's own ReadFromBigQuery (DIRECT_READ) and WriteToBigQuery (FILE_LOADS, STREAMING_INSERTS) against a real
local BigQuery emulator (bqemulator), through the --bigquery_endpoint seam (transforms.bigquery_endpoint).

The 1,000-row run has the real call stage (CallChatCompletions against the local Vertex emulator, started the way
``chatbeam --emulator`` starts it); the other runs check the BigQuery ends alone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from schemas.records import ResultRecord
from transforms.bigquery import ColumnMapping, MissingColumnsError, ReadPromptsFromBigQuery, WriteRecordsToBigQuery

pytestmark = pytest.mark.e2e

PROJECT = "chatbeam-test"
N = 1000
SRC_SCHEMA = [("qid", "INT64"), ("question", "STRING"), ("lang", "STRING"), ("batch", "STRING"),
              ("created", "TIMESTAMP"), ("unused", "STRING")]
MAPPING = ColumnMapping(id_column="qid", prompt_column="question", metadata_columns=("lang", "batch", "created"))
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _question(i: int) -> str | None:
    if i % 97 == 0:
        return None
    if i % 101 == 5:
        return ""
    return f"question {i}"


def _bad(i: int) -> bool:
    return _question(i) in (None, "")


def _created(i: int) -> str:
    return (T0 + dt.timedelta(minutes=i)).isoformat()


@pytest.fixture(scope="module")
def source_table(bq_client, dataset):
    from google.cloud import bigquery

    table_id = f"{PROJECT}.{dataset}.prompts"
    bq_client.create_table(bigquery.Table(table_id, schema=[bigquery.SchemaField(n, t) for n, t in SRC_SCHEMA]))
    rows = [{"qid": i, "question": _question(i), "lang": ["en", "fr", "de"][i % 3], "batch": f"b{i // 100}",
             "created": _created(i), "unused": "x" * 10} for i in range(N)]
    assert bq_client.insert_rows_json(table_id, rows) == []
    return f"{PROJECT}:{dataset}.prompts"


@contextlib.contextmanager
def _chat_client():
    """The ClientConfig ``chatbeam --emulator`` would use, with its local Vertex emulator running."""
    from pipelines.extract import _target_for_run
    from pipelines.options import validate

    plan = validate(PipelineOptions(["--input", "unused", "--output", "unused", "--emulator"]))
    with _target_for_run(plan) as plan:
        yield plan.client


def _options(gcs_emulator, *extra: str) -> PipelineOptions:
    return PipelineOptions(["--project", PROJECT, "--temp_location", f"gs://{gcs_emulator.bucket}/tmp", *extra])


def _rows(bq_client, table: str) -> list[dict]:
    return [dict(r) for r in bq_client.list_rows(table.replace(":", "."))]


def test_1000_rows_table_to_results_and_errors_tables(bq_client, bq_endpoint, gcs_emulator, dataset, source_table):
    from transforms import CallChatCompletions

    results, errors = f"{PROJECT}:{dataset}.results", f"{PROJECT}:{dataset}.errors"
    with _chat_client() as client, beam.Pipeline(options=_options(gcs_emulator)) as p:
        read = p | "Read" >> ReadPromptsFromBigQuery(table=source_table, mapping=MAPPING, endpoint=bq_endpoint)
        called = read.records | "Call" >> CallChatCompletions(client)
        called.results | "WriteResults" >> WriteRecordsToBigQuery(results, kind="results", endpoint=bq_endpoint)
        ((read.errors, called.errors) | "AllErrors" >> beam.Flatten()
         | "WriteErrors" >> WriteRecordsToBigQuery(errors, kind="errors", method="STREAMING_INSERTS",
                                                   endpoint=bq_endpoint))

    res, err = _rows(bq_client, results), _rows(bq_client, errors)
    res_ids, err_ids = [r["id"] for r in res], [r["id"] for r in err]
    assert len(res_ids) == len(set(res_ids)) and len(err_ids) == len(set(err_ids))  # nothing doubled
    assert not set(res_ids) & set(err_ids)  # each row in exactly one table
    assert set(res_ids) | set(err_ids) == {str(i) for i in range(N)}  # nothing dropped
    assert set(err_ids) == {str(i) for i in range(N) if _bad(i)}

    for r in res:
        i = int(r["id"])
        assert r["content"] and r["model"] and r["request_key"] and r["finish_reason"] == "stop"
        assert json.loads(r["metadata"]) == {"lang": ["en", "fr", "de"][i % 3], "batch": f"b{i // 100}",
                                             "created": _created(i)}
        assert r["usage"]["total_tokens"] > 0 and r["attempts"] == 1 and r["alternatives"] == []
    for e in err:
        i = int(e["id"])
        assert (e["stage"], e["error_type"], e["retryable"]) == ("read", "invalid_record", False)
        assert json.loads(e["metadata"])["batch"] == f"b{i // 100}"
        record = json.loads(e["record"])  # the row as read (the mapped columns: DIRECT_READ selects only those)
        assert record["qid"] == i and record["question"] == _question(i)
    # Results went through FILE_LOADS (a load job reading Beam's files from the GCS emulator), errors via insertAll.
    assert any(job.job_type == "load" for job in bq_client.list_jobs())
    # Beam's temp-dataset clean-up ran, and spared the user's datasets (see docs/bigquery-gcs.md).
    assert bq_client.get_dataset(f"{PROJECT}.{dataset}")


def test_query_input(bq_client, bq_endpoint, gcs_emulator, dataset, source_table):
    query = (f"SELECT qid AS id, question AS prompt, lang FROM `{source_table.replace(':', '.')}` "
             "WHERE lang = 'fr'")
    mapping = ColumnMapping.from_options(id_column="id", metadata_columns="lang")
    with beam.Pipeline(options=_options(gcs_emulator)) as p:
        read = p | "Read" >> ReadPromptsFromBigQuery(query=query, mapping=mapping, endpoint=bq_endpoint)
        records = read.records | "Ids" >> beam.Map(lambda r: (r.id, r.metadata["lang"], r.prompt))
        errors = read.errors | "ErrIds" >> beam.Map(lambda e: e.id)
        fr = [i for i in range(N) if i % 3 == 1]
        assert_that(records, equal_to([(str(i), "fr", _question(i)) for i in fr if not _bad(i)]), label="Records")
        assert_that(errors, equal_to([str(i) for i in fr if _bad(i)]), label="Errors")


def test_messages_as_repeated_record_and_as_json_text(bq_client, bq_endpoint, gcs_emulator, dataset):
    from google.cloud import bigquery

    table_id = f"{PROJECT}.{dataset}.conversations"
    msg = bigquery.SchemaField("msgs", "RECORD", mode="REPEATED", fields=[
        bigquery.SchemaField("role", "STRING"), bigquery.SchemaField("content", "STRING"),
        bigquery.SchemaField("name", "STRING")])
    bq_client.create_table(bigquery.Table(table_id, schema=[bigquery.SchemaField("id", "STRING"), msg,
                                                            bigquery.SchemaField("msgs_json", "STRING"),
                                                            bigquery.SchemaField("system", "STRING")]))
    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"}]
    rows = [{"id": "a", "msgs": conv, "msgs_json": json.dumps(conv), "system": "Be kind."},
            {"id": "b", "msgs": [], "msgs_json": None, "system": None}]
    assert bq_client.insert_rows_json(table_id, rows) == []

    def check(got):
        by_id = {r.id: r for r in got}
        assert by_id["a"].messages == conv and by_id["a"].system == "Be kind."
        assert by_id["b"].stage == "read" and "messages" in by_id["b"].message

    for column in ("msgs", "msgs_json"):
        mapping = ColumnMapping.from_options(id_column="id", messages_column=column, system_column="system")
        with beam.Pipeline(options=_options(gcs_emulator)) as p:
            out = p | f"Read{column}" >> ReadPromptsFromBigQuery(table=table_id.replace(".", ":", 1),
                                                                mapping=mapping, endpoint=bq_endpoint)
            assert_that((out.records, out.errors) | beam.Flatten(), check)


def test_write_disposition_truncate_replaces_and_append_adds(bq_client, bq_endpoint, gcs_emulator, dataset):
    table = f"{PROJECT}:{dataset}.dispositions"

    def write(ids, disposition):
        with beam.Pipeline(options=_options(gcs_emulator)) as p:
            (p | beam.Create([ResultRecord(id=i, request_key=i, metadata={"n": 1}) for i in ids])
             | WriteRecordsToBigQuery(table, kind="results", write_disposition=disposition, endpoint=bq_endpoint))
        return sorted(r["id"] for r in _rows(bq_client, table))

    assert write(["a", "b"], "append") == ["a", "b"]
    assert write(["c"], "append") == ["a", "b", "c"]
    assert write(["d"], "truncate") == ["d"]


def test_missing_columns_fail_before_the_run(bq_endpoint, gcs_emulator, source_table):
    mapping = ColumnMapping.from_options(prompt_column="prompt", metadata_columns="lang,nope")
    p = beam.Pipeline(options=_options(gcs_emulator))
    with pytest.raises(MissingColumnsError) as info:
        p | ReadPromptsFromBigQuery(table=source_table, mapping=mapping, endpoint=bq_endpoint)
    text = str(info.value)
    assert "\n" not in text
    assert "no column 'prompt' (--prompt_column), 'nope' (--metadata_columns)" in text
    assert "qid, question, lang" in text  # and says what there is


@pytest.mark.parametrize("kwargs, message", [
    (dict(query="SELEC nonsense"), "--input_query failed: "),
    (dict(query="SELECT nope FROM `chatbeam-test.no_such.table`"), "--input_query failed: "),
    (dict(table="chatbeam-test:no_such.table"), "table not found"),
])
def test_query_and_table_errors_fail_before_the_run(bq_endpoint, gcs_emulator, kwargs, message):
    p = beam.Pipeline(options=_options(gcs_emulator))
    with pytest.raises(ValueError, match=message) as info:
        p | ReadPromptsFromBigQuery(mapping=ColumnMapping(), endpoint=bq_endpoint, **kwargs)
    assert "\n" not in str(info.value)


def test_query_columns_are_checked_too(bq_endpoint, gcs_emulator, source_table):
    query = f"SELECT qid, lang FROM `{source_table.replace(':', '.')}`"
    p = beam.Pipeline(options=_options(gcs_emulator))
    with pytest.raises(MissingColumnsError, match=r"--input_query's result has no column 'prompt'"):
        p | ReadPromptsFromBigQuery(query=query, mapping=ColumnMapping(), endpoint=bq_endpoint)


def test_the_extract_command_reads_a_table_and_writes_tables(bq_client, bq_endpoint, gcs_emulator, dataset,
                                                              source_table, capsys):
    """The same 1,000 rows through ``chatbeam``'s own entry point: every BigQuery option wired, tables dated."""
    from pipelines.extract import main

    code = main(["--project", PROJECT, "--temp_location", f"gs://{gcs_emulator.bucket}/tmp",
                 "--input_table", source_table, "--id_column", "qid", "--prompt_column", "question",
                 "--metadata_columns", "lang,batch", "--run_date", "2026-03-04",
                 "--output_table", f"{PROJECT}:{dataset}.cli_results_{{run_date}}",
                 "--errors_table", f"{PROJECT}:{dataset}.cli_errors",
                 "--bigquery_endpoint", bq_endpoint.rest_url, "--bigquery_storage_endpoint",
                 bq_endpoint.storage_target, "--emulator", "--progress_interval_s", "0"])
    assert code == 0, capsys.readouterr().err
    res = _rows(bq_client, f"{PROJECT}:{dataset}.cli_results_20260304")
    err = _rows(bq_client, f"{PROJECT}:{dataset}.cli_errors")
    ids = [r["id"] for r in res] + [e["id"] for e in err]
    assert sorted(ids, key=int) == [str(i) for i in range(N)]  # each row exactly once, across the two tables
    assert {e["id"] for e in err} == {str(i) for i in range(N) if _bad(i)}
    assert all(json.loads(r["metadata"]).keys() == {"lang", "batch"} for r in res)
    # The printed summary (there is no file sink) equals what the tables hold: the BigQuery writers count.
    assert _printed_counts(capsys.readouterr().out) == (len(res), len(err), {"invalid_record": len(err)})


def _printed_counts(out: str) -> tuple[int, int, dict[str, int]]:
    results = int(re.search(r"^  results +([\d,]+)", out, re.M).group(1).replace(",", ""))
    found = re.search(r"^  errors +([\d,]+)(?: \((.*)\))?$", out, re.M)
    by_type = {k: int(v) for k, v in (part.rsplit(" ", 1) for part in found.group(2).split(", "))} if found.group(2) \
        else {}
    return results, int(found.group(1).replace(",", "")), by_type


def test_a_run_writing_a_table_and_error_files_counts_both_sinks(bq_client, bq_endpoint, gcs_emulator, dataset,
                                                                  source_table, tmp_path, capsys):
    """Results to a table, errors to files: the printed summary equals what each sink holds."""
    from pipelines.extract import main

    errors = tmp_path / "errors"
    code = main(["--project", PROJECT, "--temp_location", f"gs://{gcs_emulator.bucket}/tmp",
                 "--input_table", source_table, "--id_column", "qid", "--prompt_column", "question",
                 "--output_table", f"{PROJECT}:{dataset}.mixed_results", "--errors", str(errors),
                 "--bigquery_endpoint", bq_endpoint.rest_url, "--bigquery_storage_endpoint",
                 bq_endpoint.storage_target, "--emulator", "--progress_interval_s", "0"])
    assert code == 0, capsys.readouterr().err
    res = _rows(bq_client, f"{PROJECT}:{dataset}.mixed_results")
    err = [json.loads(line) for path in sorted(tmp_path.glob("errors-*.jsonl"))
           for line in path.read_text().splitlines()]
    assert len(res) + len(err) == N and len(err) == sum(1 for i in range(N) if _bad(i))
    assert _printed_counts(capsys.readouterr().out) == (len(res), len(err), {"invalid_record": len(err)})


def test_the_extract_command_names_missing_columns_as_a_usage_error(bq_endpoint, gcs_emulator, source_table,
                                                                    capsys):
    from pipelines.extract import main

    code = main(["--project", PROJECT, "--temp_location", f"gs://{gcs_emulator.bucket}/tmp",
                 "--input_table", source_table, "--prompt_column", "no_such_column", "--output", "/tmp/unused",
                 "--bigquery_endpoint", bq_endpoint.rest_url, "--bigquery_storage_endpoint",
                 bq_endpoint.storage_target, "--emulator"])
    assert code == 2
    assert "no column 'no_such_column' (--prompt_column)" in capsys.readouterr().err


def test_table_and_file_reads_count_the_same(bq_endpoint, gcs_emulator, source_table, tmp_path):
    """One read path (transforms/read.py RecordsFn): the same rows from a table and from a JSONL file give the same
    records_read, read_errors and read_error_<type> counters."""
    from transforms import ReadPrompts
    from transforms.metrics import chatbeam_counters

    query = (f"SELECT qid AS id, question AS prompt FROM `{source_table.replace(':', '.')}` "
             "WHERE qid < 300")
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps({"id": str(i), "prompt": _question(i)}) + "\n" for i in range(300)))

    def counts(read) -> dict[str, int]:
        p = beam.Pipeline(options=_options(gcs_emulator))
        out = p | "Read" >> read
        out.records | "Drop" >> beam.Filter(lambda r: False)
        result = p.run()
        result.wait_until_finish()
        return {k: v for k, v in chatbeam_counters(result).items() if k.startswith(("records_read", "read_error"))}

    table = counts(ReadPromptsFromBigQuery(query=query, mapping=ColumnMapping.from_options(id_column="id"),
                                           endpoint=bq_endpoint))
    files = counts(ReadPrompts(str(src)))
    bad = sum(1 for i in range(300) if _bad(i))
    assert table == files == {"records_read": 300, "read_errors": bad, "read_error_invalid_record": bad}
