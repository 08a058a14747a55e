"""The retry policy: what is retried, how long it waits (server hints honoured, capped), when it stops."""

from __future__ import annotations

import pytest

from client.config import ClientConfig, Target
from client.constants import MAX_RETRY_AFTER
from client.errors import BadRequest, RateLimited, ServerError
from client.retry import RetryPolicy
from tests.client._support import FakeClock

pytestmark = pytest.mark.anyio


class Flaky:
    """Fails with ``errors`` in turn, then returns "ok"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_server_retry_delay_is_a_floor() -> None:
    sleeps: list[float] = []
    fn = Flaky(RateLimited("busy", retry_after=1.0), RateLimited("busy", retry_after=2.5))
    assert await RetryPolicy(max_delay=0.01).retrying(sleep=sleeps.append)(fn) == "ok"
    assert fn.calls == 3
    assert sleeps[0] >= 1.0 and sleeps[1] >= 2.5


async def test_server_retry_delay_is_capped() -> None:
    sleeps: list[float] = []
    fn = Flaky(RateLimited("busy", retry_after=10_000))
    await RetryPolicy(max_delay=1).retrying(sleep=sleeps.append)(fn)
    assert sleeps == [MAX_RETRY_AFTER]


async def test_full_jitter_backoff_stays_in_its_window() -> None:
    sleeps: list[float] = []
    fn = Flaky(*[ServerError("x")] * 7)
    await RetryPolicy(max_attempts=8, initial_delay=0.5, max_delay=4).retrying(sleep=sleeps.append)(fn)
    windows = [min(0.5 * 2 ** n, 4) for n in range(7)]
    assert len(sleeps) == 7
    assert all(0 <= s <= w for s, w in zip(sleeps, windows))


async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    sleeps: list[float] = []
    last = ServerError("third")
    fn = Flaky(ServerError("first"), ServerError("second"), last, ServerError("never"))
    with pytest.raises(ServerError) as info:
        await RetryPolicy(max_attempts=3).retrying(sleep=sleeps.append)(fn)
    assert info.value is last and fn.calls == 3 and len(sleeps) == 2


async def test_permanent_errors_are_not_retried() -> None:
    sleeps: list[float] = []
    fn = Flaky(BadRequest("no"))
    with pytest.raises(BadRequest):
        await RetryPolicy().retrying(sleep=sleeps.append)(fn)
    assert fn.calls == 1 and sleeps == []


async def test_stops_before_a_sleep_that_would_pass_the_deadline() -> None:
    clock = FakeClock()
    start = clock()
    fn = Flaky(*[RateLimited("busy", retry_after=4)] * 10)
    policy = RetryPolicy(max_attempts=100, deadline_s=10, max_delay=0.001)
    with pytest.raises(RateLimited):
        await policy.retrying(sleep=clock.sleep, clock=clock, start=start)(fn)
    # Attempts at t=0, 4, 8; a third 4 s sleep would end at 12 > 10.
    assert fn.calls == 3 and clock.sleeps == [4, 4]


async def test_on_retry_sees_each_error_and_sleep() -> None:
    seen: list[tuple[str, float]] = []
    fn = Flaky(RateLimited("a", retry_after=1), ServerError("b"))
    await RetryPolicy(max_delay=0.001).retrying(sleep=lambda s: None,
                                                on_retry=lambda e, s: seen.append((e.message, s)))(fn)
    assert [m for m, _ in seen] == ["a", "b"] and seen[0][1] >= 1


async def test_async_sleep_is_awaited() -> None:
    clock = FakeClock()
    await RetryPolicy().retrying(sleep=clock.sleep, clock=clock)(Flaky(ServerError("x")))
    assert len(clock.sleeps) == 1


def test_policy_from_config() -> None:
    config = ClientConfig(target=Target("http://x", "none"), max_attempts=3, record_deadline_s=42,
                          max_retry_delay=7)
    assert RetryPolicy.from_config(config) == RetryPolicy(max_attempts=3, deadline_s=42, max_delay=7)
