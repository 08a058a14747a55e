"""Start real local GCS and BigQuery emulators, as subprocesses, for the tests and for a person at a shell.

    python tests/gcp/emulators.py            # start both, print the environment to export, wait for Ctrl-C

* GCS: PyPI ``gcp-storage-emulator`` (pure Python), on disk, reached through ``STORAGE_EMULATOR_HOST``, which
  google-cloud-storage, and so Beam's gcsio, honours. Version 2026.7.19 ignores request preconditions
  (``ifGenerationMatch``: its upload handlers never read it), which the job ledger's create-if-absent needs; it is
  started through a tiny launcher that adds GCS's documented rule to object uploads and deletes (412 unless the live
  generation equals ``ifGenerationMatch``; 0 means "no live object"). The emulator serves one request at a time
  (``http.server.HTTPServer``), so the check and the write cannot interleave. ``honour_preconditions=False``
  starts it as shipped.
* BigQuery: PyPI ``bqemulator`` (DuckDB-backed; REST and the gRPC Storage Read/Write APIs). At start-up it insists on
  ``INSTALL spatial`` from DuckDB's extension site; with no internet that fails, so it is started through a tiny
  launcher that skips that one step (GEOGRAPHY functions are then unavailable; nothing here uses them), with the
  Avro format extension off (``BQEMU_ENABLE_FORMAT_EXTENSIONS=false``). Its ``gs://`` URIs (load jobs) resolve into
  the GCS emulator's data directory (``BQEMU_GCS_LOCAL_ROOT``), so Beam's FILE_LOADS work end to end.
  bqemulator's ``tables.patch`` changes only its catalog (the stored table keeps its columns: a later SELECT
  returns the old columns and an insertAll naming a new one answers 500), and its load jobs ignore the load's
  schema (a field the table lacks is silently dropped where BigQuery fails the job "Provided Schema does not match
  Table ... Cannot add fields"). The launcher adds both documented rules: a patch that adds top-level columns adds
  them to the stored table (nested additions are not done), and an append load naming a field the table lacks
  fails unless ``schemaUpdateOptions`` holds ``ALLOW_FIELD_ADDITION``. insertAll still drops unknown fields
  silently (BigQuery answers "no such field" per row); WRITE_TRUNCATE loads keep the table's schema (BigQuery takes
  the load's).

The emulators run from whichever Python has them: ``$CHATBEAM_GCP_EMULATORS_PYTHON``, else this interpreter, else
``.venv-gcp-emulators/bin/python`` at the repository root (what ``.ci/run`` creates; a separate venv keeps the
emulators' pins -- duckdb, sqlglot, fastapi -- out of the project's environment).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BigQueryEmulator", "GcsEmulator", "EmulatorUnavailable", "emulator_python", "write_placeholder_adc"]

REPO = Path(__file__).resolve().parents[2]
PROJECT = "chatbeam-test"
BUCKET = "chatbeam-test"
GCS_STORAGE_DIR = ".cloudstorage"  # gcp-storage-emulator keeps objects at DATA_DIR/.cloudstorage/BUCKET/NAME
START_TIMEOUT_S = 60.0

# Runs inside the emulators' Python: bqemulator's CLI, minus the spatial extension download.
_BQ_LAUNCHER = """
import sys
from bqemulator.storage import engine
engine.DuckDBEngine._load_spatial = lambda self: None  # offline: no INSTALL spatial (GEOGRAPHY unsupported)

# BigQuery's documented rules for added columns, which bqemulator leaves out (see the module docstring).
from bqemulator.api.routes.tables import _field_to_rest
from bqemulator.catalog import duckdb_repository, memory_repository
from bqemulator.jobs import executor
from bqemulator.storage.sql_identifiers import quoted_table_ref
from bqemulator.storage.type_map import bq_schema_to_duckdb_columns

def _with_storage(update_table):
    def update_table_and_storage(self, table):
        _add_stored_columns(self, table)
        return update_table(self, table)
    return update_table_and_storage

def _add_stored_columns(self, table):
    # tables.patch / update adding top-level columns adds them to the stored table too (nested additions: not done).
    engine = getattr(self, "_engine", None)  # the DuckDB catalog's own cache has none: its owner does it
    old = self.get_table(table.project_id, table.dataset_id, table.table_id) if engine is not None else None
    if old is not None and table.table_type == "TABLE":
        have = {f.name.lower() for f in old.schema_.fields}
        new = [_field_to_rest(f) for f in table.schema_.fields if f.name.lower() not in have]
        ref = quoted_table_ref(table.project_id, table.dataset_id, table.table_id)
        for name, dtype in bq_schema_to_duckdb_columns(new):
            engine.execute(f'ALTER TABLE {ref} ADD COLUMN "{name}" {dtype}')

