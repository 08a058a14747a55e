"""Dry-run estimates (client/estimate.py): the body as sent, tokens, output assumption, cost, totals."""

from __future__ import annotations

import pytest

from client.config import ClientConfig, Target
from client.errors import BadRequest
from client.estimate import DryRunTotals, estimate, render_body, unsendable
from client.pricing import PriceTable
from client.requests import build_request
from schemas.records import InputRecord

PRICES = PriceTable.load()
CONFIG = ClientConfig(target=Target("http://x", "none"), model="google/gemini-2.0-flash-001",
                      google={"thinking_config": {"thinking_budget": 0}})


def test_body_is_what_the_sdk_sends_with_extra_body_merged_at_the_top():
    req = build_request(InputRecord(prompt="Hi", params={"temperature": 0, "top_k": 5}), CONFIG)
    body = render_body(req)
    assert body == {"model": "google/gemini-2.0-flash-001", "messages": [{"role": "user", "content": "Hi"}],
                    "temperature": 0, "top_k": 5, "extra_body": {"google": {"thinking_config": {"thinking_budget": 0}}}}
    assert render_body(req, stream=True)["stream_options"] == {"include_usage": True}


def test_output_tokens_come_from_max_tokens_else_the_assumption_times_n():
    assert estimate(InputRecord(prompt="Hi"), CONFIG, PRICES, output_tokens=100).output_tokens == 100
    assert estimate(InputRecord(prompt="Hi", params={"max_tokens": 30}), CONFIG, PRICES).output_tokens == 30
    assert estimate(InputRecord(prompt="Hi", params={"n": 2}), CONFIG, PRICES, output_tokens=10).output_tokens == 20


def test_cost_uses_the_price_table_for_the_request_model():
    est = estimate(InputRecord(id="a", prompt="Hi", model="google/gemini-2.5-pro"), CONFIG, PRICES, output_tokens=1000)
    rate_in, rate_out = PRICES.rates("google/gemini-2.5-pro")
    assert est.cost_usd == pytest.approx((est.prompt_tokens * rate_in + 1000 * rate_out) / 1e6)
    line = est.to_json_dict()
    assert line["id"] == "a" and line["est_output_tokens"] == 1000 and line["body"]["model"] == "google/gemini-2.5-pro"


def test_unsendable_records_raise_and_become_the_error_the_real_run_would_write():
    rec = InputRecord(id="bad", prompt="x", params={"stream": True})
    with pytest.raises(BadRequest) as info:
        estimate(rec, CONFIG, PRICES)
    err = unsendable(rec, info.value)
    assert (err.id, err.error_type, err.retryable, err.attempts, err.record) == (
        "bad", "bad_request", False, 0, {"id": "bad", "prompt": "x", "params": {"stream": True}})


def test_totals_add_and_merge_per_model():
    a, b = DryRunTotals(), DryRunTotals()
    a.add(estimate(InputRecord(prompt="Hi"), CONFIG, PRICES, 10))
    b.add(estimate(InputRecord(prompt="Hi", model="google/gemini-2.5-pro"), CONFIG, PRICES, 10))
    b.add(estimate(InputRecord(prompt="Hello"), CONFIG, PRICES, 10))
    total = DryRunTotals().merge([a, b])
    assert total.records == 3 and total.output_tokens == 30
    assert total.by_model["google/gemini-2.0-flash-001"]["records"] == 2
    assert total.cost_usd == pytest.approx(a.cost_usd + b.cost_usd)
    assert total.to_json_dict(PRICES, 10)["prices_as_of"] == PRICES.as_of
