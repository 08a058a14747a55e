"""started_at / finished_at on result and error records (the run report's timeline): wall-clock ISO-8601 UTC,
taken when the caller takes the record and when it hands the output back — retries and backoff included."""

from __future__ import annotations

import datetime

import httpx2
import pytest

from client.caller import ChatCaller, utc_iso
from client.config import ClientConfig, Target
from schemas.records import ErrorRecord, InputRecord, ResultRecord, parse_line
from tests.client._support import BASE_URL, FakeClock, Script, completion, vertex_error

pytestmark = pytest.mark.anyio

WALL0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_caller(steps, **overrides) -> tuple[ChatCaller, FakeClock]:
    from client.auth import LocalTokenSource

    clock = FakeClock()
    config = ClientConfig(target=Target(BASE_URL, "local_tokens"), **{"model": "google/gemini-test", **overrides})
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(Script(list(steps))))
    caller = ChatCaller(config, http_client=http, token_source=LocalTokenSource(clock=clock), sleep=clock.sleep,
                        clock=clock, wall_clock=lambda: WALL0 + clock.now - 1000.0)
    return caller, clock


def parse(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


def test_utc_iso_is_iso_8601_utc_with_milliseconds():
    assert utc_iso(WALL0 + 1.2345) == "2026-01-01T00:00:01.234+00:00"
    assert parse(utc_iso(WALL0)).utcoffset() == datetime.timedelta(0)


async def test_a_result_spans_its_retries():
    caller, clock = make_caller([httpx2.Response(429, json=vertex_error(429, "RESOURCE_EXHAUSTED", retry_delay="7s")),
                                 completion("ok")], max_retry_delay=1)
    out = await caller.complete(InputRecord(id="a", prompt="hi"))
    assert isinstance(out, ResultRecord) and out.attempts == 2
    assert out.started_at == "2026-01-01T00:00:00.000+00:00"
    span = (parse(out.finished_at) - parse(out.started_at)).total_seconds()
    assert span >= 7 and abs(span * 1000 - out.latency_ms) < 1  # the same interval as latency_ms
    # Written and read back as JSON, the fields survive.
    assert ResultRecord.model_validate_json(out.model_dump_json()).finished_at == out.finished_at


async def test_a_call_error_has_both_times_and_a_read_error_has_neither():
    caller, _ = make_caller([httpx2.Response(400, json=vertex_error(400, "INVALID_ARGUMENT"))])
    out = await caller.complete(InputRecord(id="b", prompt="hi"))
    assert isinstance(out, ErrorRecord) and out.error_type == "bad_request"
    assert out.started_at and out.finished_at and parse(out.finished_at) >= parse(out.started_at)
    read = parse_line("{not json")
    assert isinstance(read, ErrorRecord) and read.started_at is None and read.finished_at is None