for _repo in (duckdb_repository.DuckDBCatalogRepository, memory_repository.MemoryCatalogRepository):
    _repo.update_table = _with_storage(_repo.update_table)

_apply_load_write_disposition = executor._apply_load_write_disposition

def _refuse_fields_the_table_lacks(job, ctx):
    # An append load whose schema has fields the table lacks fails unless schemaUpdateOptions allows additions.
    fields = (job.raw_config.get("schema") or {}).get("fields") or []
    options = {str(o).upper() for o in job.raw_config.get("schemaUpdateOptions") or []}
    table = ctx.catalog.get_table(job.project_id, job.dataset_id, job.table_id)
    if table is not None and job.write_disposition != "WRITE_TRUNCATE" and "ALLOW_FIELD_ADDITION" not in options:
        have = {f.name.lower() for f in table.schema_.fields}
        extra = [f["name"] for f in fields if f["name"].lower() not in have]
        if extra:
            raise executor.InvalidQueryError(
                f"Provided Schema does not match Table {job.project_id}:{job.dataset_id}.{job.table_id}. "
                f"Cannot add fields (field: {extra[0]})")
    return _apply_load_write_disposition(job, ctx)

executor._apply_load_write_disposition = _refuse_fields_the_table_lacks

from bqemulator.cli import main
sys.argv = ["bqemulator", "start", *sys.argv[1:]]
main()
"""


# Runs inside the emulators' Python: gcp-storage-emulator, plus GCS's ifGenerationMatch on JSON-API uploads and
# deletes (the run lock deletes only its own generation).
_GCS_LAUNCHER = """
import sys
from http import HTTPStatus
from gcp_storage_emulator import server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

def _precondition_failed(request, response, storage):
    wanted = request.query.get("ifGenerationMatch")
    if not wanted:
        return False
    name = (request.query.get("name") or [None])[0]
    if name is None and isinstance(request.data, dict):
        name = (request.data.get("meta") or {}).get("name")
    if name is None:
        name = request.params.get("object_id")  # a delete names its object in the path
    try:
        current = str(storage.get_file_obj(request.params["bucket_name"], name)["generation"])
    except NotFound:
        current = "0"
    if current == wanted[0]:
        return False
    response.status = HTTPStatus.PRECONDITION_FAILED
    response.json({"error": {"code": 412, "message": "At least one of the pre-conditions you specified did not "
                             "hold.", "errors": [{"reason": "conditionNotMet", "domain": "global"}]}})
    return True

def _guard(handler):
    def guarded(request, response, storage, *args, **kwargs):
        if not _precondition_failed(request, response, storage):
            return handler(request, response, storage, *args, **kwargs)
    return guarded

for _regex, routes in server.HANDLERS:
    for method, handler in list(routes.items()):
        if handler is objects.insert or handler is objects.delete:
            routes[method] = _guard(handler)

