"""The whole extract job (pipelines.extract.run, local Vertex emulator as the target) with gs:// input and outputs on
the GCS emulator gives the same results and errors as the same run on local files."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from apache_beam.io.filesystems import FileSystems

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "prompts.jsonl"
VOLATILE = {"latency_ms", "started_at", "finished_at"}  # wall-clock; everything else must match


def _records(pattern: str) -> list[dict]:
    out = []
    for meta in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(meta.path) as f:
            out += [json.loads(line) for line in f.read().decode("utf-8").splitlines() if line.strip()]
    return sorted(({k: v for k, v in r.items() if k not in VOLATILE} for r in out),
                  key=lambda r: (str(r.get("id")), json.dumps(r, sort_keys=True)))


def test_extract_gs_paths_match_local_run(gcp_env, gcs_emulator, gcs_client, tmp_path):
    from pipelines import extract

    run = uuid.uuid4().hex[:8]
    gcs_client.bucket(gcs_emulator.bucket).blob(f"{run}/in/prompts.jsonl").upload_from_filename(str(EXAMPLES))
    gs = f"gs://{gcs_emulator.bucket}/{run}"

    extract.run(["--input", f"{gs}/in/*.jsonl", "--output", f"{gs}/out/results", "--errors", f"{gs}/out/errors",
                 "--emulator"])
    extract.run(["--input", str(EXAMPLES), "--output", str(tmp_path / "results"), "--errors",
                 str(tmp_path / "errors"), "--emulator"])

    remote_results, local_results = _records(f"{gs}/out/results-*-of-*.jsonl"), _records(str(tmp_path / "results-*-of-*.jsonl"))
    remote_errors, local_errors = _records(f"{gs}/out/errors-*-of-*.jsonl"), _records(str(tmp_path / "errors-*-of-*.jsonl"))
    assert remote_results and remote_errors  # the example file has both good records and broken lines
    assert remote_results == local_results
    assert remote_errors == local_errors
    n_lines = sum(1 for line in EXAMPLES.read_text().splitlines() if line.strip())
    assert len(remote_results) + len(remote_errors) == n_lines
