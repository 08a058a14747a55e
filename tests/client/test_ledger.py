"""The job ledger (client/ledger_store.py, client/ledger.py, client/jobshare.py) without Beam: the local store's
create-if-absent under thread and process races, lease sizing, returns and reclaims, rate shares, the Budget on
leases. Clocks are injected; nothing sleeps."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import threading
from pathlib import Path

import pytest

from client.budget import Budget
from client.config import ClientConfig, Target
from client.jobshare import JobShare, JobShareSettings
from client.ledger import JobLedger, read_report
from client.ledger_store import LedgerUnavailable, LocalDirStore, check_store
from client.pricing import PriceTable
from client.requests import build_request
from schemas.records import InputRecord, Usage

PRICES = PriceTable(as_of="test", prices={"m": (1_000_000.0, 2_000_000.0)}, default=(0.0, 0.0))
CONFIG = ClientConfig(target=Target("http://x", "none"), model="m")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeLimiter:
    def __init__(self) -> None:
        self.rates: tuple[float | None, float | None] = (None, None)
        self.in_flight = 0
        self.admitted = 0

    def set_rates(self, *, rpm, tpm) -> None:
        self.rates = (rpm, tpm)


def entries(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / "log").iterdir()) if not p.name.startswith(".")]


# -- the store -----------------------------------------------------------------------------------------------------

def test_local_store_create_is_atomic_and_only_if_absent_under_a_thread_race(tmp_path):
    store = LocalDirStore(str(tmp_path))
    wins, barrier = [], threading.Barrier(8)

    def racer(i: int) -> None:
        barrier.wait()
        if store.create("log/0000000001", f'{{"by": {i}}}'.encode()):
            wins.append(i)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert json.loads(store.read("log/0000000001")) == {"by": wins[0]}  # the winner's bytes, whole
    assert store.read("log/missing") is None
    store.put("procs/a", b"1")
    store.put("procs/a", b"2")  # an owner overwrites its own heartbeat
    assert store.list("procs/") == {"procs/a": b"2"}
    assert list(store.list("log/", start_after="log/0000000001")) == []


def test_check_store_refuses_a_store_that_ignores_create_if_absent(tmp_path):
    class Overwriting(LocalDirStore):
        def create(self, name, data):  # what a store without preconditions does: the last write wins
            self.put(name, data)
            return True

    check_store(LocalDirStore(str(tmp_path / "ok")))
    with pytest.raises(LedgerUnavailable, match="does not honour create-if-absent"):
        check_store(Overwriting(str(tmp_path / "bad")))


def test_check_store_names_an_unwritable_location_in_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(LedgerUnavailable) as err:
        check_store(LocalDirStore(str(blocker / "ledger")))
    assert str(blocker / "ledger") in str(err.value) and "\n" not in str(err.value)


# -- the log -------------------------------------------------------------------------------------------------------

def test_leases_start_small_grow_and_never_exceed_the_free_budget_split_among_live_processes(tmp_path):
    ledger = JobLedger(LocalDirStore(str(tmp_path)), {"tokens": 10_000}, owner="a")
    assert ledger.grant({"tokens": 10}, {"tokens": 80}, live=4) == {"tokens": 80}  # want, under the fair share
    assert ledger.grant({"tokens": 10}, {"tokens": 5_000}, live=4) == {"tokens": 9_920 // 8}  # free / (2 x live)
    assert ledger.grant({"tokens": 9_000}, {"tokens": 9_000}, live=4) is None  # need > free: nothing granted
    big = ledger.grant({"tokens": 8_000}, {"tokens": 8_000}, live=4)
    assert big == {"tokens": 8_000}  # need beats the fair share while it fits
    assert ledger.free() == {"tokens": 10_000 - 80 - 1_240 - 8_000}
    ledger.release({"tokens": 500}, committed={"tokens": 100})
    assert ledger.free()["tokens"] == 680 + 500
    assert [e["kind"] for e in entries(tmp_path)] == ["grant", "grant", "grant", "return"]


def test_reclaim_gives_back_a_dead_owners_unused_lease_once(tmp_path):
    store = LocalDirStore(str(tmp_path))
    dead = JobLedger(store, {"tokens": 1_000}, owner="dead")
    dead.grant({"tokens": 100}, {"tokens": 300}, live=1, committed={"tokens": 0})
    a, b = JobLedger(store, {"tokens": 1_000}, owner="a"), JobLedger(store, {"tokens": 1_000}, owner="b")
    assert a.reclaim("dead", committed={"tokens": 120}) == {"tokens": 180}  # granted 300, published 120 used
    assert b.reclaim("dead", committed={"tokens": 0}) is None  # b reads a's reclaim before appending: no double
    assert b.free() == {"tokens": 1_000 - 300 + 180}
    closed = JobLedger(store, {"tokens": 1_000}, owner="closed")
    closed.grant({"tokens": 10}, {"tokens": 10}, live=1)
    closed.release({}, final=True)
    assert a.reclaim("closed") is None  # a process that returned its lease at teardown is never reclaimed


def _grab_leases(root: str, owner: str, cap: int, results, barrier=None) -> None:
    ledger = JobLedger(LocalDirStore(root), {"tokens": cap}, owner=owner)
    if barrier is not None:
        barrier.wait()
    got = 0
    while (lease := ledger.grant({"tokens": 7}, {"tokens": 40}, live=4)) is not None:
        got += lease["tokens"]
    results.put((owner, got))


def _check_race(root: Path, cap: int, got: dict[str, int]) -> None:
    report = read_report(LocalDirStore(str(root)), {"tokens": cap})
    assert sum(got.values()) == report.granted["tokens"] <= cap  # never more than the cap, and the log agrees
    assert cap - report.granted["tokens"] < 7  # and all of it went out (less than one 'need' is left)
    assert sum(1 for v in got.values() if v) >= 2, got  # they really raced
    names = sorted(p.name for p in (root / "log").iterdir() if not p.name.startswith("."))
    assert names == [f"{i:010d}" for i in range(1, len(names) + 1)]  # a gapless log


def test_threads_racing_for_leases_never_overgrant(tmp_path):
    import queue

    results: queue.Queue = queue.Queue()
    threads = [threading.Thread(target=_grab_leases, args=(str(tmp_path), f"t{i}", 5_000, results))
               for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _check_race(tmp_path, 5_000, dict(results.get() for _ in threads))


def test_processes_racing_for_leases_never_overgrant(tmp_path):
    ctx = multiprocessing.get_context("fork")
    results, barrier = ctx.Queue(), ctx.Barrier(4)
    procs = [ctx.Process(target=_grab_leases, args=(str(tmp_path), f"p{i}", 5_000, results, barrier))
             for i in range(4)]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    _check_race(tmp_path, 5_000, got)


# -- JobShare: heartbeats, rate shares, death, idle return ---------------------------------------------------------

def share(tmp_path: Path, clock: FakeClock, **settings) -> JobShare:
    return JobShare(JobShareSettings(url=str(tmp_path), **settings), clock=clock, start_thread=False)


def test_rpm_and_tpm_are_divided_among_the_active_processes_and_follow_them(tmp_path):
    clock = FakeClock()
    shares = [share(tmp_path, clock, rpm=600, tpm=60_000, idle_return_s=10) for _ in range(3)]
    limiters = [FakeLimiter() for _ in shares]
    for s, lim in zip(shares, limiters):
        s.attach(limiter=lim)
    for s in shares:
        s.tick()
    assert [lim.rates for lim in limiters] == [(200, 20_000)] * 3
    shares[2].close()  # a process finishes: the others' shares grow
    for s in shares[:2]:
        s.tick()
    assert [lim.rates for lim in limiters[:2]] == [(300, 30_000)] * 2
    clock.now += 11  # shares[1] had no work for longer than idle_return_s: it stops counting as active
    limiters[0].admitted += 5
    shares[1].tick()
    shares[0].tick()
    assert limiters[0].rates == (600, 60_000)
    limiters[1].in_flight = 1  # work arrives: it counts again at the next beats
    shares[1].tick()
    shares[0].tick()
    assert limiters[0].rates == (300, 30_000) and limiters[1].rates == (300, 30_000)


def test_a_dead_process_lease_is_reclaimed_after_dead_after_s_and_the_process_is_fenced(tmp_path):
    clock = FakeClock()
    alive = share(tmp_path, clock, max_total_tokens=1_000, dead_after_s=30)
    dying = share(tmp_path, clock, max_total_tokens=1_000, dead_after_s=30)
    budget = Budget(PRICES, max_total_tokens=1_000, output_tokens=5, lease_source=dying, clock=clock)
    dying.attach(budget=budget)
    alive.attach()
    hold = asyncio.run(budget.reserve(build_request(InputRecord(prompt="one two three"), CONFIG)))
    hold.settle(Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15))
    lease = sum(e["amount"]["tokens"] for e in entries(tmp_path) if e["kind"] == "grant")
    dying.tick()  # publishes committed = 15
    alive.tick()
    clock.now += 29
    alive.tick()
    alive.ledger.sync()
    assert alive.ledger.free() == {"tokens": 1_000 - lease}  # not dead yet
    clock.now += 2
    alive.tick()
    assert alive.ledger.free() == {"tokens": 1_000 - 15}  # everything but what it had used came back
    dying.ledger.sync()  # the 'dead' process was only stalled: it sees the reclaim and stops using that lease
    assert dying.ledger.fences == 1 and budget.allowance == {"tokens": 15}


def test_an_idle_process_returns_its_unused_lease_and_leases_again_when_work_comes(tmp_path):
    clock = FakeClock()
    s = share(tmp_path, clock, max_total_tokens=10_000, idle_return_s=10)
    budget = Budget(PRICES, max_total_tokens=10_000, output_tokens=5, lease_source=s, clock=clock)
    s.attach(budget=budget)
    request = build_request(InputRecord(prompt="one two three"), CONFIG)
    asyncio.run(budget.reserve(request)).settle(Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15))
    assert s.ledger.free()["tokens"] == 10_000 - 8 * 15  # the first lease: eight records' estimates
    clock.now += 11
    s.tick()
    assert s.ledger.free()["tokens"] == 10_000 - 15 and budget.allowance == {"tokens": 15}
    assert asyncio.run(budget.reserve(request)) is not None


def test_budgets_of_four_processes_share_one_cap_and_use_it(tmp_path):
    """Four Budgets on one ledger, records admitted concurrently; each costs its estimate."""
    clock = FakeClock()
    shares = [share(tmp_path, clock, max_total_tokens=3_000) for _ in range(4)]
    budgets = [Budget(PRICES, max_total_tokens=3_000, output_tokens=5, lease_source=s, clock=clock) for s in shares]
    for s, b in zip(shares, budgets):
        s.attach(budget=b)
        s.tick()
    request = build_request(InputRecord(prompt="one two three"), CONFIG)  # estimate: 10 + 5 tokens

    async def record(budget: Budget) -> bool:
        hold = await budget.reserve(request)
        if hold is None:
            return False
        await asyncio.sleep(0)
        hold.settle(Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15))
        return True

    async def main():
        return await asyncio.gather(*(record(budgets[i % 4]) for i in range(400)))

    admitted = sum(asyncio.run(main()))
    spent = sum(b.spent_tokens for b in budgets)
    assert spent <= 3_000 and spent >= 0.8 * 3_000, spent
    assert admitted == spent // 15 and all(b.exhausted for b in budgets)
    assert "for the whole job" in budgets[0].exhausted_message()


def test_a_record_cancelled_while_its_process_leases_loses_no_lease_and_blocks_nobody():
    """A record deadline may cancel a reserve() that is waiting on the ledger; the lease still arrives."""
    release, calls = threading.Event(), []

    class SlowLedger:
        def grant(self, need, want, committed):
            calls.append(dict(want))
            release.wait(30)
            return dict(want)

    budget = Budget(PRICES, max_total_tokens=10_000, output_tokens=5, lease_source=SlowLedger())
    request = build_request(InputRecord(prompt="one two three"), CONFIG)

    async def main():
        first = asyncio.ensure_future(budget.reserve(request))
        while not calls:
            await asyncio.sleep(0)
        second = asyncio.ensure_future(budget.reserve(request))  # waits for the lease in progress
        await asyncio.sleep(0)
        first.cancel()
        release.set()
        return first, await asyncio.wait_for(second, 30)

    first, hold = asyncio.run(main())
    assert first.cancelled() and hold is not None
    assert budget.allowance == {"tokens": 8 * 15} and len(calls) == 1  # one lease, credited, shared
