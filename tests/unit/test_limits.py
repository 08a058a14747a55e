"""RequestLimiter: buckets, pacing, TPM settlement, AIMD, throttled-time accounting. No test sleeps.

Two kinds of fake time:
- ``FakeClock`` + ``recording_sleep``: a sleep that records its duration and advances the clock (tenacity style),
  for one task at a time.
- ``VirtualTimeLoop``: an asyncio loop whose clock jumps to the next timer instead of waiting, so many tasks and
  ``asyncio.sleep`` run in virtual time (the limiter gets ``clock=loop.time, sleep=asyncio.sleep``).
"""

from __future__ import annotations

import asyncio
import collections
import random
import selectors

import pytest

from client.limits import Permit, RequestLimiter, TokenBucket


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def recording_sleep(clock: FakeClock, sleeps: list[float]):
    async def sleep(seconds: float) -> None:
        sleeps.append(round(seconds, 9))
        clock.now += seconds
    return sleep


class _VirtualSelector(selectors.BaseSelector):
    """Never blocks: when nothing is ready, it advances the virtual clock by the loop's timeout."""

    def __init__(self, clock: FakeClock) -> None:
        self._real = selectors.DefaultSelector()
        self._clock = clock

    def register(self, fileobj, events, data=None):
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj):
        return self._real.unregister(fileobj)

    def select(self, timeout=None):
        ready = self._real.select(0)
        if ready:
            return ready
        if timeout is None:
            raise RuntimeError("virtual-time deadlock: nothing is scheduled and nothing can wake the loop")
        self._clock.now += max(0.0, timeout)
        return []

    def get_map(self):
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.clock = FakeClock()
        super().__init__(_VirtualSelector(self.clock))

    def time(self) -> float:
        return self.clock.now


