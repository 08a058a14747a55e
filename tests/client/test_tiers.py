"""Service tiers online: the headers, escalation against a deadline (injected clock) — alone and from the whole
job's progress shared through the job ledger —, and ChatCaller sending the tier's headers to the emulator,
recording ``service_tier`` and pricing each record at its tier."""

from __future__ import annotations

import asyncio

import pytest

from client.budget import Budget
from client.caller import ChatCaller
from client.config import ClientConfig, Target
from client.jobshare import JobShare, JobShareSettings
from client.metrics import RunCounters
from client.pricing import PriceTable
from client.tiers import UNSENT, TierPlan, TierSelector, tier_headers
from emulator import EmulatorConfig, serve_in_thread
from schemas.records import InputRecord, ResultRecord


def test_tier_headers():
    assert tier_headers("standard") == {}
    assert tier_headers("flex") == {"X-Vertex-AI-LLM-Request-Type": "shared",
                                    "X-Vertex-AI-LLM-Shared-Request-Type": "flex"}
    assert tier_headers("priority") == {"X-Vertex-AI-LLM-Shared-Request-Type": "priority"}


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def selector(clock, **plan):
    return TierSelector(TierPlan("flex", check_every_s=1.0, min_observe_s=10.0, **plan), clock=clock)


def finish(sel, n, tier=None):
    for _ in range(n):
        sel.record_done(tier or sel.current())


def test_without_a_deadline_the_tier_never_changes():
    clock = Clock()
    sel = selector(clock, total=10)
    clock.now += 10_000
    assert sel.current() == "flex" and not sel.escalations


def test_on_track_stays_flex():
    clock = Clock()
    sel = selector(clock, deadline=clock.now + 100, total=100)
    for _ in range(10):  # 5 records/s: 100 records in 20 s, well before the deadline
        clock.now += 1
        finish(sel, 5)
    assert sel.current() == "flex" and sel.counts() == {"flex": 50}


def test_running_late_escalates_to_standard_then_priority():
    clock = Clock()
    sel = selector(clock, deadline=clock.now + 100, total=200)
    for _ in range(11):  # 1 record/s with 190 left: projected finish 190 s away, deadline 89 s away
        clock.now += 1
        finish(sel, 1)
    assert sel.current() == "standard"
    for _ in range(11):  # still 1 record/s after the change: late again
        clock.now += 1
        finish(sel, 1)
    assert sel.current() == "priority"
    assert [(a, b) for _, a, b in sel.escalations] == [("flex", "standard"), ("standard", "priority")]
    counts = sel.counts()  # each record counted at the tier it was sent at
    assert sum(counts.values()) == 22 and counts["flex"] == 9 and counts["standard"] == 10


def test_speeding_up_after_escalation_stops_there():
    clock = Clock()
    sel = selector(clock, deadline=clock.now + 100, total=200)
    for _ in range(11):
        clock.now += 1
        finish(sel, 1)
    assert sel.current() == "standard"
    for _ in range(11):  # standard is fast: 10 records/s
        clock.now += 1
        finish(sel, 10)
    assert sel.current() == "standard"


def test_past_the_deadline_goes_straight_to_priority():
    clock = Clock()
    sel = selector(clock, deadline=clock.now + 5, total=None)
    clock.now += 6
    assert sel.current() == "priority"


# ------------------------------------------------------------------- the whole job's progress, through the ledger

def job_of(tmp_path, clock, n, **plan):
    """``n`` worker processes of one job: each a JobShare over one local ledger directory and a TierSelector that
    projects from it (what client/process_parts.py wires), on one fake clock (heartbeats ticked by hand)."""
    shares, selectors = [], []
    for _ in range(n):
        share = JobShare(JobShareSettings(url=str(tmp_path / "ledger")), clock=clock, wall=clock,
                         start_thread=False)
        sel = TierSelector(TierPlan("flex", check_every_s=1.0, min_observe_s=10.0, **plan), clock=clock,
                           job=share.others_finished)
        share.attach(progress=sel.finished)
        shares.append(share)
        selectors.append(sel)
    return shares, selectors


def run_job(shares, selectors, seconds, per_second=1, heartbeat_s=2):
    """Each process finishes ``per_second`` records a second at the tier its selector gives; heartbeats every
    ``heartbeat_s``."""
    clock = selectors[0]._clock
    for second in range(1, seconds + 1):
        clock.now += 1
        for sel in selectors:
            finish(sel, per_second)
        if second % heartbeat_s == 0:
            for share in shares:
                share.tick()


def test_two_processes_on_track_together_stay_flex(tmp_path):
    # 160 records, two processes at 1 record/s each: the job does 2/s, 80 s for all of it, the deadline is 100 s
    # away. Alone, each would project 1/s for the job's 160 records (160 s) and escalate.
    clock = Clock()
    shares, selectors = job_of(tmp_path, clock, 2, deadline=clock.now + 100, total=160)
    run_job(shares, selectors, 79)
    assert [sel.escalations for sel in selectors] == [[], []]
    assert [sel.counts() for sel in selectors] == [{"flex": 79}, {"flex": 79}]


