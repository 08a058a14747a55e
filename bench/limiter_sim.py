"""Many independent limiters against one sliding-window quota, in virtual time: explore policies in seconds.

    python bench/limiter_sim.py                                   # every candidate, every scenario, table
    python bench/limiter_sim.py --candidates v1,new --scenarios n16,halve --seeds 3

Each simulated process is a real ``RequestLimiter`` (or a candidate subclass) on one virtual-time asyncio loop,
with the caller's behaviour around it: up to 2 x max_concurrency records pending (the DoFn's window), an attempt
takes a permit, a 429 comes back in a few ms and the record retries after max(full-jitter backoff, 1 s RetryInfo),
like ``ChatCaller``. The pool is the emulator's: ``capacity`` admissions per sliding 1 s window, the rest answered
429 at once; admitted requests take ``latency`` (± jitter). Nothing sleeps in real time, so a 16-process,
two-minute run takes a few seconds. The claims in the README come from ``bench/many_processes.py`` (real
processes, real emulator); this is where candidates are compared cheaply and deterministically.

Candidates (the table in client/limits.py's docstring is this script's output):

- ``v1``: the policy before issue 10 (fixed x0.95 cuts, +min(1, max(0.1, W/128)) per round trip, slow start from 8),
  loaded from git history (or ``CHATBEAM_V1_LIMITS=path``);
- ``v1+sre1.1``: v1 behind Beam's client-side adaptive throttler (the SRE book's, ``apache_beam.io.components.
  adaptive_throttler``, overload ratio K = 1.1: hold an attempt back with probability (requests - K x accepts) /
  (requests + 1) over 60 s);
- ``fixed_depth``: the new policy with every cut x0.95 (no crowd-driven depth);
- ``scaled_step``: x0.95 cuts, but the step scaled down by the recent 429 share instead;
- ``mi_only``: the new policy without the AI_STEP / W part of the growth;
- ``ai0.03``: the new policy with AI_STEP 0.03 (instead of 0.035);
- ``steps0545``: the new policy with the steps it had until 2026-11-30 (MI_STEP 0.005, AI_STEP 0.045);
- ``new``: client/limits.py as it is.

Scenarios: ``nN`` N processes (starts spread over ``--stagger_s``), equal work, measured from ``--warmup_s`` after the
last start; ``halve`` 8 processes, capacity
halves at 40 s (measured from 45 s); ``join`` 4 short + 4 long processes, the short ones leave at ~30 s, 4 more join
at 40 s (utilisation over 5-100 s, shares as ``bench/many_processes.py``'s churn row: from the last joiner's first
answer until the first process finishes); ``joined`` the same with shares from 15 s after that answer.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import math
import os
import random
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from client import limits  # noqa: E402
from client.limits import RequestLimiter  # noqa: E402
from tests.virtual_time import FakeClock as _Clock, VirtualTimeLoop  # noqa: E402

RETRY_AFTER_S = 1.0  # the emulator's RetryInfo (retry_delay_s default)
INITIAL_RETRY_DELAY = 0.5  # client.constants
MAX_CONCURRENCY = 64


# -- the scenario -------------------------------------------------------------------------------------------------


@dataclass
class Proc:
    """One simulated worker process: starts at ``start``, has ``records`` to do."""

    start: float
    records: int
    joins: bool = False  # joins a running pool (its shares are measured from its first answer, as in the bench)


@dataclass
class Scenario:
    name: str
    procs: list[Proc]
    capacity: Callable[[float], float]  # req/s admitted per sliding second, as a function of time
    latency_s: float = 0.3
    jitter: float = 0.1  # uniform +/- fraction of the latency
    reject_s: float = 0.003  # how long a 429 takes to come back
    stall_s: float = 0.0  # mean random extra delay per admission (a loaded machine's scheduling noise)
    window: tuple[float, float] | None = None  # where utilisation and 429s are measured (None: all running)
    fair_window: tuple[float, float] | None = None  # where shares are compared (None: all running)
    settle_s: float = 0.0  # with joiners: shares are compared from this long after the last one's first answer
    warmup_s: float = 10.0  # without a window: measured from this long after the last start (start-up excluded)


@dataclass
class Result:
    ok: list[list[float]] = field(default_factory=list)  # per process: completion times
    rejected: list[list[float]] = field(default_factory=list)  # per process: 429 times
    finished: list[float] = field(default_factory=list)
    limiters: list[RequestLimiter] = field(default_factory=list)


def simulate(scenario: Scenario, factory: Callable[..., RequestLimiter], seed: int = 0) -> Result:
    """Run ``scenario`` with one ``factory(clock=, sleep=)`` limiter per process; every record completes."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(_run(scenario, factory, seed, loop.clock))
    finally:
        loop.close()


