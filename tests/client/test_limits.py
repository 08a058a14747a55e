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

import pytest

from client import limits
from client.limits import Permit, RequestLimiter
from tests.virtual_time import FakeClock, VirtualTimeLoop


def recording_sleep(clock: FakeClock, sleeps: list[float]):
    async def sleep(seconds: float) -> None:
        sleeps.append(round(seconds, 9))
        clock.now += seconds
    return sleep




def run_virtual(main):
    """Run ``main(clock)`` on a fresh virtual-time loop; returns its result."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main(loop.clock))
    finally:
        loop.close()


def run(coro):
    return asyncio.run(coro)


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


# -- the adaptive window -----------------------------------------------------------------------------------------


def _limiter(clock: FakeClock, **kw) -> RequestLimiter:
    return RequestLimiter(clock=clock, sleep=recording_sleep(clock, []), **kw)


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


def test_slow_start_begins_at_two_so_many_processes_do_not_open_with_a_burst():
    limiter = RequestLimiter(max_concurrency=64)
    assert limiter.limit == 2 and limiter.stats()["window"] == 2


def test_non_adaptive_limit_is_fixed_at_max_concurrency():
    clock = FakeClock()
    limiter = _limiter(clock, max_concurrency=12, adaptive=False)

    async def main():
        permits = [await limiter.acquire() for _ in range(12)]
        for p in permits:
            p.done("throttled")

    run(main())
    assert limiter.limit == 12 and limiter.cuts == 0 and limiter.throttle_events == 12


def _fill_and_answer(limiter, clock, rounds, rtt=1.0):
    """Slow start against a pool with room: each round trip, fill the window and have every attempt succeed."""
    async def main():
        for _ in range(rounds):
            permits = [await limiter.acquire() for _ in range(limiter.limit)]
            clock.now += rtt
            for p in permits:
                p.done("ok")
    run(main())


def test_slow_start_ends_keeping_what_the_pool_accepted_not_half():
    # A pool of 30 requests/s at 1 s round trips: slow start reaches 32 in flight, and the pool refuses the first
    # attempt past its 30 per second. Halving would leave 16 (half the pool unused); the exit keeps 0.8 x the
    # window that the rate the pool accepted over the last second needs (0.8: room for others, and for error).
    clock = FakeClock()
    limiter = _limiter(clock, max_concurrency=64, initial_limit=2)
    _fill_and_answer(limiter, clock, rounds=4)  # 2 -> 4 -> 8 -> 16 -> 32

    async def main():
        permits = [await limiter.acquire() for _ in range(32)]
        clock.now += 0.01
        permits[30].done("throttled")  # the 31st of this second: refused at once; the others are in flight
        return permits

    permits = run(main())
    assert limiter.cuts == 1 and limiter.window == pytest.approx(0.8 * 31, abs=0.01)  # 32 sent, 1 refused
    clock.now += 1.0
    for p in permits:
        p.done("ok")


def test_a_burst_of_throttles_from_one_overload_cuts_once():
    clock = FakeClock()
    limiter = _limiter(clock, max_concurrency=64, initial_limit=40)

    async def main():
        permits = [await limiter.acquire() for _ in range(40)]
        for p in permits:  # forty 429s, all from requests sent before the cut: a storm, not a filling window
            clock.now += 0.001
            p.done("throttled")
        assert limiter.cuts == 1 and limiter.throttle_events == 40
        # The exit first kept what it had sent (0.8 x 39); each refusal that followed took its share back,
        # down to the halved window.
        assert limiter.window == pytest.approx(20) and limiter.limit == 20

        # A request admitted after the cut and throttled is a new signal, but within cooldown_s (1 s) of the cut
        # it is still the same overload: a quota window remembers it.
        (await limiter.acquire()).done("throttled")
        assert limiter.cuts == 1

    run(main())
    # Successes that grow the window, then a throttle: a probe that overshot. This process has seen few 429s
    # (none in hundreds of attempts), so the cut is the gentlest (x0.95).
    clock.now += 1.0
    _steady(limiter, clock, 400)
    before = limiter.window
    assert before > 20
    run(limiter.acquire()).done("throttled")
    assert limiter.cuts == 2 and limiter.window == pytest.approx(before * 0.95, abs=1e-6)


def _steady(limiter, clock, successes, *, throttled_every=0, rtt=0.3):
    """Keep the window full: release one, admit one. Every ``throttled_every``-th attempt is answered 429 instead
    (refused at once), spread out so each can cut. Returns the cut factors seen."""
    factors = []

    async def main():
        permits = collections.deque([await limiter.acquire() for _ in range(limiter.limit)])
        for i in range(successes):
            clock.now += rtt / max(1, limiter.limit)
            permits.popleft().done("ok")
            while len(permits) < limiter.limit:  # refill up to the window (after a cut, let it drain)
                permits.append(await limiter.acquire())
            if throttled_every and i % throttled_every == throttled_every - 1:
                before, cuts = limiter.window, limiter.cuts
                clock.now += 1.0  # past the cooldown
                if permits:
                    permits.popleft().done("ok")  # make room for the attempt that gets the 429
                    before = limiter.window
                (await limiter.acquire()).done("throttled")
                if limiter.cuts > cuts:
                    factors.append(limiter.window / before)
        for p in permits:
            p.done("error")

    run(main())
    return factors


def _after_slow_start(window, clock, **kw):
    limiter = _limiter(clock, max_concurrency=1024, initial_limit=window, **kw)
    (run(limiter.acquire())).done("throttled")  # slow start ends: halved (one sent, refused)
    clock.now += 2.0  # past the cooldown: from now on attempts count in the 429 share
    return limiter


def test_the_cut_deepens_with_the_share_of_attempts_answered_429():
    # A process that sees 429s rarely (one in 1,000 attempts) keeps the gentlest cut; one that sees one in 50
    # (a crowded pool: many processes probing) cuts by half.
    clock = FakeClock()
    alone = _after_slow_start(60, clock)
    gentle = _steady(alone, clock, 5000, throttled_every=1000)
    crowded = _after_slow_start(8, clock)
    deep = _steady(crowded, clock, 600, throttled_every=50)
    assert gentle and all(f == pytest.approx(0.95, abs=0.01) for f in gentle)
    assert alone.stats()["recent_429_share"] < 0.004
    assert crowded.stats()["recent_429_share"] > 0.012
    assert deep[-1] == pytest.approx(0.5, abs=0.01)


def test_throttles_in_a_row_without_growth_cut_deeper_each_time():
    clock = FakeClock()
    limiter = _limiter(clock, max_concurrency=256, initial_limit=200)

    async def main():
        (await limiter.acquire()).done("throttled")  # ends slow start: 100
        windows = [limiter.window]
        for _ in range(4):  # a 429 storm: every attempt refused, one cooldown apart
            clock.now += 1.0
            (await limiter.acquire()).done("throttled")
            windows.append(limiter.window)
        return windows

    windows = run(main())
    factors = [b / a for a, b in zip(windows, windows[1:])]
    # At least 0.95^2, 0.95^4, ... down to half (here half at once: the 429 share climbs with the storm), and
    # never deeper than half per cut.
    assert all(0.5 - 1e-9 <= f <= max(0.5, 0.95 ** 2 ** (i + 1)) + 1e-9 for i, f in enumerate(factors))
    assert windows[-1] < windows[0] / 4


def _per_round_trip(window):
    return window * limits.MI_STEP + limits.AI_STEP / max(window, limits.SMALL_WINDOW)


def test_growth_per_round_trip_is_a_fraction_of_the_window_plus_more_for_small_ones_and_only_when_used():
    clock = FakeClock()
    limiter = _after_slow_start(256, clock)  # 128
    # One round trip's worth of successes (128) with the window full: MI_STEP x 128 + AI_STEP / 128, boosted while
    # 429s are rarer than CROWD_REF.
    _steady(limiter, clock, 128)
    grown = limiter.window - 128
    assert _per_round_trip(128) <= grown + 1e-9 <= limits.MAX_BOOST * _per_round_trip(128) + 1e-6
    # A small window (a share of a crowded pool) grows by more than its multiplicative part: shares converge.
    small = _after_slow_start(2, clock)  # 1
    _steady(small, clock, 1)
    assert small.window - 1 == pytest.approx(_per_round_trip(1), rel=0.3)
    assert _per_round_trip(1) > 5 * 1 * limits.MI_STEP

    async def one_at_a_time():  # application-limited: one request at a time never grows the window
        for _ in range(100):
            clock.now += 0.3
            (await limiter.acquire()).done("ok")

    before = limiter.window
    run(one_at_a_time())
    assert limiter.window == before


def test_growth_is_faster_while_429s_are_rarer_than_the_reference_share():
    clock = FakeClock()
    fresh = _after_slow_start(64, clock)  # 32, with a prior of 0.4 %: no boost yet
    _steady(fresh, clock, 32)
    first_round = fresh.window - 32
    _steady(fresh, clock, 3000)  # thousands of successes, no 429: the pool has room
    before = fresh.window
    _steady(fresh, clock, int(before))
    later_round = fresh.window - before
    assert first_round == pytest.approx(_per_round_trip(32), rel=0.2)
    assert later_round > 4 * _per_round_trip(before)


def test_window_never_below_the_minimum_nor_above_max_concurrency_and_limit_is_its_ceiling():
    clock = FakeClock()
    limiter = _limiter(clock, max_concurrency=3, initial_limit=3)

    async def main():
        for _ in range(40):
            clock.now += 1.0
            (await limiter.acquire()).done("throttled")
        assert limiter.window == pytest.approx(limits.MIN_WINDOW) and limiter.limit == 1
        for _ in range(3000):
            clock.now += 1.0
            ps = [await limiter.acquire() for _ in range(limiter.limit)]
            for p in ps:
                p.done("ok")
        assert limiter.limit == 3 and limiter.window == 3

    run(main())


def test_after_a_cut_admissions_are_paced_at_rtt_over_window():
    async def main(clock):
        limiter = RequestLimiter(max_concurrency=64, initial_limit=20, clock=clock, sleep=asyncio.sleep)
        p = await limiter.acquire()
        await asyncio.sleep(0.5)
        p.done("ok")  # rtt 0.5 (one in flight of 20: no growth)
        p = await limiter.acquire()
        p.done("throttled")  # slow start ends: 20 -> 10
        assert limiter.limit == 10
        stamps = []
        for _ in range(5):
            p = await limiter.acquire()
            stamps.append(clock())
            p.done("error")
        return limiter, stamps

    limiter, stamps = run_virtual(main)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert stamps[0] == pytest.approx(0.55) and gaps == pytest.approx([0.05] * 4)  # 0.5 s / 10
    assert limiter.throttled_seconds == pytest.approx(0.25)


def test_a_window_below_one_sends_one_request_every_rtt_over_window():
    async def main(clock):
        limiter = RequestLimiter(max_concurrency=64, initial_limit=1, clock=clock, sleep=asyncio.sleep)
        p = await limiter.acquire()
        await asyncio.sleep(0.4)
        p.done("ok")  # rtt 0.4, window 2
        for _ in range(3):  # a storm: 2 -> 1 -> ... well below one request in flight
            (await limiter.acquire()).done("throttled")
            await asyncio.sleep(1.5)
        window = limiter.window
        stamps = []
        for _ in range(4):
            p = await limiter.acquire()
            stamps.append(clock())
            p.done("error")
        return window, stamps

    window, stamps = run_virtual(main)
    assert window < 1
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert gaps == pytest.approx([0.4 / window] * 3)


def test_pace_keeps_its_schedule_when_an_admission_is_late():
    async def main(clock):
        limiter = RequestLimiter(max_concurrency=64, initial_limit=20, clock=clock, sleep=asyncio.sleep)
        p = await limiter.acquire()
        await asyncio.sleep(0.5)
        p.done("ok")  # rtt 0.5, window 20
        (await limiter.acquire()).done("throttled")  # window 10: one admission per 0.05 s, first at 0.55
        stamps = []
        for late in (0.0, 0.07, 0.0, 0.2, 0.0):
            await asyncio.sleep(late)
            (await limiter.acquire()).done("error")
            stamps.append(round(clock(), 6))
        return stamps

    # 0.55; late to 0.62 (slot was 0.60) → the next is still due at 0.65; late to 0.85 (slot was 0.70) → at most
    # one interval is banked: one more at once (0.85), then the schedule resumes (0.90, ...).
    assert run_virtual(main) == pytest.approx([0.55, 0.62, 0.65, 0.85, 0.85])


def test_no_pacing_before_a_throttle_or_with_pace_off():
    async def main(clock):
        fresh = RequestLimiter(max_concurrency=8, initial_limit=8, clock=clock, sleep=asyncio.sleep)
        held = [await fresh.acquire() for _ in range(8)]  # all at t=0: nothing has shown a pool's limit
        assert clock() == 0
        for p in held:
            p.done("ok")
        unpaced = RequestLimiter(max_concurrency=64, initial_limit=20, clock=clock, sleep=asyncio.sleep,
                                 pace=False)
        (await unpaced.acquire()).done("throttled")
        held = [await unpaced.acquire() for _ in range(unpaced.limit)]
        return clock()

    assert run_virtual(main) == 0


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
        limiter = RequestLimiter(max_concurrency=8, initial_limit=4, clock=clock, sleep=asyncio.sleep, pace=False)
        a, b, c, d = [await limiter.acquire() for _ in range(4)]
        waiter = asyncio.ensure_future(limiter.acquire())  # slow start limit 4: not throttling
        await asyncio.sleep(1)
        a.done("ok")  # window 5
        e = await waiter
        assert limiter.throttled_seconds == 0
        b.done("throttled")  # slow start ends: 5 -> 2.5, limit 3, with c, d, e still in flight
        assert limiter.limit == 3
        waiter = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(2)
        c.done("ok")
        (await waiter).done("ok")
        for p in (d, e):
            p.done("ok")
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


def _share_pool(*, processes: int, seconds: float, capacity: float = 100.0, latency_s: float = 0.3,
                capacity_after: tuple[float, float] | None = None, seed: int = 0):
    """``processes`` limiters that know nothing of each other against one sliding-window pool (the emulator's
    ``capacity_rps``), each with capacity x seconds / processes records, starting within 2 s of each other.
    Returns (utilisation, 429 share, smallest and largest per-process share of fair) over the time all run
    (after ``capacity_after = (t, capacity)``: from t + 2 s, against the new capacity)."""
    rng = random.Random(seed)

    async def main(clock):
        window: collections.deque[float] = collections.deque()
        ok_at: list[list[float]] = [[] for _ in range(processes)]
        refused_at: list[float] = []
        finished = [0.0] * processes
        starts = sorted(rng.uniform(0, 2) for _ in range(processes))

        def cap(now: float) -> float:
            return capacity_after[1] if capacity_after and now >= capacity_after[0] else capacity

        async def server() -> bool:
            now = clock()
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= cap(now):
                await asyncio.sleep(0.003)
                return False
            window.append(now)
            await asyncio.sleep(latency_s * rng.uniform(0.9, 1.1))
            return True

        async def record(i: int, limiter: RequestLimiter) -> None:
            for attempt in range(100):
                permit = await limiter.acquire(100)
                await asyncio.sleep(rng.expovariate(200))  # a few ms of scheduling noise
                if await server():
                    permit.done("ok", tokens_used=150)
                    ok_at[i].append(clock())
                    return
                permit.done("throttled")
                refused_at.append(clock())
                await asyncio.sleep(max(1.0, rng.uniform(0, 0.5 * 2 ** attempt)))  # RetryInfo 1 s, backoff
            raise AssertionError("a record never completed")

        async def process(i: int) -> None:
            await asyncio.sleep(starts[i])
            limiter = RequestLimiter(max_concurrency=64, clock=clock, sleep=asyncio.sleep)
            pending = asyncio.Semaphore(128)  # the DoFn's window: 2 x max_concurrency

            async def one() -> None:
                try:
                    await record(i, limiter)
                finally:
                    pending.release()

            tasks = []
            for _ in range(int(capacity * seconds / processes)):
                await pending.acquire()
                tasks.append(asyncio.ensure_future(one()))
            await asyncio.gather(*tasks)
            finished[i] = clock()

        await asyncio.gather(*(process(i) for i in range(processes)))
        t0, t1 = starts[-1] + 1.0, min(finished)
        if capacity_after:
            t0 = capacity_after[0] + 2.0
        ok = [sum(1 for t in times if t0 <= t < t1) for times in ok_at]
        refused = sum(1 for t in refused_at if t0 <= t < t1)
        fair = sum(ok) / processes
        return sum(ok) / ((t1 - t0) * cap(t1)), refused / (sum(ok) + refused), min(ok) / fair, max(ok) / fair

    return run_virtual(main)


def _median_of_seeds(**kw):
    runs = [_share_pool(**kw, seed=seed) for seed in range(3)]
    return tuple(sorted(run[i] for run in runs)[1] for i in range(4))


@pytest.mark.parametrize("processes", [4, 8, 16])
def test_independent_processes_share_a_pool_near_capacity_with_few_429s(processes):
    # The target is >= 90 % of capacity, <= 2 % answered 429 and none below half its fair share; a minute
    # is noisy (shares most of all: they take tens of seconds to converge), so these are medians of three seeds,
    # with slack — no process starved; bench/many_processes.py measures the real figures. The previous
    # policy (fixed x0.95 cuts) answered 11 % / 23 % 429 at 8 / 16 processes here.
    utilisation, refused, smallest, _ = _median_of_seeds(processes=processes, seconds=90)
    assert utilisation >= 0.85, utilisation
    assert refused <= 0.025, refused
    assert smallest >= 0.25, smallest


def test_independent_processes_follow_a_pool_that_halves():
    utilisation, refused, smallest, _ = _median_of_seeds(processes=8, seconds=90, capacity_after=(30.0, 50.0))
    assert utilisation >= 0.85, utilisation
    assert refused <= 0.03, refused
    assert smallest >= 0.25, smallest


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
