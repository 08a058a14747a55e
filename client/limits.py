"""Admission control for one worker process: in-flight slots, RPM/TPM token buckets, AIMD adaptive concurrency.

One ``RequestLimiter`` guards every HTTP attempt a worker process makes. Acquire a permit before each attempt
(retries included) and report how it went::

    limiter = RequestLimiter(max_concurrency=64, rpm=600, tpm=1_000_000)

    permit = await limiter.acquire(est_tokens=1200)     # waits for a slot, a request and 1200 + ~output tokens
    try:
        response = await send(request)
    except RateLimited:                                  # a 429 or 503
        permit.done("throttled")
        raise
    except Exception:
        permit.done("error")
        raise
    permit.done("ok", tokens_used=response.usage.total_tokens)

``with await limiter.acquire(n) as permit:`` does the same bookkeeping for code that forgets: leaving the block
without ``done()`` reports ``"error"`` on an exception and ``"ok"`` otherwise.

What ``acquire()`` waits for, in this order, first come first served:

1. an in-flight slot under ``limit`` — ``max_concurrency``, or with ``adaptive=True`` the AIMD limit (below);
2. after a throttle, a short pace (see below);
3. one request from the RPM bucket and ``est_tokens`` + the expected output tokens from the TPM bucket. Each
   bucket holds ``burst_s`` seconds of its rate (at least one request). A request bigger than the whole TPM
   bucket is let through once the bucket is full and drives it negative, so it waits but never deadlocks.

``Permit.done(outcome, tokens_used)`` releases the slot (idempotent) and settles the TPM bucket: a reservation
larger than the real usage is refunded, a smaller one is charged. A ``"throttled"`` attempt with no usage is
refunded in full (the server refused it); an ``"error"`` with no usage keeps its reservation.

Adaptive policy (``adaptive=True``): AIMD, as TCP congestion control, made for many processes that share one
quota pool without knowing of each other (one job's workers, or several jobs of one project). ``W`` is the
process's window (requests in flight; it may be fractional):

* **Slow start.** ``W`` starts at ``initial_limit`` (default 2) and grows by one per success — it doubles every
  round trip — until the first throttle (or ``max_concurrency``). A small start keeps a job of many processes
  from opening with a burst of ``processes × initial`` requests; doubling reaches a lone process's share in a few
  round trips anyway. The throttle that ends it halves ``W`` (doubling overshoots by up to 2×) — or keeps 0.8 × the
  window that the rate this process got admitted over the last ``max(rtt, cooldown_s)`` needs, when that is more:
  a quota pool refuses once its window is full, so that rate is this process's part of a full pool, and after a
  small overshoot halving would leave half the pool unused for a long time. Attempts of that span the pool then
  refuses take their part back, down to the halved window (a 429 storm is not a full window).
* **Pacing.** Once a throttle has shown where the pool is, admissions are spaced ``rtt / W`` apart (kept on
  schedule, banking at most one interval) and at most ``ceil(W)`` are in flight. The pool is a rate, so each
  process sends at a steady rate: the slots freed by fast 429s don't refill in a clump, and a window below one
  works (one request every ``rtt / W``), which a share of a crowded pool needs.
* **Increase.** Each success adds ``MI_STEP + AI_STEP / W²``: about ``MI_STEP × W + AI_STEP / W`` per round trip,
  a multiplicative part (+0.2 % per round trip) that lets a large window find a larger pool, and a part that is
  larger the smaller the window, so unequal shares converge (the multiplicative part alone keeps their ratio) and
  sixteen small windows don't probe sixteen times as hard as one large one. While this process's 429s are rarer
  than ``CROWD_REF`` the step is multiplied by up to ``MAX_BOOST`` (the pool has room it hasn't found: capacity rose,
  or processes left). Growth needs the window to be what holds the process back — the admission waited for a slot
  or brought in flight within one of ``W`` — so an idle or RPM-bound process doesn't build up an untested window.
* **Decrease, deeper when the pool is crowded.** A ``"throttled"`` outcome (429/503) multiplies ``W`` by
  ``1 - depth``. One overload produces many 429s, so a throttle on a permit acquired before the latest cut is
  ignored, and cuts are at least ``max(rtt, cooldown_s)`` apart (default 1 s: a quota window remembers an overload
  for about that long). ``depth`` follows this process's recent 429 share ``p`` (the share of its attempts
  answered 429, exponentially weighted over ~40 s): ``depth = 0.05 × (p / CROWD_REF)²`` with ``CROWD_REF`` 0.4 %,
  between ``1 - backoff`` (0.05) and ``MAX_DEPTH`` (0.5). If no success has grown the window since the previous
  cut — a 429 storm, or capacity that fell — the cut deepens each time in a row (0.95, 0.90, 0.81, 0.66, then 0.5)
  when that is deeper.

Why the depth follows the 429 share. With ``N`` processes sharing a pool of ``C`` requests in flight, each has
``W ≈ C / N``; per attempt it grows by ``g ≈ MI_STEP + AI_STEP / W²`` and each 429 takes ``depth × W`` away, so in
steady state a share ``p ≈ g / (depth × W)`` of its attempts is answered 429. With a fixed depth that share grows
faster than ``N``: the previous policy (fixed ×0.95 cuts, +``min(1, max(0.1, W/128))`` per round trip, slow start
from 8) measured 1 % of requests answered 429 alone, 12 % with 8 processes and 23 % with 16. No process knows ``N``,
but each sees its own ``p``, and the pool's 429 share is the average of theirs: so a process that sees many 429s
cuts deeper. A lone process (``W ≈ 30``, ``p`` ≈ 0.5 %) keeps the gentle ×0.95 cuts that hold it near the pool's
capacity; one of sixteen (``W ≈ 2``) cuts by up to half, and in the simulator the 429 share goes from 0.6 % alone
to 1.9 % at sixteen instead of 23 %. Deeper cuts than half were measured and lost utilisation and fairness. The
estimate starts, when slow start ends, from 100 pseudo-attempts at ``CROWD_REF``; attempts sent before
``max(rtt, cooldown_s)`` after that don't count (slow start's overshoot is not a crowd).

What was tried. ``bench/limiter_sim.py`` runs N real ``RequestLimiter`` objects (or candidate subclasses) in virtual
time against the emulator's pool (100 requests per sliding second, 300 ms latency, callers that retry a 429 after
~1 s); ``bench/many_processes.py`` runs N real chatbeam processes against the real emulator. Utilisation / share of
requests answered 429 / smallest per-process share of fair, while all processes run; simulator
(``python bench/limiter_sim.py``), medians of 3 seeds. This table and the paragraphs up to "The steps since
2026-11-30" were measured with the steps of the time (MI_STEP 0.005, AI_STEP 0.045: ``new`` there is
``steps0545`` now) and with start-up in the window (from 1 s after the last start)::

                            N = 1           N = 4           N = 8          N = 16       8, halves      join/leave
    v1              95  0.71 1.00   97  3.24 0.84   98 11.19 0.87   98 23.03 0.64   97 23.09 0.67   97  9.34 0.82
    fixed_depth     96  0.61 1.00   98  1.83 0.54   98  6.03 0.66   98 23.22 0.66   97 20.17 0.92   90  4.89 0.26
    scaled_step     96  0.58 1.00   97  0.74 0.34   97  1.54 0.47   96  8.39 0.29   88  0.90 0.53   67  1.68 0.30
    mi_only         96  0.58 1.00   92  0.47 0.37   91  0.57 0.31   94  0.57 0.28   83  0.37 0.36   76  0.55 0.35
    ai0.03          96  0.60 1.00   95  0.59 0.39   92  0.81 0.61   95  1.50 0.75   92  1.14 0.76   90  0.81 0.48
    new             96  0.60 1.00   95  0.56 0.45   94  0.83 0.60   95  1.88 0.77   93  1.48 0.83   90  0.76 0.43

Each cell: % of capacity, % of requests answered 429, smallest share (1.00 = fair); "8, halves" is measured after
the cut, "join/leave" is 4 + 4 processes of which 4 leave and 4 more join, shares compared from the last joiner's
first answer as ``bench/many_processes.py`` does (an earlier version of this table compared them from 10 s after the
join, which hid the joiners' slow start: ``new`` 0.71 there; 0.49 from 15 s after; ``bench/limiter_sim.py --help``).
``new`` is this module. ``v1`` probes as hard at 16 processes as alone, so the pool answers 429 to about a quarter
of the requests; ``fixed_depth`` shows that the crowd-driven depth is what holds the 429s down, ``mi_only`` that the
inverse additive step is what makes shares converge. A heavier step (AI_STEP 0.045 instead of 0.03, ``ai0.03``)
was kept: fairer at 4, 16, after a halving and with joiners, 429s still under 2 %. Also tried, each against
``ai0.03`` (smallest share at 4 / 8 / 16, 429 % at 16): AI_STEP 0.06: 0.52 / 0.69 / 0.80, 2.35 % (too many 429s);
depth ∝ ``p`` instead of ``p²``: 0.53 / 0.62 / 0.67, 2.40 %; a 40 s → 80 s estimate: 0.34 / 0.56 / 0.66; a cut that
always halves when slow start ends: 0.37 / 0.53 / 0.66; ``MAX_DEPTH`` 0.3: 0.54 / 0.62 / 0.75, 2.47 %; the pace
jittered ±50 %: 0.55 / 0.62 / 0.62; 300 prior pseudo-attempts (with AI_STEP 0.045): 0.45 / 0.51 / 0.67,
2.23 %. None was better on all three. Since then, with 8 seeds (smallest share at 4 / 8 / 16 / halving / join, 429 % at
16): ``new`` 0.56 / 0.59 / 0.79 / 0.78 / 0.47, 1.91 %; AI_STEP 0.07 with MI_STEP 0.003: 0.69 / 0.65 / 0.81 / 0.87 /
0.62, 2.39 % (fairer everywhere, but 429s over 2 % at 16 and after a halving); growth scaled by (p_sat / p)^k once the
cut is at ``MAX_DEPTH`` (p_sat = 1.26 %): k = 2 gives 1.41 % at 16 but a smallest share there of 0.54, k = 4 1.25 %
and 0.36 — a process's own 429 share rests on a handful of 429s per 40 s (at 1 % and 6 requests/s, about two), so
anything that follows it steeply turns that noise into unequal windows; the same scaling (k = 2) driven by a calmer
120 s estimate (6 seeds): 1.70 % at 16 but a smallest share of 0.53 there (``new``: 1.90 %, 0.83), 0.62 after a
halving (0.81), and with 50 / 150 ms 429 answers 1.80 / 2.37 % at 16 (``new``: 2.29 / 2.90 %); a 20 s estimate: 0.54 /
0.57 / 0.72 / 0.79 / 0.44, 1.86 %; SLOW_START_KEEP 0.5 changes nothing at 300 ms (the keep rule only acts when a
round trip is near ``cooldown_s``). What is left: at 4 processes the smallest share is still under half in
the simulator: a process that leaves slow start with a large window keeps it for tens of seconds while the others
cut deep (their few attempts make their 429 share, and so their cuts, larger).

Real processes (``bench/many_processes.py``, one run each on a loaded 2-core machine, load average 2–19) put the
smallest share at 16 processes at 0.22–0.63 over five runs and at 8 at 0.33–0.75, where the simulator says 0.77 and
0.60 — and 0.73 / 0.54 with starts spread over 7 s as in those runs. The gap is most likely CPU starvation of up to
16 Beam processes on 2 busy cores rather than the policy (in the latest run a lone process reached only 47 % of the
pool). On the quiet machine (load 0.5-1.1, 90 s of work per row, one run each) the real processes measured
94 / 93 / 95 / 95 % of capacity, 0.60 / 1.19 / 1.71 / 2.65 % answered 429 and smallest shares 1.00 / 0.79 / 0.70 /
0.82 at 1 / 4 / 8 / 16 processes (README, "Many processes, one pool"); two more runs at 16 measured 2.93 % and
3.74 % answered 429 (smallest shares 0.73, 0.76). So at 16 real processes the 429 share is 1.5-2 x the simulator's
1.9 %. Scheduling noise (20 ms per admission: 1.94 %) or latency jitter (±30 %: 1.78 %) does not explain it; slow
429 answers do: with ``--reject_ms 50`` the simulator gives 2.44 % at 16 (4.3 % over the whole run) and with 150 ms
2.81 %, against 1.88 % at 3 ms — every process keeps sending until its 429 arrives, so each overload lasts that much
longer. On this machine 16 Beam processes and the emulator share 2 cores; a real pool's 429 takes a network round
trip. With 50 ms 429s: 0.76 / 0.62 / 1.02 / 2.44 % at 1 / 4 / 8 / 16, smallest shares 1.00 / 0.68 / 0.51 / 0.70.
``v1+sre1.1`` (v1 behind Beam's adaptive throttler) is not in the table: its simulation did not finish
within 15 minutes on the loaded machine this time (``--candidates v1+sre1.1``).

The steps since 2026-11-30 (MI_STEP 0.002 instead of 0.005, AI_STEP 0.035 instead of 0.045). A kept trace of 16
real processes (the processes' own counts, per 4 s) showed where the 429s at 16 came from: 119 in the first 4 s
(slow start of 16 processes opened at once, 25 % of that span's requests), then 1.3–2.5 % per 4 s, 2.0 % from 12 s
on; the bench's window began at the last process's first answer, so it counted the start-up overshoot. Both tools
now measure from 10 s after the last start (``--warmup_s``) and print the whole run's share beside it. In steady
state almost every 429 is one cut (347 of 355 at 16 processes, 3 seeds, the rest within a cooldown), so the 429
share is the processes' combined growth per second over the size of a cut; at 16 most of that growth is the
multiplicative part, which does not make shares converge. Simulator, 12 seeds, 429s answered in 50 ms (3 ms in
brackets), start-up excluded (``python bench/limiter_sim.py --candidates steps0545,new --seeds 12 --reject_ms 50``;
the other rows, and the bracketed ones, are a loop over this module's constants around the same simulation, whose
smallest shares differ from the script's by up to 0.04)::

                        N = 1           N = 4           N = 8           N = 16          8, halves       join/leave
    steps0545           94 0.35 1.00    96 0.53 0.60    96 0.73 0.56    95 1.80 0.77    93 1.76 0.79    87 0.85 0.46
                        [96 0.37 1.00]  [95 0.59 0.48]  [96 0.90 0.59]  [95 1.90 0.77]  [93 1.73 0.79]  [90 0.82 0.49]
    MI 0.003, AI 0.035  92 0.26 1.00    95 0.42 0.54    95 0.56 0.57    95 1.48 0.70    93 1.11 0.80    85 0.72 0.41
    MI 0.002, AI 0.030  91 0.19 1.00    94 0.35 0.53    95 0.47 0.55    95 1.25 0.66    92 0.90 0.78    83 0.71 0.45
    MI 0.002, AI 0.040  91 0.20 1.00    95 0.37 0.63    95 0.52 0.51    95 1.49 0.73    92 1.38 0.79    85 0.71 0.46
    MI 0.001, AI 0.035  87 0.12 1.00    93 0.28 0.63    95 0.42 0.51    95 1.29 0.67    92 1.05 0.80    83 0.71 0.44
    new (0.002, 0.035)  91 0.20 1.00    94 0.36 0.61    95 0.51 0.52    95 1.35 0.73    92 1.11 0.76    84 0.67 0.47
                        [96 0.23 1.00]  [94 0.43 0.59]  [96 0.67 0.59]  [95 1.41 0.72]  [92 1.00 0.79]  [89 0.66 0.48]

MI_STEP 0.001 lets a lone process fall under 90 % of the pool. Also tried against ``new`` (12 seeds, 50 ms): growth
boosted while this process's 429s are rarer than 0.6 / 0.8 / 1.0 % (instead of CROWD_REF): 1.40 / 1.40 / 1.41 % at
16 and no fairer (smallest share at 4: 0.53 / 0.54 / 0.55); before that, with the old steps (8 seeds), MAX_DEPTH
0.6 / 0.7: 1.69 / 1.58 % at 16; a growth exponent of 1 or 1.5 instead of 2 (AI_STEP / W^e per success, matched at
W = 7.5): 0.99–1.58 % at 16 but smallest shares of 0.23–0.45 with joiners; a joiner's growth x3 for 20 or 40 s after
its slow start: 0.48 / 0.51 with joiners, but 2.28 / 3.14 % at 16; its 429-share estimate seeded at 0 or 0.1 %
instead of CROWD_REF: no change. Real processes (``bench/many_processes.py --duration_s 90 --repeat 2``, quiet
machine; 5 runs at N = 4), medians: 94 / 91 / 96 / 95 % of capacity, 0.23 / 0.39 / 0.62 / 1.45 % answered 429,
smallest share 1.00 / 0.69 / 0.56 / 0.74 at 1 / 4 / 8 / 16 processes; after a halving 93 %, 1.46 %, 0.82; join/leave
91 %, 1.24 %, 0.55 (README, "Many processes, one pool"). What is left: a process that joins a full pool still takes
tens of seconds to reach its share (the trace of
``join`` in the simulator shows a late starter at a fifth of the others' rate for 20-40 s: the incumbents cut only
×0.95-0.9 at these 429 shares), and the shares wander by tens of percent at 4-8 processes because each cut is a
handful of 429s' worth of evidence.

``throttled_seconds`` is wall time during which the head of the admission queue was held back by the RPM/TPM
buckets, the post-throttle pace or an AIMD limit that a throttle has cut below ``max_concurrency``. Waiting
for a plain ``max_concurrency`` slot, or during slow start, is not throttling. Only the head waiter's time counts,
so the figure never exceeds wall time however many callers queue behind it: report its increments as Beam's
``cumulativeThrottlingSeconds`` counter for Dataflow's autoscaler.

Threading: a limiter belongs to one asyncio event loop (the engine's). ``acquire()`` and ``Permit.done()`` must
be called on that loop; the counters and ``stats()`` may be read from any thread. It uses only asyncio
primitives, and they bind to the loop on first use.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from typing import Any, Awaitable, Callable, Literal

from client.token_bucket import TokenBucket

__all__ = ["Outcome", "Permit", "RequestLimiter"]

Outcome = Literal["ok", "throttled", "error"]

DEFAULT_BACKOFF = 0.95  # the gentlest cut on a throttle (deeper when the pool is crowded or throttles repeat)
SLOW_START_BACKOFF = 0.5  # the cut that ends slow start, and the floor of the deepening in a 429 storm
SLOW_START_KEEP = 0.8  # ...unless 0.8 x the window that the last second's admitted rate needs is more
MAX_DEPTH = 0.5  # the deepest crowd-driven cut: W x 0.5
MI_STEP = 0.002  # per success: about 0.2 % of W per round trip (0.005 until 2026-11-30: more 429s at 16, table above)
AI_STEP = 0.035  # AI_STEP / W per round trip (AI_STEP / W^2 per success); 0.045 until 2026-11-30 (table above)
SMALL_WINDOW = 0.5  # below this window, AI_STEP / W no longer grows
MIN_WINDOW = 0.1  # the smallest window: one request every 10 round trips
CROWD_REF = 0.004  # the 429 share at which cuts are at their gentlest; depth grows with (share / CROWD_REF)^2
CROWD_MEMORY_S = 40.0  # time constant of the recent-429-share estimate
CROWD_PRIOR = 100.0  # pseudo-attempts at CROWD_REF that seed the estimate when slow start ends
MAX_BOOST = 8.0  # growth is multiplied by CROWD_REF / share (up to this) while 429s are rarer than CROWD_REF
DEFAULT_INITIAL_LIMIT = 2  # slow start begins here (capped by max_concurrency)
DEFAULT_COOLDOWN_S = 1.0  # cuts at least this far apart (and at least one round trip)
DEFAULT_BURST_S = 1.0  # each bucket holds this many seconds of its rate
DEFAULT_OUTPUT_TOKENS = 256  # TPM reservation for output tokens until real usage has been seen
DEFAULT_RTT_S = 1.0  # round-trip estimate before the first success
_RTT_GAIN = 0.125  # EWMA gains (TCP's srtt gain) for the round trip and the output-token estimate
_OUTPUT_GAIN = 0.05
_EPS = 1e-9


class Permit:
    """One admitted attempt. Call ``done(outcome, tokens_used)`` exactly when the attempt is over (idempotent)."""

    __slots__ = ("_limiter", "est_tokens", "reserved_tokens", "epoch", "saturation_mark", "started", "outcome")

    def __init__(self, limiter: "RequestLimiter", est_tokens: int, reserved_tokens: float, epoch: int,
                 saturation_mark: int, started: float) -> None:
        self._limiter = limiter
        self.est_tokens = est_tokens
        self.reserved_tokens = reserved_tokens
        self.epoch = epoch  # the number of cuts before this attempt was admitted
        self.saturation_mark = saturation_mark  # how often the limit had been full before it was admitted
        self.started = started
        self.outcome: Outcome | None = None

    def done(self, outcome: Outcome, tokens_used: int | None = None) -> None:
        """Release the slot and feed the outcome to AIMD; later calls do nothing."""
        if self.outcome is not None:
            return
        if outcome not in ("ok", "throttled", "error"):
            raise ValueError(f"unknown outcome {outcome!r}")
        self.outcome = outcome
        self._limiter._release(self, outcome, tokens_used)

    def __enter__(self) -> "Permit":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.done("error" if exc_type is not None else "ok")


class RequestLimiter:
    """Per-process admission control (see the module docstring for the policy).

        limiter = RequestLimiter(max_concurrency=64, rpm=None, tpm=2_000_000)
        permit = await limiter.acquire(est_tokens=900)
        ...
        permit.done("ok", tokens_used=1130)
        limiter.stats()   # {'limit': 12, 'window': 11.6, 'in_flight': 11, 'throttle_events': 0, ...}

    ``clock`` and ``sleep`` are injectable for tests (a fake clock and a sleep that advances it). ``pace=False``
    turns the pacing off (the window alone holds requests back).
    """

    def __init__(self, *, max_concurrency: int, rpm: float | None = None, tpm: float | None = None,
                 adaptive: bool = True, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 initial_limit: int | None = None, backoff: float = DEFAULT_BACKOFF,
                 cooldown_s: float = DEFAULT_COOLDOWN_S, pace: bool = True, burst_s: float = DEFAULT_BURST_S,
                 output_tokens: int = DEFAULT_OUTPUT_TOKENS) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if not 0 < backoff < 1:
            raise ValueError("backoff must be between 0 and 1")
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 (or None for no limit)")
        self.max_concurrency = int(max_concurrency)
        self.adaptive = adaptive
        self.backoff = backoff
        self.cooldown_s = cooldown_s
        self.pace = pace
        self._clock = clock
        self._sleep = sleep
        self._burst_s = burst_s
        self._rpm = self._bucket(rpm)
        self._tpm = self._bucket(tpm)
        start = DEFAULT_INITIAL_LIMIT if initial_limit is None else initial_limit
        self._cwnd = float(max(1, min(self.max_concurrency, start))) if adaptive else float(self.max_concurrency)
        self._slow_start = adaptive
        self._ss_admits: collections.deque[float] = collections.deque(maxlen=4096)  # admission times, slow start
        self._ss_since = float("inf")  # slow start's exit: admissions after this were counted as accepted...
        self._ss_unit = 0.0  # ...each standing for this much window...
        self._ss_floor = 0.0  # ...down to half the window slow start ended with
        self._streak = 0  # cuts in a row without growth in between
        self._grew_since_cut = False
        self._epoch = 0
        self._last_cut: float | None = None
        self._next_admit = float("-inf")
        self._rtt = DEFAULT_RTT_S
        self._rtt_seen = False
        # The recent 429 share: exponentially decayed counts of attempts and of 429s, counted from _counted_from.
        self._seen = 0.0
        self._seen_429 = 0.0
        self._seen_at = 0.0
        self._counted_from = float("inf")
        self._output_est = float(output_tokens)
        self._in_flight = 0
        self._peak_in_flight = 0
        self._saturations = 0  # admissions that were held back by the window or the pace, or filled the window
        self._gate: asyncio.Lock | None = None
        self._changed: asyncio.Future[None] | None = None
        # counters (read from any thread)
        self.throttled_seconds = 0.0
        self.admitted = 0
        self.throttle_events = 0
        self.cuts = 0
        self.outcomes = {"ok": 0, "throttled": 0, "error": 0}

    # -- public ----------------------------------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        """The current in-flight limit: ``max_concurrency``, or ``ceil(W)`` when adaptive."""
        return max(1, min(self.max_concurrency, math.ceil(self._cwnd - _EPS)))

    @property
    def window(self) -> float:
        """The adaptive window ``W`` (fractional; ``max_concurrency`` when not adaptive)."""
        return self._cwnd

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def recent_429_share(self) -> float:
        """This process's recent share of attempts answered 429/503 (0 until slow start has ended)."""
        return self._seen_429 / self._seen if self._seen > 0 else 0.0

    async def acquire(self, est_tokens: int = 0) -> Permit:
        """Wait for a slot, the pace, the RPM request and the TPM tokens (``est_tokens`` + expected output); FIFO."""
        if self._gate is None:
            self._gate = asyncio.Lock()
        async with self._gate:
            return await self._admit(max(0, int(est_tokens)))

    def set_rates(self, *, rpm: float | None, tpm: float | None) -> None:
        """Change the RPM / TPM caps of a running limiter (None removes a cap), e.g. when a job-wide cap is
        re-divided among the processes alive now. A bucket keeps its current level (cut to the new capacity), so a
        change never releases a burst. Call it on the limiter's loop (``loop.call_soon_threadsafe`` from elsewhere).
        """
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 (or None for no limit)")
        self._rpm = self._rebucket(self._rpm, rpm)
        self._tpm = self._rebucket(self._tpm, tpm)
        self._notify()

    @property
    def rates(self) -> tuple[float | None, float | None]:
        """The current (rpm, tpm) caps."""
        return (self._rpm.rate * 60 if self._rpm else None, self._tpm.rate * 60 if self._tpm else None)

    def stats(self) -> dict[str, Any]:
        """A snapshot for logs and benchmarks."""
        return {
            "limit": self.limit,
            "window": round(self._cwnd, 3),
            "max_concurrency": self.max_concurrency,
            "in_flight": self._in_flight,
            "peak_in_flight": self._peak_in_flight,
            "admitted": self.admitted,
            "throttle_events": self.throttle_events,
            "cuts": self.cuts,
            "recent_429_share": round(self.recent_429_share, 5),
            "throttled_seconds": round(self.throttled_seconds, 3),
            "rtt_s": round(self._rtt, 4),
            "output_tokens_estimate": round(self._output_est, 1),
            "outcomes": dict(self.outcomes),
        }

    # -- admission ---------------------------------------------------------------------------------------------

    def _bucket(self, per_minute: float | None) -> TokenBucket | None:
        if not per_minute:
            return None
        return TokenBucket(per_minute / 60, max(1.0, per_minute / 60 * self._burst_s), clock=self._clock)

    def _rebucket(self, bucket: TokenBucket | None, per_minute: float | None) -> TokenBucket | None:
        fresh = self._bucket(per_minute)
        if bucket is not None and fresh is not None:
            fresh.take(fresh.capacity - min(fresh.capacity, bucket.level))  # keep the level, never above capacity
        return fresh

    def _paced(self) -> bool:
        # Only once a throttle has shown a pool's limit, and only while the window (not max_concurrency) binds.
        return self.pace and self.adaptive and self.cuts > 0 and self._cwnd < self.max_concurrency

    def _held_by_pool(self) -> bool:
        """Whether waiting for the window or the pace is throttling (the pool's doing) rather than a plain cap."""
        return self.adaptive and self.cuts > 0 and self.limit < self.max_concurrency

    async def _admit(self, est_tokens: int) -> Permit:
        held = False  # waited for a slot: the window, not demand, is what limits this process
        while True:
            now = self._clock()
            if self._in_flight >= self.limit:
                held = True
                await self._wait(None, throttling=self._held_by_pool())
                continue
            reserve = est_tokens + self._output_est
            pace = self._next_admit - now if self._paced() else 0.0
            delay = pace
            if self._rpm is not None:
                delay = max(delay, self._rpm.wait_time(1))
            if self._tpm is not None:
                delay = max(delay, self._tpm.wait_time(reserve))
            if delay > 0:
                await self._wait(delay, throttling=True)
                continue
            return self._take(est_tokens, reserve, now, held)

    def _take(self, est_tokens: int, reserve: float, now: float, held: bool) -> Permit:
        if self._rpm is not None:
            self._rpm.take(1)
        if self._tpm is not None:
            self._tpm.take(reserve)
        if self._paced():
            # Keep to the schedule (a late admission doesn't push the next one back), but bank no more than
            # one interval of lateness, so the pace never releases a burst.
            interval = self._rtt / self._cwnd
            self._next_admit = max(self._next_admit, now - interval) + interval
        if self._slow_start:
            self._ss_admits.append(now)
        mark = self._saturations
        self._in_flight += 1
        if held or self._in_flight >= max(1.0, self._cwnd - 1.0):
            # Waited for a slot, or this admission brought in flight within one of the window (a paced process
            # sending W per round trip): the window is what limits this process, not its demand.
            self._saturations += 1
        self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        self.admitted += 1
        return Permit(self, est_tokens, reserve if self._tpm is not None else 0.0, self._epoch, mark, now)

    async def _wait(self, delay: float | None, *, throttling: bool) -> None:
        """Wait until a permit is released (or tokens refunded), or ``delay`` seconds pass, whichever is first."""
        loop = asyncio.get_running_loop()
        changed = self._changed = loop.create_future()
        start = self._clock()
        sleeper = None
        try:
            if delay is None:
                await changed
            else:
                sleeper = asyncio.ensure_future(self._sleep(delay))
                await asyncio.wait((sleeper, changed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if sleeper is not None and not sleeper.done():
                sleeper.cancel()
            if self._changed is changed:
                self._changed = None
            if throttling:
                self.throttled_seconds += max(0.0, self._clock() - start)

    def _notify(self) -> None:
        changed = self._changed
        if changed is not None and not changed.done():
            changed.set_result(None)

    # -- release and the adaptive window -------------------------------------------------------------------------

    def _release(self, permit: Permit, outcome: Outcome, tokens_used: int | None) -> None:
        now = self._clock()
        self.outcomes[outcome] += 1
        self._in_flight -= 1
        if self._tpm is not None:
            if tokens_used is not None:
                self._output_est += _OUTPUT_GAIN * (max(0, tokens_used - permit.est_tokens) - self._output_est)
                self._settle(permit.reserved_tokens - tokens_used)
            elif outcome == "throttled":
                self._settle(permit.reserved_tokens)
        if outcome != "error" and permit.started >= self._counted_from:
            self._observe(outcome == "throttled", now)
        if outcome == "ok":
            rtt = max(0.0, now - permit.started)
            self._rtt = rtt if not self._rtt_seen else self._rtt + _RTT_GAIN * (rtt - self._rtt)
            self._rtt_seen = True
            # Grow only if the window held this process back while this attempt was in flight (else the window
            # isn't what limits the process, and growing it would be untested).
            if self.adaptive and self._saturations > permit.saturation_mark:
                self._grow()
        elif outcome == "throttled":
            self.throttle_events += 1
            if permit.epoch == 0 and self._epoch == 1 and permit.started > self._ss_since:
                # Slow start's exit counted this attempt as admitted by the pool; it wasn't (a storm, not a
                # filling window): take its share back, down to the halved window.
                self._cwnd = max(self._ss_floor, self._cwnd - self._ss_unit)
            elif self.adaptive and self._should_cut(permit, now):
                self._cut(now)
        self._notify()

    def _observe(self, throttled: bool, now: float) -> None:
        decay = math.exp(-max(0.0, now - self._seen_at) / CROWD_MEMORY_S)
        self._seen = self._seen * decay + 1.0
        self._seen_429 = self._seen_429 * decay + (1.0 if throttled else 0.0)
        self._seen_at = now

    def _grow(self) -> None:
        if self._slow_start:
            self._cwnd += 1.0  # +1 per success: doubles per round trip
        else:
            # ~MI_STEP x W + AI_STEP / W per round trip: a small window grows faster than a large one, so unequal
            # shares converge. While 429s are rarer than CROWD_REF the pool has room this process hasn't found:
            # probe faster, up to MAX_BOOST x.
            boost = min(MAX_BOOST, max(1.0, CROWD_REF / max(self.recent_429_share, CROWD_REF / MAX_BOOST)))
            self._cwnd += boost * (MI_STEP + AI_STEP / max(self._cwnd, SMALL_WINDOW) ** 2)
            self._grew_since_cut = True
        self._cwnd = min(self._cwnd, float(self.max_concurrency))

    def _settle(self, refund: float) -> None:
        if refund >= 0:
            self._tpm.give(refund)
        else:
            self._tpm.take(-refund)

    def _should_cut(self, permit: Permit, now: float) -> bool:
        if permit.epoch != self._epoch:
            return False  # sent before the latest cut: part of the overload we already reacted to
        # 429s come back at once, long before the requests that caused them would have, and a quota window
        # remembers an overload for a while: at most one cut per max(round trip, cooldown_s).
        return self._last_cut is None or now - self._last_cut >= max(self.cooldown_s, self._rtt)

    def _depth(self) -> float:
        """The crowd-driven cut: deeper the more of this process's recent attempts were answered 429."""
        gentlest = 1.0 - self.backoff
        return min(MAX_DEPTH, max(gentlest, gentlest * (self.recent_429_share / CROWD_REF) ** 2))

    def _cut(self, now: float) -> None:
        if self._slow_start:
            # Slow start doubles per round trip, so when it first overshoots it can be up to 2x too high: halve —
            # or, if more, keep 0.8 x the rate this process got admitted over the last window (a quota pool
            # rejects once its window is full, so that rate is this process's part of a full pool); halving alone
            # would leave half the pool unused for a long time when the overshoot was small.
            span = max(self.cooldown_s, self._rtt)
            self._ss_since = now - span
            recent = sum(1 for t in self._ss_admits if t > self._ss_since) - 1  # the refused one doesn't count
            self._ss_unit = SLOW_START_KEEP * self._rtt / span  # the window each of them stands for
            self._ss_floor = self._cwnd * SLOW_START_BACKOFF
            factor = max(SLOW_START_BACKOFF, min(1.0, self._ss_unit * recent / self._cwnd))
            self._ss_admits.clear()
            # Start the 429-share estimate from a prior; slow start's overshoot (attempts sent until the pool's
            # window has forgotten it) is not a crowd.
            self._counted_from = now + max(self.cooldown_s, self._rtt)
            self._seen, self._seen_429, self._seen_at = CROWD_PRIOR, CROWD_PRIOR * CROWD_REF, now
        else:
            # Throttled again with no success in between that grew the window: even the reduced window is too
            # high (capacity fell, or a 429 storm), so each cut in a row is deeper. After growth it was a probe.
            self._streak = 0 if self._grew_since_cut else min(self._streak + 1, 8)
            storm = max(SLOW_START_BACKOFF, self.backoff ** (2 ** self._streak))
            factor = min(storm, 1.0 - self._depth())
        self._cwnd = max(MIN_WINDOW, self._cwnd * factor)
        self._grew_since_cut = False
        self._slow_start = False
        self._epoch += 1
        self._last_cut = now
        self.cuts += 1
        self._next_admit = now + self._rtt / self._cwnd