async def _run(sc: Scenario, factory, seed: int, clock: _Clock) -> Result:
    rng = random.Random(seed)
    window: collections.deque[float] = collections.deque()
    res = Result()

    async def server() -> bool:
        now = clock()
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= sc.capacity(now):
            await asyncio.sleep(sc.reject_s)
            return False
        window.append(now)
        await asyncio.sleep(sc.latency_s * (1 + rng.uniform(-sc.jitter, sc.jitter)))
        return True

    async def record(i: int, limiter: RequestLimiter) -> None:
        for attempt in range(1000):
            permit = await limiter.acquire(100)
            if sc.stall_s:
                await asyncio.sleep(rng.expovariate(1 / sc.stall_s))
            if await server():
                permit.done("ok", tokens_used=150)
                res.ok[i].append(clock())
                return
            permit.done("throttled")
            res.rejected[i].append(clock())
            await asyncio.sleep(max(RETRY_AFTER_S, rng.uniform(0, INITIAL_RETRY_DELAY * 2 ** min(attempt, 7))))
        raise RuntimeError("a record never completed")

    async def process(i: int, proc: Proc) -> None:
        await asyncio.sleep(proc.start)
        limiter = factory(clock=clock, sleep=asyncio.sleep)
        res.limiters[i] = limiter
        pending = asyncio.Semaphore(2 * MAX_CONCURRENCY)

        async def bounded() -> None:
            try:
                await record(i, limiter)
            finally:
                pending.release()

        tasks = []
        for _ in range(proc.records):
            await pending.acquire()
            tasks.append(asyncio.ensure_future(bounded()))
        await asyncio.gather(*tasks)
        res.finished[i] = clock()

    n = len(sc.procs)
    res.ok = [[] for _ in range(n)]
    res.rejected = [[] for _ in range(n)]
    res.finished = [0.0] * n
    res.limiters = [None] * n  # type: ignore[list-item]
    await asyncio.gather(*(process(i, p) for i, p in enumerate(sc.procs)))
    return res


def _count(times: list[float], t0: float, t1: float) -> int:
    return sum(1 for t in times if t0 <= t < t1)


def measure(sc: Scenario, res: Result) -> dict[str, float]:
    """Utilisation and 429 share over ``window``; per-process share vs fair over ``fair_window``."""
    all_running = (max(p.start for p in sc.procs) + sc.warmup_s, min(res.finished))
    t0, t1 = sc.window or all_running
    ok = sum(_count(o, t0, t1) for o in res.ok)
    rej = sum(_count(r, t0, t1) for r in res.rejected)
    steps = 200
    cap = sum(sc.capacity(t0 + (t1 - t0) * (k + 0.5) / steps) for k in range(steps)) / steps * (t1 - t0)
    f0, f1 = sc.fair_window or all_running
    joiners = [i for i, p in enumerate(sc.procs) if p.joins]
    if joiners and sc.fair_window is None:
        # as bench/many_processes.py's churn row: from the last joiner's first answer until the first of the
        # processes still running then finishes
        f0 = max(res.ok[i][0] for i in joiners) + sc.settle_s
        f1 = min(res.finished[i] for i, p in enumerate(sc.procs) if res.finished[i] > f0)
    running = [i for i, p in enumerate(sc.procs) if p.start <= f0 and res.finished[i] >= f1]
    shares = [_count(res.ok[i], f0, f1) for i in running]
    fair = sum(shares) / len(shares)
    all_ok = sum(len(o) for o in res.ok)
    all_rej = sum(len(r) for r in res.rejected)
    return {"util": ok / cap if cap else 0.0, "share_429": rej / (ok + rej) if ok + rej else 0.0,
            "min_share": min(shares) / fair if fair else 0.0, "max_share": max(shares) / fair if fair else 0.0,
            "run_429": all_rej / (all_ok + all_rej)}


# -- scenarios ----------------------------------------------------------------------------------------------------


def _const(c: float) -> Callable[[float], float]:
    return lambda t: c


