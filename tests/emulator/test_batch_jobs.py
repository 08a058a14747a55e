"""Vertex batch prediction jobs on the emulator, driven by google-genai's ``client.batches`` (input and output in an
in-memory store here; tests/gcp runs them on the GCS emulator): states, answers equal to the online route's, per-line
failures, failed and cancelled jobs with partial output, the per-job request limit, and bad requests."""

from __future__ import annotations

import json
import time

import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from google.oauth2.credentials import Credentials

from emulator import EmulatorConfig, serve_in_thread
from emulator.gcs import MemoryStore

TERMINAL = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_PARTIALLY_SUCCEEDED"}
BASE = "/v1/projects/p/locations/us-central1"
AUTH = {"authorization": "Bearer t"}


@pytest.fixture(scope="module")
def served():
    store = MemoryStore()
    with serve_in_thread(EmulatorConfig(seed=3), store=store) as emu:
        yield emu, store


@pytest.fixture
def emu(served):
    emu, store = served
    emu.set_faults(batch_queue_s=0.05, batch_duration_s=0.2)
    emu.reset()
    store.objects.clear()
    return emu


@pytest.fixture
def store(served):
    return served[1]


@pytest.fixture
def client(emu):
    return genai.Client(vertexai=True, project="p", location="us-central1", credentials=Credentials(token="t"),
                        http_options=types.HttpOptions(base_url=emu.url, api_version="v1"))


def lines(n: int, prefix: str = "q") -> list[dict]:
    return [{"request": {"contents": [{"role": "user", "parts": [{"text": f"{prefix} number {i}"}]}],
                         "labels": {"chatbeam_key": f"k{i}"}}} for i in range(n)]


def stage(store, rows, uri="gs://b/in/requests.jsonl") -> str:
    store.write(uri, "".join(json.dumps(r) + "\n" for r in rows).encode())
    return uri


def submit(client, src, model="gemini-2.0-flash-001"):
    return client.batches.create(model=model, src=src,
                                 config=types.CreateBatchJobConfig(dest="gs://b/out", display_name="test-job"))


