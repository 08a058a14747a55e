"""One background event loop per worker process, and the bounded submitter a DoFn uses per bundle. No Beam import.

A DoFn that makes one blocking call at a time leaves the worker idle. Instead each worker process runs one
``Engine``: a daemon thread with an asyncio event loop that owns one ``RequestLimiter`` and one caller (and so
one HTTP connection pool). DoFn threads hand records to it and collect outputs as they complete::

    def setup(self):                                          # DoFn.setup: never at pipeline construction
        self.engine = Engine.shared(key, lambda limiter: ChatCaller(config, limiter=limiter), config)

    def start_bundle(self):
        self.submitter = BoundedSubmitter(self.engine, max_pending=2 * config.max_concurrency,
                                          on_crash=crash_to_error)

    def process(self, record):
        yield from self.submitter.submit(record)              # whatever has completed so far; never waits...
                                                              # ...unless max_pending records are pending
    def finish_bundle(self):
        yield from self.submitter.drain()                     # the rest, each as soon as it completes

    def teardown(self):
        self.engine.release()                                 # the loop stops when the last user releases

``Engine.shared(key, factory, config, parts=...)`` is the process-wide, reference-counted registry — the only one:
every DoFn instance and thread of a process that passes the same ``key`` (say, the serialized ClientConfig) gets
the same engine, and with it the same limiter, caller and ``parts``. ``parts()`` (optional) builds what else the
process shares for the run — client/process_parts.py: counters, budget, job-ledger membership, tier selector — once,
before the caller; the engine calls ``parts.attach(engine)`` once it runs and ``parts.close()`` after it closed.
The ``factory(limiter)`` (``factory(limiter, parts)`` with parts) is called once, on the engine's loop thread — an
``AsyncOpenAI``/httpx client belongs to the loop it was built on — and may return the caller or an awaitable of
it. A caller is anything with ``async complete(record) -> output`` and ``async aclose()``.

Processes: an engine is never pickled (``pickle.dumps(engine)`` raises; build it in ``setup()``). Each process
builds its own — Beam's multi-process DirectRunner and Dataflow's SDK workers are separate processes — and a
forked child never reuses its parent's engine, whose thread does not exist in the child.

Threads: ``Engine.submit`` and the registry are thread-safe. A ``BoundedSubmitter`` belongs to one bundle, used
by one thread. The limiter and the caller live on the loop thread only.

Nothing is dropped: every submitted record yields exactly one output. A caller that raises (a bug — callers turn
per-record problems into outputs themselves) or a task cancelled by ``close()`` becomes ``on_crash(record, exc)``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import inspect
import itertools
import logging
import os
import queue
import threading
from typing import Any, Awaitable, Callable, Hashable, Iterator, Protocol

from client.config import ClientConfig
from client.limits import RequestLimiter

__all__ = ["BoundedSubmitter", "Caller", "Engine", "EngineStopped"]

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0  # building the caller (credentials, HTTP pool) must not take longer
CLOSE_TIMEOUT_S = 30.0  # cancelling in-flight work and closing the caller
POLL_S = 1.0  # how often a blocked submitter checks that the engine is still alive


class Caller(Protocol):
    """What an engine drives: one record in, one output out (per-record problems are outputs, not raises)."""

    async def complete(self, record: Any) -> Any: ...

    async def aclose(self) -> None: ...


class EngineStopped(RuntimeError):
    """The engine's loop is gone: a record submitted to it can never complete."""


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # optional: a faster loop when installed
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


_REGISTRY: dict[Hashable, "Engine"] = {}
_REGISTRY_LOCK = threading.Lock()


