"""gs:// paths through Beam's own filesystem (apache_beam.io.gcp.gcsio → google-cloud-storage) against a real local
GCS emulator (gcp-storage-emulator), compared with the same pipeline on local files."""

from __future__ import annotations

import glob
import json
import uuid

import apache_beam as beam
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from schemas.records import ErrorRecord, ResultRecord, parse_line

pytestmark = pytest.mark.e2e

LINES = [json.dumps({"id": f"r{i}", "prompt": f"say {i}", "metadata": {"i": i}}) for i in range(200)]
LINES += ["{not json", json.dumps({"id": "e1", "prompt": ""})]


def _stand_in(line: str):
    """Read → (stand-in for the call) → one JSON line: a ResultRecord or an ErrorRecord per input line."""
    out = parse_line(line)
    if isinstance(out, ErrorRecord):
        return "errors", out.model_dump_json()
    return "results", ResultRecord(id=out.id, request_key=out.id, content=out.prompt.upper(),
                                   metadata=out.metadata).model_dump_json()


def _run(input_pattern: str, output_prefix: str, options: PipelineOptions) -> None:
    with beam.Pipeline(options=options) as p:
        tagged = (p | "Read" >> beam.io.ReadFromText(input_pattern) | "Map" >> beam.Map(_stand_in))
        for kind in ("results", "errors"):
            (tagged | f"Only{kind}" >> beam.Filter(lambda kv, k=kind: kv[0] == k)
             | f"Text{kind}" >> beam.Map(lambda kv: kv[1])
             | f"Write{kind}" >> beam.io.WriteToText(f"{output_prefix}-{kind}", file_name_suffix=".jsonl"))


def _read_all(pattern: str) -> list[str]:
    lines = []
    for meta in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(meta.path) as f:
            lines += f.read().decode("utf-8").splitlines()
    return sorted(lines)


def test_gcs_round_trip_equals_local_files(gcp_env, gcs_emulator, gcs_client, tmp_path):
    run = uuid.uuid4().hex[:8]
    bucket = gcs_client.bucket(gcs_emulator.bucket)
    half = len(LINES) // 2
    bucket.blob(f"{run}/in/part-1.jsonl").upload_from_string("\n".join(LINES[:half]) + "\n")
    bucket.blob(f"{run}/in/part-2.jsonl").upload_from_string("\n".join(LINES[half:]) + "\n")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "part-1.jsonl").write_text("\n".join(LINES[:half]) + "\n")
    (tmp_path / "in" / "part-2.jsonl").write_text("\n".join(LINES[half:]) + "\n")

    gs = f"gs://{gcs_emulator.bucket}/{run}"
    _run(f"{gs}/in/*.jsonl", f"{gs}/out/run", PipelineOptions(["--project", "chatbeam-test"]))
    _run(str(tmp_path / "in" / "*.jsonl"), str(tmp_path / "out" / "run"), PipelineOptions([]))

    for kind in ("results", "errors"):
        remote = _read_all(f"{gs}/out/run-{kind}*")
        local = _read_all(str(tmp_path / "out" / f"run-{kind}*"))
        assert remote == local, kind
    assert len(_read_all(f"{gs}/out/run-results*")) == 200
    assert len(_read_all(f"{gs}/out/run-errors*")) == 2
    # WriteToText's temp files were renamed (copy + delete through the emulator) and cleaned up.
    names = sorted(b.name for b in gcs_client.list_blobs(gcs_emulator.bucket, prefix=f"{run}/out/"))
    assert names == [f"{run}/out/run-errors-00000-of-00001.jsonl", f"{run}/out/run-results-00000-of-00001.jsonl"]
    assert not glob.glob(str(tmp_path / "out" / "beam-temp*"))


def test_missing_gs_input_is_a_clear_error(gcp_env, gcs_emulator):
    with pytest.raises(Exception, match="No files found|matched no files"):
        with beam.Pipeline(options=PipelineOptions([])) as p:
            p | beam.io.ReadFromText(f"gs://{gcs_emulator.bucket}/nothing-here/*.jsonl")
