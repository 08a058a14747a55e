"""client/summary.py (the run summary: counters → JSON → printed report) and client/estimate.py's dry-run report,
tested directly: no pipeline, no Beam."""

from __future__ import annotations

import json

from client.estimate import dry_run_report, format_dry_run
from client.jobshare import JobShareSettings
from client.summary import budget_block, build_summary, format_summary

COUNTERS = {
    "records_read": 10, "results_written": 7, "results_written_truncated": 1, "errors_written": 3,
    "errors_written_rate_limited": 2, "errors_written_invalid_record": 1, "errors_written_zero": 0,
    "tokens_prompt": 100, "tokens_completion": 70, "tokens_reasoning": 5, "tokens_cached": 10, "tokens_total": 175,
    "error_tokens_total": 12, "results": 7, "cost_nano_usd": 1_500_000, "requests": 9, "attempts": 12, "retries": 3,
    "status_429": 2, "cumulativeThrottlingSeconds": 4, "resume_skipped": 0,
}


def test_build_counts_what_the_sinks_and_the_core_counted():
    s = build_summary(COUNTERS, run_date="2026-01-31", wall_s=4.0, prices_as_of="2025-07-01")
    assert (s["records_read"], s["results"], s["results_truncated"], s["errors"]) == (10, 7, 1, 3)
    assert s["errors_by_type"] == {"invalid_record": 1, "rate_limited": 2}  # zero counts left out, sorted
    assert s["tokens"] == {"prompt": 100, "completion": 70, "reasoning": 5, "cached": 10, "total": 175,
                           "on_errors": 12}
    assert s["completion_tokens_per_result"] == 10.0
    assert s["estimated_cost_usd"] == 0.0015 and s["prices_as_of"] == "2025-07-01"
    assert (s["records_called"], s["http_requests"], s["retries"], s["status_429"]) == (9, 12, 3, 2)
    assert s["throttled_seconds"] == 4 and s["records_per_second"] == 2.5
    assert "budget" not in s and "tiers" not in s and "batch" not in s
    json.dumps(s)  # written as {output}-summary.json


def test_build_of_an_empty_run():
    s = build_summary({}, run_date="2026-01-31", wall_s=0.0)
    assert s["records_read"] == 0 and s["completion_tokens_per_result"] is None and s["records_per_second"] is None
    assert "chatbeam run 2026-01-31: 0 records read" in format_summary(s)


def test_format_shows_each_part_once():
    s = build_summary({**COUNTERS, "resume_skipped": 4, "breaker_refused": 2, "checkpoint_write_failures": 1},
                      run_date="2026-01-31", wall_s=4.0, prices_as_of="2025-07-01")
    s["failures"] = ["3 of 10 records are errors"]
    text = format_summary(s)
    assert text.splitlines()[0] == "chatbeam run 2026-01-31: 10 records read in 4.0 s (2.5 records/s)"
    assert "  results   7 (1 cut off: finish_reason length)" in text
    assert "  errors    3 (invalid_record 1, rate_limited 2)" in text
    assert "  resumed   4 records already done" in text
    assert "  breaker   2 records not sent" in text
    assert "  cost      ~$0.0015 (prices as of 2025-07-01)" in text
    assert "            (12 of these tokens were spent on records that ended as errors)" in text
    assert "ended as errors" not in format_summary(build_summary({**COUNTERS, "error_tokens_total": 0},
                                                                  run_date="d", wall_s=1.0))
    assert "  requests  12 HTTP requests for 9 records, 3 retries, 2 answered 429, throttled 4 s" in text
    assert "  FAILED    3 of 10 records are errors" in text
    assert "  WARNING   1 checkpoint files could not be written" in text


def test_tiers_and_batch_blocks():
    counters = {**COUNTERS, "tier_records_flex": 5, "tier_records_standard": 2, "tier_cost_nano_usd_flex": 500_000,
                "batch_jobs": 1, "batch_jobs_succeeded": 1, "batch_lines": 6, "batch_lines_answered": 5,
                "batch_lines_missing": 1, "batch_fallback_online": 1, "batch_fallback_missing": 1}
    s = build_summary(counters, run_date="2026-01-31", wall_s=1.0)
    assert s["tiers"] == {"flex": {"records": 5, "cost_usd": 0.0005}, "standard": {"records": 2, "cost_usd": 0.0}}
    assert s["batch"]["jobs_by_state"] == {"succeeded": 1}
    assert (s["batch"]["lines"], s["batch"]["answered"], s["batch"]["missing_lines"]) == (6, 5, 1)
    assert s["batch"]["finished_online_by_reason"] == {"missing": 1}
    text = format_summary(s)
    assert "  tiers     flex 5 records ~$0.0005, standard 2 records ~$0.0000" in text
    assert "  batch     1 job(s) (succeeded 1), 6 lines: 5 answered, 0 failed, 1 missing; 1 finished online" in text
    # Only standard: no tiers line.
    standard = build_summary({**COUNTERS, "tier_records_standard": 7}, run_date="d", wall_s=1.0)
    assert "tiers" in standard and "  tiers" not in format_summary(standard)


def test_budget_block_against_the_caps(tmp_path):
    settings = JobShareSettings(url=str(tmp_path / "ledger"), max_total_tokens=1000, max_cost_usd=0.01, rpm=60)
    block = budget_block(settings, {**COUNTERS, "tokens_total": 500, "cost_nano_usd": 2_500_000,
                                    "errors_written_budget_exhausted": 4})
    assert block["scope"] == "job" and block["rpm"] == 60 and "tpm" not in block
    assert (block["spent_tokens"], block["tokens_used_pct"]) == (500, 50.0)
    assert (block["spent_usd"], block["cost_used_pct"]) == (0.0025, 25.0)
    assert block["budget_exhausted"] == 4
    assert budget_block(None, COUNTERS) is None
    s = build_summary(COUNTERS, run_date="2026-01-31", wall_s=1.0, budget=block)
    assert s["budget"] == block
    line = next(x for x in format_summary(s).splitlines() if x.startswith("  budget"))
    assert line.startswith("  budget    whole job: 500 of 1,000 tokens (50 %), $0.0025 of $0.01 (25 %), "
                           "4 records budget_exhausted; --rpm 60 shared")


def test_dry_run_report():
    totals = {"records": 3, "est_prompt_tokens": 30, "est_output_tokens": 768, "est_cost_usd": 0.0012,
              "by_model": {"google/gemini-2.0-flash-001": {"records": 3, "cost_usd": 0.0012}},
              "prices_as_of": "2025-07-01", "assumed_output_tokens": 256}
    report = dry_run_report(totals, run_date="2026-01-31", unsendable=1)
    assert report["dry_run"] is True and report["unsendable"] == 1 and report["records"] == 3
    assert format_dry_run(report).splitlines() == [
        "chatbeam dry run 2026-01-31: 3 requests would be sent, 1 records could not be",
        "  estimated prompt tokens 30, output tokens 768 (max_tokens, else 256 per choice)",
        "  estimated cost ~$0.0012 (prices as of 2025-07-01)",
        "    google/gemini-2.0-flash-001: 3 requests, ~$0.0012",
    ]
