"""JobShare: one worker process's membership in the job ledger — the job-wide budget and `--rpm`/`--tpm`. No Beam.

    share = JobShare(JobShareSettings(url, max_total_tokens=20_000, rpm=600))   # in DoFn.setup, once per process
    budget = budget_config.build(counters, lease_source=share)                  # leases from the job's cap
    share.attach(budget=budget, limiter=engine.limiter, loop=engine.loop)       # heartbeats start
    ...
    share.close()                                                               # teardown: give the lease back

What is per job and what is per process:

* **per job** — ``--max_cost_usd`` / ``--max_total_tokens`` (the ledger's leases, client/ledger.py) and
  ``--rpm`` / ``--tpm``: each process runs its limiter at ``rate / active processes``, re-divided every heartbeat
  (``RequestLimiter.set_rates``) as processes start, go idle, finish or die;
* **per process** — ``--max_concurrency`` and the adaptive (AIMD) limit, which each process finds on its own.

Every ``heartbeat_s`` a daemon thread:
1. writes this process's heartbeat ``procs/<owner>`` (a beat counter, whether it has work, and what it has
   committed: spent plus reserved), one write per interval to its own object;
2. lists the heartbeats (one list call) and re-divides ``--rpm``/``--tpm`` among the active ones; the heartbeat
   also carries the records this process has finished per tier (``finished``, from its tier selector), and
   ``others_finished()`` sums the others' from the list — the job-wide progress ``--deadline`` projects from
   (client/tiers.py);
3. reclaims the unused lease of any member whose beat has not changed for ``dead_after_s`` by this process's own
   clock (no clock comparison between machines), through a ``reclaim`` entry in the ledger — at most once per dead
   member, whoever notices first;
4. gives this process's unused lease back when it has had nothing in flight for ``idle_return_s`` (a worker whose
   input ran out must not strand budget; it leases again if work comes).

``close()`` returns the lease for good (a ``final`` return) and marks the heartbeat closed. A process killed
before that is reclaimed by the others after ``dead_after_s``.

Time is injected (``clock``: monotonic seconds; ``wall``: for the heartbeat's readable timestamp) and ``tick()`` can
be driven by hand (``start_thread=False``), so tests never sleep.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from client.budget import Budget
from client.constants import NANO
from client.ledger import JobLedger, new_owner_id
from client.ledger_store import LedgerStore, LedgerUnavailable, open_store

__all__ = ["DEFAULT_DEAD_AFTER_S", "DEFAULT_HEARTBEAT_S", "JOB_OBJECT", "JobShare", "JobShareSettings",
           "record_job"]

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_S = 2.0  # GCS: at most one write per second per object; a heartbeat is written once per interval
DEFAULT_DEAD_AFTER_S = 60.0  # a member whose beat has not changed this long is dead; its unused lease is reclaimed
JOB_OBJECT = "job.json"  # in the ledger: the job's caps, as its options gave them
DEFAULT_IDLE_RETURN_S = 10.0  # nothing in flight this long: give the unused lease back


@dataclass(frozen=True)
class JobShareSettings:
    """Picklable (carried on the DoFn): where the ledger is and what is shared through it."""

    url: str
    max_total_tokens: int | None = None
    max_cost_usd: float | None = None
    rpm: float | None = None
    tpm: float | None = None
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    dead_after_s: float = DEFAULT_DEAD_AFTER_S
    idle_return_s: float = DEFAULT_IDLE_RETURN_S

    @property
    def terms(self) -> dict[str, Any]:
        """The job's caps as its options name them (what ``job.json`` in the ledger records)."""
        return {"max_total_tokens": self.max_total_tokens, "max_cost_usd": self.max_cost_usd, "rpm": self.rpm,
                "tpm": self.tpm}

    @property
    def caps(self) -> dict[str, int]:
        caps = {}
        if self.max_total_tokens is not None:
            caps["tokens"] = int(self.max_total_tokens)
        if self.max_cost_usd is not None:
            caps["nano_usd"] = round(self.max_cost_usd * NANO)
        return caps


