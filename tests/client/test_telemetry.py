"""client/telemetry.py: per-process engine samples written whole, thinned for long runs, summed for progress."""

from __future__ import annotations

import json

from client.telemetry import (MAX_SAMPLES, SAMPLE_FIELDS, Telemetry, TelemetrySettings, combine_latest,
                              engine_sample)


class Clock:
    def __init__(self) -> None:
        self.now = 1_767_225_600.0

    def __call__(self) -> float:
        return self.now


def test_samples_are_written_whole_and_the_last_stop_flushes():
    clock, files = Clock(), {}
    telemetry = Telemetry(clock=clock)
    state = {"done": 0, "in_flight": 3, "limit": 8}
    settings = TelemetrySettings("out/results-telemetry", run_id="run1")
    telemetry.start(settings, lambda: dict(state), files.__setitem__, thread=False)
    telemetry.start(settings, lambda: {}, files.__setitem__, thread=False)  # a second DoFn instance: same file
    for step in range(3):
        state["done"] = step * 10
        telemetry.take_sample()
        clock.now += 1
    telemetry.stop()
    assert files == {}  # one user left
    telemetry.stop()
    (path, data), = files.items()
    assert path.startswith("out/results-telemetry/run1-") and path.endswith(".json")
    doc = json.loads(data)
    assert doc["fields"] == list(SAMPLE_FIELDS) and len(doc["samples"]) == 4  # 3 + the final one
    done = doc["fields"].index("done")
    assert [row[done] for row in doc["samples"]] == [0, 10, 20, 20]


def test_a_long_run_is_thinned_and_keeps_its_peaks():
    clock, files = Clock(), {}
    telemetry = Telemetry(clock=clock)
    value = {"in_flight": 0}
    telemetry.start(TelemetrySettings("d", run_id="r"), lambda: dict(value), files.__setitem__, thread=False)
    for step in range(MAX_SAMPLES + 1):
        value["in_flight"] = 99 if step == 1 else 1
        telemetry.take_sample()
        clock.now += 1
    doc = telemetry.document()
    assert len(doc["samples"]) <= MAX_SAMPLES // 2 + 1 and doc["sample_s"] == 2.0
    flight = doc["fields"].index("in_flight")
    assert max(row[flight] for row in doc["samples"]) == 99  # the peak survived the thinning


def test_a_failing_sampler_or_writer_never_raises():
    def boom():
        raise RuntimeError("sampler bug")

    def bad_write(path, data):
        raise OSError("disk full")

    telemetry = Telemetry(clock=Clock())
    telemetry.start(TelemetrySettings("d", run_id="r"), boom, bad_write, thread=False)
    telemetry.take_sample()
    telemetry.stop()
    assert telemetry.failed_writes == 1


def test_flush_interval_depends_on_where_the_files_go():
    assert TelemetrySettings("out/t", "r").flush_every_s == 1.0
    assert TelemetrySettings("gs://b/t", "r").flush_every_s == 30.0


def test_engine_sample_and_combine_latest():
    sample = engine_sample({"in_flight": 5, "limit": 12, "admitted": 99}, {"status_429": 2, "attempts": 40}, 37)
    assert sample["done"] == 37 and sample["in_flight"] == 5 and sample["limit"] == 12 and sample["status_429"] == 2
    docs = [{"fields": ["t", "done", "in_flight"], "samples": [[1, 5, 2], [2, 9, 3]]},
            {"fields": ["t", "done", "in_flight"], "samples": [[2, 4, 1]]},
            {"fields": ["t", "done"], "samples": []}]
    assert combine_latest(docs) == {"done": 13, "in_flight": 4}
    assert combine_latest([]) is None
