"""The run lock on gs:// (transforms/run_lock.py) against the GCS emulator: create-if-absent (ifGenerationMatch=0) is
atomic, the holder is named, release deletes only our own generation, a dead holder on this host is broken
automatically, and --force breaks any other."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid

import pytest

from transforms.run_lock import Holder, LockHeld, RunLock

pytestmark = pytest.mark.e2e


@pytest.fixture
def prefix(gcs_emulator) -> str:
    return f"gs://{gcs_emulator.bucket}/{uuid.uuid4().hex[:8]}/out/r"


def blob(gcs_client, gs_path: str):
    bucket, _, name = gs_path[len("gs://"):].partition("/")
    return gcs_client.bucket(bucket).get_blob(name)


def lock(prefix: str, run_id: str, gcs_client, force: bool = False) -> RunLock:
    return RunLock([prefix], run_id=run_id, force=force, gcs_client=lambda: gcs_client)


def test_one_holder_at_a_time_and_release(gcp_env, gcs_client, prefix):
    first = lock(prefix, "first-run", gcs_client).acquire()
    holder = Holder.parse(blob(gcs_client, prefix + ".lock").download_as_bytes())
    assert holder.run_id == "first-run"
    with pytest.raises(LockHeld, match="run first-run"):
        lock(prefix, "second-run", gcs_client).acquire()
    first.release()
    assert blob(gcs_client, prefix + ".lock") is None
    lock(prefix, "third-run", gcs_client).acquire().release()


def test_racing_runs_get_exactly_one_lock(gcp_env, gcs_client, prefix):
    won, lost = [], []
    barrier = threading.Barrier(6)

    def contend(i: int) -> None:
        barrier.wait()
        try:
            won.append(lock(prefix, f"racer-{i}", gcs_client).acquire())
        except LockHeld:
            lost.append(i)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(won) == 1 and len(lost) == 5
    won[0].release()


def _put_holder(gcs_client, prefix: str, holder: Holder) -> None:
    bucket, _, name = (prefix + ".lock")[len("gs://"):].partition("/")
    gcs_client.bucket(bucket).blob(name).upload_from_string(holder.encode())


def test_a_dead_holder_on_this_host_is_broken_and_another_needs_force(gcp_env, gcs_client, prefix):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    me = Holder.me("x")
    _put_holder(gcs_client, prefix, Holder("killed-run", me.host, int(dead.stdout), me.started_at))
    with lock(prefix, "after-the-crash", gcs_client):
        assert json.loads(blob(gcs_client, prefix + ".lock").download_as_bytes())["run_id"] == "after-the-crash"

    _put_holder(gcs_client, prefix, Holder("elsewhere", "another-host", 1, me.started_at))
    with pytest.raises(LockHeld, match="pid 1 on another-host"):
        lock(prefix, "polite", gcs_client).acquire()
    forced = lock(prefix, "forced", gcs_client, force=True).acquire()
    forced.release()
    assert blob(gcs_client, prefix + ".lock") is None


def test_release_never_deletes_a_lock_someone_else_took_over(gcp_env, gcs_client, prefix):
    original = lock(prefix, "original", gcs_client).acquire()
    takeover = lock(prefix, "takeover", gcs_client, force=True).acquire()
    original.release()  # its generation is gone: nothing deleted
    assert Holder.parse(blob(gcs_client, prefix + ".lock").download_as_bytes()).run_id == "takeover"
    takeover.release()
