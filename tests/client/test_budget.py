"""The budget (client/budget.py): reservations, waiting on records in flight, final refusal, the running mean,
and the caller's budget_exhausted error record. No Beam, no sleeps."""

from __future__ import annotations

import asyncio

import pytest

from client.budget import NANO, Budget, BudgetConfig
from client.config import ClientConfig, Target
from client.pricing import PriceTable
from client.requests import build_request
from schemas.records import ErrorRecord, InputRecord, ResultRecord, Usage
from tests.client._support import completion

pytestmark = pytest.mark.anyio

PRICES = PriceTable(as_of="test", prices={"m": (1_000_000.0, 2_000_000.0)}, default=(0.0, 0.0))  # $1 / $2 per token
CONFIG = ClientConfig(target=Target("http://x", "none"), model="m")


def request(prompt: str = "one two three", **params):
    return build_request(InputRecord(prompt=prompt, params=params), CONFIG)  # est_prompt_tokens = 3 + 4 + 3 = 10


def usage(prompt: int, completion: int) -> Usage:
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


async def test_without_a_cap_it_only_meters_cost():
    budget = Budget(PRICES, output_tokens=5)
    holds = [await budget.reserve(request()) for _ in range(100)]
    assert all(holds)
    holds[0].settle(usage(10, 4))
    assert budget.spent_usd == pytest.approx(10 * 1 + 4 * 2)
    assert budget.counters.get("cost_nano_usd") == round(18 * NANO)
    assert not budget.exhausted


async def test_refuses_once_spend_plus_estimate_passes_the_cap_and_stays_refused():
    req = request()
    assert req.est_prompt_tokens == 10
    budget = Budget(PRICES, max_cost_usd=50, output_tokens=5)  # estimate: 10 * $1 + 5 * $2 = $20
    first = await budget.reserve(req)
    first.settle(usage(10, 5))  # $20 spent
    second = await budget.reserve(req)
    second.settle(usage(10, 5))  # $40 spent; $40 + $20 > $50
    assert await budget.reserve(req) is None
    assert budget.exhausted
    assert await budget.reserve(request("x")) is None  # even a cheaper record: refusal is final
    assert "--max_cost_usd 50" in budget.exhausted_message()


async def test_waits_for_records_in_flight_instead_of_refusing():
    budget = Budget(PRICES, max_cost_usd=50, output_tokens=5)
    held = [await budget.reserve(request()), await budget.reserve(request())]  # $40 reserved
    third = asyncio.ensure_future(budget.reserve(request()))
    await asyncio.sleep(0)
    assert not third.done()  # $0 spent + $40 reserved + $20 > $50: wait, don't refuse
    held[0].settle(usage(5, 0))  # the real cost was $5
    hold = await asyncio.wait_for(third, 1)
    assert hold is not None and not budget.exhausted
    held[1].settle(None)  # failed before any answer: nothing billed
    hold.settle(usage(5, 0))
    assert budget.spent_usd == pytest.approx(10)


async def test_token_cap():
    budget = Budget(PRICES, max_total_tokens=30, output_tokens=5)  # estimate 15 tokens
    (await budget.reserve(request())).settle(usage(10, 5))
    assert await budget.reserve(request()) is not None  # 15 + 15 <= 30
    budget2 = Budget(PRICES, max_total_tokens=29, output_tokens=5)
    (await budget2.reserve(request())).settle(usage(10, 5))
    assert await budget2.reserve(request()) is None


async def test_expected_output_is_the_assumption_then_the_running_mean_capped_by_max_tokens():
    budget = Budget(PRICES, output_tokens=256)
    assert budget.expected_output_tokens(request()) == 256
    assert budget.expected_output_tokens(request(max_tokens=50)) == 50
    assert budget.expected_output_tokens(request(n=3)) == 768
    (await budget.reserve(request())).settle(usage(10, 30))
    (await budget.reserve(request())).settle(usage(10, 50))
    assert budget.expected_output_tokens(request()) == 40
    assert budget.expected_output_tokens(request(max_tokens=20)) == 20
    (await budget.reserve(request(n=2))).settle(usage(10, 80))  # 40 per choice
    assert budget.expected_output_tokens(request()) == 40


async def test_concurrent_records_cannot_overshoot_much():
    budget = Budget(PRICES, max_cost_usd=1000, output_tokens=5)

    async def record():
        hold = await budget.reserve(request())
        if hold is None:
            return False
        await asyncio.sleep(0)
        hold.settle(usage(10, 5))  # each really costs its estimate, $20
        return True

    done = await asyncio.gather(*(record() for _ in range(200)))
    assert sum(done) == 50 and budget.spent_usd <= 1000


def test_budget_config_is_picklable_and_builds_a_budget():
    import pickle

    config = pickle.loads(pickle.dumps(BudgetConfig(max_cost_usd=2.0, output_tokens=7)))
    budget = config.build()
    assert (budget.max_cost_usd, budget.capped, budget.prices.as_of) == (2.0, True, PriceTable.load().as_of)


async def test_the_caller_turns_a_refusal_into_a_retryable_budget_exhausted_error(budget_caller):
    budget = Budget(PRICES, max_cost_usd=25, output_tokens=5)
    caller, script = budget_caller([completion("hi", usage={"prompt_tokens": 10, "completion_tokens": 5,
                                                           "total_tokens": 15})], budget, model="m")
    first = await caller.complete(InputRecord(id="a", prompt="one two three"))
    second = await caller.complete(InputRecord(id="b", prompt="one two three"))
    assert isinstance(first, ResultRecord)
    assert isinstance(second, ErrorRecord)
    assert (second.error_type, second.retryable, second.attempts, second.stage) == (
        "budget_exhausted", True, 0, "request")
    assert second.record == {"id": "b", "prompt": "one two three"} and second.request_key == first.request_key
    assert len(script.requests) == 1  # nothing was sent for the refused record
    assert budget.spent_usd == pytest.approx(20) and budget.counters.get("error_budget_exhausted") == 1
