"""The BigQuery options: the flags, their validation, and ``{run_date}`` in table names and queries.

    add_bigquery_arguments(parser)                 # from ChatbeamOptions._add_argparse_args
    bq = bigquery_io(options_view)                 # a BigQueryIO (transforms/bigquery.py); ValueError: one line
    bq = dated(bq, "2026-03-04")                   # tables ..._20260304, queries '2026-03-04'

The transforms (transforms/bigquery.py, transforms/bigquery_endpoint.py) take the plain values this module checks.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlparse

from pipelines.nightly import with_run_date
from transforms.bigquery import (READ_METHODS, WRITE_DISPOSITIONS, WRITE_METHODS, BigQueryIO, ColumnMapping,
                                 to_write_disposition)
from transforms.bigquery_endpoint import BigQueryEndpoint

__all__ = ["add_bigquery_arguments", "bigquery_endpoint", "bigquery_io", "dated"]

_COLUMN_FLAGS = ("id_column", "prompt_column", "messages_column", "system_column", "metadata_columns")


def add_bigquery_arguments(parser) -> None:
    """The BigQuery options, for a PipelineOptions subclass's ``_add_argparse_args``."""
    bq = parser.add_argument_group("BigQuery")
    bq.add_argument("--input_table", help="read prompts from this table, PROJECT:DATASET.TABLE")
    bq.add_argument("--input_query", help="read prompts from this standard-SQL query's result")
    bq.add_argument("--id_column", help="column with the record id (default: a hash of the record's content)")
    bq.add_argument("--prompt_column", help="STRING column with the prompt (default: prompt)")
    bq.add_argument("--messages_column",
                    help="column with OpenAI chat messages: JSON text (STRING/JSON) or ARRAY<STRUCT<role, content>>")
    bq.add_argument("--system_column", help="STRING column with a per-row system prompt")
    bq.add_argument("--metadata_columns", help="comma-separated columns carried untouched into results and errors")
    bq.add_argument("--output_table", help="write results to this table (created if needed)")
    bq.add_argument("--errors_table", help="write errors to this table (created if needed)")
    bq.add_argument("--write_disposition", default="append", choices=sorted(WRITE_DISPOSITIONS),
                    help="for --output_table/--errors_table: append (default), truncate, or empty (fail if not)")
    bq.add_argument("--bigquery_read_method", default="DIRECT_READ", choices=READ_METHODS,
                    help="DIRECT_READ (Storage Read API, default) or EXPORT (export job to --temp_location)")
    bq.add_argument("--bigquery_write_method", choices=WRITE_METHODS,
                    help="default: FILE_LOADS (needs a gs:// --temp_location); STREAMING_INSERTS appends only")
    bq.add_argument("--bigquery_temp_dataset", help="dataset for Beam's temporary tables (default: Beam's own)")
    bq.add_argument("--bigquery_endpoint", help="a BigQuery emulator's REST root, e.g. http://127.0.0.1:9050 "
                                                "(DirectRunner only; see docs/bigquery-gcs.md)")
    bq.add_argument("--bigquery_storage_endpoint", help="the emulator's Storage Read API gRPC HOST:PORT (for reads)")
    bq.add_argument("--no_bigquery_checks", action="store_true",
                    help="skip the pre-flight checks: the input table/query has the mapped columns; an existing "
                         "output/errors table gets the columns this chatbeam writes")


def bigquery_endpoint(rest_url: str | None, storage_target: str | None = None) -> BigQueryEndpoint | None:
    """``--bigquery_endpoint`` / ``--bigquery_storage_endpoint`` → None (real BigQuery) or the emulator's endpoint;
    a ValueError (one line) for a malformed value.

    >>> bigquery_endpoint("http://127.0.0.1:9050/", "127.0.0.1:9060")
    BigQueryEndpoint(rest_url='http://127.0.0.1:9050', storage_target='127.0.0.1:9060')
    """
    if not rest_url:
        if storage_target:
            raise ValueError("--bigquery_storage_endpoint needs --bigquery_endpoint too")
        return None
    parsed = urlparse(rest_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"--bigquery_endpoint must be a URL like http://127.0.0.1:9050, not {rest_url!r}")
    if storage_target and ("://" in storage_target or ":" not in storage_target):
        raise ValueError(f"--bigquery_storage_endpoint must be HOST:PORT, not {storage_target!r}")
    return BigQueryEndpoint(rest_url=rest_url.rstrip("/"), storage_target=storage_target or None)


def _check_sources_and_sinks(get) -> None:
    """One input, one results sink, one errors sink; column flags only with a table or query."""
    table, query = get("input_table"), get("input_query")
    if table and query:
        raise ValueError("give one of --input_table or --input_query, not both")
    if (table or query) and get("input"):
        raise ValueError("give one input: --input, --input_table or --input_query")
    used = [f"--{name}" for name in _COLUMN_FLAGS if get(name)]
    if not (table or query) and used:
        raise ValueError(f"{', '.join(used)} apply to --input_table/--input_query only")
    if get("output_table") and get("output"):
        raise ValueError("give one results sink: --output or --output_table")
    if get("errors_table") and get("errors"):
        raise ValueError("give one errors sink: --errors or --errors_table")
    if get("output_table") and not (get("errors_table") or get("errors")):
        raise ValueError("with --output_table, give --errors_table (or an --errors path) for the errors")


def bigquery_io(o: Any) -> BigQueryIO:
    """From parsed options (anything with the attributes above); ValueError with a one-line message."""
    def get(name: str, default: Any = None) -> Any:
        return getattr(o, name, default)

    _check_sources_and_sinks(get)
    table, query = get("input_table"), get("input_query")
    mapping = (ColumnMapping.from_options(**{name: get(name) for name in _COLUMN_FLAGS}) if (table or query)
               else None)
    disposition = get("write_disposition") or "append"
    to_write_disposition(disposition)
    return BigQueryIO(input_table=table, input_query=query, mapping=mapping, output_table=get("output_table"),
                      errors_table=get("errors_table"), write_disposition=disposition,
                      read_method=get("bigquery_read_method") or "DIRECT_READ",
                      write_method=get("bigquery_write_method"), temp_dataset=get("bigquery_temp_dataset"),
                      endpoint=bigquery_endpoint(get("bigquery_endpoint"), get("bigquery_storage_endpoint")),
                      validate=not get("no_bigquery_checks", False))


def dated(bq: BigQueryIO, run_date: str) -> BigQueryIO:
    """``{run_date}`` substituted: in table names as YYYYMMDD, BigQuery's date-sharded convention (Beam's table
    references allow no dashes); in a query it stays YYYY-MM-DD, fit for a DATE literal."""
    compact = run_date.replace("-", "")
    return dataclasses.replace(bq, input_query=with_run_date(bq.input_query, run_date),
                               **{name: with_run_date(getattr(bq, name), compact)
                                  for name in ("input_table", "output_table", "errors_table")})