def run_virtual(main):
    """Run ``main(clock)`` on a fresh virtual-time loop; returns its result."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main(loop.clock))
    finally:
        loop.close()


def run(coro):
    return asyncio.run(coro)


# -- TokenBucket ------------------------------------------------------------------------------------------------


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


# -- RPM / TPM --------------------------------------------------------------------------------------------------


def test_rpm_allows_a_one_second_burst_then_paces_requests_evenly():
    clock, sleeps = FakeClock(), []
    limiter = RequestLimiter(max_concurrency=100, rpm=600, adaptive=False, clock=clock,
                             sleep=recording_sleep(clock, sleeps))

    async def main():
        stamps = []
        for _ in range(25):
            permit = await limiter.acquire()
            stamps.append(clock.now)
            permit.done("ok")
        return stamps

    stamps = run(main())
    assert stamps[:10] == [0.0] * 10  # 600/min → 10/s; the bucket holds one second
    gaps = [b - a for a, b in zip(stamps[9:], stamps[10:])]
    assert gaps == pytest.approx([0.1] * 15)
    assert sleeps == pytest.approx([0.1] * 15)
    assert limiter.throttled_seconds == pytest.approx(1.5)


def test_rpm_spacing_holds_with_many_concurrent_callers():
    async def main(clock):
        limiter = RequestLimiter(max_concurrency=50, rpm=120, adaptive=False, clock=clock, sleep=asyncio.sleep,
                                 burst_s=0.5)  # 2/s; the bucket holds one request
        stamps = []

        async def one():
            async with asyncio.timeout(60):
                permit = await limiter.acquire()
            stamps.append(clock())
            permit.done("ok")

        await asyncio.gather(*(one() for _ in range(9)))
        return stamps

    stamps = run_virtual(main)
    assert stamps == pytest.approx([0.5 * i for i in range(9)])


def test_tpm_reserves_input_plus_output_estimate_and_settles_on_done():
    clock = FakeClock()
    limiter = RequestLimiter(max_concurrency=10, tpm=6000, adaptive=False, clock=clock,
                             sleep=recording_sleep(clock, []), output_tokens=20)  # 100 tokens/s, holds 100
    bucket = limiter._tpm

    async def main():
        p = await limiter.acquire(30)
        assert p.reserved_tokens == 50 and bucket.level == 50
        p.done("ok", tokens_used=40)  # used 10 fewer than reserved: refunded
        assert bucket.level == pytest.approx(60)

        p = await limiter.acquire(10)
        reserved = p.reserved_tokens
        p.done("ok", tokens_used=90)  # used more than reserved: charged
        assert bucket.level == pytest.approx(60 - 90)

    run(main())


def test_tpm_throttled_attempt_is_refunded_and_error_keeps_its_reservation():
    clock = FakeClock()
    limiter = RequestLimiter(max_concurrency=10, tpm=6000, adaptive=False, clock=clock,
                             sleep=recording_sleep(clock, []), output_tokens=0)
    bucket = limiter._tpm

    async def main():
        p = await limiter.acquire(40)
        p.done("throttled")  # the server refused it: nothing was spent
        assert bucket.level == 100
        p = await limiter.acquire(40)
        p.done("error")  # unknown: maybe the server did the work
        assert bucket.level == 60

    run(main())


def test_tpm_waits_for_tokens_and_output_estimate_learns_from_usage():
    clock, sleeps = FakeClock(), []
    limiter = RequestLimiter(max_concurrency=10, tpm=6000, adaptive=False, clock=clock,
                             sleep=recording_sleep(clock, sleeps), output_tokens=0)

    async def main():
        (await limiter.acquire(80)).done("ok", tokens_used=80)
        (await limiter.acquire(50)).done("ok", tokens_used=50)  # 20 left: waits 0.3 s for 30 more
        for _ in range(100):
            clock.now += 10
            (await limiter.acquire(10)).done("ok", tokens_used=60)  # 50 output tokens each time

    run(main())
    assert sleeps == pytest.approx([0.3])
    assert limiter.stats()["output_tokens_estimate"] == pytest.approx(50, abs=1)


def test_request_larger_than_the_tpm_bucket_does_not_deadlock():
    clock, sleeps = FakeClock(), []
    limiter = RequestLimiter(max_concurrency=10, tpm=600, adaptive=False, clock=clock,
                             sleep=recording_sleep(clock, sleeps), output_tokens=0)  # 10/s, holds 10

    async def main():
        (await limiter.acquire(4)).done("ok", tokens_used=4)  # 6 left
        big = await asyncio.wait_for(limiter.acquire(25), timeout=5)  # waits for a full bucket: 0.4 s
        big.done("ok", tokens_used=25)
        small = await limiter.acquire(5)  # -15 → needs 5: 2 s
        small.done("ok", tokens_used=5)

    run(main())
    assert sleeps == pytest.approx([0.4, 2.0])


def test_pacing_validates_arguments():
    with pytest.raises(ValueError):
        RequestLimiter(max_concurrency=0)
    with pytest.raises(ValueError):
        RequestLimiter(max_concurrency=1, rpm=0)
    with pytest.raises(ValueError):
        RequestLimiter(max_concurrency=1, backoff=1.0)


# -- slots, permits ---------------------------------------------------------------------------------------------


def test_done_is_idempotent_and_validates_the_outcome():
    limiter = RequestLimiter(max_concurrency=4, adaptive=False)

    async def main():
        p = await limiter.acquire()
        assert limiter.in_flight == 1
        p.done("ok")
        p.done("ok")
        p.done("throttled")
        assert limiter.in_flight == 0
        assert limiter.outcomes == {"ok": 1, "throttled": 0, "error": 0}
        q = await limiter.acquire()
        with pytest.raises(ValueError):
            q.done("fine")

    run(main())


def test_permit_as_context_manager_reports_ok_or_error():
    limiter = RequestLimiter(max_concurrency=4, adaptive=False)

    async def main():
        with await limiter.acquire():
            pass
        with pytest.raises(KeyError):
            with await limiter.acquire():
                raise KeyError("x")
        with await limiter.acquire() as p:
            p.done("throttled")

    run(main())
    assert limiter.outcomes == {"ok": 1, "throttled": 1, "error": 1}
    assert limiter.in_flight == 0


def test_waiting_for_a_plain_max_concurrency_slot_is_not_throttling():
    async def main(clock):
        limiter = RequestLimiter(max_concurrency=2, adaptive=False, clock=clock, sleep=asyncio.sleep)
        held = [await limiter.acquire(), await limiter.acquire()]
        waiter = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(5)
        assert not waiter.done()
        held[0].done("ok")
        permit = await waiter
        assert clock() == 5
        return limiter, permit

    limiter, permit = run_virtual(main)
    assert limiter.throttled_seconds == 0
    assert limiter.stats()["peak_in_flight"] == 2


def test_cancelled_acquire_leaks_nothing_and_the_queue_moves_on():
    async def main(clock):
        limiter = RequestLimiter(max_concurrency=1, rpm=60, tpm=600, adaptive=False, clock=clock,
                                 sleep=asyncio.sleep, output_tokens=0)
        first = await limiter.acquire(5)
        blocked = asyncio.ensure_future(limiter.acquire(5))
        await asyncio.sleep(0.5)
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
        first.done("ok", tokens_used=5)
        assert limiter.in_flight == 0
        nxt = await asyncio.wait_for(limiter.acquire(5), timeout=10)
        return limiter, nxt, clock()

    limiter, nxt, now = run_virtual(main)
    assert limiter.in_flight == 1 and limiter.admitted == 2
    assert now == pytest.approx(1.0)  # the RPM bucket, untouched by the cancelled caller, refilled at 1/s


def test_acquire_is_first_come_first_served():
    async def main(clock):
        limiter = RequestLimiter(max_concurrency=1, adaptive=False, clock=clock, sleep=asyncio.sleep)
        order = []

        async def one(i):
            await asyncio.sleep(i * 0.001)  # queue up in order
            permit = await limiter.acquire()
            order.append(i)
            await asyncio.sleep(1)
            permit.done("ok")

        await asyncio.gather(*(one(i) for i in range(8)))
        return order

    assert run_virtual(main) == list(range(8))


# -- AIMD --------------------------------------------------------------------------------------------------------


def _limiter(clock: FakeClock, **kw) -> RequestLimiter:
    return RequestLimiter(clock=clock, sleep=recording_sleep(clock, []), pace_s=0, **kw)


def test_slow_start_grows_by_one_per_success_up_to_max_concurrency():
    clock = FakeClock()
    limiter = _limiter(clock, max_concurrency=20, initial_limit=4)

    async def main():
        limits = []
        for _ in range(4):  # four round trips: fill the limit, complete them all
            permits = [await limiter.acquire() for _ in range(limiter.limit)]
            clock.now += 0.3
            for p in permits:
                p.done("ok")
            limits.append(limiter.limit)
        return limits

    assert run(main()) == [8, 16, 20, 20]  # doubles per round trip, capped


def test_non_adaptive_limit_is_fixed_at_max_concurrency():
    clock = FakeClock()
    limiter = _limiter(clock, max_concurrency=12, adaptive=False)

    async def main():
        permits = [await limiter.acquire() for _ in range(12)]
        for p in permits:
            p.done("throttled")

    run(main())
    assert limiter.limit == 12 and limiter.cuts == 0 and limiter.throttle_events == 12


def test_a_burst_of_throttles_from_one_overload_cuts_once():
    clock = FakeClock()
    limiter = _limiter(clock, max_concurrency=64, initial_limit=40)

    async def main():
        permits = [await limiter.acquire() for _ in range(40)]
        for p in permits:  # forty 429s, all from requests sent before the cut
            clock.now += 0.001
            p.done("throttled")
        assert limiter.cuts == 1 and limiter.throttle_events == 40
        assert limiter.limit == 20  # the cut that ends slow start halves

        # A request admitted after the cut and throttled is a new signal, but within one round trip of the
        # cut (1 s until a success has measured it) it is still the same overload.
        (await limiter.acquire()).done("throttled")
        assert limiter.cuts == 1
        # A success that grows the limit, then a throttle a round trip later: a probe that overshot (×0.95).
        held = [await limiter.acquire() for _ in range(20)]
        clock.now += 1.0
        held.pop().done("ok")
        for p in held:
            p.done("error")
        (await limiter.acquire()).done("throttled")
        assert limiter.cuts == 2 and limiter._cwnd == pytest.approx((20 + (20 / 128) / 20) * 0.95, abs=1e-6)

    run(main())


def test_throttles_in_a_row_without_growth_cut_deeper_each_time():
    clock = FakeClock()
    limiter = _limiter(clock, max_concurrency=256, initial_limit=200)

    async def main():
        (await limiter.acquire()).done("throttled")  # ends slow start: 100
        limits = []
        for _ in range(6):  # a 429 storm: every attempt refused, one round trip apart
            clock.now += 1.0
            (await limiter.acquire()).done("throttled")
            limits.append(round(limiter._cwnd, 3))
        # Growth resets the streak: the next cut is a plain ×0.95 again.
        held = [await limiter.acquire() for _ in range(limiter.limit)]
        held.pop().done("ok")
        for p in held:
            p.done("error")
        before = limiter._cwnd
        clock.now += 1.0
        (await limiter.acquire()).done("throttled")
        return limits, limiter._cwnd / before

    limits, last_factor = run(main())
    factors = [b / a for a, b in zip([100.0] + limits, limits)]
    # The first storm cut already follows one (the slow-start exit) with no growth between: second in a row.
    assert factors == pytest.approx([0.95 ** 2, 0.95 ** 4, 0.95 ** 8, 0.5, 0.5, 0.5], abs=1e-3)
    assert last_factor == pytest.approx(0.95)


def test_cooldown_window_spaces_cuts_in_time():
    clock = FakeClock()
    limiter = _limiter(clock, max_concurrency=64, initial_limit=32, cooldown_s=2.0)

    async def main():
        (await limiter.acquire()).done("throttled")  # cut 1 (at t=0)
        clock.now = 1.0
        (await limiter.acquire()).done("throttled")  # new epoch but inside the cooldown: ignored
        assert limiter.cuts == 1
        clock.now = 2.5
        (await limiter.acquire()).done("throttled")
        assert limiter.cuts == 2

    run(main())


def test_additive_increase_is_about_one_per_round_trip_and_only_when_used():
    clock = FakeClock()
    limiter = _limiter(clock, max_concurrency=512, initial_limit=256)

    async def main():
        (await limiter.acquire()).done("throttled")  # leaves slow start at 128
        assert limiter.limit == 128
        # Keep the limit full: release one, admit one — 128 successes is one round trip's worth.
        permits = collections.deque([await limiter.acquire() for _ in range(128)])
        for _ in range(128):
            permits.popleft().done("ok")
            permits.append(await limiter.acquire())
        assert limiter._cwnd == pytest.approx(129, abs=0.05)
        for p in permits:
            p.done("ok")
        # Application-limited: one request at a time never grows the limit.
        before = limiter._cwnd
        for _ in range(100):
            (await limiter.acquire()).done("ok")
        assert limiter._cwnd == before

    run(main())


def test_small_limits_probe_gently():
    clock = FakeClock()
    limiter = _limiter(clock, max_concurrency=64, initial_limit=8)

    async def main():
        (await limiter.acquire()).done("throttled")  # → 4
        assert limiter.limit == 4
        permits = collections.deque([await limiter.acquire() for _ in range(4)])
        for _ in range(4 * 10):  # ten round trips at limit 4: +0.1 each (4/128 is below the minimum step)
            permits.popleft().done("ok")
            permits.append(await limiter.acquire())
        assert 4.85 < limiter._cwnd < 5.0  # ~+1

    run(main())


def test_cut_never_goes_below_one_and_growth_never_above_max():
    clock = FakeClock()
    limiter = _limiter(clock, max_concurrency=3, initial_limit=3)

    async def main():
        for _ in range(20):
            (await limiter.acquire()).done("throttled")
        assert limiter.limit == 1
        for _ in range(2000):
            ps = [await limiter.acquire() for _ in range(limiter.limit)]
            for p in ps:
                p.done("ok")
        assert limiter.limit == 3

    run(main())


def test_pace_after_a_cut_spaces_admissions_by_rtt_over_limit():
    async def main(clock):
        limiter = RequestLimiter(max_concurrency=64, initial_limit=20, clock=clock, sleep=asyncio.sleep,
                                 pace_s=2.0)
        p = await limiter.acquire()
        await asyncio.sleep(0.5)
        p.done("ok")  # rtt 0.5
        p = await limiter.acquire()
        p.done("throttled")  # cut (end of slow start): limit 21 → 10
        assert limiter.limit == 10
        stamps = []
        for _ in range(5):
            p = await limiter.acquire()
            stamps.append(clock())
            p.done("error")
        await asyncio.sleep(3)  # the pace window is over
        t = clock()
        for _ in range(3):
            (await limiter.acquire()).done("error")
        return limiter, stamps, clock() - t

    limiter, stamps, unpaced = run_virtual(main)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert stamps[0] == pytest.approx(0.55) and gaps == pytest.approx([0.05] * 4)  # 0.5 s / 10
    assert unpaced == 0
    assert limiter.throttled_seconds == pytest.approx(0.25)


def test_pace_keeps_its_schedule_when_an_admission_is_late():
    async def main(clock):
        limiter = RequestLimiter(max_concurrency=64, initial_limit=20, clock=clock, sleep=asyncio.sleep,
                                 pace_s=5.0)
        p = await limiter.acquire()
        await asyncio.sleep(0.5)
        p.done("ok")  # rtt 0.5
        (await limiter.acquire()).done("throttled")  # limit 10: one admission per 0.05 s, first at 0.55
        stamps = []
        for late in (0.0, 0.07, 0.0, 0.2, 0.0):
            await asyncio.sleep(late)
            (await limiter.acquire()).done("error")
            stamps.append(round(clock(), 6))
        return stamps

    # 0.55; late to 0.62 (slot was 0.60) → the next is still due at 0.65; late to 0.85 (slot was 0.70) → at most
    # one interval is banked: one more at once (0.85), then the schedule resumes (0.90, ...).
    assert run_virtual(main) == pytest.approx([0.55, 0.62, 0.65, 0.85, 0.85])


# -- throttled_seconds -------------------------------------------------------------------------------------------


def test_throttled_seconds_counts_rpm_waits_once_however_many_callers_wait():
    async def main(clock):
        limiter = RequestLimiter(max_concurrency=100, rpm=60, adaptive=False, clock=clock, sleep=asyncio.sleep)

        async def one():
            (await limiter.acquire()).done("ok")

        await asyncio.gather(*(one() for _ in range(5)))  # 1 at t=0, then one per second
        return limiter, clock()

    limiter, now = run_virtual(main)
    assert now == pytest.approx(4)
    assert limiter.throttled_seconds == pytest.approx(4)  # wall time, not 1+2+3+4 summed over callers


def test_throttled_seconds_counts_waiting_on_a_cut_limit_but_not_slow_start():
    async def main(clock):
        limiter = RequestLimiter(max_concurrency=8, initial_limit=2, clock=clock, sleep=asyncio.sleep, pace_s=0)
        a, b = await limiter.acquire(), await limiter.acquire()
        waiter = asyncio.ensure_future(limiter.acquire())  # slow start limit 2: not throttling
        await asyncio.sleep(1)
        a.done("ok")
        c = await waiter
        assert limiter.throttled_seconds == 0
        b.done("throttled")  # cut: 3 → 1.5 → limit 1, with c still in flight
        assert limiter.limit == 1
        waiter = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(2)
        c.done("ok")
        (await waiter).done("ok")
        return limiter

    limiter = run_virtual(main)
    assert limiter.throttled_seconds == pytest.approx(2)


# -- invariants and closed-loop behaviour ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_in_flight_never_exceeds_the_limit_or_max_concurrency(seed):
    rng = random.Random(seed)

    async def main(clock):
        limiter = RequestLimiter(max_concurrency=16, rpm=3000, tpm=300_000, clock=clock, sleep=asyncio.sleep,
                                 initial_limit=rng.randint(1, 16))
        violations = []

        async def one():
            for _ in range(5):
                permit = await limiter.acquire(rng.randint(0, 3000))
                if limiter.in_flight > min(limiter.max_concurrency, max(limiter.limit, 1)) + 0:
                    # a cut may leave more in flight than the new limit, but never after an admission above it
                    violations.append((limiter.in_flight, limiter.limit))
                await asyncio.sleep(rng.uniform(0, 0.5))
                outcome = rng.choice(["ok", "ok", "ok", "throttled", "error"])
                permit.done(outcome, tokens_used=rng.randint(0, 4000) if outcome == "ok" else None)

        await asyncio.gather(*(one() for _ in range(60)))
        return limiter, violations

    limiter, violations = run_virtual(main)
    assert violations == []
    assert limiter.stats()["peak_in_flight"] <= 16
    assert limiter.in_flight == 0 and limiter.admitted == 300


def _simulate(*, records: int, capacity_rps: float, latency_s: float, workers: int = 1, seed: int = 0):
    """A sliding-window quota server (like the emulator's ``capacity_rps``) and callers that retry 429s after ~1 s."""
    rng = random.Random(seed)

    async def main(clock):
        window: collections.deque[float] = collections.deque()
        counts = {"ok": 0, "429": 0}
        limiters = [RequestLimiter(max_concurrency=64, clock=clock, sleep=asyncio.sleep) for _ in range(workers)]

        async def server() -> int:
            now = clock()
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= capacity_rps:
                await asyncio.sleep(0.002)
                return 429
            window.append(now)
            await asyncio.sleep(latency_s * rng.uniform(0.8, 1.2))
            return 200

        async def record(limiter: RequestLimiter) -> None:
            for _ in range(30):
                permit = await limiter.acquire(100)
                if await server() == 200:
                    counts["ok"] += 1
                    permit.done("ok", tokens_used=150)
                    return
                counts["429"] += 1
                permit.done("throttled")
                await asyncio.sleep(rng.uniform(0.5, 1.5))

        pending = asyncio.Semaphore(2 * 64 * workers)

        async def bounded(i: int) -> None:
            async with pending:
                await record(limiters[i % workers])

        await asyncio.gather(*(bounded(i) for i in range(records)))
        return clock(), counts, limiters

    return run_virtual(main)


def test_closed_loop_runs_near_a_rate_quota_with_few_429s():
    wall, counts, (limiter,) = _simulate(records=6000, capacity_rps=100, latency_s=0.3)
    utilisation = 6000 / wall / 100
    throttled = counts["429"] / (counts["ok"] + counts["429"])
    assert counts["ok"] == 6000
    assert utilisation >= 0.9, (utilisation, limiter.stats())
    assert throttled <= 0.02, (throttled, limiter.stats())
    assert limiter.stats()["peak_in_flight"] <= 64


def test_closed_loop_without_a_quota_runs_at_max_concurrency():
    wall, counts, (limiter,) = _simulate(records=3000, capacity_rps=float("inf"), latency_s=0.3)
    assert counts["429"] == 0 and limiter.limit == 64
    assert 3000 / wall >= 0.9 * 64 / 0.3
    assert limiter.throttled_seconds == 0


def test_fake_sleep_type_is_awaitable_only():
    # A permit is not something callers construct; the type is exported for annotations.
    assert Permit.__slots__


def test_set_rates_changes_the_pace_keeps_the_level_and_wakes_waiters():
    async def main(clock):
        limiter = RequestLimiter(max_concurrency=50, rpm=60, adaptive=False, clock=clock, sleep=asyncio.sleep)
        first = await limiter.acquire()  # 1/s: the one-request bucket is now empty
        first.done("ok")
        waiter = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0.1)
        assert not waiter.done()
        limiter.set_rates(rpm=600, tpm=None)  # 10/s from now on; the level stays where it was (not refilled)
        assert limiter.rates == (600, None)
        permit = await waiter
        admitted_at = clock.now
        permit.done("ok")
        stamps = []
        for _ in range(3):
            p = await limiter.acquire()
            stamps.append(clock.now)
            p.done("ok")
        limiter.set_rates(rpm=None, tpm=None)
        p = await limiter.acquire()
        unlimited_at = clock.now
        p.done("ok")
        return admitted_at, stamps, unlimited_at

    admitted_at, stamps, unlimited_at = run_virtual(main)
    assert 0.1 < admitted_at <= 0.21  # ~0.1 s of 10/s refill needed, not the 1 s the old rate asked for
    assert [round(b - a, 6) for a, b in zip([admitted_at, *stamps], stamps)] == pytest.approx([0.1, 0.1, 0.1])
    assert unlimited_at == pytest.approx(stamps[-1])  # no cap: admitted at once


def test_set_rates_rejects_nonsense():
    limiter = RequestLimiter(max_concurrency=5)
    with pytest.raises(ValueError):
        limiter.set_rates(rpm=0, tpm=None)