def wait(client, name, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.batches.get(name=name)
        if job.state.name in TERMINAL:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {name} did not finish")


def outputs(store, job) -> list[dict]:
    data = store.read(f"{job.output_info.gcs_output_directory}/predictions.jsonl")
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def test_a_job_answers_every_line_once_as_the_online_route_would(client, store, emu):
    rows = lines(30)
    job = submit(client, stage(store, rows))
    assert job.state.name == "JOB_STATE_PENDING" and job.name.startswith("projects/p/locations/us-central1/")
    done = wait(client, job.name)
    out = outputs(store, done)

    assert done.state.name == "JOB_STATE_SUCCEEDED"
    assert (done.completion_stats.successful_count, done.completion_stats.failed_count) == (30, 0)
    keys = [o["request"]["labels"]["chatbeam_key"] for o in out]
    assert sorted(keys) == sorted(f"k{i}" for i in range(30)) and keys != [f"k{i}" for i in range(30)]  # shuffled
    online = client.models.generate_content(model="gemini-2.0-flash-001", contents="q number 7")
    answer = next(o for o in out if o["request"]["labels"]["chatbeam_key"] == "k7")
    assert answer["status"] == "" and answer["processed_time"]
    assert answer["response"]["candidates"][0]["content"]["parts"][0]["text"] == online.text
    assert answer["response"]["usageMetadata"]["trafficType"] == "BATCH"
    stats = emu.stats(fingerprints=False)
    assert stats["batch"]["lines_ok"] == 30 and stats["batch"]["jobs_by_state"] == {"JOB_STATE_SUCCEEDED": 1}
    assert stats["by_tier"]["batch"]["ok"] == 30


def test_running_jobs_report_progress(client, store, emu):
    emu.set_faults(batch_queue_s=0.05, batch_duration_s=3.0)
    job = submit(client, stage(store, lines(30)))
    seen = set()
    while True:
        current = client.batches.get(name=job.name)
        seen.add(current.state.name)
        if current.state.name == "JOB_STATE_RUNNING" and 0 < current.completion_stats.successful_count < 30:
            assert current.completion_stats.incomplete_count == 30 - current.completion_stats.successful_count
            break
        assert current.state.name not in TERMINAL, "finished before any progress was seen"
        time.sleep(0.02)
    assert wait(client, job.name).state.name == "JOB_STATE_SUCCEEDED"


def test_line_failures_give_a_partially_succeeded_job(client, store, emu):
    emu.set_faults(batch_queue_s=0.0, batch_duration_s=0.1, batch_line_failure_rate=0.3)
    rows = lines(40) + [{"request": {"contents": [{"role": "user", "parts": [{"bogus": 1}]}],
                                     "labels": {"chatbeam_key": "bad"}}}]
    done = wait(client, submit(client, stage(store, rows)).name)
    out = outputs(store, done)
    failed = [o for o in out if o["status"]]

    assert done.state.name == "JOB_STATE_PARTIALLY_SUCCEEDED" and len(out) == 41
    assert done.completion_stats.failed_count == len(failed) and 1 < len(failed) < 41
    assert all("response" not in o for o in failed)
    bad = next(o for o in out if o["request"]["labels"]["chatbeam_key"] == "bad")
    assert bad["status"].startswith("Bad Request: ") and json.loads(bad["status"][13:])["error"]["code"] == 400
    assert any(o["status"].startswith("Internal Server Error: ") for o in failed)


def test_a_failed_job_keeps_the_lines_it_answered(client, store, emu):
    emu.set_faults(batch_queue_s=0.0, batch_duration_s=0.1, batch_job_failure_rate=1.0, batch_fail_at=0.5)
    done = wait(client, submit(client, stage(store, lines(20))).name)
    assert done.state.name == "JOB_STATE_FAILED" and done.error.message
    assert len(outputs(store, done)) == 10 and done.completion_stats.incomplete_count == 10


def test_cancel_mid_way_keeps_what_was_answered(client, store, emu):
    emu.set_faults(batch_queue_s=0.0, batch_duration_s=20.0)
    job = submit(client, stage(store, lines(40)))
    while client.batches.get(name=job.name).completion_stats.successful_count < 1:
        time.sleep(0.02)
    client.batches.cancel(name=job.name)
    done = wait(client, job.name)
    answered = outputs(store, done)
    assert done.state.name == "JOB_STATE_CANCELLED"
    assert 1 <= len(answered) < 40 and done.completion_stats.incomplete_count == 40 - len(answered)


def test_jobs_over_the_request_limit_or_without_input_fail(client, store, emu):
    emu.set_faults(batch_queue_s=0.0, batch_duration_s=0.0, batch_max_requests=5)
    too_big = wait(client, submit(client, stage(store, lines(6))).name)
    missing = wait(client, submit(client, "gs://b/in/nothing-here.jsonl").name)
    assert too_big.state.name == "JOB_STATE_FAILED" and "at most 5" in too_big.error.message
    assert missing.state.name == "JOB_STATE_FAILED" and "read the input" in missing.error.message
    assert too_big.output_info is None


def test_list_get_delete_and_cancel_rules(client, store, emu):
    emu.set_faults(batch_queue_s=0.0, batch_duration_s=0.0)
    names = [submit(client, stage(store, lines(2), f"gs://b/in/{i}.jsonl")).name for i in range(3)]
    for name in names:
        wait(client, name)
    listed = [j.name for j in client.batches.list(config=types.ListBatchJobsConfig(page_size=2))]
    assert set(names) <= set(listed)
    with pytest.raises(genai_errors.ClientError) as err:
        client.batches.cancel(name=names[0])
    assert err.value.code == 400  # already finished
    client.batches.delete(name=names[0])
    with pytest.raises(genai_errors.ClientError) as err:
        client.batches.get(name=names[0])
    assert err.value.code == 404


@pytest.mark.parametrize("body, code, needle", [
    ({"model": "publishers/google/models/gemini-2.0-flash-001"}, 400, "displayName"),
    ({"displayName": "x", "model": "gemini-2.0-flash-001"}, 400, "publishers/google/models"),
    ({"displayName": "x", "model": "publishers/google/models/gemini-0"}, 404, "gemini-0"),
    ({"displayName": "x", "model": "publishers/google/models/gemini-2.0-flash-001",
      "inputConfig": {"instancesFormat": "bigquery", "bigquerySource": {"inputUri": "bq://p.d.t"}},
      "outputConfig": {"predictionsFormat": "jsonl", "gcsDestination": {"outputUriPrefix": "gs://b/o"}}},
     400, "BigQuery"),
    ({"displayName": "x", "model": "publishers/google/models/gemini-2.0-flash-001",
      "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": ["/local/file.jsonl"]}},
      "outputConfig": {"predictionsFormat": "jsonl", "gcsDestination": {"outputUriPrefix": "gs://b/o"}}},
     400, "gs://"),
])
def test_bad_create_requests(emu, body, code, needle):
    import httpx2

    answer = httpx2.post(emu.url + BASE + "/batchPredictionJobs", json=body, headers=AUTH)
    assert answer.status_code == code and needle in answer.json()[0]["error"]["message"]
    assert httpx2.get(emu.url + BASE + "/batchPredictionJobs").status_code == 401
