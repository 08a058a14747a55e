"""report/aggregate.py: outputs and engine samples → the numbers the page draws. Pure, no Beam, no browser."""

from __future__ import annotations

import json

import pytest

from client.caller import utc_iso
from client.pricing import PriceTable
from report.aggregate import MAX_BINS, RunAggregate, bin_width, redact_options

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
PRICES = PriceTable(as_of="test", prices={"m1": (1.0, 2.0), "m2": (10.0, 20.0)}, default=(0.0, 0.0))


def result(i: int, start: float, latency_s: float, *, model: str = "m1", attempts: int = 1, **extra) -> dict:
    return {"id": f"r{i}", "request_key": "k", "model": model, "content": "x", "attempts": attempts,
            "latency_ms": latency_s * 1000, "usage": {"prompt_tokens": 100, "completion_tokens": 10,
                                                      "reasoning_tokens": 0, "cached_tokens": 0, "total_tokens": 110},
            "started_at": utc_iso(start), "finished_at": utc_iso(start + latency_s), **extra}


def error(i: int, error_type: str, start: float | None = None, *, stage: str = "request", **extra) -> dict:
    rec = {"id": f"e{i}", "stage": stage, "error_type": error_type, "message": f"failed {i}", "retryable": False,
           "attempts": 1}
    if start is not None:
        rec.update(started_at=utc_iso(start), finished_at=utc_iso(start + 0.5))
    return {**rec, **extra}


@pytest.mark.parametrize("span,width", [(1, 1), (150, 1), (151, 2), (3600, 30), (8 * 3600, 300), (40 * 86400, 43200),
                                        (400 * 86400, 3 * 86400)])
def test_bin_width_is_nice_and_keeps_the_bin_count_bounded(span, width):
    assert bin_width(span) == width
    assert span / bin_width(span) <= MAX_BINS


def test_completions_and_retries_land_in_the_second_they_finished():
    agg = RunAggregate(PRICES)
    for i in range(10):
        agg.add(result(i, T0 + i, 0.5, attempts=2 if i == 3 else 1))
    agg.add(error(99, "rate_limited", T0 + 4, attempts=6))
    agg.add(error(100, "invalid_json", stage="read"))  # no times: counted, not on the timeline
    t = agg.data()["timeline"]
    assert (t["t0"], t["bin_s"], t["n"]) == (T0, 1, 10)
    assert t["results"] == [1] * 10
    assert t["errors"] == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert t["rate_limited_errors"][4] == 1
    assert t["retries"][3] == 1 and sum(t["retries"]) == 1 + 5
    # Each record is in progress from its start to its finish (half a second here, so never at a bin's end).
    assert max(t["records_in_progress"]) <= 2
    assert t["in_flight"] is None  # no engine samples: the page says so instead of drawing zeros


def test_records_in_progress_counts_overlapping_records():
    agg = RunAggregate(PRICES)
    for i in range(20):
        agg.add(result(i, T0, 5.5))  # twenty records all running for 5.5 s
    t = agg.data()["timeline"]
    assert t["records_in_progress"][:5] == [20] * 5 and t["records_in_progress"][-1] == 0


def test_latency_percentiles_are_exact_and_the_histogram_holds_every_result():
    agg = RunAggregate(PRICES)
    for i in range(1, 1001):
        agg.add(result(i, T0, i / 1000))  # 1 ms ... 1000 ms
    lat = agg.data()["latency"]
    assert (lat["count"], lat["p50"], lat["p95"], lat["p99"], lat["max"]) == (1000, 500.5, 950.0, 990.0, 1000.0)
    assert sum(lat["counts"]) == 1000 and lat["log_bins"]  # 1000x spread: log-spaced bins
    assert len(lat["edges"]) == len(lat["counts"]) + 1


def test_tokens_and_cost_by_model_and_by_tier_when_the_field_exists():
    agg = RunAggregate(PRICES)
    agg.add(result(1, T0, 1, model="m1"))
    agg.add(result(2, T0, 1, model="m2", service_tier="flex"))
    agg.add(result(3, T0, 1, model="m2", service_tier="flex"))
    agg.add(result(4, T0, 1, model="m2"))  # no service_tier field at all: fine, its own row
    rows = {(r["model"], r["tier"]): r for r in agg.data()["by_model"]}
    assert set(rows) == {("m1", None), ("m2", "flex"), ("m2", None)}
    assert rows[("m2", "flex")]["records"] == 2 and rows[("m2", "flex")]["total_tokens"] == 220
    assert rows[("m1", None)]["cost_usd"] == pytest.approx((100 * 1 + 10 * 2) / 1e6)
    assert agg.data()["totals"]["cost_usd"] == pytest.approx((120 + 3 * 1200) / 1e6)


