"""The retry policy: what is retried, how long it waits (server hints honoured, capped), when it stops."""

from __future__ import annotations

import pytest

from client.config import ClientConfig, Target
from client.constants import MAX_RETRY_AFTER
from client.errors import BadRequest, RateLimited, ServerError
from client.retry import RetryPolicy
from tests.client._support import FakeClock

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["retrying", "call"])
def run(request):
    """Both ways in: ``policy.retrying(...)(fn)``, and ``policy.call(fn, ...)`` (first attempt before tenacity)."""
    if request.param == "retrying":
        return lambda policy, fn, **kw: policy.retrying(**kw)(fn)
    return lambda policy, fn, **kw: policy.call(fn, **kw)


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


async def test_server_retry_delay_is_a_floor(run) -> None:
    sleeps: list[float] = []
    fn = Flaky(RateLimited("busy", retry_after=1.0), RateLimited("busy", retry_after=2.5))
    assert await run(RetryPolicy(max_delay=0.01), fn, sleep=sleeps.append) == "ok"
    assert fn.calls == 3
    assert sleeps[0] >= 1.0 and sleeps[1] >= 2.5


async def test_server_retry_delay_is_capped(run) -> None:
    sleeps: list[float] = []
    fn = Flaky(RateLimited("busy", retry_after=10_000))
    await run(RetryPolicy(max_delay=1), fn, sleep=sleeps.append)
    assert sleeps == [MAX_RETRY_AFTER]


async def test_full_jitter_backoff_stays_in_its_window(run) -> None:
    sleeps: list[float] = []
    fn = Flaky(*[ServerError("x")] * 7)
    await run(RetryPolicy(max_attempts=8, initial_delay=0.5, max_delay=4), fn, sleep=sleeps.append)
    windows = [min(0.5 * 2 ** n, 4) for n in range(7)]
    assert len(sleeps) == 7
    assert all(0 <= s <= w for s, w in zip(sleeps, windows))


async def test_gives_up_after_max_attempts_with_the_last_error(run) -> None:
    sleeps: list[float] = []
    last = ServerError("third")
    fn = Flaky(ServerError("first"), ServerError("second"), last, ServerError("never"))
    with pytest.raises(ServerError) as info:
        await run(RetryPolicy(max_attempts=3), fn, sleep=sleeps.append)
    assert info.value is last and fn.calls == 3 and len(sleeps) == 2


async def test_permanent_errors_are_not_retried(run) -> None:
    sleeps: list[float] = []
    fn = Flaky(BadRequest("no"))
    with pytest.raises(BadRequest):
        await run(RetryPolicy(), fn, sleep=sleeps.append)
    assert fn.calls == 1 and sleeps == []


async def test_stops_before_a_sleep_that_would_pass_the_deadline(run) -> None:
    clock = FakeClock()
    start = clock()
    fn = Flaky(*[RateLimited("busy", retry_after=4)] * 10)
    policy = RetryPolicy(max_attempts=100, deadline_s=10, max_delay=0.001)
    with pytest.raises(RateLimited):
        await run(policy, fn, sleep=clock.sleep, clock=clock, start=start)
    # Attempts at t=0, 4, 8; a third 4 s sleep would end at 12 > 10.
    assert fn.calls == 3 and clock.sleeps == [4, 4]


async def test_on_retry_sees_each_error_and_sleep(run) -> None:
    seen: list[tuple[str, float]] = []
    fn = Flaky(RateLimited("a", retry_after=1), ServerError("b"))
    await RetryPolicy(max_delay=0.001).retrying(sleep=lambda s: None,
                                                on_retry=lambda e, s: seen.append((e.message, s)))(fn)
    assert [m for m, _ in seen] == ["a", "b"] and seen[0][1] >= 1


async def test_async_sleep_is_awaited(run) -> None:
    clock = FakeClock()
    await run(RetryPolicy(), Flaky(ServerError("x")), sleep=clock.sleep, clock=clock)
    assert len(clock.sleeps) == 1


def test_policy_from_config() -> None:
    config = ClientConfig(target=Target("http://x", "none"), max_attempts=3, record_deadline_s=42,
                          max_retry_delay=7)
    assert RetryPolicy.from_config(config) == RetryPolicy(max_attempts=3, deadline_s=42, max_delay=7)


async def test_call_passes_arguments_and_needs_no_retrying_when_the_first_attempt_succeeds(monkeypatch) -> None:
    async def fn(a, b):
        return a + b

    def no_retrying(*args, **kwargs):
        raise AssertionError("a first attempt that succeeded needs no retrying object")

    policy = RetryPolicy()
    monkeypatch.setattr(RetryPolicy, "retrying", no_retrying)
    assert await policy.call(fn, 2, 3) == 5


async def test_call_retries_with_the_same_arguments() -> None:
    seen: list[tuple[int, int]] = []

    async def fn(a, b):
        seen.append((a, b))
        if len(seen) < 3:
            raise ServerError("x")
        return a * b

    sleeps: list[float] = []
    assert await RetryPolicy(max_delay=0.001).call(fn, 4, 5, sleep=sleeps.append) == 20
    assert seen == [(4, 5)] * 3 and len(sleeps) == 2
