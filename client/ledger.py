"""The job ledger: one budget shared by every worker process of a job, through a store they all reach. No Beam.

    ledger = JobLedger(open_store(url), caps={"tokens": 20_000})
    lease = ledger.grant(need={"tokens": 40}, want={"tokens": 320}, live=4)   # {"tokens": 320} or None (spent)
    ledger.release({"tokens": 55}, committed={"tokens": 265})                  # give back what was not used
    ledger.reclaim("host-123-ab12", committed={"tokens": 100})                 # a dead process's unused lease

**The log.** The ledger is an append-only log of small JSON entries ``log/0000000001``, ``log/0000000002``, ...
Each entry is created with the store's atomic create-if-absent (GCS ``ifGenerationMatch=0``; a local ``link``), so
of several processes racing for index k exactly one wins; the others read the winner's entry and try k + 1. A
process writes entry k only after applying entries 1..k-1, so every decision is made on the whole history:

* ``grant``: the owner takes a lease of budget; allowed only if it fits ``cap - granted + returned``;
* ``return``: the owner gives back what it did not use (when idle, and at teardown with ``final``);
* ``reclaim``: another process gives back a dead owner's unused lease (``granted - returned - committed``, where
  ``committed`` is the latest spent-plus-reserved the owner published, in an entry or its heartbeat).

So the leases outstanding never exceed the cap, and billed usage can pass it only by what records in flight cost
above their estimates, plus what a process reported dead kept spending after its last report (bounded by one
heartbeat interval of its spend; a process that finds itself reclaimed stops using that lease: ``fences``).

**Why a log and not a counter object.** A counter updated with ``ifGenerationMatch=<generation>`` would be one GCS
object written by every process, and GCS allows about one write per second per object. Log entries are new objects,
each written once; GCS has no such limit on creating objects.

**Lease size** (``grant``): at least ``need`` (what the waiting record lacks), at most the free budget, and
otherwise ``want`` (the process asks for twice its previous lease, starting at a few records' worth), but never
more than ``free / (2 × live processes)``, so leases start small, grow with a process's pace, and shrink as the cap
nears: what is left at the end is spread across the processes instead of stranded in one.

Amounts are dicts over the capped dimensions, ``"tokens"`` and ``"nano_usd"`` (integer 1e-9 USD).
Thread-safe: appends are serialized per process; reads of the state take a lock.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from client.ledger_store import LedgerStore

__all__ = ["DIMS", "JobLedger", "LedgerReport", "OwnerState", "new_owner_id", "read_report"]

log = logging.getLogger(__name__)

DIMS = ("tokens", "nano_usd")
LOG = "log/"
PROCS = "procs/"
MAX_RACES = 10_000  # lost create races in one append before giving up (each loss means another entry was written)

Amount = Mapping[str, int]


def new_owner_id() -> str:
    """Unique per process incarnation: readable host and pid, plus randomness (pids are reused)."""
    host = socket.gethostname().split(".")[0][:40] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _entry_name(index: int) -> str:
    return f"{LOG}{index:010d}"


def _index(name: str) -> int:
    return int(name[len(LOG):])


def _clean(amount: Amount | None) -> dict[str, int]:
    return {d: int(v) for d, v in (amount or {}).items() if d in DIMS}


@dataclass
class OwnerState:
    granted: dict[str, int] = field(default_factory=dict)
    returned: dict[str, int] = field(default_factory=dict)  # returns and reclaims
    committed: dict[str, int] = field(default_factory=dict)  # the latest spent + reserved the owner published
    leases: int = 0
    closed: bool = False  # returned its lease for good (final return), or was reclaimed

    def outstanding(self, dim: str) -> int:
        return self.granted.get(dim, 0) - self.returned.get(dim, 0)


class JobLedger:
    """One process's view of the log, and its appends. ``owner`` is None for a read-only reader."""

    def __init__(self, store: LedgerStore, caps: Mapping[str, int], owner: str | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self.caps = {d: int(v) for d, v in caps.items() if d in DIMS and v is not None}
        self.owner = owner
        self.fences = 0  # times this process found its own lease reclaimed (it then continues as a new owner)
        self.on_fenced: Callable[[], None] | None = None
        self._wall = wall
        self._lock = threading.Lock()
        self._append_lock = threading.RLock()  # sync() runs inside appends too
        self.cursor = 0
        self.granted = {d: 0 for d in self.caps}
        self.returned = {d: 0 for d in self.caps}
        self.owners: dict[str, OwnerState] = {}
        self.counts = {"grant": 0, "return": 0, "reclaim": 0}

    # -- state -------------------------------------------------------------------------------------------------

    def free(self) -> dict[str, int]:
        with self._lock:
            return {d: self.caps[d] - self.granted[d] + self.returned[d] for d in self.caps}

    def owner_state(self, owner: str) -> OwnerState | None:
        with self._lock:
            return self.owners.get(owner)

    def sync(self) -> None:
        """Apply the entries written since the last sync (one list call)."""
        with self._append_lock:
            entries = self.store.list(LOG, start_after=_entry_name(self.cursor))
            for name in sorted(entries):
                index = _index(name)
                while self.cursor + 1 < index:  # a listing that skipped an entry: read it directly
                    data = self.store.read(_entry_name(self.cursor + 1))
                    if data is None:
                        return
                    self._apply(json.loads(data))
                if index == self.cursor + 1:
                    self._apply(json.loads(entries[name]))

    def _apply(self, entry: dict[str, Any]) -> None:
        fenced = False
        with self._lock:
            self.cursor += 1
            kind, amount = entry["kind"], _clean(entry.get("amount"))
            subject = entry["owner"]
            state = self.owners.setdefault(subject, OwnerState())
            self.counts[kind] = self.counts.get(kind, 0) + 1
            for d, v in amount.items():
                target = state.granted if kind == "grant" else state.returned
                target[d] = target.get(d, 0) + v
                if d in self.caps:
                    if kind == "grant":
                        self.granted[d] += v
                    else:
                        self.returned[d] += v
            if kind == "grant":
                state.leases += 1
            if entry.get("committed") is not None and kind != "reclaim":
                for d, v in _clean(entry["committed"]).items():
                    state.committed[d] = max(state.committed.get(d, 0), v)
            if (kind == "return" and entry.get("final")) or kind == "reclaim":
                state.closed = True
            if kind == "reclaim" and subject == self.owner:
                fenced = True
        if fenced:
            log.warning("this process's budget lease was reclaimed by %s (its heartbeat looked dead); it stops "
                        "using that lease and continues as a new ledger member", entry.get("by"))
            self.owner = new_owner_id()
            self.fences += 1
            if self.on_fenced is not None:
                self.on_fenced()

    # -- appends -----------------------------------------------------------------------------------------------

    def _append(self, decide: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
        """Write the entry ``decide()`` makes from the up-to-date state at the next free index; None: no entry."""
        with self._append_lock:
            self.sync()
            for _ in range(MAX_RACES):
                entry = decide()
                if entry is None:
                    return None
                entry = {**entry, "t": round(self._wall(), 3), "nonce": uuid.uuid4().hex}
                index = self.cursor + 1
                if self.store.create(_entry_name(index), json.dumps(entry, sort_keys=True).encode()):
                    self._apply(entry)
                    return entry
                # Lost the race for this index: read the winner's entry (and any after it), then decide again.
                data = self.store.read(_entry_name(index))
                if data is not None:
                    self._apply(json.loads(data))
                self.sync()
            raise RuntimeError(f"could not append to the job ledger at {self.store.url} after {MAX_RACES} races")

    def grant(self, need: Amount, want: Amount, live: int = 1,
              committed: Amount | None = None) -> dict[str, int] | None:
        """Take a lease of at least ``need`` (per capped dimension); None when the free budget cannot cover it."""
        need, want = _clean(need), _clean(want)

        def decide():
            free = self.free()
            amount = {}
            for d in self.caps:
                if need.get(d, 0) > free[d]:
                    return None
                fair = free[d] // (2 * max(1, live))
                amount[d] = min(free[d], max(need.get(d, 0), min(want.get(d, 0), fair)))
            if not any(amount.values()):
                return None
            return {"kind": "grant", "owner": self.owner, "amount": amount, "committed": _clean(committed)}

        entry = self._append(decide)
        return None if entry is None else entry["amount"]

    def release(self, amount: Amount, committed: Amount | None = None, final: bool = False) -> None:
        """Give back an unused part of this owner's leases (``final``: and stop being a member)."""
        amount = {d: v for d, v in _clean(amount).items() if v > 0}
        if not amount and not final:
            return
        owner = self.owner
        self._append(lambda: {"kind": "return", "owner": owner, "amount": amount, "committed": _clean(committed),
                              "final": final})

    def reclaim(self, owner: str, committed: Amount | None = None) -> dict[str, int] | None:
        """Give back a dead owner's unused leases; None when there is nothing to reclaim (or it was already)."""
        published = _clean(committed)

        def decide():
            state = self.owner_state(owner)
            if state is None or state.closed:
                return None
            amount = {d: max(0, state.outstanding(d) - max(published.get(d, 0), state.committed.get(d, 0)))
                      for d in self.caps}
            return {"kind": "reclaim", "owner": owner, "by": self.owner, "amount": amount}

        entry = self._append(decide)
        return None if entry is None else entry["amount"]

    # -- heartbeats (membership) -------------------------------------------------------------------------------

    def beat(self, payload: Mapping[str, Any]) -> None:
        """Publish this owner's heartbeat (its own object; written at most once per heartbeat interval)."""
        self.store.put(f"{PROCS}{payload['owner']}", json.dumps(dict(payload), sort_keys=True).encode())

    def members(self) -> dict[str, dict[str, Any]]:
        """Every heartbeat in the ledger, by owner (one list call)."""
        out = {}
        for name, data in self.store.list(PROCS).items():
            try:
                out[name[len(PROCS):]] = json.loads(data)
            except ValueError:
                continue  # a foreign or truncated object is not a member
        return out


@dataclass(frozen=True)
class LedgerReport:
    """What the ledger says at the end of a run (for the summary)."""

    url: str
    caps: dict[str, int]
    granted: dict[str, int]
    returned: dict[str, int]
    leases: int
    returns: int
    reclaims: int
    processes: int  # every worker process that joined (wrote a heartbeat), with or without a lease

    def as_dict(self) -> dict[str, Any]:
        return {"ledger": self.url, "leases": self.leases, "returns": self.returns, "reclaims": self.reclaims,
                "processes": self.processes,
                "outstanding": {d: self.granted[d] - self.returned[d] for d in self.caps}}


def read_report(store: LedgerStore, caps: Mapping[str, int]) -> LedgerReport:
    reader = JobLedger(store, caps)
    reader.sync()
    return LedgerReport(url=store.url, caps=dict(reader.caps), granted=dict(reader.granted),
                        returned=dict(reader.returned), leases=reader.counts.get("grant", 0),
                        returns=reader.counts.get("return", 0), reclaims=reader.counts.get("reclaim", 0),
                        processes=len(reader.members()))