def test_errors_by_type_keep_a_few_redacted_examples():
    agg = RunAggregate(PRICES, examples_per_type=2)
    for i in range(5):
        agg.add(error(i, "auth_error", T0, status_code=401,
                      message="401 for Bearer ya29.very-secret-token?key=AIzaSECRET"))
    agg.add(error(9, "schema_validation", T0, stage="validate", message="x" * 5000))
    by_type = {e["error_type"]: e for e in agg.data()["errors_by_type"]}
    auth = by_type["auth_error"]
    assert auth["count"] == 5 and len(auth["examples"]) == 2
    text = json.dumps(auth)
    assert "very-secret-token" not in text and "AIzaSECRET" not in text and "[REDACTED]" in text
    assert len(by_type["schema_validation"]["examples"][0]["message"]) <= 301
    assert list(by_type) == ["auth_error", "schema_validation"]  # most frequent first


def test_the_slowest_records_are_kept_in_order_and_capped():
    agg = RunAggregate(PRICES, slowest=3)
    for i in range(100):
        agg.add(result(i, T0, (i * 37 % 100) / 10))
    slow = agg.data()["slowest"]
    assert [row["latency_ms"] for row in slow] == [9900.0, 9800.0, 9700.0]


def test_engine_samples_are_summed_over_processes_per_bin():
    agg = RunAggregate(PRICES)
    agg.add(result(1, T0, 9))
    fields = ["t", "done", "in_flight", "limit", "attempts", "status_429", "retries"]
    # Two processes, one sample a second; the second process started two seconds later.
    agg.add_telemetry({"fields": fields, "samples": [[T0 + s, s, 4, 8, 10 * s, s, 0] for s in range(10)]})
    agg.add_telemetry({"fields": fields, "samples": [[T0 + s, s, 2, 16, 5 * s, 0, s] for s in range(2, 10)]})
    t = agg.data()["timeline"]
    assert t["in_flight"][:3] == [4, 4, 6] and t["limit"][:3] == [8, 8, 24]
    assert sum(t["http_429"]) == 9  # cumulative counters become per-bin deltas
    assert sum(t["attempts"]) == 90 + 45 and sum(t["retries_engine"]) == 9
    assert t["processes"] == 2


def test_an_old_run_s_samples_in_the_same_prefix_are_left_out():
    agg = RunAggregate(PRICES)
    agg.add(result(1, T0, 2))
    fields = ["t", "in_flight", "limit"]
    agg.add_telemetry({"fields": fields, "samples": [[T0 - 86400 + s, 1, 1] for s in range(3)]})
    t = agg.data()["timeline"]
    assert t["in_flight"] is None and t["n"] == 3  # the span is this run's, not yesterday's too


def test_unparsable_lines_are_counted_not_fatal():
    agg = RunAggregate(PRICES)
    agg.add_line(b'{"id": "r1", "request_key": "k", "latency_ms": 5}\n')
    agg.add_line(b"{cut off\n")
    agg.add_line(b"[1, 2]\n")
    agg.add_line(b"   \n")
    totals = agg.data()["totals"]
    assert (totals["results"], totals["unparsable_lines"], totals["results_without_times"]) == (1, 2, 1)
    assert agg.data()["timeline"] is None


def test_options_are_redacted_for_display():
    shown = redact_options({"base_url": "http://user:hunter2@host:8080/v1", "api_key_env": "sk-live-abcdef123456",
                            "params": '{"temperature": 0, "api_key": "AIzaXYZ"}', "client_secret": "s3cret",
                            "max_total_tokens": 5000, "input": "gs://b/in.jsonl", "labels": ["a=1"]})
    assert shown["base_url"] == "http://user:[REDACTED]@host:8080/v1"
    assert shown["api_key_env"] == "[REDACTED]" and shown["client_secret"] == "[REDACTED]"
    assert "AIzaXYZ" not in shown["params"]
    assert shown["max_total_tokens"] == 5000 and shown["input"] == "gs://b/in.jsonl"
    assert redact_options({"api_key_env": "MY_KEY"}) == {"api_key_env": "MY_KEY"}


def test_the_numbers_stay_small_for_a_large_run():
    agg = RunAggregate(PRICES)
    for i in range(100_000):
        agg.add(result(i, T0 + i * 0.01, 0.2 + (i % 97) / 100))
    data = agg.data()
    assert len(json.dumps(data)) < 60_000
    assert data["timeline"]["n"] <= MAX_BINS + 1 and data["latency"]["count"] == 100_000


def test_results_served_from_the_cache_count_but_stay_off_this_runs_timeline_latency_and_spend():
    agg = RunAggregate(PRICES)
    agg.add(result(1, T0, 0.5))
    agg.add(result(2, T0 - 86400, 9.0, cached=True))  # yesterday's answer, served today from the cache
    data = agg.data()
    assert (data["totals"]["results"], data["totals"]["cached_results"]) == (2, 1)
    assert data["totals"]["first_at"] == T0 and data["latency"]["count"] == 1
    assert data["by_model"][0]["records"] == 1 and data["totals"]["cost_usd"] == PRICES.cost("m1", 100, 10)
