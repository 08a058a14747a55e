"""BigQuery in and out: ReadPromptsFromBigQuery (a table or a standard-SQL query → records/errors) and
WriteRecordsToBigQuery (ResultRecords or ErrorRecords → a table whose schema is derived from the model).

    mapping = ColumnMapping.from_options(id_column="qid", prompt_column="question", metadata_columns="lang,batch")
    read = p | "ReadPrompts" >> ReadPromptsFromBigQuery(table="proj:ds.prompts", mapping=mapping)
    called = read.records | "Call" >> CallChatCompletions(config)
    called.results | "WriteResults" >> WriteRecordsToBigQuery("proj:ds.results", kind="results")
    (read.errors, called.errors) | beam.Flatten() | "WriteErrors" >> WriteRecordsToBigQuery("proj:ds.errors",
                                                                                          kind="errors")

The pure parts (column mapping, row → record, schema derivation) live in ``transforms.bigquery_rows``; the emulator
seam (``--bigquery_endpoint``) in ``transforms.bigquery_endpoint``. See docs/bigquery-gcs.md.
"""

from __future__ import annotations

import functools
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions

from transforms.bigquery_endpoint import BigQueryEndpoint, redirect_beam_bigquery
from transforms.bigquery_rows import ERRORS_SCHEMA, RESULTS_SCHEMA, ColumnMapping, MissingColumnsError, row_to_record
from transforms.bigquery_schema import ColumnConflict, add_missing_columns
from transforms.read import ERRORS, RECORDS, RecordsFn
from transforms.write import CountWritten

__all__ = [
    "BigQueryIO",
    "ColumnConflict",
    "ColumnMapping",
    "MissingColumnsError",
    "ReadPromptsFromBigQuery",
    "WriteRecordsToBigQuery",
    "check_input_columns",
    "READ_METHODS",
    "WRITE_DISPOSITIONS",
    "WRITE_METHODS",
    "to_write_disposition",
]

log = logging.getLogger("chatbeam")

READ_METHODS = ("DIRECT_READ", "EXPORT")
WRITE_METHODS = ("FILE_LOADS", "STREAMING_INSERTS")
WRITE_DISPOSITIONS = {"append": "WRITE_APPEND", "truncate": "WRITE_TRUNCATE", "empty": "WRITE_EMPTY"}
EMULATOR_TEMP_DATASET = "chatbeam_temp"


def to_write_disposition(name: str) -> str:
    """``append`` / ``truncate`` / ``empty`` (or BigQuery's own ``WRITE_*`` names) → BigQuery's name."""
    key = name.strip().lower().removeprefix("write_")
    if key not in WRITE_DISPOSITIONS:
        raise ValueError(f"--write_disposition must be one of {', '.join(WRITE_DISPOSITIONS)}, not {name!r}")
    return WRITE_DISPOSITIONS[key]


def _table_id(table: str, project: str | None) -> str:
    """``PROJECT:DATASET.TABLE`` or ``PROJECT.DATASET.TABLE`` or ``DATASET.TABLE`` (+ project) → ``P.D.T``."""
    from apache_beam.io.gcp.bigquery_tools import parse_table_reference

    try:
        ref = parse_table_reference(table, project=project)
    except Exception as exc:  # Beam raises ValueError/TypeError with long texts
        raise ValueError(f"not a table name {table!r} (want PROJECT:DATASET.TABLE): {exc}") from None
    if not ref.projectId:
        raise ValueError(f"table {table!r} names no project: write PROJECT:DATASET.TABLE or give --project")
    return f"{ref.projectId}.{ref.datasetId}.{ref.tableId}"


def _client(project: str | None, endpoint: BigQueryEndpoint | None):
    """A google-cloud-bigquery client of our own, for the pre-flight checks (never inside the pipeline)."""
    from google.cloud import bigquery

    if endpoint is None:
        return bigquery.Client(project=project)
    from google.auth.credentials import AnonymousCredentials

    return bigquery.Client(project=project, credentials=AnonymousCredentials(),
                           client_options=endpoint.client_options())


def _one_line(exc: Exception) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return " ".join(str(text).split())


def check_input_columns(mapping: ColumnMapping, *, table: str | None = None, query: str | None = None,
                        project: str | None = None, endpoint: BigQueryEndpoint | None = None, client=None) -> list[str]:
    """Before the run: the table exists / the query compiles (a dry run), and every mapped column is there.

    Returns the input's column names; raises ValueError (one line) otherwise: MissingColumnsError names the
    missing columns.
    """
    from google.api_core import exceptions as gexc
    from google.cloud import bigquery

    client = client or _client(project, endpoint)
    if table is not None:
        table_id = _table_id(table, project)
        try:
            schema = client.get_table(table_id).schema
        except gexc.NotFound:
            raise ValueError(f"--input_table {table}: table not found") from None
        except gexc.GoogleAPICallError as exc:
            raise ValueError(f"--input_table {table}: {_one_line(exc)}") from None
        where = f"--input_table {table}"
    else:
        try:
            job = client.query(query, job_config=bigquery.QueryJobConfig(dry_run=True, use_query_cache=False,
                                                                       use_legacy_sql=False))
        except gexc.GoogleAPICallError as exc:
            raise ValueError(f"--input_query failed: {_one_line(exc)}") from None
        schema = job.schema or []
        where = "--input_query's result"
    names = [f.name for f in schema]
    mapping.check(names, where=where)
    return names


