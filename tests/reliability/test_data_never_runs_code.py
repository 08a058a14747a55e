"""Input data never names code or files. A record's ``schema`` naming an importable module (whose import leaves a
marker file) or a JSON-schema path is an ``unknown_schema`` error record, and the module is never imported — in
the worker processes too. The same module named by the run's own ``--schema_registry`` is imported and its
schema works, which shows the marker would appear if anything imported it."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from schemas import registry

pytestmark = pytest.mark.e2e

MODULE = "chatbeam_marker_schemas"


@pytest.fixture
def marker_module(tmp_path, monkeypatch) -> Path:
    """An importable module that, when imported, writes a marker file and registers a schema ``Pet``."""
    marker = tmp_path / "imported.marker"
    pkg = tmp_path / "pkgroot"
    pkg.mkdir()
    (pkg / f"{MODULE}.py").write_text(textwrap.dedent(f"""
        import pathlib
        from pydantic import BaseModel
        from schemas.registry import register

        pathlib.Path({str(marker)!r}).write_text("imported")

        class Pet(BaseModel):
            name: str
            legs: int

        register("Pet", Pet)
        """))
    (tmp_path / "pet.schema.json").write_text(json.dumps({"type": "object", "properties": {"x": {"type": "string"}}}))
    monkeypatch.syspath_prepend(str(pkg))
    monkeypatch.setenv("PYTHONPATH", f"{pkg}:{Path(__file__).resolve().parents[2]}")  # for worker processes
    yield marker
    sys.modules.pop(MODULE, None)  # leave no trace for later tests in this process
    registry.REGISTRY.pop("Pet", None)
    registry._import_registry_module.cache_clear()
    registry.resolve_schema.cache_clear()


def test_a_record_naming_a_module_or_a_file_is_an_error_and_nothing_is_imported(run_job, marker_module, tmp_path,
                                                                                  vertex_emulator):
    records = [
        {"id": "module", "prompt": "My cat Tom", "schema": f"{MODULE}:Pet"},
        {"id": "bare-module", "prompt": "My cat Tom", "schema": MODULE},
        {"id": "file", "prompt": "My cat Tom", "schema": str(tmp_path / "pet.schema.json")},
        {"id": "registered-elsewhere", "prompt": "My cat Tom", "schema": "Pet"},
        {"id": "fine", "prompt": "Lunch on Friday", "schema": "CalendarEvent"},
    ]
    out = run_job(records, "--direct_running_mode", "multi_processing", "--direct_num_workers", "2")

    assert not marker_module.exists(), "a record made the job import a module"
    assert MODULE not in sys.modules
    errors = {e["id"]: e for e in out.errors}
    assert set(errors) == {"module", "bare-module", "file", "registered-elsewhere"}
    for e in errors.values():
        assert (e["stage"], e["error_type"], e["retryable"], e["attempts"]) == ("request", "unknown_schema", False, 0)
        assert "--schema_registry" in e["message"]
    assert [r["id"] for r in out.results] == ["fine"]
    assert vertex_emulator.stats()["requests"] == 1  # nothing was sent for the refused records


def test_the_runs_own_schema_registry_may_name_the_module(run_job, marker_module):
    out = run_job([{"id": "pet", "prompt": "My cat Tom has four legs", "schema": "Pet"}],
                  "--schema_registry", MODULE)
    assert marker_module.read_text() == "imported"
    [result] = out.results
    assert result["parsed"].keys() == {"name", "legs"}
