"""Issue 16 item 3: a nightly job never hangs. Each attempt has a total deadline (--request_timeout: sending to the
last byte, streaming included) and --record_deadline bounds everything a record does.

Reproductions against stdlib servers on 127.0.0.1: a body sent one byte at a time, an endless SSE stream, an endless
chunked body. Before the fix each of these runs never finished. The bound each test allows is generous (the
deadlines are 1-3 s; the run must end within 90 s); only a hang fails it.
"""

from __future__ import annotations

import time

import pytest

from pipelines.extract import run
from tests.conftest import read_jsonl, write_jsonl
from tests.reliability.servers import endless_chunked, endless_stream, misbehaving, trickle_body

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

BOUND_S = 90.0


def job(tmp_path, server, n: int, *args: str):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": f"h{i}", "prompt": f"hang {i}"} for i in range(n)])
    started = time.monotonic()
    result = run(["--input", str(src), "--output", str(tmp_path / "r"), "--errors", str(tmp_path / "e"),
                  "--base_url", server.url, "--model", "m", "--progress_interval_s", "0", *args])
    wall = time.monotonic() - started
    return result, read_jsonl(str(tmp_path / "r-")), read_jsonl(str(tmp_path / "e-")), wall


def test_a_trickling_body_is_bounded_by_the_record_deadline(tmp_path):
    """The issue's reproduction, scaled down: a body at one byte per 0.1 s (minutes for 1 KB), --request_timeout 1,
    --record_deadline 3: each record ends after about 3 s, as a retryable timeout."""
    with misbehaving(trickle_body(gap_s=0.1)) as server:
        result, results, errors, wall = job(tmp_path, server, 3, "--request_timeout", "1", "--record_deadline", "3",
                                            "--max_attempts", "10")
    assert results == [] and len(errors) == 3 and wall < BOUND_S
    assert {(e["error_type"], e["retryable"]) for e in errors} == {("timeout", True)}
    assert all(1 <= e["attempts"] <= 4 for e in errors)  # ~1 s each, within 3 s, with backoff in between
    # Every request the server saw is an attempt; the record deadline may cut a record's last attempt before its
    # request reached the server (counted, never sent): at most one such attempt per record.
    attempts = sum(e["attempts"] for e in errors)
    assert server.requests <= attempts <= server.requests + len(errors)


def test_an_endless_stream_is_cut_by_the_request_timeout(tmp_path):
    with misbehaving(endless_stream()) as server:
        _, results, errors, wall = job(tmp_path, server, 2, "--stream", "--request_timeout", "1",
                                       "--max_attempts", "2")
    assert results == [] and len(errors) == 2 and wall < BOUND_S
    assert {(e["error_type"], e["attempts"]) for e in errors} == {("timeout", 2)}
    assert "--request_timeout 1" in errors[0]["message"]


def test_an_endless_chunked_body_is_cut_by_the_request_timeout(tmp_path):
    with misbehaving(endless_chunked()) as server:
        _, results, errors, wall = job(tmp_path, server, 2, "--request_timeout", "1", "--max_attempts", "1")
    assert results == [] and len(errors) == 2 and wall < BOUND_S
    assert {(e["error_type"], e["attempts"]) for e in errors} == {("timeout", 1)}