class ReadPromptsFromBigQuery(beam.PTransform):
    """A BigQuery table or standard-SQL query → outputs ``records`` (InputRecord) and ``errors`` (ErrorRecord).

    The same contract as ReadPrompts (files). Before the pipeline runs, ``validate=True`` checks that the table
    exists or the query compiles (dry run), and that every mapped column is present (MissingColumnsError, a
    ValueError, otherwise); that needs BigQuery access where the pipeline is built.

    ``method``: ``DIRECT_READ`` (Storage Read API; the default, and the one that works against the emulator) or
    ``EXPORT`` (an export job to ``gcs_location`` / ``--temp_location``, then Avro files).
    ``endpoint``: a BigQuery emulator (see transforms.bigquery_endpoint); then reads use ``temp_dataset``
    (default ``chatbeam_temp``, created if missing), and a query is first materialized with
    ``CREATE TABLE … AS`` into it, because the emulator does not fill query destination tables.
    """

    def __init__(self, table: str | None = None, query: str | None = None,
                 mapping: ColumnMapping | None = None, *, project: str | None = None, method: str = "DIRECT_READ",
                 validate: bool = True, endpoint: BigQueryEndpoint | None = None, temp_dataset: str | None = None,
                 gcs_location: str | None = None) -> None:
        super().__init__()
        if (table is None) == (query is None):
            raise ValueError("give exactly one of --input_table or --input_query")
        if method not in READ_METHODS:
            raise ValueError(f"BigQuery read method must be one of {', '.join(READ_METHODS)}, not {method!r}")
        if endpoint is not None and method != "DIRECT_READ":
            raise ValueError("with --bigquery_endpoint only DIRECT_READ works (the emulator cannot export to GCS)")
        if endpoint is not None and not endpoint.storage_target:
            raise ValueError("reading through --bigquery_endpoint needs --bigquery_storage_endpoint (HOST:PORT)")
        self._table, self._query = table, query
        self._mapping = mapping or ColumnMapping()
        self._project, self._method, self._validate = project, method, validate
        self._endpoint, self._temp_dataset, self._gcs_location = endpoint, temp_dataset, gcs_location

    def _source_kwargs(self, project: str | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"method": self._method}
        if project:
            kwargs["project"] = project
        if self._gcs_location:
            kwargs["gcs_location"] = self._gcs_location
        table, query = self._table, self._query
        if self._endpoint is not None:
            table, query = self._prepare_emulator(project), None
        if self._temp_dataset or self._endpoint is not None:
            from apache_beam.io.gcp.internal.clients.bigquery import DatasetReference

            kwargs["temp_dataset"] = DatasetReference(projectId=project,
                                                      datasetId=self._temp_dataset or EMULATOR_TEMP_DATASET)
        if table is not None:
            kwargs["table"] = table
            if self._method == "DIRECT_READ":
                kwargs["selected_fields"] = list(self._mapping.columns)
        else:
            kwargs.update(query=query, use_standard_sql=True)
        return kwargs

    def _prepare_emulator(self, project: str | None) -> str:
        """Emulator only: make sure the temp dataset exists; materialize a query; return the table to read."""
        redirect_beam_bigquery(self._endpoint)
        client = _client(project, self._endpoint)
        dataset = f"{project}.{self._temp_dataset or EMULATOR_TEMP_DATASET}"
        client.create_dataset(dataset, exists_ok=True)
        if self._query is None:
            return self._table
        table_id = f"{dataset}.query_{uuid.uuid4().hex}"
        client.query(f"CREATE TABLE `{table_id}` AS {self._query}").result()
        log.info("--input_query materialized into %s (emulator)", table_id)
        return table_id.replace(".", ":", 1)

    def expand(self, pbegin):
        project = self._project or pbegin.pipeline.options.view_as(GoogleCloudOptions).project
        if self._validate:
            check_input_columns(self._mapping, table=self._table, query=self._query, project=project,
                                endpoint=self._endpoint)
        rows = pbegin | "ReadRows" >> beam.io.ReadFromBigQuery(**self._source_kwargs(project))
        return rows | "RowsToRecords" >> beam.ParDo(
            RecordsFn(functools.partial(row_to_record, mapping=self._mapping))).with_outputs(ERRORS, main=RECORDS)


