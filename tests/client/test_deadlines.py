"""--request_timeout is a total deadline per attempt and --record_deadline bounds everything a record does.

The servers here misbehave forever (a body trickling one byte at a time, an endless stream, a request that never
returns, a limiter or budget that never admits); each test asserts the record still ends, as a ``timeout`` error,
and that what it held (limiter permit, budget hold) was given back. Deadlines are real (fractions of a second);
the bound the tests wait for is generous (20 s), so a loaded machine cannot fail them -- only a hang can.
"""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator

import httpx2
import pytest

from client.budget import Budget
from client.pricing import PriceTable
from schemas.records import ErrorRecord, InputRecord, ResultRecord
from tests.client._support import chunk, completion

pytestmark = pytest.mark.anyio

BOUND_S = 20.0  # far above every deadline below; reaching it means the record hung


class Trickle(httpx2.AsyncByteStream):
    """A body that never ends: ``piece`` every ``gap_s`` seconds (today's per-read timeout never fires)."""

    def __init__(self, piece: bytes = b" ", gap_s: float = 0.02, first: bytes = b"") -> None:
        self.piece, self.gap_s, self.first, self.sent = piece, gap_s, first, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.first:
            yield self.first
        while True:
            await asyncio.sleep(self.gap_s)
            self.sent += 1
            yield self.piece


def rec(i: int = 0) -> InputRecord:
    return InputRecord(id=f"r{i}", prompt="Say hi")


async def complete(h, record=None):
    return await asyncio.wait_for(h.caller.complete(record or rec()), BOUND_S)


async def test_a_body_trickling_forever_is_cut_at_the_request_timeout(harness):
    h = harness([lambda request: httpx2.Response(200, stream=Trickle(), headers={"content-type": "application/json"})],
                request_timeout=0.3, max_attempts=2)
    out = await complete(h)
    assert isinstance(out, ErrorRecord) and out.error_type == "timeout" and out.retryable
    assert out.attempts == 2 and "--request_timeout 0.3" in out.message


async def test_an_endless_stream_is_cut_at_the_request_timeout(harness):
    first = f"data: {json.dumps(chunk('hi'))}\n\n".encode()
    piece = f"data: {json.dumps(chunk(' more'))}\n\n".encode()
    h = harness([lambda request: httpx2.Response(200, stream=Trickle(piece, first=first),
                                                 headers={"content-type": "text/event-stream"})],
                request_timeout=0.3, max_attempts=1, stream=True)
    out = await complete(h)
    assert isinstance(out, ErrorRecord) and out.error_type == "timeout" and out.attempts == 1


async def test_the_record_deadline_bounds_attempts_in_flight_and_retries(harness):
    async def never(request):
        await asyncio.sleep(3600)

    # Backoff sleeps are on the fake clock and tiny: only the real deadline can end this record.
    h = harness([never], request_timeout=0.25, max_attempts=50, record_deadline_s=0.8, max_retry_delay=0.001)
    out = await complete(h)
    assert isinstance(out, ErrorRecord) and out.error_type == "timeout" and out.retryable
    assert "--record_deadline 0.8" in out.message and 1 <= out.attempts < 50


class NeverAdmits:
    def __init__(self) -> None:
        self.waiting = 0

    async def acquire(self, est_tokens: int):
        self.waiting += 1
        await asyncio.Event().wait()


async def test_the_record_deadline_bounds_a_limiter_that_never_admits(harness):
    limiter = NeverAdmits()
    h = harness([completion("never sent")], limiter=limiter, record_deadline_s=0.3)
    out = await complete(h)
    assert isinstance(out, ErrorRecord) and out.error_type == "timeout" and out.attempts == 0
    assert "waiting for a limiter permit" in out.message and h.script.requests == []


class CountingLimiter:
    def __init__(self) -> None:
        self.acquired, self.done = 0, []

    async def acquire(self, est_tokens: int):
        self.acquired += 1
        owner = self

        class _Permit:
            def done(self, outcome: str, tokens_used: int | None = None) -> None:
                owner.done.append(outcome)

        return _Permit()


async def test_a_cancelled_attempt_gives_back_its_permit_and_budget_hold(harness):
    async def never(request):
        await asyncio.sleep(3600)

    limiter = CountingLimiter()
    budget = Budget(PriceTable.load(), max_cost_usd=100.0)
    h = harness([never], limiter=limiter, request_timeout=60, record_deadline_s=0.3)
    h.caller.budget = budget
    out = await complete(h)
    assert isinstance(out, ErrorRecord) and out.error_type == "timeout"
    assert limiter.acquired == 1 and limiter.done == ["error"]  # released although the attempt was cancelled
    assert budget.snapshot()["in_flight"] == 0 and budget.snapshot()["reserved_usd"] == 0


async def test_usage_of_answered_attempts_is_kept_when_the_deadline_passes(harness):
    async def never(request):
        await asyncio.sleep(3600)

    bad = completion("not json", usage={"prompt_tokens": 40, "completion_tokens": 3, "total_tokens": 43})
    budget = Budget(PriceTable.load())
    h = harness([bad, never], schema="CalendarEvent", record_deadline_s=0.5, max_reasks=1)
    h.caller.budget = budget
    out = await complete(h)
    assert isinstance(out, ErrorRecord) and out.error_type == "timeout" and out.attempts == 2
    assert budget.spent_tokens == 43  # the first (answered, re-asked) attempt is still charged
    assert out.usage.total_tokens == 43 and out.response_text == "not json"  # and the record says what it paid for


async def test_a_fast_answer_is_unaffected(harness):
    h = harness([completion("hi")], request_timeout=5, record_deadline_s=10)
    out = await complete(h)
    assert isinstance(out, ResultRecord) and out.content == "hi"