def record_job(store: LedgerStore, settings: JobShareSettings) -> None:
    """``job.json`` holds the caps; a job joining an existing ledger must state the same ones (LedgerUnavailable,
    one line, otherwise). Run once by the launcher before any work (pipelines/jobledger.py)."""
    terms = settings.terms
    if store.create(JOB_OBJECT, json.dumps({**terms, "created": round(time.time(), 3)}).encode()):
        return
    existing = json.loads(store.read(JOB_OBJECT) or b"{}")
    theirs = {k: existing.get(k) for k in terms}
    if theirs != terms:
        differ = ", ".join(f"--{k} {theirs[k]} (this run: {terms[k]})" for k in terms if theirs[k] != terms[k])
        raise LedgerUnavailable(f"the job ledger at {store.url} belongs to a job with other limits: {differ}")


class JobShare:
    """See the module docstring. Thread-safe; ``grant`` is the Budget's LeaseSource."""

    def __init__(self, settings: JobShareSettings, *, store: LedgerStore | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 start_thread: bool = True) -> None:
        self.settings = settings
        self.ledger = JobLedger(store if store is not None else open_store(settings.url), settings.caps,
                                owner=new_owner_id(), wall=wall)
        self.ledger.on_fenced = self._fenced
        self._clock, self._wall = clock, wall
        self._start_thread = start_thread
        self.budget: Budget | None = None
        self._limiter: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._beat = 0
        self._last_work = clock()  # a process that just joined is about to work
        self._last_admitted: Any = None
        self._baseline: dict[str, int] = {}  # committed when this owner id began (after a fence)
        self._seen: dict[str, tuple[int, float]] = {}  # other owners: (beat, when it last changed, our clock)
        self._members: dict[str, dict[str, Any]] = {}
        self._progress: Callable[[], Mapping[str, int]] | None = None
        self._others_finished: tuple[dict[str, int], float | None] = ({}, None)
        self.active_members = 1
        self.shares: tuple[float | None, float | None] = (settings.rpm, settings.tpm)
        self.applied: tuple[float | None, float | None] | None = None  # what the limiter was last set to
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._attached = False
        self.beat()  # before any lease: every owner with a lease has a heartbeat others can watch

    # -- wiring --------------------------------------------------------------------------------------------------

    def attach(self, *, budget: Budget | None = None, limiter: Any = None,
               loop: asyncio.AbstractEventLoop | None = None,
               progress: Callable[[], Mapping[str, int]] | None = None) -> None:
        """Give the share its budget and limiter (the limiter's loop for ``set_rates``) and what the heartbeat
        publishes as this process's finished records (``TierSelector.finished``); starts the heartbeats."""
        with self._lock:
            if self._attached:
                return
            self._attached = True
            self.budget, self._limiter, self._loop, self._progress = budget, limiter, loop, progress
        self.tick()  # sets this process's rate share before its first request
        if self._start_thread:
            self._thread = threading.Thread(target=self._run, name="chatbeam-jobshare", daemon=True)
            self._thread.start()
            atexit.register(self.close)

    def grant(self, need: Mapping[str, int], want: Mapping[str, int],
              committed: Mapping[str, int]) -> dict[str, int] | None:
        """The Budget's LeaseSource: a lease from the job's cap, sized for the live members."""
        return self.ledger.grant(need, want, live=self.live_members(), committed=self._mine(committed))

    def others_finished(self) -> tuple[dict[str, int], float | None]:
        """The other processes' finished records per tier, summed over the heartbeats of the last tick (live ones
        and closed ones — a closed process's records are done; a dead one's are not counted: the runner may run
        them again), and when that list was read (``wall``; None before the first tick). A TierSelector's ``job``."""
        with self._lock:
            return dict(self._others_finished[0]), self._others_finished[1]

    def live_members(self) -> int:
        with self._lock:
            return max(1, len([m for m in self._members.values() if not m.get("closed")]))

    # -- the heartbeat ---------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_s):
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - a failed beat is retried next interval; never kill the thread
                log.warning("job ledger heartbeat failed (will retry): %s: %s", type(exc).__name__, exc)

    def tick(self) -> None:
        """One heartbeat: publish, look at the others, re-divide the rates, reclaim the dead, return idle lease."""
        self.beat()
        members, read_at = self.ledger.members(), self._wall()
        now = self._clock()
        with self._lock:
            self._members = {o: m for o, m in members.items() if not m.get("closed") and not self._is_dead(o, m, now)}
            self._others_finished = (self._sum_finished(members), read_at)
        dead = [(o, m) for o, m in members.items() if o != self.ledger.owner and not m.get("closed")
                and o not in self._members]
        for owner, member in dead:
            amount = self.ledger.reclaim(owner, committed=member.get("committed"))
            if amount:
                log.warning("reclaimed the unused budget lease of dead worker %s: %s", owner, amount)
        self._share_rates()
        self._return_if_idle(now)

    def _sum_finished(self, members: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
        total: dict[str, int] = {}
        for owner, member in members.items():
            if owner == self.ledger.owner or not (member.get("closed") or owner in self._members):
                continue
            for tier, n in (member.get("finished") or {}).items():
                total[tier] = total.get(tier, 0) + int(n)
        return total

    def beat(self, *, closed: bool = False) -> None:
        budget, progress = self.budget, self._progress
        self._beat += 1
        payload = {"owner": self.ledger.owner, "beat": self._beat, "t": round(self._wall(), 3),
                   "active": self._active() and not closed, "closed": closed,
                   "committed": self._mine(budget.committed()) if budget is not None else {}}
        if progress is not None:
            payload["finished"] = dict(progress())
        self.ledger.beat(payload)

    def _active(self) -> bool:
        """Had work within the last ``idle_return_s`` (records in flight, or admitted since the last beat)."""
        now = self._clock()
        limiter, budget = self._limiter, self.budget
        if limiter is not None:
            admitted = getattr(limiter, "admitted", None)
            if getattr(limiter, "in_flight", 0) or admitted != self._last_admitted:
                self._last_work, self._last_admitted = now, admitted
        if budget is not None:
            if budget.in_flight:
                self._last_work = now
            self._last_work = max(self._last_work, budget.last_active)
        return now - self._last_work < self.settings.idle_return_s

    def _is_dead(self, owner: str, member: Mapping[str, Any], now: float) -> bool:
        if owner == self.ledger.owner:
            return False
        beat = int(member.get("beat", 0))
        seen = self._seen.get(owner)
        if seen is None or seen[0] != beat:
            self._seen[owner] = (beat, now)
            return False
        return now - seen[1] >= self.settings.dead_after_s

    def _share_rates(self) -> None:
        rpm, tpm = self.settings.rpm, self.settings.tpm
        if rpm is None and tpm is None:
            return
        with self._lock:
            others = sum(1 for o, m in self._members.items() if o != self.ledger.owner and m.get("active"))
        self.active_members = others + 1
        shares = (rpm / self.active_members if rpm else None, tpm / self.active_members if tpm else None)
        limiter, loop = self._limiter, self._loop
        if limiter is None or shares == self.applied:
            return
        self.shares = self.applied = shares
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(lambda: limiter.set_rates(rpm=shares[0], tpm=shares[1]))
        else:
            limiter.set_rates(rpm=shares[0], tpm=shares[1])

    def _return_if_idle(self, now: float) -> None:
        budget = self.budget
        if budget is None or budget.in_flight or now - budget.last_active < self.settings.idle_return_s:
            return
        unused = budget.take_unused()
        if any(unused.values()):
            self.ledger.release(unused, committed=self._mine(budget.committed()))

    # -- fences and teardown --------------------------------------------------------------------------------------

    def _mine(self, committed: Mapping[str, int]) -> dict[str, int]:
        """Committed since this owner id began (a fenced process starts a new id from what it had committed)."""
        return {d: v - self._baseline.get(d, 0) for d, v in committed.items()}

    def _fenced(self) -> None:
        budget = self.budget
        if budget is not None:
            budget.fence()
            self._baseline = budget.committed()

    def close(self) -> None:
        """Give the unused lease back for good and mark the heartbeat closed. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        try:
            budget = self.budget
            unused = budget.take_unused() if budget is not None else {}
            committed = self._mine(budget.committed()) if budget is not None else {}
            self.ledger.release(unused, committed=committed, final=True)
            self.beat(closed=True)
        except Exception as exc:  # noqa: BLE001 - the others reclaim it after dead_after_s
            log.warning("could not return the budget lease to the job ledger: %s: %s", type(exc).__name__, exc)
