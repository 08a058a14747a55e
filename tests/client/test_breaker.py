"""The circuit breaker (client/breaker.py): pure, then through ChatCaller against a scripted server."""

from __future__ import annotations

import httpx2
import pytest

from client.auth import EnvKeySource
from client.breaker import Breaker, CircuitOpen
from client.config import Target
from client.errors import is_retryable
from schemas.records import ErrorRecord, InputRecord, ResultRecord
from tests.client._support import BASE_URL, FakeClock, completion, vertex_error


def test_opens_after_a_window_of_identical_permanent_failures():
    breaker = Breaker(window=3, clock=FakeClock())
    for _ in range(2):
        breaker.record(401, "m")
        assert breaker.check("m") is None
    breaker.record(401, "m")
    refused = breaker.check("m")
    assert isinstance(refused, CircuitOpen)
    assert (refused.error_type, refused.status_code, is_retryable(refused)) == ("auth_error", 401, True)
    assert refused.retry_in_run is False and "--replay_errors" in refused.message
    assert breaker.check("other-model") is not None  # a 401 is about the credentials: every model stops


@pytest.mark.parametrize("between", [200, 429, 500, None, 403])
def test_anything_else_in_between_starts_the_count_again(between):
    breaker = Breaker(window=3, clock=FakeClock())
    for status in (401, 401, between, 401, 401):
        breaker.record(status, "m")
    assert breaker.check("m") is None and breaker.opened == 0


def test_404_is_keyed_by_model():
    breaker = Breaker(window=2, clock=FakeClock())
    breaker.record(404, "typo-model")
    breaker.record(404, "typo-model")
    assert isinstance(breaker.check("typo-model"), CircuitOpen)
    assert breaker.check("good-model") is None
    assert breaker.check("typo-model").error_type == "not_found"


def test_404s_of_different_models_do_not_add_up():
    breaker = Breaker(window=2, clock=FakeClock())
    breaker.record(404, "a")
    breaker.record(404, "b")
    assert breaker.check("a") is None and breaker.check("b") is None


def test_half_open_probe_and_close_on_success():
    clock = FakeClock()
    breaker = Breaker(window=2, probe_interval_s=60, clock=clock)
    breaker.record(403, "m")
    breaker.record(403, "m")
    assert breaker.check("m") is not None
    clock.now += 61
    assert breaker.check("m") is None  # the probe goes
    assert breaker.check("m") is not None  # one probe per interval
    breaker.record(403, "m")  # the probe failed: still open
    assert breaker.is_open and breaker.opened == 1
    clock.now += 61
    assert breaker.check("m") is None
    breaker.record(200, "m")  # the probe succeeded: closed
    assert not breaker.is_open and breaker.check("m") is None




def _recs(n: int) -> list[InputRecord]:
    return [InputRecord(id=f"r{i}", prompt=f"hello {i}") for i in range(n)]


@pytest.mark.anyio
async def test_caller_stops_sending_after_the_window_and_refuses_the_rest(harness, monkeypatch):
    monkeypatch.setenv("CHATBEAM_TEST_KEY", "sk-test-key-0123456789")
    h = harness([httpx2.Response(401, json=vertex_error(401, "UNAUTHENTICATED", "bad key"))],
                target=Target.openai_compatible(BASE_URL, "CHATBEAM_TEST_KEY"),
                token_source=EnvKeySource("CHATBEAM_TEST_KEY"))
    h.caller.breaker = Breaker(window=3, clock=h.clock)
    outs = [await h.caller.complete(r) for r in _recs(10)]
    assert len(h.script.requests) == 3  # then nothing more was sent
    sent, refused = outs[:3], outs[3:]
    assert {(o.error_type, o.retryable, o.attempts) for o in sent} == {("auth_error", False, 1)}
    assert {(o.error_type, o.status_code, o.retryable, o.attempts) for o in refused} == {("auth_error", 401, True, 0)}
    assert all(isinstance(o, ErrorRecord) and o.record is not None for o in refused)
    snap = h.counters.snapshot()
    assert snap["breaker_opened"] == 1 and snap["breaker_refused"] == 7 and snap["attempts"] == 3


@pytest.mark.anyio
async def test_expired_tokens_answered_by_a_refresh_never_open_the_breaker(harness):
    expired = httpx2.Response(401, json=vertex_error(401, "UNAUTHENTICATED", "ACCESS_TOKEN_EXPIRED"))
    h = harness([expired, completion("ok")] * 10)
    h.caller.breaker = Breaker(window=2, clock=h.clock)
    outs = [await h.caller.complete(r) for r in _recs(10)]
    assert all(isinstance(o, ResultRecord) for o in outs)
    assert h.caller.breaker.opened == 0
