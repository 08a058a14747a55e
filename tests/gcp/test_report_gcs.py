"""The run report on gs:// (the GCS emulator): a run with gs:// outputs writes its report, engine samples and
options into the bucket, and `chatbeam report gs://...` rebuilds the page there after the fact — what a Dataflow
run's owner does."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from apache_beam.io.filesystems import FileSystems

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "prompts.jsonl"


def _read(path: str) -> bytes:
    with FileSystems.open(path) as fh:
        return fh.read()


def test_a_gs_run_and_chatbeam_report_on_gs(gcp_env, gcs_emulator, gcs_client, capsys):
    from pipelines.cli import main as cli_main
    from pipelines.extract import run

    prefix = f"gs://{gcs_emulator.bucket}/{uuid.uuid4().hex[:8]}"
    gcs_client.bucket(gcs_emulator.bucket).blob(f"{prefix.split('/', 3)[3]}/in/prompts.jsonl").upload_from_filename(
        str(EXAMPLES))
    result = run(["--input", f"{prefix}/in/*.jsonl", "--output", f"{prefix}/out/results", "--errors",
                  f"{prefix}/out/errors", "--emulator"])
    assert result.report_path == f"{prefix}/out/results-report.html"
    first = _read(result.report_path).decode()
    assert 'data-chart="latency"' in first
    names = [m.path.rsplit("/", 1)[-1]
             for m in FileSystems.match([f"{prefix}/out/results-telemetry/*.json"])[0].metadata_list]
    assert any(n.startswith("run-") for n in names) and any(not n.startswith("run-") for n in names)

    # After the fact, into another object: the same records and errors.
    assert cli_main(["report", f"{prefix}/out/results", f"{prefix}/out/errors", "--out",
                     f"{prefix}/later/report.html"]) == 0
    assert "12 results, 2 errors" in capsys.readouterr().out
    later = _read(f"{prefix}/later/report.html").decode()
    assert 'data-chart="completions"' in later and "invalid_json" in later and "invalid_record" in later
    # The engine samples were found on gs:// too: the concurrency chart has the limit, not the note.
    assert "No engine samples were found" not in later
    options = json.loads(_read([f"{prefix}/out/results-telemetry/{n}" for n in names if n.startswith("run-")][0]))
    assert options["options"]["output"] == f"{prefix}/out/results"