from gcp_storage_emulator.__main__ import main
main(sys.argv[1:])
"""


class EmulatorUnavailable(RuntimeError):
    """The emulator package is not installed anywhere we look (tests skip with this message)."""


def _has_module(python: str, module: str) -> bool:
    try:
        probe = subprocess.run([python, "-c", f"import importlib.util, sys; "
                                f"sys.exit(0 if importlib.util.find_spec({module!r}) else 1)"],
                               capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def emulator_python(module: str, package: str) -> str:
    """The first Python that can import ``module``; EmulatorUnavailable (naming the pip package) otherwise."""
    candidates = [os.environ.get("CHATBEAM_GCP_EMULATORS_PYTHON"), sys.executable,
                  str(REPO / ".venv-gcp-emulators" / "bin" / "python")]
    for python in dict.fromkeys(c for c in candidates if c):
        if Path(python).exists() and _has_module(python, module):
            return python
    raise EmulatorUnavailable(
        f"{package} is not installed (pip install {package} into this venv, or into .venv-gcp-emulators, or set "
        "CHATBEAM_GCP_EMULATORS_PYTHON to a Python that has it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_placeholder_adc(path: Path, project: str = PROJECT) -> Path:
    """Application Default Credentials that work offline: an ``authorized_user`` with a far-future token.

    Beam's gcsio and BigQuery clients demand ADC (its lookup retries for ~30 s before going anonymous). This token is
    sent only to the emulators; it is never refreshed (its token_uri is a closed local port, so a refresh would fail
    at once instead of reaching out).
    """
    path.write_text(json.dumps({
        "type": "authorized_user", "client_id": "chatbeam-emulators", "client_secret": "unused",
        "refresh_token": "unused", "token": "emulator-placeholder-token", "expiry": "2999-01-01T00:00:00Z",
        "token_uri": "http://127.0.0.1:9/token", "quota_project_id": project,
    }))
    return path


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


@dataclass
class _Process:
    name: str
    log_path: Path
    proc: subprocess.Popen | None = None

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **(env or {})})

    def _wait(self, ready, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{_tail(self.log_path)}")
            if ready():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s:\n{_tail(self.log_path)}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class GcsEmulator(_Process):
    """gcp-storage-emulator on disk under ``data_dir``, with ``bucket`` created (and, unless told otherwise, with
    ``ifGenerationMatch`` honoured on uploads: see the module docstring)."""

    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="chatbeam-gcs-")))
    bucket: str = BUCKET
    port: int = 0
    honour_preconditions: bool = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def objects_root(self) -> Path:
        """Where object bytes live on disk: ``objects_root/BUCKET/NAME`` (bqemulator's BQEMU_GCS_LOCAL_ROOT)."""
        return self.data_dir / GCS_STORAGE_DIR

    def start(self) -> "GcsEmulator":
        python = emulator_python("gcp_storage_emulator", "gcp-storage-emulator")
        self.port = self.port or free_port()
        launch = ["-c", _GCS_LAUNCHER] if self.honour_preconditions else ["-m", "gcp_storage_emulator"]
        self._spawn([python, *launch, "-d", str(self.data_dir), "start", "-H", "127.0.0.1",
                     "--port", str(self.port), "--default-bucket", self.bucket, "-q"])
        self._wait(lambda: _http_ok(f"{self.url}/storage/v1/b/{self.bucket}"))
        return self


@dataclass
class BigQueryEmulator(_Process):
    """bqemulator (ephemeral DuckDB) on a REST port and a gRPC port."""

    project: str = PROJECT
    gcs_local_root: Path | None = None
    rest_port: int = 0
    grpc_port: int = 0

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> "BigQueryEmulator":
        python = emulator_python("bqemulator", "bqemulator")
        self.rest_port = self.rest_port or free_port()
        self.grpc_port = self.grpc_port or free_port()
        env = {"BQEMU_ENABLE_FORMAT_EXTENSIONS": "false", "BQEMU_LOG_FORMAT": "console"}
        if self.gcs_local_root is not None:
            self.gcs_local_root.mkdir(parents=True, exist_ok=True)
            env["BQEMU_GCS_LOCAL_ROOT"] = str(self.gcs_local_root)
        self._spawn([python, "-c", _BQ_LAUNCHER, "--rest-host", "127.0.0.1", "--rest-port", str(self.rest_port),
                     "--grpc-host", "127.0.0.1", "--grpc-port", str(self.grpc_port), "--project", self.project,
                     "--log-level", "warning"], env=env)
        self._wait(lambda: _http_ok(f"{self.rest_url}/bigquery/v2/projects/{self.project}/datasets")
                   and _port_open(self.grpc_port))
        return self


def client_environment(gcs: GcsEmulator | None, bq: BigQueryEmulator | None, adc: Path,
                       project: str = PROJECT) -> dict[str, str]:
    """What a client process needs to reach the emulators (and nothing else)."""
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(adc), "GOOGLE_CLOUD_PROJECT": project}
    if gcs is not None:
        env["STORAGE_EMULATOR_HOST"] = gcs.url
    if bq is not None:
        env["BIGQUERY_EMULATOR_HOST"] = bq.rest_url
    return env


def main() -> int:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the emulators on SIGTERM as on Ctrl-C
    work = Path(tempfile.mkdtemp(prefix="chatbeam-gcp-emulators-"))
    gcs = GcsEmulator(name="gcs", log_path=work / "gcs.log", data_dir=work / "gcs").start()
    bq = BigQueryEmulator(name="bigquery", log_path=work / "bigquery.log", gcs_local_root=gcs.objects_root).start()
    adc = write_placeholder_adc(work / "adc.json")
    for key, value in client_environment(gcs, bq, adc).items():
        print(f"export {key}={value}")
    print(f"# bucket gs://{gcs.bucket}; pipeline flags: --project {PROJECT} --temp_location gs://{gcs.bucket}/tmp "
          f"--bigquery_endpoint {bq.rest_url} --bigquery_storage_endpoint {bq.grpc_target}")
    print(f"# logs in {work}; Ctrl-C stops both", flush=True)
    try:
        while gcs.proc.poll() is None and bq.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        bq.stop()
        gcs.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
