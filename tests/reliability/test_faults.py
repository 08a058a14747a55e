"""The fault matrix: the real extract job against the emulator with one fault at a time.

For every fault: results + errors == inputs with each id exactly once; every recoverable record recovered; the
emulator's own counters show the fault really happened; each fault cost exactly one extra request (the retry or
re-ask it caused, nothing more); the attempts the records report add up to the requests the emulator received; and
``duplicate_ok == 0``: no request body was answered successfully twice. The emulator's fault draws are seeded by
(seed, body, attempt), so each run replays identically.
"""

from __future__ import annotations

import pytest

from tests.reliability.conftest import account, assert_each_id_once, settled_stats

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def records(tag: str, n: int, **extra) -> list[dict]:
    return [{"id": f"{tag}-{i:04d}", "prompt": f"{tag} reliability record number {i}", **extra} for i in range(n)]


def all_recovered(recs: list[dict], out) -> None:
    assert_each_id_once(recs, out)
    assert out.errors == [], out.errors[:3]
    assert len(out.results) == len(recs)


@pytest.mark.parametrize("adaptive", [True, False], ids=["adaptive", "no_adaptive"])
def test_429_storm_then_normal(vertex_emulator, timed_job, adaptive):
    """Every request 429 (RESOURCE_EXHAUSTED, RetryInfo 1s) for 4 s from the job's first request (not from when the
    storm is set: Beam's start-up may take longer than the storm on a loaded machine), then normal. Default retry
    settings ride it out (each backoff waits at least the 1 s the server asked for, so the 4th attempt is past the
    storm); every 429 costs exactly one retry. With adaptive throttling (the default) the client holds records back
    instead of sending each one into the storm: fewer 429s than records. Without it, every record hits the storm."""
    recs = records(f"storm-{'a' if adaptive else 'n'}", 100)
    vertex_emulator.set_faults(storm_429_s=4.0, retry_delay_s=1.0, storm_from_first_request=True)
    out, wall = timed_job(recs, *([] if adaptive else ["--no_adaptive_throttling"]))
    stats = settled_stats(vertex_emulator)
    row = account(f"429 storm 4 s, RetryInfo 1s{'' if adaptive else ', --no_adaptive_throttling'}", recs, out,
                  stats, wall, {"storm_429_s": 4, "adaptive": adaptive})
    all_recovered(recs, out)
    n429 = stats["by_status"].get("429", 0)
    assert n429 == stats["faults"]["storm_429"] == row["retries"] > 0
    if adaptive:
        assert n429 < len(recs)
    else:
        assert n429 >= len(recs) and all(r["attempts"] >= 2 for r in out.results)
    assert max(r["attempts"] for r in out.results) <= 6  # the default --max_attempts was enough
    assert all(r["latency_ms"] >= 1000 for r in out.results if r["attempts"] > 1)  # RetryInfo honoured
    assert stats["duplicate_ok"] == 0


def test_ten_percent_500_and_503(vertex_emulator, timed_job):
    recs = records("5xx", 300)
    vertex_emulator.set_faults(error_500_rate=0.05, error_503_rate=0.05)
    out, wall = timed_job(recs)
    stats = settled_stats(vertex_emulator)
    row = account("10 % 500/503", recs, out, stats, wall, {"error_500_rate": 0.05, "error_503_rate": 0.05})
    all_recovered(recs, out)
    n500, n503 = stats["by_status"].get("500", 0), stats["by_status"].get("503", 0)
    assert n500 > 0 and n503 > 0
    assert row["retries"] == n500 + n503
    assert stats["duplicate_ok"] == 0


def test_hangs_beyond_the_request_timeout(vertex_emulator, timed_job):
    """2 % of requests hang for 2 s; --request_timeout 1 abandons them (the emulator counts 499) and retries."""
    recs = records("hang", 300)
    vertex_emulator.set_faults(hang_rate=0.02, hang_s=2.0)
    out, wall = timed_job(recs, "--request_timeout", "1")
    stats = settled_stats(vertex_emulator)
    row = account("2 % hangs (2 s) vs --request_timeout 1", recs, out, stats, wall,
                  {"hang_rate": 0.02, "hang_s": 2, "request_timeout": 1})
    all_recovered(recs, out)
    hangs = stats["faults"].get("hang", 0)
    assert hangs > 0
    assert row["retries"] == hangs
    # Every hang was abandoned by the client, not answered late: a late answer would be work served twice.
    assert stats["faults"].get("hang_cancelled", 0) == stats["by_status"].get("499", 0) == hangs
    assert stats["duplicate_ok"] == 0
    assert all(r["latency_ms"] >= 1000 for r in out.results if r["attempts"] > 1)


def test_connection_resets(vertex_emulator, timed_job):
    recs = records("reset", 300)
    vertex_emulator.set_faults(reset_rate=0.05)
    out, wall = timed_job(recs)
    stats = settled_stats(vertex_emulator)
    row = account("5 % TCP resets", recs, out, stats, wall, {"reset_rate": 0.05})
    all_recovered(recs, out)
    resets = stats["faults"].get("reset", 0)
    assert resets > 0 and row["retries"] == resets
    assert stats["duplicate_ok"] == 0


