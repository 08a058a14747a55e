"""The job ledger on gs:// (the GCS emulator): create-if-absent through ifGenerationMatch=0, a pre-flight that refuses
a store ignoring it, and separate chatbeam processes sharing one budget while one of them is killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from client.ledger import read_report
from client.ledger_store import GcsStore, LedgerUnavailable, check_store
from tests.conftest import read_jsonl, write_jsonl

ROOT = Path(__file__).resolve().parents[2]


def _emulators():
    return sys.modules["chatbeam_gcp_emulators"]  # loaded by tests/gcp/conftest.py


def test_gcs_store_creates_each_name_once_under_a_thread_race(gcp_env, gcs_emulator):
    store = GcsStore(f"gs://{gcs_emulator.bucket}/ledger-{uuid.uuid4().hex[:8]}")
    check_store(store)  # the pre-flight: a probe created twice must fail the second time
    wins, barrier = [], threading.Barrier(6)

    def racer(i: int) -> None:
        barrier.wait()
        if store.create("log/0000000001", json.dumps({"by": i}).encode()):
            wins.append(i)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and json.loads(store.read("log/0000000001")) == {"by": wins[0]}
    store.put("procs/a", b'{"beat": 1}')
    store.put("procs/a", b'{"beat": 2}')
    assert store.list("procs/") == {"procs/a": b'{"beat": 2}'}  # payloads come with the listing
    assert store.read("log/0000000002") is None


def test_a_gcs_emulator_that_ignores_preconditions_is_refused(gcp_env, tmp_path):
    """gcp-storage-emulator as shipped accepts a second ifGenerationMatch=0 upload of one name. The ledger's
    pre-flight notices and refuses it (exit 2 from the CLI), instead of letting processes overspend."""
    emu = _emulators().GcsEmulator(name="gcs-stock", log_path=tmp_path / "gcs.log", data_dir=tmp_path / "gcs",
                                   honour_preconditions=False)
    emu.start()
    try:
        from google.cloud import storage

        store = GcsStore(f"gs://{emu.bucket}/ledger", client=_client_for(storage, emu.url))
        with pytest.raises(LedgerUnavailable, match="does not honour create-if-absent"):
            check_store(store)
    finally:
        emu.stop()


def _client_for(storage, url: str):
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    return storage.Client(project="chatbeam-test", credentials=AnonymousCredentials(),
                          client_options=ClientOptions(api_endpoint=url))


@pytest.mark.e2e
def test_separate_jobs_share_a_gs_ledger_and_reclaim_a_killed_ones_lease(gcp_env, gcs_emulator, gcs_client,
                                                                          tmp_path):
    """Three chatbeam processes (separate command lines, one --job_ledger gs://...) share --max_total_tokens and
    --rpm; one is killed (SIGKILL) once it holds a lease. The others reclaim its unused lease after
    --ledger_dead_after_s, and the emulator bills within 5 % of the cap, at least 80 % of it. (The job-wide --rpm
    makes the cap last ~20 s, well past the reclaim, however fast the machine.)"""
    from emulator import EmulatorConfig, FaultConfig, serve_in_thread

    cap, per_job = 12_000, 400
    ledger_path = f"ledgers/{uuid.uuid4().hex[:8]}"
    ledger = f"gs://{gcs_emulator.bucket}/{ledger_path}"
    with serve_in_thread(EmulatorConfig(seed=3, faults=FaultConfig(latency_ms=150))) as emu:
        procs = []
        for j in range(3):
            src = write_jsonl(tmp_path / f"in{j}.jsonl",
                              [{"id": f"j{j}-{i}", "prompt": f"Job {j} question {i} about ledgers"}
                               for i in range(per_job)])
            cmd = [sys.executable, "-m", "pipelines.extract", "--input", str(src),
                   "--output", str(tmp_path / f"out{j}" / "results"), "--errors", str(tmp_path / f"out{j}" / "errors"),
                   "--emulator_url", emu.url, "--progress_interval_s", "0", "--max_concurrency", "2",
                   "--max_total_tokens", str(cap), "--rpm", "600", "--job_ledger", ledger,
                   "--ledger_heartbeat_s", "1", "--ledger_dead_after_s", "4"]
            procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          env={**os.environ, **gcp_env, "PYTHONPATH": str(ROOT)}))
        victim = procs[0]
        _wait_for_lease(gcs_client, gcs_emulator.bucket, ledger_path, victim, timeout_s=240)
        victim.send_signal(signal.SIGKILL)
        for p in procs[1:]:
            _, err = p.communicate(timeout=480)
            assert p.returncode == 0, err[-3000:]
        victim.wait(timeout=30)
        tokens = emu.stats(fingerprints=False)["tokens"]
    billed = tokens["prompt"] + tokens["completion"]
    assert 0.80 * cap <= billed <= 1.05 * cap, billed
    report = read_report(GcsStore(ledger), {"tokens": cap})
    assert report.reclaims == 1 and report.processes >= 2  # a process started late may find the cap spent
    for j in (1, 2):  # the survivors: every record in exactly one output
        out = tmp_path / f"out{j}"
        seen = sorted(r["id"] for r in read_jsonl(str(out / "results")) + read_jsonl(str(out / "errors")))
        assert seen == sorted(f"j{j}-{i}" for i in range(per_job))


def _wait_for_lease(gcs_client, bucket: str, prefix: str, proc: subprocess.Popen, timeout_s: float) -> None:
    """Until the process (its owner id holds its pid) has a grant in the ledger."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        for blob in gcs_client.list_blobs(bucket, prefix=f"{prefix}/log/"):
            entry = json.loads(blob.download_as_bytes())
            if entry["kind"] == "grant" and f"-{proc.pid}-" in entry["owner"]:
                return
        time.sleep(0.2)
    raise AssertionError("the process never took a lease")
