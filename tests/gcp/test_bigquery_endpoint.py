"""The --bigquery_endpoint seam: option parsing, and that the three Beam internals it relies on still exist (a Beam
upgrade that moves them fails here, by name, rather than silently talking to real BigQuery)."""

from __future__ import annotations

import os

import pytest

from transforms.bigquery import WriteRecordsToBigQuery, to_write_disposition
from transforms.bigquery_endpoint import BIGQUERY_EMULATOR_HOST, BigQueryEndpoint, redirect_beam_bigquery


def test_from_options():
    assert BigQueryEndpoint.from_options(None) is None
    ep = BigQueryEndpoint.from_options("http://127.0.0.1:9050/", "127.0.0.1:9060")
    assert ep == BigQueryEndpoint("http://127.0.0.1:9050", "127.0.0.1:9060")
    assert ep.client_options() == {"api_endpoint": "http://127.0.0.1:9050"}


@pytest.mark.parametrize("rest, grpc, message", [
    ("127.0.0.1:9050", None, "must be a URL"),
    ("http://127.0.0.1:9050", "grpc://127.0.0.1:9060", "HOST:PORT"),
    (None, "127.0.0.1:9060", "needs --bigquery_endpoint"),
])
def test_bad_endpoint_options(rest, grpc, message):
    with pytest.raises(ValueError, match=message):
        BigQueryEndpoint.from_options(rest, grpc)


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
        assert bigquery_v2_client.BigqueryV2().url == "http://127.0.0.1:1/bigquery/v2/"
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