def scenarios(duration: float = 90.0, stagger: float = 2.0, latency_s: float = 0.3,
              capacity: float = 100.0, warmup_s: float = 10.0) -> dict[str, Scenario]:
    """N = 1, 4, 8, 16 against the pool; capacity halving; processes joining and leaving."""
    out = {}
    rng = random.Random(99)
    k = capacity / 100  # records scale with the capacity, times don't
    half = lambda t: capacity if t < 40 else capacity / 2  # noqa: E731
    for n in (1, 4, 8, 16):
        per = int(capacity * duration / n)
        out[f"n{n}"] = Scenario(f"n{n}", [Proc(rng.uniform(0, stagger), per) for _ in range(n)], _const(capacity),
                                latency_s=latency_s, warmup_s=warmup_s)
    out["halve"] = Scenario("halve", [Proc(rng.uniform(0, stagger), int(1200 * k)) for _ in range(8)], half,
                            latency_s=latency_s, window=(45.0, 100.0), fair_window=(45.0, 100.0))
    # 4 short and 4 long processes start; the short ones leave at ~32 s; 4 more join at 40 s.
    join = ([Proc(rng.uniform(0, stagger), int(400 * k)) for _ in range(4)]
            + [Proc(rng.uniform(0, stagger), int(1600 * k)) for _ in range(4)]
            + [Proc(40 + rng.uniform(0, stagger), int(800 * k), joins=True) for _ in range(4)])
    out["join"] = Scenario("join", join, _const(capacity), latency_s=latency_s, window=(5.0, 100.0))
    out["joined"] = Scenario("joined", join, _const(capacity), latency_s=latency_s, window=(5.0, 100.0),
                             settle_s=15.0)
    return out


# -- candidates ---------------------------------------------------------------------------------------------------


def _v1_class() -> type:
    """The policy before issue 10 (fixed x0.95 cuts, +min(1, max(0.1, W/128)) per round trip, slow start from 8),
    loaded from git history so the comparison stays runnable."""
    import importlib.util
    import subprocess
    import tempfile

    saved = os.environ.get("CHATBEAM_V1_LIMITS")  # a copy of that file (for a checkout without git history)
    source = Path(saved).read_text() if saved else subprocess.run(
        ["git", "show", f"{V1_COMMIT}:client/limits.py"], cwd=ROOT, capture_output=True, text=True,
        check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="limits-v1-")) / "limits_v1.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("limits_v1", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RequestLimiter


V1_COMMIT = "c12ffa0"


class FixedDepth(RequestLimiter):
    """The new policy with every cut at x0.95 (no crowd-driven depth)."""

    def _depth(self) -> float:
        return 1.0 - self.backoff


class NoAdditive(RequestLimiter):
    """The new policy without the AI_STEP / W part of the increase (multiplicative only)."""

    def _grow(self) -> None:
        if self._slow_start:
            self._cwnd += 1.0
        else:
            self._cwnd += limits.MI_STEP
            self._grew_since_cut = True
        self._cwnd = min(self._cwnd, float(self.max_concurrency))


class ScaledStep(FixedDepth):
    """x0.95 cuts; instead, the step is scaled down by the recent 429 share: x min(1, (0.4 % / share)^2)."""

    def _grow(self) -> None:
        if self._slow_start:
            self._cwnd += 1.0
        else:
            share = self.recent_429_share
            scale = 1.0 if share <= limits.CROWD_REF else (limits.CROWD_REF / share) ** 2
            self._cwnd += scale * (limits.MI_STEP + limits.AI_STEP / max(self._cwnd, limits.SMALL_WINDOW) ** 2)
            self._grew_since_cut = True
        self._cwnd = min(self._cwnd, float(self.max_concurrency))


class StepWeight(RequestLimiter):
    """The new policy with other weights of the increase (AI_STEP, MI_STEP)."""

    ai_step = 0.03
    mi_step: float | None = None  # None: client/limits.py's

    def _grow(self) -> None:
        saved = limits.AI_STEP, limits.MI_STEP
        limits.AI_STEP = self.ai_step
        limits.MI_STEP = saved[1] if self.mi_step is None else self.mi_step
        try:
            super()._grow()
        finally:
            limits.AI_STEP, limits.MI_STEP = saved


class Steps0545(StepWeight):
    """The new policy with the steps it had until 2026-11-30: MI_STEP 0.005, AI_STEP 0.045."""

    ai_step, mi_step = 0.045, 0.005


