"""report/render.py: the page is self-contained, escapes what records hold, and says why a chart is missing."""

from __future__ import annotations

import re

from client.caller import utc_iso
from client.pricing import PriceTable
from report.aggregate import RunAggregate
from report.render import render_html

T0 = 1_767_225_600.0
PRICES = PriceTable(as_of="2026-01-01", prices={}, default=(1.0, 1.0))


def _data(n: int = 50, *, telemetry: bool = True) -> dict:
    agg = RunAggregate(PRICES)
    for i in range(n):
        agg.add({"id": f"r{i}", "request_key": "k", "model": "m", "latency_ms": 100 + i, "attempts": 1,
                 "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                 "started_at": utc_iso(T0 + i), "finished_at": utc_iso(T0 + i + 0.1)})
    agg.add({"id": "<script>alert(1)</script>", "stage": "request", "error_type": "bad_request",
             "message": "<img src=x onerror=alert(2)>", "attempts": 1, "started_at": utc_iso(T0),
             "finished_at": utc_iso(T0 + 1)})
    if telemetry:
        agg.add_telemetry({"fields": ["t", "in_flight", "limit", "status_429"],
                           "samples": [[T0 + s, 3, 8, s] for s in range(n)]})
    agg.run_info = {"run_id": "abc", "options": {"base_url": "http://u:pw@h/v1"}}
    return agg.data()


def test_the_page_is_self_contained_and_has_every_chart():
    page = render_html(_data())
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)  # nothing loaded from anywhere
    assert re.findall(r'data-chart="(\w+)"', page) == ["completions", "concurrency", "throttling", "latency", "cost"]
    assert "Bokeh" in page and 1_000_000 < len(page) < 1_600_000  # BokehJS core inlined, no other bundle


def test_strings_from_records_are_escaped():
    page = render_html(_data())
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page
    assert "pw@" not in page and "u:[REDACTED]@h" in page


def test_missing_data_is_a_sentence_not_an_empty_chart():
    agg = RunAggregate(PRICES)
    agg.add({"id": "x", "stage": "read", "error_type": "invalid_json", "message": "bad"})
    page = render_html(agg.data())
    assert re.findall(r'data-chart-missing="(\w+)"', page) == ["completions", "concurrency", "throttling",
                                                                "latency", "cost"]
    assert 'data-chart="' not in page
    # Without engine samples the concurrency chart is drawn from the records, and the page says what is missing.
    assert "No engine samples were found" in render_html(_data(telemetry=False))
