"""TokenBucket (client/token_bucket.py): refill, oversized requests, refunds, and its docstring's example."""

from __future__ import annotations

import doctest

import pytest

from client import token_bucket
from client.token_bucket import TokenBucket


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_docstring_example_holds():
    result = doctest.testmod(token_bucket, raise_on_error=False)
    assert result.attempted >= 2 and result.failed == 0


def test_bucket_starts_full_refills_at_rate_and_caps_at_capacity():
    clock = FakeClock()
    bucket = TokenBucket(rate=10, capacity=5, clock=clock)
    assert bucket.level == 5
    bucket.take(5)
    assert bucket.level == 0
    clock.now = 0.3
    assert bucket.level == pytest.approx(3)
    assert bucket.wait_time(4) == pytest.approx(0.1)
    clock.now = 100
    assert bucket.level == 5  # never above capacity


def test_bucket_oversized_request_waits_for_a_full_bucket_then_goes_negative():
    clock = FakeClock()
    bucket = TokenBucket(rate=10, capacity=10, clock=clock)
    bucket.take(4)
    assert bucket.wait_time(25) == pytest.approx(0.4)  # waits for full, not for 25 tokens (which never come)
    clock.now = 0.4
    assert bucket.wait_time(25) == 0
    bucket.take(25)
    assert bucket.level == pytest.approx(-15)
    assert bucket.wait_time(1) == pytest.approx(1.6)


def test_bucket_refund_is_capped_at_capacity():
    bucket = TokenBucket(rate=1, capacity=10, clock=FakeClock())
    bucket.take(3)
    bucket.give(50)
    assert bucket.level == 10


def test_bucket_rejects_nonsense():
    with pytest.raises(ValueError):
        TokenBucket(rate=0, capacity=1)