class Engine:
    """A daemon thread running an event loop that owns one RequestLimiter and one caller.

        engine = Engine(lambda limiter: MyCaller(limiter), config)   # or Engine.shared(key, factory, config)
        future = engine.submit(record)          # a concurrent.futures.Future of caller.complete(record)
        future.result()
        engine.release()                        # or close(); a directly built engine has one reference

    The limiter is built from ``config`` (``max_concurrency``, ``rpm``, ``tpm``, ``adaptive``); pass
    ``limiter_options`` for the rest of ``RequestLimiter``'s knobs. ``parts``: see the module docstring.
    """

    def __init__(self, factory: Callable[..., Caller | Awaitable[Caller]], config: ClientConfig, *,
                 parts: Any = None, limiter_options: dict[str, Any] | None = None, name: str = "chatbeam-engine",
                 loop_factory: Callable[[], asyncio.AbstractEventLoop] = _new_loop,
                 start_timeout: float = START_TIMEOUT_S) -> None:
        self.config = config
        self.parts = parts
        self.limiter: RequestLimiter | None = None
        self.caller: Caller | None = None
        self._key: Hashable = None
        self._refs = 1
        self._pid = os.getpid()
        self._closed = False
        self._close_lock = threading.Lock()
        self._submitted = 0
        self._loop = loop_factory()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        try:
            future = asyncio.run_coroutine_threadsafe(self._build(factory, limiter_options or {}), self._loop)
            future.result(timeout=start_timeout)
            if parts is not None and hasattr(parts, "attach"):
                parts.attach(self)
        except BaseException:
            self.close()
            raise

    # -- registry --------------------------------------------------------------------------------------------------

    @classmethod
    def shared(cls, key: Hashable, factory: Callable[..., Caller | Awaitable[Caller]], config: ClientConfig, *,
               parts: Callable[[], Any] | None = None, **options: Any) -> "Engine":
        """The process's engine for ``key``, built on first use (``parts()`` too); pair every call with one
        ``release()``."""
        with _REGISTRY_LOCK:
            engine = _REGISTRY.get(key)
            if engine is None or not engine.alive:
                # A failing start closes the engine, and so the parts (Engine.close).
                engine = cls(factory, config, parts=parts() if parts is not None else None, **options)
                engine._key = key
                _REGISTRY[key] = engine
            else:
                engine._refs += 1
            return engine

    def release(self) -> None:
        """Drop one reference; the last one closes the engine (stops its loop, closes the caller)."""
        with _REGISTRY_LOCK:
            if self._refs <= 0:
                return
            self._refs -= 1
            last = self._refs == 0
            if last and self._key is not None and _REGISTRY.get(self._key) is self:
                del _REGISTRY[self._key]
        if last:
            self.close()

    # -- work ------------------------------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return not self._closed and self._pid == os.getpid() and self._thread.is_alive()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def submit(self, record: Any) -> concurrent.futures.Future:
        """Schedule ``caller.complete(record)`` on the loop; thread-safe, returns at once."""
        if not self.alive:
            raise EngineStopped("the engine is closed (or belongs to another process); build one in setup()")
        self._submitted += 1
        return asyncio.run_coroutine_threadsafe(self.caller.complete(record), self._loop)

    def stats(self) -> dict[str, Any]:
        """The limiter's stats plus how many records were submitted; readable from any thread."""
        stats = self.limiter.stats() if self.limiter is not None else {}
        return {**stats, "submitted": self._submitted, "alive": self.alive}

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Cancel in-flight records (their futures end cancelled), close the caller, stop the loop. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._pid != os.getpid():
            return  # a forked copy: the thread and loop live only in the parent
        if threading.current_thread() is self._thread:
            raise RuntimeError("Engine.close() called from its own loop thread")
        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout)
            except (concurrent.futures.TimeoutError, RuntimeError) as exc:
                log.warning("engine shutdown did not finish cleanly: %r", exc)
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        _close_parts(self.parts)

    def __reduce__(self) -> Any:
        raise TypeError("an Engine cannot be pickled: build it in DoFn.setup(), not at pipeline construction")

    def __repr__(self) -> str:
        return f"<Engine key={self._key!r} refs={self._refs} alive={self.alive}>"

    # -- loop thread -----------------------------------------------------------------------------------------------

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()

    async def _build(self, factory: Callable[[RequestLimiter], Any], limiter_options: dict[str, Any]) -> None:
        config = self.config
        self.limiter = RequestLimiter(max_concurrency=config.max_concurrency, rpm=config.rpm, tpm=config.tpm,
                                      adaptive=config.adaptive, **limiter_options)
        caller = factory(self.limiter) if self.parts is None else factory(self.limiter, self.parts)
        if inspect.isawaitable(caller):
            caller = await caller
        self.caller = caller

    async def _shutdown(self) -> None:
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.caller is not None:
            try:
                await self.caller.aclose()
            except Exception:  # closing must not hide the work's own outcome
                log.exception("caller.aclose() failed")
        asyncio.get_running_loop().call_soon(asyncio.get_running_loop().stop)


