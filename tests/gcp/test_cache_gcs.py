"""The response cache on gs:// against the GCS emulator: two nights share it, a damaged object is skipped and
counted, and ``chatbeam cache compact`` merges the objects there (local Vertex emulator as the target)."""

from __future__ import annotations

import json
import uuid

import pytest
from apache_beam.io.filesystems import FileSystems

pytestmark = pytest.mark.e2e


def _night(n: int, changed: set[int] = frozenset()) -> str:
    return "".join(json.dumps({"id": f"row{i}", "prompt": f"Summarise ticket {i}" + (" (edited)" if i in changed
                                                                                        else "")}) + "\n"
                   for i in range(n))


def _lines(pattern: str) -> list[dict]:
    out = []
    for meta in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(meta.path) as fh:
            out += [json.loads(line) for line in fh.read().decode("utf-8").splitlines() if line.strip()]
    return out


def _shards(prefix: str) -> list[str]:
    from transforms.cache import list_shards

    return list_shards(prefix)


def test_cache_on_gcs_serves_the_second_night_skips_damage_and_compacts(gcp_env, gcs_emulator, gcs_client):
    extract = pytest.importorskip("pipelines.extract")
    from pipelines.cli import main as cli_main

    run = uuid.uuid4().hex[:8]
    bucket = gcs_client.bucket(gcs_emulator.bucket)
    gs = f"gs://{gcs_emulator.bucket}/{run}"
    cache = f"{gs}/cache"
    bucket.blob(f"{run}/in/n1.jsonl").upload_from_string(_night(40))
    bucket.blob(f"{run}/in/n2.jsonl").upload_from_string(_night(40, changed={0, 1, 2, 3}))

    def night(name: str):
        return extract.run(["--input", f"{gs}/in/{name}.jsonl", "--output", f"{gs}/{name}/results",
                            "--errors", f"{gs}/{name}/errors", "--emulator", "--cache", cache,
                            "--progress_interval_s", "0"])

    first = night("n1")
    assert first.summary["records_called"] == 40 and first.summary["cache"]["entries_written"] == 40
    shard = _shards(cache)[0]
    # A damaged object under a shard's name: a cut-off entry and garbage. Skipped and counted, never served.
    damaged = shard.replace(shard.split("/")[-1].split("-")[2], "deadbeef" * 4)
    whole = _lines(shard)[0]
    bucket.blob(damaged.removeprefix(f"gs://{gcs_emulator.bucket}/")).upload_from_string(
        json.dumps(whole)[:90] + "\n\x00\xff garbage\n")

    second = night("n2")
    results = _lines(f"{gs}/n2/results-*-of-*.jsonl")
    assert sorted(r["id"] for r in results) == sorted(f"row{i}" for i in range(40))
    assert second.summary["records_called"] == 4 and second.summary["cache"]["hits"] == 36
    assert second.summary["cache"]["invalid_entries"] == 2
    before = {r["id"]: r for r in _lines(f"{gs}/n1/results-*-of-*.jsonl")}
    assert all({**r, "cached": False} == before[r["id"]] for r in results if r["cached"])

    assert any("deadbeef" in s for s in _shards(cache)) and len(_shards(cache)) >= 3  # two nights' and the damaged
    assert cli_main(["cache", "compact", cache]) == 0
    (merged,) = _shards(cache)
    assert "/compact-" in merged and len(_lines(merged)) == 44  # 40 + the 4 edited rows; damage dropped
    third = night("n2")
    assert third.summary["records_called"] == 0 and third.summary["cache"]["hits"] == 40


def test_batch_mode_stages_only_the_misses_and_its_answers_are_served_later(gcp_env, tmp_path):
    """--mode batch with --cache: the lookup sits before the batch call step, so the second night's batch job holds
    only the changed rows; the first night's batch answers are served with their tier and saved at the batch price."""
    from emulator import EmulatorConfig, serve_in_thread
    from pipelines.extract import run as extract_run
    from tests.conftest import read_jsonl

    with serve_in_thread(EmulatorConfig(seed=9)) as emu:  # batch jobs use GCS through STORAGE_EMULATOR_HOST
        emu.set_faults(batch_queue_s=0.05, batch_duration_s=0.3)

        def night(name: str, changed: set[int]):
            src = tmp_path / f"{name}.jsonl"
            src.write_text(_night(30, changed))
            emu.reset()
            result = extract_run(["--input", str(src), "--output", str(tmp_path / name / "results"),
                                  "--errors", str(tmp_path / name / "errors"), "--emulator_url", emu.url,
                                  "--progress_interval_s", "0", "--cache", str(tmp_path / "cache"),
                                  "--mode", "batch", "--batch_poll_interval_s", "0.1",
                                  "--batch_staging", f"gs://chatbeam-test/batch-{uuid.uuid4().hex[:8]}"])
            return result.summary, read_jsonl(str(tmp_path / name / "results-")), emu.stats(fingerprints=False)

        first, _, _ = night("n1", set())
        assert first["batch"]["lines"] == 30 and first["cache"]["entries_written"] == 30
        second, results, stats = night("n2", {0, 1, 2})
    assert second["batch"]["lines"] == 3 and stats["batch"]["lines"] == 3  # only the misses went to the job
    assert second["cache"]["hits"] == 27 and sorted(r["id"] for r in results) == sorted(f"row{i}" for i in range(30))
    assert all(r["service_tier"] == "batch" for r in results)
    assert 0 < second["cache"]["cost_saved_usd"] < first["estimated_cost_usd"]  # 27 of 30 answers, at batch prices
