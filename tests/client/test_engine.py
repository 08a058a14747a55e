"""Engine and BoundedSubmitter: outputs as they complete, bounded pending, exactly-once, crashes, sharing, processes.

The fake caller's records finish when the test releases them (an asyncio.Event set on the loop) or after a
millisecond or two on the loop; the test thread waits on events and futures, never on a timer.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import multiprocessing
import pickle
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import client.engine as engine_module
from client.config import ClientConfig, Target
from client.engine import BoundedSubmitter, Engine, EngineStopped
from client.limits import RequestLimiter

pytestmark = pytest.mark.timeout(60)

CONFIG = ClientConfig(target=Target.openai_compatible("http://127.0.0.1:9/v1"), max_concurrency=8, rpm=None)


class FakeCaller:
    """``complete(record)`` returns the record. Records named ``gate:*`` wait for ``release``; ``boom*`` raise."""

    def __init__(self, limiter: RequestLimiter) -> None:
        self.limiter = limiter
        self.thread = threading.current_thread()
        self.loop = asyncio.get_running_loop()
        self.events: dict[str, asyncio.Event] = {}
        self.active = 0
        self.peak_active = 0
        self.started: list[str] = []
        self.closed = False

    def _event(self, record: str) -> asyncio.Event:
        return self.events.setdefault(record, asyncio.Event())

    def release(self, record: str) -> None:
        """Thread-safe: let a ``gate:*`` record finish."""
        self.loop.call_soon_threadsafe(lambda: self._event(record).set())

    async def complete(self, record: str) -> str:
        self.started.append(record)
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        try:
            if record.startswith("boom"):
                raise ValueError(f"bug on {record}")
            if record.startswith("gate:"):
                await self._event(record).wait()
            else:
                await asyncio.sleep(0.001 * (hash(record) % 3))
            return record
        finally:
            self.active -= 1

    async def aclose(self) -> None:
        self.closed = True


def crash(record, exc):
    return ("crashed", record, type(exc).__name__)


@pytest.fixture
def engine():
    eng = Engine(FakeCaller, CONFIG)
    yield eng
    eng.close()


# -- Engine -----------------------------------------------------------------------------------------------------


def test_factory_runs_on_the_loop_thread_with_the_engines_limiter():
    eng = Engine(FakeCaller, CONFIG)
    try:
        caller = eng.caller
        assert caller.thread is eng._thread and caller.thread is not threading.current_thread()
        assert caller.limiter is eng.limiter and eng.limiter.max_concurrency == 8
        assert eng.submit("a").result(timeout=10) == "a"
        assert eng.stats()["submitted"] == 1
    finally:
        eng.close()
    assert caller.closed and not eng._thread.is_alive() and not eng.alive


def test_async_factory_is_awaited_on_the_loop():
    async def factory(limiter):
        await asyncio.sleep(0)
        return FakeCaller(limiter)

    eng = Engine(factory, CONFIG)
    try:
        assert isinstance(eng.caller, FakeCaller)
        assert eng.submit("x").result(timeout=10) == "x"
    finally:
        eng.close()


def test_limiter_follows_the_config():
    config = ClientConfig(target=CONFIG.target, max_concurrency=5, rpm=600, tpm=60_000, adaptive=False)
    eng = Engine(FakeCaller, config)
    try:
        lim = eng.limiter
        assert (lim.max_concurrency, lim.adaptive, lim.limit) == (5, False, 5)
        assert lim._rpm.rate == 10 and lim._tpm.rate == 1000
    finally:
        eng.close()


def test_engine_cannot_be_pickled(engine):
    with pytest.raises(TypeError, match="setup"):
        pickle.dumps(engine)


def test_submit_after_close_raises(engine):
    engine.close()
    engine.close()  # idempotent
    with pytest.raises(EngineStopped):
        engine.submit("a")


def test_failing_factory_raises_and_leaves_no_thread_behind():
    def factory(limiter):
        raise RuntimeError("no credentials")

    before = threading.active_count()
    with pytest.raises(RuntimeError, match="no credentials"):
        Engine.shared("failing", factory, CONFIG)
    assert "failing" not in engine_module._REGISTRY
    assert threading.active_count() == before
    eng = Engine.shared("failing", FakeCaller, CONFIG)
    assert eng.submit("ok").result(timeout=10) == "ok"
    eng.release()


# -- BoundedSubmitter -------------------------------------------------------------------------------------------


def test_a_slow_record_does_not_hold_back_the_fast_ones(engine):
    sub = BoundedSubmitter(engine, max_pending=100, on_crash=crash)
    got = sub.submit("gate:slow")
    for i in range(10):
        got += sub.submit(f"fast{i}")
    drained = sub.drain()
    while len(got) < 10:
        got.append(next(drained))  # each fast record is yielded while the slow one is still pending
    assert sorted(got) == sorted(f"fast{i}" for i in range(10))
    assert sub.pending == 1
    engine.caller.release("gate:slow")
    assert list(drained) == ["gate:slow"]
    assert sub.pending == 0


def test_submit_returns_outputs_completed_so_far_without_waiting(engine):
    sub = BoundedSubmitter(engine, max_pending=100, on_crash=crash)
    assert sub.submit("gate:a") == []  # nothing has completed: returns at once
    done = engine.submit("probe")  # goes through the loop after gate:a started
    done.result(timeout=10)
    sub_b = sub.submit("b")
    # "b" may or may not have finished yet, but "gate:a" cannot have.
    assert "gate:a" not in sub_b
    engine.caller.release("gate:a")
    rest = list(sub.drain())
    assert sorted(sub_b + rest) == ["b", "gate:a"]


class _SignallingQueue(queue.SimpleQueue):
    """Sets ``blocking`` when a consumer starts a blocking get: the moment the submitter waits."""

    def __init__(self) -> None:
        super().__init__()
        self.blocking = threading.Event()

    def get(self, block=True, timeout=None):
        if block:
            self.blocking.set()
        return super().get(block, timeout)


def test_submit_blocks_when_max_pending_records_are_pending(engine):
    sub = BoundedSubmitter(engine, max_pending=4, on_crash=crash)
    sub._completed = _SignallingQueue()
    for i in range(4):
        assert sub.submit(f"gate:{i}") == []
    result: list = []
    t = threading.Thread(target=lambda: result.extend(sub.submit("fifth")))
    t.start()
    assert sub._completed.blocking.wait(timeout=10)
    assert engine.stats()["submitted"] == 4  # the fifth is held back, not submitted
    engine.caller.release("gate:2")
    t.join(timeout=10)
    assert not t.is_alive()
    assert result == ["gate:2"]
    assert sub.peak_pending == 4
    for i in (0, 1, 3):
        engine.caller.release(f"gate:{i}")
    assert sorted(sub.drain()) == ["fifth", "gate:0", "gate:1", "gate:3"]


def test_peak_pending_and_concurrency_stay_within_max_pending(engine):
    sub = BoundedSubmitter(engine, max_pending=6, on_crash=crash)
    outputs = []
    for i in range(300):
        outputs += sub.submit(f"r{i}")
        assert sub.pending <= 6
    outputs += list(sub.drain())
    assert sub.peak_pending == 6
    assert engine.caller.peak_active <= 6
    assert sorted(outputs) == sorted(f"r{i}" for i in range(300))


def test_every_record_comes_out_exactly_once_across_bundles(engine):
    outputs = []
    records = [f"r{i}" for i in range(500)] + ["boom1", "boom2"]
    for start in range(0, len(records), 100):  # five bundles, one submitter each
        sub = BoundedSubmitter(engine, max_pending=16, on_crash=crash)
        for rec in records[start:start + 100]:
            outputs += sub.submit(rec)
        outputs += list(sub.drain())
    plain = [o for o in outputs if isinstance(o, str)]
    assert collections.Counter(plain) == collections.Counter(records[:-2])
    assert sorted(o for o in outputs if isinstance(o, tuple)) == [
        ("crashed", "boom1", "ValueError"), ("crashed", "boom2", "ValueError")]


def test_a_crashing_caller_becomes_the_on_crash_output(engine):
    sub = BoundedSubmitter(engine, max_pending=4, on_crash=crash)
    outputs = sub.submit("boom") + list(sub.drain())
    assert outputs == [("crashed", "boom", "ValueError")]


def test_without_on_crash_the_exception_fails_the_bundle(engine):
    sub = BoundedSubmitter(engine, max_pending=4)
    sub.submit("boom")
    with pytest.raises(ValueError, match="bug on boom"):
        list(sub.drain())


def test_closing_the_engine_turns_pending_records_into_crash_outputs():
    eng = Engine(FakeCaller, CONFIG)
    sub = BoundedSubmitter(eng, max_pending=8, on_crash=crash)
    for i in range(3):
        sub.submit(f"gate:{i}")
    eng.close()
    assert sorted(sub.drain()) == [("crashed", f"gate:{i}", "CancelledError") for i in range(3)]


def test_a_dead_engine_is_noticed_and_nothing_is_dropped(monkeypatch):
    monkeypatch.setattr(engine_module, "POLL_S", 0.01)
    eng = Engine(FakeCaller, CONFIG)
    sub = BoundedSubmitter(eng, max_pending=8, on_crash=crash)
    sub.submit("gate:a")
    sub.submit("gate:b")
    eng.loop.call_soon_threadsafe(eng.loop.stop)  # the loop dies without cancelling its tasks
    eng._thread.join(timeout=10)
    assert sorted(sub.drain()) == [("crashed", "gate:a", "EngineStopped"), ("crashed", "gate:b", "EngineStopped")]
    eng.close()


def test_max_pending_must_be_positive(engine):
    with pytest.raises(ValueError):
        BoundedSubmitter(engine, max_pending=0)


# -- shared registry --------------------------------------------------------------------------------------------


def test_shared_returns_one_engine_per_key_across_threads_and_stops_on_last_release():
    calls = []

    def factory(limiter):
        calls.append(threading.current_thread().name)
        return FakeCaller(limiter)

    barrier = threading.Barrier(8)

    def grab(_):
        barrier.wait(timeout=10)
        return Engine.shared("shared-key", factory, CONFIG)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        engines = list(pool.map(grab, range(8)))
    eng = engines[0]
    assert all(e is eng for e in engines)
    assert calls == ["chatbeam-engine"]  # built once, on the loop thread
    other = Engine.shared("other-key", factory, CONFIG)
    assert other is not eng
    other.release()
    assert not other.alive

    for e in engines[:-1]:
        e.release()
        assert eng.alive
    caller = eng.caller
    engines[-1].release()
    assert not eng.alive and not eng._thread.is_alive() and caller.closed
    assert "shared-key" not in engine_module._REGISTRY
    eng.release()  # an extra release is harmless

    again = Engine.shared("shared-key", factory, CONFIG)
    assert again is not eng and again.submit("z").result(timeout=10) == "z"
    again.release()


def test_threads_sharing_one_engine_each_get_their_own_records_back():
    eng = Engine.shared("threads", FakeCaller, CONFIG)

    def bundle(n):
        e = Engine.shared("threads", FakeCaller, CONFIG)  # another DoFn instance's setup()
        try:
            sub = BoundedSubmitter(e, max_pending=16, on_crash=crash)
            out = []
            for i in range(200):
                out += sub.submit(f"t{n}-{i}")
            return out + list(sub.drain())
        finally:
            e.release()

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(bundle, range(4)))
    for n, out in enumerate(results):
        assert sorted(out) == sorted(f"t{n}-{i}" for i in range(200))
    assert eng.caller.peak_active <= 64
    eng.release()
    assert not eng.alive


# -- processes --------------------------------------------------------------------------------------------------


def _use_shared_engine(tag: str) -> tuple[str, list[str]]:
    eng = Engine.shared("proc-key", FakeCaller, CONFIG)
    try:
        sub = BoundedSubmitter(eng, max_pending=8, on_crash=crash)
        out = []
        for i in range(50):
            out += sub.submit(f"{tag}{i}")
        return str(multiprocessing.current_process().pid), sorted(out + list(sub.drain()))
    finally:
        eng.release()


def _forked_child(results) -> None:
    try:
        results.put(_use_shared_engine("child"))
    except BaseException as exc:  # report, don't hang the parent
        results.put(("error", repr(exc)))


def test_a_forked_child_builds_its_own_engine():
    parent = Engine.shared("proc-key", FakeCaller, CONFIG)
    try:
        ctx = multiprocessing.get_context("fork")
        results = ctx.Queue()
        proc = ctx.Process(target=_forked_child, args=(results,))
        proc.start()
        pid, out = results.get(timeout=30)
        proc.join(timeout=30)
        assert out == sorted(f"child{i}" for i in range(50))
        assert parent.alive and parent.submit("still-here").result(timeout=10) == "still-here"
    finally:
        parent.release()


_CHILD = """
import asyncio, json, os, sys
from client.config import ClientConfig, Target
from client.engine import BoundedSubmitter, Engine

class Echo:
    def __init__(self, limiter):
        self.loop = asyncio.get_running_loop()
    async def complete(self, record):
        await asyncio.sleep(0.001)
        return record
    async def aclose(self):
        pass

config = ClientConfig(target=Target.openai_compatible("http://127.0.0.1:9/v1"), max_concurrency=4)
engine = Engine.shared("k", Echo, config)
sub = BoundedSubmitter(engine, max_pending=8)
tag = sys.argv[1]
out = []
for i in range(50):
    out += sub.submit(tag + str(i))
out += list(sub.drain())
engine.release()
print(json.dumps({"pid": os.getpid(), "out": sorted(out), "alive": engine.alive}))
"""


def test_separate_processes_each_build_their_own_engine():
    # What Beam's multi-process DirectRunner and Dataflow's SDK workers do: a fresh interpreter per worker.
    root = Path(engine_module.__file__).resolve().parents[1]
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, tag], cwd=root, stdout=subprocess.PIPE, text=True)
             for tag in "ab"]
    results = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    assert results[0]["pid"] != results[1]["pid"]
    for result, tag in zip(results, "ab"):
        assert result["out"] == sorted(f"{tag}{i}" for i in range(50)) and result["alive"] is False