def test_streams_dropped_midway(vertex_emulator, timed_job):
    """20 % of streams stop after about half their events, without [DONE], and the connection is reset."""
    recs = records("drop", 200)
    vertex_emulator.set_faults(stream_drop_rate=0.2)
    out, wall = timed_job(recs, "--stream", "--max_attempts", "8")
    stats = settled_stats(vertex_emulator)
    row = account("20 % streams dropped mid-way (--stream)", recs, out, stats, wall, {"stream_drop_rate": 0.2})
    all_recovered(recs, out)
    drops = stats["faults"].get("stream_drop", 0)
    assert drops > 0 and row["retries"] == drops
    assert stats["ok"] == len(recs) and stats["duplicate_ok"] == 0
    # A dropped stream's partial content never leaks into a result: each result is a whole answer.
    assert all(r["finish_reason"] == "stop" and r["content"].startswith("Emulated answer about:") for r in out.results)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_malformed_200_bodies(vertex_emulator, timed_job, stream):
    """10 % of 200 answers have their JSON cut in half (streams: one chunk's JSON)."""
    recs = records(f"malformed-{'s' if stream else 'p'}", 200)
    vertex_emulator.set_faults(malformed_rate=0.1)
    out, wall = timed_job(recs, *(["--stream"] if stream else []))
    stats = settled_stats(vertex_emulator)
    row = account(f"10 % malformed 200 bodies{' (--stream)' if stream else ''}", recs, out, stats, wall,
                  {"malformed_rate": 0.1, "stream": stream})
    all_recovered(recs, out)
    malformed = stats["faults"].get("malformed", 0)
    assert malformed > 0 and row["retries"] == malformed
    assert stats["by_status"] == {"200": stats["requests"]}  # they were all 200s: the client judged the bodies
    assert stats["duplicate_ok"] == 0


def test_schema_violations_without_reasks_are_validate_errors(vertex_emulator, timed_job):
    """--max_reasks 0: each schema-violating answer is one `schema_validation` error carrying the model's text,
    not retryable, sent once (the same request would get the same kind of answer)."""
    recs = records("violate0", 200, schema="CalendarEvent")
    vertex_emulator.set_faults(schema_violation_rate=0.2)
    out, wall = timed_job(recs, "--max_reasks", "0")
    stats = settled_stats(vertex_emulator)
    account("20 % schema violations, --max_reasks 0", recs, out, stats, wall,
            {"schema_violation_rate": 0.2, "max_reasks": 0})
    assert_each_id_once(recs, out)
    violations = stats["faults"].get("schema_violation", 0)
    assert violations > 0 and len(out.errors) == violations and stats["requests"] == len(recs)
    for err in out.errors:
        assert (err["stage"], err["error_type"], err["retryable"], err["attempts"]) == \
            ("validate", "schema_validation", False, 1)
        assert err["response_text"] and err["record"]["id"] == err["id"]
    for res in out.results:
        assert set(res["parsed"]) == {"name", "date", "participants"}


def test_schema_violations_are_reasked(vertex_emulator, timed_job):
    """--max_reasks 3: each violation costs exactly one re-ask (a new request: the answer plus the validation
    error), and every record ends with a valid answer."""
    recs = records("violate3", 200, schema="CalendarEvent")
    vertex_emulator.set_faults(schema_violation_rate=0.2)
    out, wall = timed_job(recs, "--max_reasks", "3")
    stats = settled_stats(vertex_emulator)
    row = account("20 % schema violations, --max_reasks 3", recs, out, stats, wall,
                  {"schema_violation_rate": 0.2, "max_reasks": 3})
    all_recovered(recs, out)
    violations = stats["faults"].get("schema_violation", 0)
    assert violations > 0 and row["retries"] == violations
    assert stats["unique_fingerprints"] == stats["requests"]  # a re-ask is a new body, never a resend
    assert stats["duplicate_ok"] == 0
    assert all(set(r["parsed"]) == {"name", "date", "participants"} for r in out.results)
    reasked = [r for r in out.results if r["attempts"] > 1]
    assert len(reasked) >= 1 and all(r["usage"]["prompt_tokens"] > 0 for r in reasked)


def test_tokens_expiring_every_few_seconds(vertex_emulator, timed_job):
    """Each access token is accepted for 1.5 s from its first use; the run lasts several lifetimes. Every 401 costs
    exactly one forced refresh and one repeat, never a second 401 or an error."""
    recs = records("ttl", 360)
    vertex_emulator.set_faults(token_ttl_s=1.5, latency_ms=100)
    out, wall = timed_job(recs, "--max_concurrency", "8")
    stats = settled_stats(vertex_emulator)
    row = account("tokens expire 1.5 s after first use", recs, out, stats, wall, {"token_ttl_s": 1.5})
    all_recovered(recs, out)
    n401 = stats["by_status"].get("401", 0)
    assert wall > 3 * 1.5 and n401 >= 2  # several token lifetimes, each ended by a 401
    assert n401 == stats["faults"]["token_expired"] == row["retries"]
    assert max(r["attempts"] for r in out.results) == 2
    assert stats["duplicate_ok"] == 0
