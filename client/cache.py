"""The response cache's pure parts: entry format, validation, TTL, modes, shard names. No Beam import.

A cache is a directory (local or gs://) of immutable JSONL shards, each written once, whole, by one run
(transforms/cache.py writes them with Beam's WriteToText under a run-unique prefix; ``chatbeam cache compact``
merges them). One line is one entry: a successful answer, keyed by the ``request_key`` of the request it answered
(client/requests.py: a hash of model, messages, params, extra_body and schema)::

    >>> line = encode_entry(result, stored_at="2026-11-30T02:00:00.000000Z")
    >>> entry = decode_entry(line)                   # raises InvalidEntry for anything that is not a whole entry
    >>> entry.key == result.request_key
    True
    >>> answer = answer_from(entry, todays_record)   # today's id and metadata, cached=True, the rest as stored

Line format (``v`` 1)::

    {"v":1,"key":"<request_key>","stored_at":"<UTC, microseconds, Z>","sha256":"<hex>","result":"<JSON text>"}

* ``result`` is the ResultRecord's own JSON *text* without ``id``, ``metadata`` and ``cached`` (those belong to the
  run that reads it), embedded as a string so that ``sha256`` covers the exact bytes: the checksum of
  ``v, key, stored_at, result`` joined by newlines. Checking it needs no re-serialisation, and the result is parsed
  only when a record actually asks for it (a hit).
* A line that is cut off, garbage, of another version, with a bad checksum, or whose result answers another key
  (``result.request_key != key``) is rejected (``InvalidEntry``, with the reason): never served, only counted.
* ``stored_at`` is the start of the run that stored it (one value per run); the TTL (``--cache_ttl_days``) counts
  from it and compaction keeps it. Among several valid entries for one key, the newest wins (ties: the checksum).

Modes (``--cache_mode``), see ``CacheMode``. Only results are stored; errors never are.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import posixpath
import re
from dataclasses import dataclass
from enum import Enum
from typing import IO, Any, Iterable, Iterator, Mapping

from pydantic import ValidationError

from client.constants import REQUEST_KEY_CHARS
from client.pricing import PriceTable
from schemas.records import InputRecord, ResultRecord

__all__ = ["CACHE_COUNTERS", "FORMAT_VERSION", "MAX_ENTRY_BYTES", "CacheEntry", "CacheMode", "CacheSettings",
           "InvalidEntry", "answer_from", "bounded_lines", "cache_summary", "decode_entry", "encode_entry",
           "encode_line", "expiry_cutoff", "format_cache_summary", "is_expired", "is_shard", "newest_first",
           "parse_stamp", "saved_cost", "servable", "shard_prefix", "stamp"]

FORMAT_VERSION = 1
MAX_ENTRY_BYTES = 16 * 1024 * 1024  # a longer "line" is not an entry (a garbage file with no newlines, say)
NANO = 1_000_000_000  # cost counters are integers in nano-USD, as in client/budget.py

_KEY = re.compile(rf"^[0-9a-f]{{{REQUEST_KEY_CHARS}}}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
_STAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # what stamp() writes
# Shards: {location}/entries-{YYYYMMDDTHHMMSSZ}-{run id}-{12 hex}.jsonl (a run's, one per bundle) and
# {location}/compact-{...}-{run id}-SSSSS-of-NNNNN.jsonl (compaction's). Anything else in the directory (hidden
# temporary files, a user's notes) is not a shard and is never read, merged or deleted.
_SHARD = re.compile(r"^(entries|compact)-\d{8}T\d{6}Z-[0-9a-f]{8,32}-(\d{5}-of-\d{5}|[0-9a-f]{12})\.jsonl$")
_NOT_STORED = {"id", "metadata", "cached"}  # fields of a ResultRecord that come from the run that reads it

# Beam counters (namespace chatbeam) the cache steps keep; the summary reads them back (cache_summary).
CACHE_COUNTERS = (
    "cache_hits",                 # records answered from the cache (no request, no cost)
    "cache_misses",               # records sent to the call step: no valid, unexpired entry for their key
    "cache_bypassed",             # write_only: an entry existed but this mode does not serve it
    "cache_tokens_saved",         # total_tokens of the answers served
    "cache_cost_saved_nano_usd",  # what those answers cost when they were called (today's price table)
    "cache_shards_read",          # shards read whole
    "cache_shards_unreadable",    # shards that vanished (a concurrent compaction) or failed part-way
    "cache_entries_read",         # valid entries read
    "cache_invalid_entries",      # lines rejected: cut off, garbage, bad checksum, answers another key
    "cache_expired_entries",      # valid entries older than --cache_ttl_days (not served)
    "cache_entries_written",      # new entries this run stored
    "cache_unstorable",           # results that could not be stored (not serialisable)
    "cache_write_failures",       # shards that could not be written (the run goes on; those answers are not stored)
)


class InvalidEntry(ValueError):
    """A cache line that is not a whole, valid entry; the message says why."""


class CacheMode(str, Enum):
    """``--cache_mode``. Which records are answered from the cache, and which new answers are stored.

    ============  =========================  ==========================================================
    mode          served from the cache      stored
    ============  =========================  ==========================================================
    read_write    records with a valid entry  answers to the rest (the misses)
    read_only     records with a valid entry  nothing: the cache is not changed
    write_only    nothing (every record is    answers for keys the cache has no valid entry for; it
                  called)                     never replaces what is there
    refresh       nothing (every record is    every answer; being newer, they replace the old entries
                  called)
    ============  =========================  ==========================================================
    """

    READ_WRITE = "read_write"
    READ_ONLY = "read_only"
    WRITE_ONLY = "write_only"
    REFRESH = "refresh"

    @property
    def serves(self) -> bool:
        return self in (CacheMode.READ_WRITE, CacheMode.READ_ONLY)

    @property
    def stores(self) -> bool:
        return self is not CacheMode.READ_ONLY

    @property
    def reads(self) -> bool:
        """Does the run read the cache at all? (write_only reads it to know which keys it must not replace.)"""
        return self is not CacheMode.REFRESH


@dataclass(frozen=True)
class CacheSettings:
    """Picklable cache settings for the Beam steps (built from ``--cache``, ``--cache_mode``, ``--cache_ttl_days``).

    ``run_started`` (a ``stamp``) is both the ``stored_at`` of the entries this run stores and the "now" its TTL is
    measured at, fixed once on the machine that builds the pipeline so that every worker agrees."""

    location: str
    mode: CacheMode = CacheMode.READ_WRITE
    ttl_days: float | None = None
    run_started: str = ""
    prices: PriceTable | None = None

    @property
    def now(self) -> datetime.datetime:
        return parse_stamp(self.run_started)


@dataclass(frozen=True)
class CacheEntry:
    key: str
    stored_at: str
    sha256: str
    result_text: str


def stamp(moment: datetime.datetime) -> str:
    """The fixed-width UTC form entries use (lexical order is time order)."""
    return moment.astimezone(datetime.timezone.utc).strftime(_STAMP_FORMAT)


def parse_stamp(text: str) -> datetime.datetime:
    if not isinstance(text, str) or not _STAMP.match(text):
        raise InvalidEntry(f"stored_at {text!r} is not a UTC timestamp")
    try:
        return datetime.datetime.fromisoformat(text)  # "...Z" parses as UTC (Python 3.11+)
    except ValueError:
        raise InvalidEntry(f"stored_at {text!r} is not a date") from None


def _checksum(key: str, stored_at: str, result_text: str) -> str:
    data = f"{FORMAT_VERSION}\n{key}\n{stored_at}\n{result_text}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


def encode_line(key: str, stored_at: str, result_text: str) -> str:
    """One cache line (no newline) for an already-serialised result."""
    return json.dumps({"v": FORMAT_VERSION, "key": key, "stored_at": stored_at,
                       "sha256": _checksum(key, stored_at, result_text), "result": result_text},
                      ensure_ascii=False, separators=(",", ":"))


def encode_entry(result: ResultRecord, stored_at: str) -> str:
    """The cache line for a successful result. Raises ValueError if it cannot be stored (a cached result, no key,
    or a value JSON cannot carry, such as a lone surrogate a server sent)."""
    if result.cached:
        raise ValueError("a result served from the cache is not stored again")
    if not _KEY.match(result.request_key or ""):
        raise ValueError(f"result {result.id!r} has no request_key to store it under")
    parse_stamp(stored_at)
    text = result.model_dump_json(exclude=_NOT_STORED)  # raises PydanticSerializationError (a ValueError)
    text.encode("utf-8")  # raises UnicodeEncodeError (a ValueError) on a lone surrogate
    return encode_line(result.request_key, stored_at, text)


def decode_entry(line: str | bytes) -> CacheEntry:
    """Validate one line as a whole entry; raises InvalidEntry with the reason. The result itself is checked when
    it is served (``answer_from``)."""
    try:
        data = json.loads(line)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidEntry(f"not JSON (cut off or garbage): {str(exc)[:120]}") from None
    if not isinstance(data, dict):
        raise InvalidEntry("not a JSON object")
    if data.get("v") != FORMAT_VERSION:
        raise InvalidEntry(f"unknown format version {data.get('v')!r}")
    key, stored_at, sha, text = (data.get(k) for k in ("key", "stored_at", "sha256", "result"))
    if not isinstance(key, str) or not _KEY.match(key):
        raise InvalidEntry("key is not a request_key")
    parse_stamp(stored_at)
    if not isinstance(text, str) or not isinstance(sha, str) or not _SHA.match(sha):
        raise InvalidEntry("result or checksum missing")
    if _checksum(key, stored_at, text) != sha:
        raise InvalidEntry("checksum does not match (the entry was changed or damaged)")
    return CacheEntry(key, stored_at, sha, text)


def is_expired(stored_at: str, now: datetime.datetime, ttl_days: float | None) -> bool:
    """Is an entry stored at ``stored_at`` too old to serve at ``now``? Never, without a TTL.

    >>> now = datetime.datetime(2026, 11, 30, tzinfo=datetime.timezone.utc)
    >>> is_expired("2026-11-20T00:00:00.000000Z", now, 7), is_expired("2026-11-25T00:00:00.000000Z", now, 7)
    (True, False)
    """
    cutoff = expiry_cutoff(now, ttl_days)
    return cutoff is not None and stored_at < cutoff


def expiry_cutoff(now: datetime.datetime, ttl_days: float | None) -> str | None:
    """The oldest ``stored_at`` still served at ``now`` (None: no TTL). Stamps are fixed-width UTC, so comparing the
    strings compares the times: a reader computes this once, not a date per entry."""
    return None if ttl_days is None else stamp(now - datetime.timedelta(days=ttl_days))


def newest_first(entries: Iterable[CacheEntry | tuple[str, str, str, str]]) -> list[CacheEntry]:
    """Candidates for one key, best first: newest ``stored_at``, then the checksum (a stable tie-break)."""
    found = [e if isinstance(e, CacheEntry) else CacheEntry(*e) for e in entries]
    return sorted(found, key=lambda e: (e.stored_at, e.sha256), reverse=True)


def answer_from(entry: CacheEntry, record: InputRecord, key: str) -> ResultRecord:
    """The result a record gets from ``entry``: the stored answer (content, usage, timestamps, attempts, ...) with
    today's ``id`` and ``metadata`` and ``cached`` true. Raises InvalidEntry when the stored result is not a valid
    result for ``key`` (so the record is called instead)."""
    if entry.key != key:
        raise InvalidEntry(f"entry for key {entry.key} offered for key {key}")
    try:
        stored = json.loads(entry.result_text)
        if not isinstance(stored, dict):
            raise InvalidEntry("stored result is not an object")
        result = ResultRecord.model_validate({**stored, "id": record.id, "metadata": record.metadata,
                                              "cached": True})
    except (ValueError, RecursionError) as exc:  # ValidationError and JSONDecodeError are ValueErrors
        if isinstance(exc, InvalidEntry):
            raise
        reason = exc.errors(include_url=False)[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise InvalidEntry(f"stored result is not a valid result: {reason[:200]}") from None
    if result.request_key != key:
        raise InvalidEntry("stored result answers another request")
    return result


def servable(result: ResultRecord, on_truncation: str) -> bool:
    """May this run serve the stored ``result``? A cut-off answer (finish_reason ``length``, kept as a result by a
    run with ``--on_truncation result``) is not what a run with ``--on_truncation error`` or ``retry`` would keep
    (the policy is not part of the request key): such a run calls the record instead."""
    return result.finish_reason != "length" or on_truncation == "result"


def saved_cost(result: ResultRecord, prices: PriceTable) -> float:
    """What the served answer cost when it was called: its usage at today's prices for the tier it was served at
    (reasoning tokens are in completion)."""
    return prices.cost(result.model, result.usage.prompt_tokens, result.usage.completion_tokens,
                       tier=result.service_tier or "standard")


def shard_prefix(location: str, kind: str, run_id: str, moment: datetime.datetime) -> str:
    """The prefix of one run's shards: unique per run (its start and a random run id), so a run only ever writes
    and a compaction only ever deletes files that are its own or that it listed."""
    run = re.sub(r"[^0-9a-f]", "", run_id.lower())[:32]
    if kind not in ("entries", "compact") or len(run) < 8:
        raise ValueError(f"bad shard kind {kind!r} or run id {run_id!r}")
    when = moment.astimezone(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{location.rstrip('/')}/{kind}-{when}-{run}"


def is_shard(path: str, location: str) -> bool:
    """Is ``path`` a shard directly inside ``location`` (not a temp file, not another file)?"""
    directory, name = posixpath.split(path)
    return directory.rstrip("/") == location.rstrip("/") and bool(_SHARD.match(name))


def bounded_lines(fh: IO[bytes], max_bytes: int = MAX_ENTRY_BYTES, chunk_size: int = 1 << 20
                  ) -> Iterator[bytes | None]:
    """The lines of a binary file (newline kept), each at most ``max_bytes``; a longer one is skipped whole and
    yields None. A last line with no newline (a cut-off file) is yielded as it is.

    Hand-written because ``for line in fh`` (and Beam's text reader) would hold a newline-free garbage file of any
    size in memory as one line, and a GCS object reader has no ``peek``, so its ``readline`` goes byte by byte.

    >>> import io
    >>> list(bounded_lines(io.BytesIO(b'a\\n' + b'x' * 9 + b'\\nb'), max_bytes=4, chunk_size=3))
    [b'a\\n', None, b'b']
    """
    carry = bytearray()
    skipping = False  # inside a line that is already too long
    while True:
        chunk = fh.read(chunk_size)
        if not chunk:
            break
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end + 1]
            if not skipping and len(carry) + len(piece) > max_bytes + (end >= 0):
                carry.clear()
                skipping = True
            if end < 0:
                if not skipping:
                    carry += piece
                break
            if skipping:
                skipping = False
                yield None
            elif carry:
                carry += piece
                yield bytes(carry)
                carry.clear()
            else:
                yield piece
            start = end + 1
    if skipping:
        yield None
    elif carry:
        yield bytes(carry)


def cache_summary(counters: Mapping[str, int]) -> dict[str, Any] | None:
    """The summary JSON's ``cache`` object, from the run's counters; None when the run used no cache."""
    if not any(counters.get(name) for name in CACHE_COUNTERS):
        return None
    c = {name.removeprefix("cache_"): int(counters.get(name, 0)) for name in CACHE_COUNTERS}
    c["cost_saved_usd"] = round(c.pop("cost_saved_nano_usd") / NANO, 6)
    return c


def format_cache_summary(c: Mapping[str, Any] | None, *, dry_run: bool = False) -> list[str]:
    """The text summary's cache lines (none when the run used no cache)."""
    if not c:
        return []
    verb = "would be served" if dry_run else "served"
    line = (f"  cache     {c['hits']:,} {verb} from the cache ({c['tokens_saved']:,} tokens, "
            f"~${c['cost_saved_usd']:.4f} saved), {c['misses']:,} {'to send' if dry_run else 'called'}")
    if c.get("bypassed"):
        line += f", {c['bypassed']:,} cached but not served (write_only)"
    if not dry_run:
        line += f"; {c['entries_written']:,} new entries stored"
    lines = [line]
    if c.get("expired_entries"):
        lines.append(f"            {c['expired_entries']:,} entries older than --cache_ttl_days were not served")
    bad = [f"{c[k]:,} {what}" for k, what in (("invalid_entries", "invalid entries (cut off, garbage or damaged)"),
                                              ("shards_unreadable", "unreadable shards"),
                                              ("unstorable", "results that could not be stored"),
                                              ("write_failures", "shards that could not be written"))
           if c.get(k)]
    if bad:
        lines.append(f"  WARNING   cache: skipped {', '.join(bad)}; see the log")
    return lines