def test_two_processes_late_together_escalate(tmp_path):
    # 300 records at 2/s job-wide: 150 s, the deadline is 100 s away — both move up.
    clock = Clock()
    shares, selectors = job_of(tmp_path, clock, 2, deadline=clock.now + 100, total=300)
    run_job(shares, selectors, 15)
    assert [[(a, b) for _, a, b in sel.escalations] for sel in selectors] == [[("flex", "standard")]] * 2


def test_one_process_with_a_ledger_projects_as_alone(tmp_path):
    clock = Clock()
    shares, [sel] = job_of(tmp_path, clock, 1, deadline=clock.now + 100, total=160)
    run_job(shares, [sel], 15)
    assert [(a, b) for _, a, b in sel.escalations] == [("flex", "standard")]  # 1/s for 160 records: late


def test_the_job_progress_counts_closed_processes_and_drops_dead_ones(tmp_path):
    clock = Clock()
    shares, selectors = job_of(tmp_path, clock, 3, deadline=clock.now + 1000, total=100)
    finish(selectors[0], 2)
    finish(selectors[1], 3)
    selectors[1].record_done(None)  # finished without a request: done, at no tier
    finish(selectors[2], 5)
    for share in [*shares, shares[0]]:
        share.tick()
    assert shares[0].others_finished()[0] == {"flex": 8, UNSENT: 1}
    shares[1].close()  # a process that finished: its records stay done
    clock.now += 61  # shares[2] stops beating: dead after dead_after_s (60 s), its records may run again
    shares[0].tick()
    others, read_at = shares[0].others_finished()
    assert others == {"flex": 3, UNSENT: 1} and read_at == clock.now
    assert selectors[1].counts() == {"flex": 3}


# ---------------------------------------------------------------------------------------------- ChatCaller

@pytest.fixture(scope="module")
def emu():
    with serve_in_thread(EmulatorConfig(seed=4)) as running:
        yield running


def call_all(config, records, **kwargs):
    async def go():
        async with ChatCaller(config, **kwargs) as caller:
            return [await caller.complete(r) for r in records]
    return asyncio.run(go())


@pytest.mark.parametrize("tier", ["flex", "priority", "standard"])
def test_caller_sends_the_tier_and_records_it(emu, tier):
    emu.reset()
    config = ClientConfig(target=Target.managed("p", "global", root=emu.url, auth="local_tokens"),
                          model="google/gemini-2.0-flash-001", service_tier=tier)
    counters = RunCounters()
    prices = PriceTable.load()
    [out] = call_all(config, [InputRecord(id="a", prompt="Say hi")], counters=counters,
                     budget=Budget(prices, counters=counters))
    assert isinstance(out, ResultRecord) and out.service_tier == tier
    assert emu.stats(fingerprints=False)["by_tier"][tier]["ok"] == 1
    cost = prices.cost(config.model, out.usage.prompt_tokens, out.usage.completion_tokens, tier=tier)
    assert counters.get(f"tier_cost_nano_usd_{tier}") == round(cost * 1e9) > 0
    assert counters.get(f"tier_records_{tier}") == 1


def test_flex_outside_global_is_a_bad_request_naming_the_endpoint(emu):
    config = ClientConfig(target=Target.managed("p", "us-central1", root=emu.url, auth="local_tokens"),
                          model="google/gemini-2.0-flash-001", service_tier="flex")
    [out] = call_all(config, [InputRecord(id="a", prompt="Say hi")])
    assert out.error_type == "bad_request" and "global endpoint" in out.message and out.service_tier == "flex"


def test_an_escalating_selector_moves_later_records_up(emu):
    emu.reset()
    clock = Clock()
    config = ClientConfig(target=Target.managed("p", "global", root=emu.url, auth="local_tokens"),
                          model="google/gemini-2.0-flash-001", service_tier="flex")
    tiers = TierSelector(TierPlan("flex", deadline=clock.now + 1, total=4, check_every_s=0), clock=clock)
    records = [InputRecord(id=f"r{i}", prompt=f"q{i}") for i in range(4)]

    async def go():
        async with ChatCaller(config, tiers=tiers) as caller:
            first = [await caller.complete(r) for r in records[:2]]
            clock.now += 2  # the deadline passes
            return first + [await caller.complete(r) for r in records[2:]]

    outs = asyncio.run(go())
    assert [o.service_tier for o in outs] == ["flex", "flex", "priority", "priority"]
    by_tier = emu.stats(fingerprints=False)["by_tier"]
    assert by_tier["flex"]["ok"] == 2 and by_tier["priority"]["ok"] == 2
    assert tiers.counts() == {"flex": 2, "priority": 2}


def test_no_answers_yet_is_not_late_until_half_the_time_has_gone():
    clock = Clock()
    sel = selector(clock, deadline=clock.now + 100, total=50)
    clock.now += 20  # past min_observe, but slow first answers are not a measured rate
    assert sel.current() == "flex"
    clock.now += 31  # half of the 100 s gone and still nothing finished
    assert sel.current() == "standard"