class WriteRecordsToBigQuery(beam.PTransform):
    """ResultRecords (``kind="results"``) or ErrorRecords (``kind="errors"``) → a BigQuery table.

    The table is created if needed with the schema derived from the model (transforms.bigquery_rows; JSON-valued
    fields are JSON text in STRING columns). ``write_disposition``: ``append`` (default), ``truncate`` or ``empty``.
    ``method``: None lets Beam choose (FILE_LOADS in batch: files under ``--temp_location``, which must be gs://,
    then load jobs) or ``STREAMING_INSERTS`` (insertAll; append only). With an emulator ``endpoint`` and no gs://
    temp location, the default becomes STREAMING_INSERTS. Returns Beam's WriteResult.
    """

    def __init__(self, table: str, kind: str = "results", write_disposition: str = "append", *,
                 method: str | None = None, create_disposition: str = "CREATE_IF_NEEDED",
                 endpoint: BigQueryEndpoint | None = None, custom_gcs_temp_location: str | None = None) -> None:
        super().__init__()
        if kind not in ("results", "errors"):
            raise ValueError(f"kind must be 'results' or 'errors', not {kind!r}")
        if method is not None and method not in WRITE_METHODS:
            raise ValueError(f"BigQuery write method must be one of {', '.join(WRITE_METHODS)}, not {method!r}")
        self._table, self._schema = table, RESULTS_SCHEMA if kind == "results" else ERRORS_SCHEMA
        self._kind = kind
        self._disposition = to_write_disposition(write_disposition)
        self._method, self._create, self._endpoint = method, create_disposition, endpoint
        self._gcs_temp = custom_gcs_temp_location

    def _resolve_method(self, pipeline) -> str | None:
        temp = self._gcs_temp or pipeline.options.view_as(GoogleCloudOptions).temp_location or ""
        method = self._method
        if method is None and self._endpoint is not None and not temp.startswith("gs://"):
            method = "STREAMING_INSERTS"
        if method == "STREAMING_INSERTS" and self._disposition != "WRITE_APPEND":
            raise ValueError(f"{self._disposition} needs FILE_LOADS (a gs:// --temp_location); "
                             "STREAMING_INSERTS only appends")
        return method

    def expand(self, records):
        if self._endpoint is not None:
            redirect_beam_bigquery(self._endpoint)
        method = self._resolve_method(records.pipeline)
        counted = records | "Counted" >> CountWritten(f"{self._kind}_written")  # the summary counts what is written
        rows = counted | "ToRows" >> beam.Map(self._schema.to_row)
        return rows | "WriteToBigQuery" >> beam.io.WriteToBigQuery(
            self._table, schema=self._schema.table_schema(), create_disposition=self._create,
            write_disposition=self._disposition, method=method, custom_gcs_temp_location=self._gcs_temp)


@dataclass(frozen=True)
class BigQueryIO:
    """The BigQuery side of one run, as plain values: which reader and writers to use (None: files). Built from the
    command line by pipelines/bigquery_options.py; ``read()`` / ``write(kind)`` make the transforms."""

    input_table: str | None = None
    input_query: str | None = None
    mapping: ColumnMapping | None = None
    output_table: str | None = None
    errors_table: str | None = None
    write_disposition: str = "append"
    read_method: str = "DIRECT_READ"
    write_method: str | None = None
    temp_dataset: str | None = None
    endpoint: BigQueryEndpoint | None = None
    validate: bool = True

    @property
    def reads(self) -> bool:
        return bool(self.input_table or self.input_query)

    def read(self) -> ReadPromptsFromBigQuery:
        return ReadPromptsFromBigQuery(table=self.input_table, query=self.input_query, mapping=self.mapping,
                                       method=self.read_method, validate=self.validate, endpoint=self.endpoint,
                                       temp_dataset=self.temp_dataset)

    def prepare_sinks(self, project: str | None) -> dict[str, tuple[str, ...]]:
        """Before the run (not a dry run): add to the existing output/errors tables the columns this chatbeam writes
        and they lack (transforms/bigquery_schema.py) -> ``{table: columns added}``. ValueError (one line; a
        ColumnConflict for a clashing column) with nothing changed. Skipped for ``--no_bigquery_checks`` and for
        ``truncate`` (a truncating load job takes its schema from the load)."""
        tables = {name: schema.fields for name, schema in ((self.output_table, RESULTS_SCHEMA),
                                                           (self.errors_table, ERRORS_SCHEMA)) if name}
        if not tables or not self.validate or to_write_disposition(self.write_disposition) == "WRITE_TRUNCATE":
            return {}
        return add_missing_columns(tables, _client(project, self.endpoint), project=project)

    def write(self, kind: str) -> WriteRecordsToBigQuery:
        table = self.output_table if kind == "results" else self.errors_table
        return WriteRecordsToBigQuery(table, kind=kind, write_disposition=self.write_disposition,
                                      method=self.write_method, endpoint=self.endpoint)
