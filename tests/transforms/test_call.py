"""CallChatCompletions (transforms/call.py) directly: in a Beam TestPipeline against the emulator, and its DoFn's
per-process registry (Engine.shared with ProcessParts) across instances and bundles."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from client.budget import BudgetConfig
from client.config import ClientConfig, Target
from schemas.records import ErrorRecord, InputRecord, ResultRecord
from transforms.call import CallChatCompletions, _CallChatCompletionsFn, _Settings

MODEL = "google/gemini-2.0-flash-001"


def config_for(emulator, **kw) -> ClientConfig:
    return ClientConfig(target=Target(emulator.url + "/v1", "local_tokens"), model=MODEL, max_attempts=1,
                        max_concurrency=4, **kw)


def records(n: int) -> list[InputRecord]:
    return [InputRecord(id=f"r{i}", prompt=f"Say something about {i}.") for i in range(n)]


def test_every_input_is_one_result_or_one_tagged_error(vertex_emulator) -> None:
    good = records(12)
    bad = [InputRecord(id="bad-params", prompt="x", params={"stream": True}),       # reserved: never sent
           InputRecord(id="bad-schema", prompt="x", schema_name="no_such_schema")]  # names no schema
    pipeline = test_pipeline.TestPipeline(options=beam.options.pipeline_options.PipelineOptions(["--runner", "DirectRunner"]))
    with pipeline as p:
        out = p | beam.Create(good + bad) | CallChatCompletions(config_for(vertex_emulator))
        assert_that(out.results | "result ids" >> beam.Map(lambda r: (type(r).__name__, r.id)),
                    equal_to([("ResultRecord", r.id) for r in good]), label="results")
        assert_that(out.errors | "error ids" >> beam.Map(lambda r: (type(r).__name__, r.id, r.error_type)),
                    equal_to([("ErrorRecord", "bad-params", "bad_request"),
                              ("ErrorRecord", "bad-schema", "unknown_schema")]), label="errors")
    counters = {c.key.metric.name: c.committed
                for c in p.result.metrics().query(MetricsFilter().with_namespace("chatbeam"))["counters"]}
    assert counters["results"] == 12 and counters["errors"] == 2  # the engine's counters reach Beam's metrics
    assert vertex_emulator.stats(fingerprints=False)["requests"] == 12  # the bad records were never sent


def run_bundle(fn: _CallChatCompletionsFn, bundle: list[InputRecord]) -> list:
    fn.start_bundle()
    outs = [o for r in bundle for o in fn.process(r)]
    outs += list(fn.finish_bundle())
    unwrapped = []
    for out in outs:
        while not isinstance(out, (ResultRecord, ErrorRecord)):  # TaggedOutput / WindowedValue -> the record
            out = out.value
        unwrapped.append(out)
    return unwrapped


def test_dofn_instances_of_a_process_share_one_engine_and_its_parts_across_bundles(vertex_emulator) -> None:
    settings = _Settings(budget=BudgetConfig(max_total_tokens=10_000_000), run_id="test-call-registry")
    first, second = _CallChatCompletionsFn(config_for(vertex_emulator), settings), \
        _CallChatCompletionsFn(config_for(vertex_emulator), settings)
    first.setup()
    second.setup()
    engine = first._engine
    try:
        assert second._engine is engine  # one registry: one engine, limiter, budget, counters per process
        budget = engine.parts.budget
        assert budget is not None and engine.caller.budget is budget and engine.caller.limiter is engine.limiter
        outs = run_bundle(first, records(5)) + run_bundle(second, records(3)) + run_bundle(first, records(4))
        assert all(isinstance(o, ResultRecord) for o in outs) and len(outs) == 12
        assert first._engine is engine and engine.alive  # reused by the later bundles, not rebuilt
        assert engine.parts.counters.snapshot()["results"] == 12 and engine.stats()["submitted"] == 12
        assert budget.spent_tokens == engine.parts.counters.snapshot()["tokens_total"] > 0  # one shared budget
    finally:
        first.teardown()
    assert engine.alive  # the second instance still holds it
    second.teardown()
    assert not engine.alive  # the last release closed it
    third = _CallChatCompletionsFn(config_for(vertex_emulator), settings)
    third.setup()
    try:
        assert third._engine is not engine and third._engine.parts is not engine.parts  # a fresh one
    finally:
        third.teardown()


def test_a_record_whose_caller_crashes_still_yields_one_error(vertex_emulator, monkeypatch) -> None:
    fn = _CallChatCompletionsFn(config_for(vertex_emulator), _Settings(run_id="test-call-crash"))
    fn.setup()
    try:
        async def boom(record):
            raise RuntimeError("a bug")

        monkeypatch.setattr(fn._engine.caller, "complete", boom)
        outs = run_bundle(fn, records(3))
    finally:
        fn.teardown()
    assert sorted(o.id for o in outs) == ["r0", "r1", "r2"]
    assert all(isinstance(o, ErrorRecord) and o.error_type == "internal_error" and o.retryable for o in outs)