def _close_parts(parts: Any) -> None:
    if parts is not None and hasattr(parts, "close"):
        try:
            parts.close()
        except Exception:  # closing must not hide the work's own outcome
            log.exception("closing the engine's parts failed")


def _close_all_at_exit() -> None:
    with _REGISTRY_LOCK:
        engines = list(_REGISTRY.values())
        _REGISTRY.clear()
    for engine in engines:
        engine.close(timeout=5.0)


def _forget_after_fork() -> None:
    # The child has the parent's registry but none of its threads: start over.
    global _REGISTRY_LOCK
    _REGISTRY_LOCK = threading.Lock()
    _REGISTRY.clear()


atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


class BoundedSubmitter:
    """A bundle's window onto an engine: at most ``max_pending`` records pending, outputs as they complete.

        submitter = BoundedSubmitter(engine, max_pending=128, on_crash=lambda record, exc: error_for(record, exc))
        for record in bundle:
            emit(submitter.submit(record))     # completed outputs so far (maybe none); blocks only when full
        emit(submitter.drain())                # the rest, each as soon as it completes

    ``on_crash(record, exc)`` turns a record whose ``complete()`` raised (or was cancelled by ``close()``, or whose
    engine died) into an output; without it the exception propagates and fails the bundle. Either way no
    record is dropped, and none is output twice. One thread per submitter.
    """

    def __init__(self, engine: Engine, max_pending: int,
                 on_crash: Callable[[Any, BaseException], Any] | None = None) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self._engine = engine
        self.max_pending = max_pending
        self._on_crash = on_crash
        self._pending: dict[int, Any] = {}  # ticket -> record
        self._completed: queue.SimpleQueue[tuple[int, concurrent.futures.Future]] = queue.SimpleQueue()
        self._tickets = itertools.count()
        self.peak_pending = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit(self, record: Any) -> list[Any]:
        """Add a record; return every output completed so far. Blocks first while ``max_pending`` are pending."""
        outputs: list[Any] = []
        while len(self._pending) >= self.max_pending:
            outputs.extend(self._collect(block=True))
        future = self._engine.submit(record)
        ticket = next(self._tickets)
        self._pending[ticket] = record
        self.peak_pending = max(self.peak_pending, len(self._pending))
        future.add_done_callback(lambda f, t=ticket: self._completed.put((t, f)))
        outputs.extend(self._collect(block=False))
        return outputs

    def drain(self) -> Iterator[Any]:
        """Yield the output of every pending record, each as soon as it completes."""
        while self._pending:
            yield from self._collect(block=True)

    def _collect(self, *, block: bool) -> list[Any]:
        """Outputs of completed records: at least one when ``block`` (and any are pending), else what is ready."""
        outputs: list[Any] = []
        while self._pending:
            try:
                ticket, future = self._completed.get(block=block and not outputs, timeout=POLL_S)
            except queue.Empty:
                if not block or outputs:
                    break
                if not self._engine.alive:
                    return self._abandon()
                continue
            record = self._pending.pop(ticket, _MISSING)
            if record is not _MISSING:
                outputs.append(self._output(record, future))
        return outputs

    def _output(self, record: Any, future: concurrent.futures.Future) -> Any:
        try:
            return future.result()
        except BaseException as exc:  # CancelledError is a BaseException
            if self._on_crash is None:
                raise
            return self._on_crash(record, exc)

    def _abandon(self) -> list[Any]:
        """The engine died with records pending: each becomes a crash output (or the bundle fails)."""
        records = list(self._pending.values())
        self._pending.clear()
        exc = EngineStopped("the engine stopped before the record completed")
        if self._on_crash is None:
            raise exc
        return [self._on_crash(record, exc) for record in records]


_MISSING = object()