def _with_sre_throttler(base: type, overload_ratio: float) -> type:
    """``base`` behind Beam's client-side adaptive throttler (the SRE book's): an attempt is held back for 1 s
    with probability max(0, (requests - K x accepts) / (requests + 1)) over the last 60 s."""
    from apache_beam.io.components.adaptive_throttler import AdaptiveThrottler

    class Throttled(base):
        def __init__(self, **kw):
            super().__init__(**kw)
            self._sre = AdaptiveThrottler(window_ms=60_000, bucket_ms=1_000, overload_ratio=overload_ratio)
            self._sre._random = random.Random(0)

        async def acquire(self, est_tokens: int = 0):
            while self._sre.throttle_request(self._clock() * 1000):
                await self._sleep(1.0)
            permit = await super().acquire(est_tokens)
            sre, done = self._sre, permit.done

            def report(outcome, tokens_used=None):
                if outcome == "ok":
                    sre.successful_request(self._clock() * 1000)
                done(outcome, tokens_used)
            permit.done = report
            return permit

    return Throttled


def candidates() -> dict[str, Callable[..., RequestLimiter]]:
    v1 = _v1_class()
    made = {
        "v1": lambda **kw: v1(max_concurrency=MAX_CONCURRENCY, **kw),
        "v1+sre1.1": lambda **kw: _with_sre_throttler(v1, 1.1)(max_concurrency=MAX_CONCURRENCY, **kw),
        "fixed_depth": lambda **kw: FixedDepth(max_concurrency=MAX_CONCURRENCY, **kw),
        "scaled_step": lambda **kw: ScaledStep(max_concurrency=MAX_CONCURRENCY, **kw),
        "mi_only": lambda **kw: NoAdditive(max_concurrency=MAX_CONCURRENCY, **kw),
        "ai0.03": lambda **kw: StepWeight(max_concurrency=MAX_CONCURRENCY, **kw),
        "steps0545": lambda **kw: Steps0545(max_concurrency=MAX_CONCURRENCY, **kw),
        "new": lambda **kw: RequestLimiter(max_concurrency=MAX_CONCURRENCY, **kw),
    }
    return made


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--candidates", default="v1,v1+sre1.1,fixed_depth,scaled_step,mi_only,ai0.03,steps0545,new")
    p.add_argument("--scenarios", default="n1,n4,n8,n16,halve,join,joined")
    p.add_argument("--seeds", type=int, default=3, help="runs per cell; the table shows medians")
    p.add_argument("--duration", type=float, default=90.0, help="seconds of work at full capacity (nN scenarios)")
    p.add_argument("--stall_ms", type=float, default=5.0, help="mean scheduling noise per admission")
    p.add_argument("--jitter", type=float, default=0.1, help="latency jitter, +/- fraction")
    p.add_argument("--stagger_s", type=float, default=2.0, help="processes start uniformly within this (nN)")
    p.add_argument("--reject_ms", type=float, default=3.0,
                   help="how long a 429 takes to come back (a real pool: a network round trip; on a busy machine "
                        "the emulator's answer; 50-150 ms reproduces the real processes' higher 429 share at 16)")
    p.add_argument("--warmup_s", type=float, default=10.0,
                   help="nN: measured from this long after the last start, as bench/many_processes.py (start-up "
                        "excluded; 'run 429 %%' includes it)")
    p.add_argument("--latency_ms", type=float, default=300.0)
    p.add_argument("--capacity_rps", type=float, default=100.0)
    args = p.parse_args(argv)
    made = candidates()
    scs = scenarios(args.duration, args.stagger_s, latency_s=args.latency_ms / 1000, capacity=args.capacity_rps,
                    warmup_s=args.warmup_s)
    head = f"{'candidate':<14}{'scenario':<8}{'util':>7}{'429 %':>8}{'run 429 %':>10}{'min sh':>8}{'max sh':>8}"
    print(head)
    print("-" * len(head))
    for cand in args.candidates.split(","):
        for name in args.scenarios.split(","):
            sc = scs[name]
            sc.stall_s = args.stall_ms / 1000
            sc.jitter = args.jitter
            sc.reject_s = args.reject_ms / 1000
            rows = [measure(sc, simulate(sc, made[cand], seed)) for seed in range(args.seeds)]
            med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
            print(f"{cand:<14}{name:<8}{100 * med['util']:>6.1f}%{100 * med['share_429']:>7.2f}%"
                  f"{100 * med['run_429']:>9.2f}%{med['min_share']:>8.2f}{med['max_share']:>8.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
