"""Batch mode's core without Beam: client/batch_run.py and client/batch_jobs.py against the emulator's batch jobs
(google-genai underneath; input and output in one in-memory object store), and client/batch_resolve.py."""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from collections import Counter

import pytest

from client.batch_jobs import BatchJobClient, BatchTarget
from client.batch_resolve import BatchResolver
from client.batch_run import BatchItem, BatchSettings, Fallback, Missing, prepare, run_group
from client.config import ClientConfig, Target
from client.metrics import RunCounters
from client.native_response import OutputLine, parse_output_line
from client.pricing import PriceTable
from emulator import EmulatorConfig, serve_in_thread
from emulator.gcs import MemoryStore
from schemas.records import ErrorRecord, InputRecord, ResultRecord

PRICES = PriceTable.load()


class StoreFiles:
    """client.batch_run.Files over the emulator's in-memory store (what Beam's FileSystems is in production)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    @contextlib.contextmanager
    def create(self, path):
        buffer = io.BytesIO()
        yield buffer
        self.store.write(path, buffer.getvalue())

    @contextlib.contextmanager
    def open(self, path):
        yield io.BytesIO(self.store.read(path))

    def match(self, pattern):
        return self.store.match(pattern)


@pytest.fixture(scope="module")
def served():
    store = MemoryStore()
    with serve_in_thread(EmulatorConfig(seed=2), store=store) as emu:
        yield emu, store


@pytest.fixture
def emu(served):
    emu, store = served
    emu.set_faults(batch_queue_s=0.0, batch_duration_s=0.1)
    store.objects.clear()
    return emu


@pytest.fixture
def config(emu):
    return ClientConfig(target=Target.managed("p", root=emu.url, auth="local_tokens"),
                        model="google/gemini-2.0-flash-001")


@pytest.fixture
def jobs(config):
    return BatchJobClient(BatchTarget.from_target(config.target))


@pytest.fixture
def files(served):
    return StoreFiles(served[1])


def records(n, **extra):
    return [InputRecord(id=f"r{i}", prompt=f"question number {i}", **extra) for i in range(n)]


def lines_of(recs, config):
    return [prepare(r, config, PRICES)[1] for r in recs]


def settings(**changes):
    # a run id of its own: jobs are adopted by display name, which includes it
    return BatchSettings(staging="gs://b/stage", run_id=uuid.uuid4().hex, poll_s=0.05, **changes)


def run(lines, jobs, files, **changes):
    counters = RunCounters()
    out = list(run_group("g", lines, settings(**changes), jobs, files, counters))
    return out, counters


def test_lines_over_the_per_job_limit_make_several_jobs_and_every_key_comes_back_once(config, jobs, files, emu):
    lines = lines_of(records(25), config)
    out, counters = run(lines, jobs, files, max_requests=10)

    assert Counter(key for key, _ in out) == Counter(line.key for line in lines)
    assert all(isinstance(o, OutputLine) and o.response and o.seconds > 0 for _, o in out)
    assert all(o.started_at <= o.finished_at for _, o in out)  # submission, then Vertex's processed_time
    assert counters.get("batch_jobs") == 3 and counters.get("batch_jobs_succeeded") == 3
    inputs = [u for u in files.store.objects if u.endswith("/input.jsonl")]
    assert sorted(len(files.store.read(u).splitlines()) for u in inputs) == [5, 10, 10]
    assert emu.stats(fingerprints=False)["batch"]["lines_ok"] == 25


def test_a_failed_job_gives_missing_outcomes_naming_the_job(config, jobs, files, emu):
    emu.set_faults(batch_queue_s=0.0, batch_duration_s=0.1, batch_job_failure_rate=1.0, batch_fail_at=0.4)
    lines = lines_of(records(10), config)
    out, counters = run(lines, jobs, files)
    answered = [o for _, o in out if isinstance(o, OutputLine)]
    missing = [o for _, o in out if isinstance(o, Missing)]

    assert sorted(k for k, _ in out) == sorted(line.key for line in lines)
    assert len(answered) == 4 and len(missing) == 6
    assert all(m.state == "JOB_STATE_FAILED" and m.job and "emulated failure" in m.error for m in missing)
    assert counters.get("batch_lines_missing") == 6 and counters.get("batch_jobs_failed") == 1


def test_the_budget_keeps_lines_out_of_the_job(config, jobs, files, emu):
    lines = lines_of(records(10), config)
    cap = sum(line.est_cost for line in lines[:4]) * 1.0001
    out, counters = run(lines, jobs, files, max_cost_usd=cap)
    refused = [k for k, o in out if isinstance(o, Missing) and o.state == "BUDGET_EXHAUSTED"]

    assert sorted(k for k, _ in out) == sorted(line.key for line in lines)
    assert len(refused) == 6 and counters.get("batch_lines") == 4


def test_waiting_past_max_wait_cancels_and_keeps_what_was_answered(config, jobs, files, emu):
    emu.set_faults(batch_queue_s=0.0, batch_duration_s=30.0)
    lines = lines_of(records(40), config)
    out, counters = run(lines, jobs, files, max_wait_s=0.5)
    cancelled = [o for _, o in out if isinstance(o, Missing)]

    assert len(out) == 40 and cancelled and all(m.state == "JOB_STATE_CANCELLED" for m in cancelled)
    assert counters.get("batch_jobs_cancelled") == 1


def test_submission_is_idempotent_by_display_name(config, jobs, files, emu):
    files.store.write("gs://b/in.jsonl", json.dumps({"request": {"contents": [
        {"role": "user", "parts": [{"text": "hi"}]}]}}).encode())
    kwargs = dict(model="google/gemini-2.0-flash-001", input_uri="gs://b/in.jsonl", output_prefix="gs://b/out",
                  display_name="chatbeam-idem-test-0")
    first = jobs.submit(**kwargs)
    assert jobs.submit(**kwargs) == first  # a retried bundle adopts the job instead of paying twice
    assert emu.stats(fingerprints=False)["batch"]["jobs_created"] >= 1
    assert jobs.find("chatbeam-no-such-job") is None


def test_batch_target_only_for_vertex_managed_endpoints():
    assert BatchTarget.from_target(Target.managed("p", "global")).location == "global"
    for target in (Target.openai_compatible("http://x/v1"), Target.endpoint("p", "us-central1", "123"),
                   Target.dedicated("https://1.us-central1-9.prediction.vertexai.goog/v1/projects/9/locations/"
                                    "us-central1/endpoints/1")):
        with pytest.raises(ValueError, match="no batch API"):
            BatchTarget.from_target(target)


# ---------------------------------------------------------------------------------------------- resolve

RESOLVE_CONFIG = ClientConfig(target=Target.managed("p"), model="google/gemini-2.0-flash-001")


def item(**extra):
    record = InputRecord(id="a", prompt="hi", **extra)
    return prepare(record, RESOLVE_CONFIG, PRICES)[0]


def answered(text, finish="STOP"):
    return parse_output_line(json.dumps({"status": "", "request": {"labels": {"chatbeam_key": "k"}}, "response": {
        "candidates": [{"content": {"parts": [{"text": text}]}, "finishReason": finish}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 4, "totalTokenCount": 14,
                          "trafficType": "BATCH"}}}))


FAILED_LINE = parse_output_line(json.dumps({"status": 'Bad Request: {"error": {"code": 400, "message": "no", '
                                                      '"status": "INVALID_ARGUMENT"}}',
                                            "request": {"labels": {"chatbeam_key": "k"}}}))


def resolver(fallback=True, **config):
    return BatchResolver(RESOLVE_CONFIG.__class__(**{**RESOLVE_CONFIG.__dict__, **config}), PRICES,
                         fallback_online=fallback, counters=RunCounters())


def test_an_answer_becomes_a_batch_result_priced_at_batch_rates():
    r = resolver()
    out = r.resolve(item(schema="Sentiment"), answered('{"label": "neutral", "confidence": 0.5}'))
    assert isinstance(out, ResultRecord) and out.service_tier == "batch" and out.attempts == 1
    assert out.parsed == {"label": "neutral", "confidence": 0.5} and out.usage.total_tokens == 14
    expected = PRICES.cost("google/gemini-2.0-flash-001", 10, 4, tier="batch")
    assert r.counters.get("cost_nano_usd") == round(expected * 1e9) == r.counters.get("tier_cost_nano_usd_batch")


@pytest.mark.parametrize("outcome, fallback, kind, error_type", [
    (answered('{"label": "furious"}'), True, Fallback, None),              # a re-ask finishes online
    (answered('{"label": "furious"}'), False, ErrorRecord, "schema_validation"),  # the re-ask is left to a rerun
    (FAILED_LINE, True, Fallback, None),
    (FAILED_LINE, False, ErrorRecord, "batch_line_failed"),
    (Missing("JOB_STATE_CANCELLED", "projects/p/.../1"), False, ErrorRecord, "batch_job_cancelled"),
    (Missing("JOB_STATE_FAILED", "projects/p/.../1", "boom"), False, ErrorRecord, "batch_job_failed"),
    (Missing("BUDGET_EXHAUSTED"), True, ErrorRecord, "budget_exhausted"),
    (answered("cut", finish="MAX_TOKENS"), True, ErrorRecord, "truncated"),   # as online: not retried
])
def test_outcomes_resolve_to_exactly_one_thing(outcome, fallback, kind, error_type):
    out = resolver(fallback).resolve(item(schema="Sentiment"), outcome)
    assert isinstance(out, kind)
    if kind is ErrorRecord:
        assert out.error_type == error_type and out.record["id"] == "a" and out.service_tier == "batch"
        assert out.retryable == (error_type != "truncated")
    if error_type == "batch_line_failed":
        assert out.status == "INVALID_ARGUMENT" and out.status_code == 400 and "Bad Request" in out.message
    if error_type == "budget_exhausted":
        assert out.attempts == 0


def test_without_reasks_a_schema_invalid_answer_is_a_schema_validation_error():
    out = resolver(True, max_reasks=0).resolve(item(schema="Sentiment"), answered('{"label": "furious"}'))
    assert isinstance(out, ErrorRecord) and out.error_type == "schema_validation" and not out.retryable
    assert out.response_text == '{"label": "furious"}'


def test_batch_item_keeps_what_the_result_needs():
    it = item()
    assert isinstance(it, BatchItem) and it.model == "google/gemini-2.0-flash-001" and len(it.request_key) == 32
