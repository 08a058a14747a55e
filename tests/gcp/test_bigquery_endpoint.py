"""The BigQuery options (pipelines/bigquery_options.py) and the --bigquery_endpoint seam: and that the three Beam internals it relies on still exist (a Beam
upgrade that moves them fails here, by name, rather than silently talking to real BigQuery)."""

from __future__ import annotations

import os

import pytest

from pipelines.bigquery_options import bigquery_endpoint, bigquery_io
from transforms.bigquery import ColumnMapping, WriteRecordsToBigQuery, to_write_disposition
from transforms.bigquery_endpoint import BIGQUERY_EMULATOR_HOST, BigQueryEndpoint, redirect_beam_bigquery


def test_endpoint_options():
    assert bigquery_endpoint(None) is None
    ep = bigquery_endpoint("http://127.0.0.1:9050/", "127.0.0.1:9060")
    assert ep == BigQueryEndpoint("http://127.0.0.1:9050", "127.0.0.1:9060")
    assert ep.client_options() == {"api_endpoint": "http://127.0.0.1:9050"}


@pytest.mark.parametrize("rest, grpc, message", [
    ("127.0.0.1:9050", None, "must be a URL"),
    ("http://127.0.0.1:9050", "grpc://127.0.0.1:9060", "HOST:PORT"),
    (None, "127.0.0.1:9060", "needs --bigquery_endpoint"),
])
def test_bad_endpoint_options(rest, grpc, message):
    with pytest.raises(ValueError, match=message):
        bigquery_endpoint(rest, grpc)


def test_beam_internals_the_seam_relies_on_are_there():
    from apache_beam.io.gcp import bigquery as beam_bigquery
    from apache_beam.io.gcp.internal.clients.bigquery import bigquery_v2_client

    assert bigquery_v2_client.BigqueryV2.BASE_URL.startswith("https://bigquery.googleapis.com/")
    assert hasattr(beam_bigquery, "bq_storage") and hasattr(beam_bigquery.bq_storage, "BigQueryReadClient")
    from google.cloud.bigquery import _helpers

    assert _helpers.BIGQUERY_EMULATOR_HOST == BIGQUERY_EMULATOR_HOST


def test_redirect_and_undo(monkeypatch):
    from apache_beam.io.gcp import bigquery as beam_bigquery
    from apache_beam.io.gcp.internal.clients.bigquery import bigquery_v2_client

    monkeypatch.delenv(BIGQUERY_EMULATOR_HOST, raising=False)
    before_url, before_storage = bigquery_v2_client.BigqueryV2.BASE_URL, beam_bigquery.bq_storage
    ep = BigQueryEndpoint("http://127.0.0.1:1", "127.0.0.1:2")
    undo = redirect_beam_bigquery(ep)
    try:
        assert bigquery_v2_client.BigqueryV2(get_credentials=False).url == "http://127.0.0.1:1/bigquery/v2/"
        assert os.environ[BIGQUERY_EMULATOR_HOST] == "http://127.0.0.1:1"
        assert beam_bigquery.bq_storage.types is before_storage.types
        client = beam_bigquery.bq_storage.BigQueryReadClient()
        assert type(client).__name__ == "BigQueryReadClient"
        assert redirect_beam_bigquery(ep)() is None  # same endpoint again: a no-op
        with pytest.raises(ValueError, match="already point at"):
            redirect_beam_bigquery(BigQueryEndpoint("http://127.0.0.1:3"))
    finally:
        undo()
    assert bigquery_v2_client.BigqueryV2.BASE_URL == before_url
    assert beam_bigquery.bq_storage is before_storage
    assert BIGQUERY_EMULATOR_HOST not in os.environ


@pytest.mark.parametrize("name, expected", [("append", "WRITE_APPEND"), ("TRUNCATE", "WRITE_TRUNCATE"),
                                            ("write_empty", "WRITE_EMPTY")])
def test_write_dispositions(name, expected):
    assert to_write_disposition(name) == expected


def test_bad_write_options():
    with pytest.raises(ValueError, match="--write_disposition must be one of append, truncate, empty"):
        to_write_disposition("overwrite")
    with pytest.raises(ValueError, match="kind must be"):
        WriteRecordsToBigQuery("p:d.t", kind="outputs")


# --- the command line ---------------------------------------------------------------------------------------------


def _parse(*argv: str):
    import argparse

    from pipelines.bigquery_options import add_bigquery_arguments

    parser = argparse.ArgumentParser()
    for name in ("--input", "--output", "--errors"):
        parser.add_argument(name)
    add_bigquery_arguments(parser)
    return parser.parse_args(list(argv))


def test_bigquery_options():
    from transforms.bigquery import ReadPromptsFromBigQuery

    io = bigquery_io(_parse(
        "--input_table", "p:d.t", "--id_column", "qid", "--messages_column", "m", "--metadata_columns", "a,b",
        "--output_table", "p:d.res", "--errors_table", "p:d.err", "--write_disposition", "truncate",
        "--bigquery_endpoint", "http://127.0.0.1:9050", "--bigquery_storage_endpoint", "127.0.0.1:9060"))
    assert io.reads and io.mapping == ColumnMapping(id_column="qid", prompt_column=None, messages_column="m",
                                                    metadata_columns=("a", "b"))
    assert io.endpoint == BigQueryEndpoint("http://127.0.0.1:9050", "127.0.0.1:9060")
    assert isinstance(io.read(), ReadPromptsFromBigQuery)
    assert isinstance(io.write("errors"), WriteRecordsToBigQuery)
    files = bigquery_io(_parse("--input", "x.jsonl", "--output", "out/r"))
    assert not files.reads and files.output_table is None and files.endpoint is None


@pytest.mark.parametrize("argv, message", [
    (("--input_table", "p:d.t", "--input_query", "SELECT 1"), "not both"),
    (("--input", "x", "--input_table", "p:d.t"), "give one input"),
    (("--input", "x", "--prompt_column", "q"), "--prompt_column apply to --input_table/--input_query only"),
    (("--input_table", "p:d.t", "--output_table", "p:d.r"), "give --errors_table"),
    (("--input_table", "p:d.t", "--output", "o", "--output_table", "p:d.r"), "one results sink"),
    (("--input_table", "p:d.t", "--prompt_column", "a", "--messages_column", "b"), "exactly one of"),
])
def test_bigquery_io_rejects_contradictions(argv, message):
    with pytest.raises(ValueError, match=message):
        bigquery_io(_parse(*argv))
