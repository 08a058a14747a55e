"""The Beam side of the response cache (client/cache.py): read its shards, join them with the records, store new
answers, compact.

    lookup = records | "CacheLookup" >> CacheLookup(client_config, settings)
    called = lookup.todo | "CallChatCompletions" >> CallChatCompletions(client_config, ...)
    results = (called.results, lookup.hits) | beam.Flatten()
    called.results | "CacheStore" >> CacheStore(settings, run_id, known=lookup.known)

**The join.** ``CacheLookup`` keys each record by its ``request_key`` (the pure ``build_request``), reads every
shard of the cache as ``(request_key, entry)`` pairs, and joins the two with a CoGroupByKey, so the cache is never
loaded into one worker's memory: each key meets only its own entries, and the work spreads over workers as the
runner shards keys. A record whose key has a valid, unexpired entry becomes a result (``cached`` true, today's
``id`` and ``metadata``); the others go on to the call step. It sits before the call step whatever that step is.

**Reading.** Shards are listed when the pipeline runs (a shard another run finalises meanwhile is simply not seen),
spread over workers (Reshuffle) and read by ``_ReadShardFn`` rather than Beam's ReadAllFromText, because a shard
that vanishes between listing and reading (a concurrent ``chatbeam cache compact`` deleted it after merging it) or
fails part-way must cost only cache misses, never the run. Every line is validated (client/cache.py
``decode_entry``); rejected lines are counted and logged per shard.

**Writing.** ``CacheStore`` streams this run's new answers into one shard per bundle,
``{location}/entries-{time}-{run id}-{random}.jsonl``, written under a hidden temporary name and renamed into place
when the bundle finishes (an object store's object appears only whole), never touching another run's files. Memory
stays flat, and answers are stored as the run goes (a run killed later keeps what it stored). A shard that cannot
be written is logged and counted (``cache_write_failures``) and the run goes on: Beam's WriteToText would fail the
whole run at its very end, after every answer was paid for, which a cache must never cost. Compaction writes
``compact-...-SSSSS-of-NNNNN.jsonl`` shards of about 50,000 entries (a GroupByKey by shard).
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import uuid
from typing import Any, Iterable, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import AsList, AsSingleton

from client.cache import (CacheSettings, InvalidEntry, answer_from, bounded_lines, decode_entry, encode_entry,
                          encode_line, expiry_cutoff, is_shard, newest_first, saved_cost, servable, shard_prefix)
from client.config import ClientConfig
from client.constants import NANO
from client.progress import PROGRESS
from client.requests import build_request
from schemas.records import InputRecord, ResultRecord
from transforms import metrics

__all__ = ["CacheLookup", "CacheStore", "CompactCache", "ENTRIES_PER_SHARD", "Lookup", "ReadCacheEntries",
           "list_shards", "remove_stale_temp_files", "write_lines"]

log = logging.getLogger("chatbeam.cache")

ENTRIES_PER_SHARD = 50_000  # ~50-100 MB of typical answers: big enough to read fast, small enough to spread
TODO, HITS, KNOWN, UNKEYED, FULLY_READ = "todo", "hits", "known", "unkeyed", "fully_read"


def list_shards(location: str) -> list[str]:
    """The cache's shards now (sorted paths); an empty or missing location has none. Only names that
    ``client.cache.is_shard`` accepts: temporary files and anything else in the directory are left alone."""
    try:
        found = FileSystems.match([f"{location.rstrip('/')}/*.jsonl"])[0].metadata_list
    except Exception as exc:  # noqa: BLE001 - an unlistable cache is an empty one (misses), never a failed run
        log.warning("cache %s cannot be listed, treating it as empty: %r", location, exc)
        metrics.counter("cache_shards_unreadable").inc()
        return []
    return sorted(m.path for m in found if is_shard(m.path, location))


def remove_stale_temp_files(location: str, older_than_epoch: float) -> int:
    """Delete the hidden temporary files (``.NAME.UUID.tmp``) that writers killed mid-bundle left behind, if they
    are older than ``older_than_epoch`` (a live writer's file is younger). Returns how many were deleted."""
    try:
        found = FileSystems.match([f"{location.rstrip('/')}/.*.tmp"])[0].metadata_list
    except Exception:  # noqa: BLE001 - tidying up is best effort
        return 0
    stale = [m.path for m in found if m.last_updated_in_seconds < older_than_epoch
             and posixpath.dirname(m.path).rstrip("/") == location.rstrip("/")]
    with contextlib.suppress(Exception):
        if stale:
            FileSystems.delete(stale)
            return len(stale)
    return 0


# -- reading -------------------------------------------------------------------------------------------------------


class _ReadShardFn(beam.DoFn):
    """A shard path → ``(request_key, (stored_at, sha256, result_text))`` for each valid, unexpired entry, and the
    path on ``fully_read`` once the whole shard was read (compaction deletes only those)."""

    def __init__(self, settings: CacheSettings) -> None:
        self._settings = settings

    def _entries(self, fh, counts: dict[str, int], problems: list[str]):
        cutoff = expiry_cutoff(self._settings.now, self._settings.ttl_days)
        for line in bounded_lines(fh):
            if line is not None and not line.strip():
                continue
            try:
                if line is None:
                    raise InvalidEntry("line longer than the largest entry")
                entry = decode_entry(line)
            except InvalidEntry as exc:
                counts["invalid_entries"] += 1
                if not problems:  # the first reason is logged; the rest are counted
                    problems.append(str(exc))
                continue
            if cutoff is not None and entry.stored_at < cutoff:
                counts["expired_entries"] += 1
                continue
            counts["entries_read"] += 1
            yield entry.key, (entry.stored_at, entry.sha256, entry.result_text)

    def process(self, path: str):
        counts = {"entries_read": 0, "invalid_entries": 0, "expired_entries": 0}
        problems: list[str] = []
        whole = True
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
                yield from self._entries(fh, counts, problems)
        except Exception as exc:  # noqa: BLE001 - vanished (compacted meanwhile) or failed part-way: misses only
            whole = False
            log.warning("cache shard %s could not be read (%r); its entries are treated as missing", path, exc)
            metrics.counter("cache_shards_unreadable").inc()
        for name, value in counts.items():
            metrics.counter(f"cache_{name}").inc(value)
        if problems:
            log.warning("cache shard %s: skipped %d invalid line(s) (first: %s)", path, counts["invalid_entries"],
                        problems[0])
        if whole:
            metrics.counter("cache_shards_read").inc()
            yield beam.pvalue.TaggedOutput(FULLY_READ, path)


class ReadCacheEntries(beam.PTransform):
    """The entries of a cache: ``(request_key, (stored_at, sha256, result_text))``; ``.fully_read`` the shards read
    whole. ``shards`` fixes the list (compaction); by default the location is listed when the pipeline runs."""

    def __init__(self, settings: CacheSettings, shards: list[str] | None = None) -> None:
        super().__init__()
        self._settings = settings
        self._shards = shards

    def expand(self, pbegin):
        if self._shards is None:
            paths = (pbegin | "Location" >> beam.Create([self._settings.location])
                     | "ListShards" >> beam.FlatMap(list_shards))
        else:
            paths = pbegin | "Shards" >> beam.Create(self._shards)
        return (paths | "SpreadShards" >> beam.Reshuffle()
                | "ReadShards" >> beam.ParDo(_ReadShardFn(self._settings)).with_outputs(FULLY_READ, main="entries"))


# -- the join ------------------------------------------------------------------------------------------------------


class _KeyRecordFn(beam.DoFn):
    def __init__(self, config: ClientConfig) -> None:
        self._config = config
        self._misses = metrics.counter("cache_misses")

    def process(self, record: InputRecord):
        try:
            key = build_request(record, self._config).request_key
        except Exception:  # noqa: BLE001 - cannot be sent: the call step writes its error record
            self._misses.inc()
            yield beam.pvalue.TaggedOutput(UNKEYED, record)
        else:
            yield key, record


class _ServeFn(beam.DoFn):
    """One key's records and cache entries → cached results (``hits``), or the records to call (main), and for
    write_only the keys the cache already answers (``known``)."""

    def __init__(self, settings: CacheSettings, on_truncation: str = "result") -> None:
        self._settings = settings
        self._on_truncation = on_truncation
        self._hits, self._misses = metrics.counter("cache_hits"), metrics.counter("cache_misses")
        self._bypassed, self._invalid = metrics.counter("cache_bypassed"), metrics.counter("cache_invalid_entries")
        self._tokens, self._cost = metrics.counter("cache_tokens_saved"), metrics.counter("cache_cost_saved_nano_usd")

    def _answer(self, key: str, record: InputRecord, entries: Iterable[Any]) -> ResultRecord | None:
        for entry in newest_first((key, *value) for value in entries):
            try:
                answer = answer_from(entry, record, key)
            except InvalidEntry as exc:
                self._invalid.inc()
                log.warning("cache entry for key %s stored at %s rejected: %s", key, entry.stored_at, exc)
                continue
            return answer if servable(answer, self._on_truncation) else None  # the newest valid entry decides
        return None

    def process(self, element):
        key, grouped = element
        records = list(grouped["records"])
        answer = self._answer(key, records[0], grouped["entries"]) if records else None  # no records: cache only
        if answer is None:
            self._misses.inc(len(records))
            yield from records
        elif not self._settings.mode.serves:  # write_only: call anyway, and do not store over this entry
            self._bypassed.inc(len(records))
            yield beam.pvalue.TaggedOutput(KNOWN, key)
            yield from records
        else:
            yield from self._serve(answer, records)

    def _serve(self, answer: ResultRecord, records: list[InputRecord]):
        cost = round(saved_cost(answer, self._settings.prices) * NANO) if self._settings.prices else 0
        for record in records:  # identical requests under several ids: each gets the answer, with its own id
            self._hits.inc()
            self._tokens.inc(answer.usage.total_tokens)
            self._cost.inc(cost)
            PROGRESS.advance()
            yield beam.pvalue.TaggedOutput(HITS, answer.model_copy(update={"id": record.id,
                                                                           "metadata": record.metadata}))


class Lookup(NamedTuple):
    todo: Any  # InputRecords to call
    hits: Any  # ResultRecords served from the cache
    known: Any  # request_keys the cache already answers (write_only uses them; empty otherwise)


class CacheLookup(beam.PTransform):
    """InputRecords → ``Lookup(todo, hits, known)`` (see the module docstring)."""

    def __init__(self, config: ClientConfig, settings: CacheSettings) -> None:
        super().__init__()
        self._config = config
        self._settings = settings

    def expand(self, records):
        keyed = records | "KeyByRequest" >> beam.ParDo(_KeyRecordFn(self._config)).with_outputs(UNKEYED, main="keyed")
        entries = records.pipeline | "ReadCache" >> ReadCacheEntries(self._settings)
        served = ({"records": keyed.keyed, "entries": entries.entries}
                  | "JoinCache" >> beam.CoGroupByKey()
                  | "Serve" >> beam.ParDo(_ServeFn(self._settings, self._config.on_truncation))
                  .with_outputs(HITS, KNOWN, main=TODO))
        todo = (served[TODO], keyed[UNKEYED]) | "AllToCall" >> beam.Flatten()
        return Lookup(todo=todo, hits=served[HITS], known=served[KNOWN])


# -- writing -------------------------------------------------------------------------------------------------------


def _shard_count(entries: int) -> int:
    return max(1, -(-entries // ENTRIES_PER_SHARD))


def _assign_shard(element: tuple[str, str], total: int):
    key, line = element
    shards = _shard_count(total)
    return (int(key[:8], 16) % shards, shards), line


class _ShardWriter:
    """One shard being written: lines go to a hidden temporary file as they come; ``commit`` renames it into place
    (whole or not at all), ``abort`` removes it."""

    def __init__(self, path: str) -> None:
        self.path = path
        directory, name = posixpath.split(path)
        self._tmp = posixpath.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
        self._fh = FileSystems.create(self._tmp, compression_type=CompressionTypes.UNCOMPRESSED)
        self.lines = 0

    def write(self, line: str) -> None:
        self._fh.write((line + "\n").encode("utf-8"))
        self.lines += 1

    def commit(self) -> None:
        self._fh.close()
        FileSystems.rename([self._tmp], [self.path])

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._fh.close()
        with contextlib.suppress(Exception):
            FileSystems.delete([self._tmp])


def write_lines(path: str, lines: Iterable[str]) -> int:
    """Stream ``lines`` into a new file at ``path``, whole or not at all (see ``_ShardWriter``); the line count."""
    writer = _ShardWriter(path)
    try:
        for line in lines:
            writer.write(line)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return writer.lines


class _WriteShardFn(beam.DoFn):
    """``((shard, shards), lines)`` → the shard file; yields ``(path, ok)``. Failures are logged and counted."""

    def __init__(self, prefix: str, written_counter: str) -> None:
        self._prefix = prefix
        self._written = metrics.counter(written_counter)
        self._failures = metrics.counter("cache_write_failures")

    def process(self, element):
        (shard, shards), lines = element
        path = f"{self._prefix}-{shard:05d}-of-{shards:05d}.jsonl"
        try:
            self._written.inc(write_lines(path, lines))
        except Exception as exc:  # noqa: BLE001 - the run's own outputs must not depend on the cache
            self._failures.inc()
            log.warning("could not write cache shard %s: %r (those answers are not stored)", path, exc)
            yield path, False
        else:
            yield path, True


class WriteCacheShards(beam.PTransform):
    """``(request_key, line)`` → shard files ``{prefix}-SSSSS-of-NNNNN.jsonl`` (as many as the entries need; none
    when there are none); returns ``(path, ok)`` per shard."""

    def __init__(self, prefix: str, written_counter: str = "cache_entries_written") -> None:
        super().__init__()
        self._prefix = prefix
        self._written_counter = written_counter

    def expand(self, lines):
        total = lines | "CountEntries" >> beam.combiners.Count.Globally()
        return (lines
                | "AssignShard" >> beam.Map(_assign_shard, AsSingleton(total))
                | "GroupShards" >> beam.GroupByKey()
                | "WriteShard" >> beam.ParDo(_WriteShardFn(self._prefix, self._written_counter)))


class _StoreEntriesFn(beam.DoFn):
    """ResultRecords → cache lines streamed into one new shard per bundle (``{prefix}-{random}.jsonl``), renamed into
    place when the bundle finishes. Memory stays flat whatever the run's size, and a run's answers are stored bundle
    by bundle as it goes, so even a run killed later has stored what it finished. A failed write is logged and
    counted; the run goes on."""

    def __init__(self, prefix: str, stored_at: str) -> None:
        self._prefix = prefix
        self._stored_at = stored_at
        self._unstorable = metrics.counter("cache_unstorable")
        self._written = metrics.counter("cache_entries_written")
        self._failures = metrics.counter("cache_write_failures")
        self._writer: _ShardWriter | None = None
        self._failed = False

    def start_bundle(self) -> None:
        self._writer, self._failed = None, False

    def process(self, result: ResultRecord) -> None:
        if result.cached or self._failed:  # one served from the cache is there already
            return
        try:
            line = encode_entry(result, self._stored_at)
        except ValueError as exc:
            self._unstorable.inc()
            log.warning("result %r not stored in the cache: %s", result.id, exc)
            return
        try:
            if self._writer is None:
                self._writer = _ShardWriter(f"{self._prefix}-{uuid.uuid4().hex[:12]}.jsonl")
            self._writer.write(line)
        except Exception as exc:  # noqa: BLE001 - the run's own outputs must not depend on the cache
            self._fail(exc)

    def finish_bundle(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None or self._failed:
            return
        try:
            writer.commit()
        except Exception as exc:  # noqa: BLE001
            self._writer = writer
            self._fail(exc)
            return
        self._written.inc(writer.lines)

    def teardown(self) -> None:
        if self._writer is not None:  # a bundle that never finished: its file never appears
            self._writer.abort()

    def _fail(self, exc: Exception) -> None:
        path = self._writer.path if self._writer is not None else self._prefix
        log.warning("could not write cache shard %s: %r (this bundle's answers are not stored)", path, exc)
        self._failures.inc()
        self._failed = True
        if self._writer is not None:
            self._writer.abort()
            self._writer = None


def _unless_known(element):
    _key, grouped = element
    if not any(True for _ in grouped["known"]):
        yield from grouped["results"]


class CacheStore(beam.PTransform):
    """ResultRecords → new cache entries under this run's prefix. Results served from the cache are skipped; with
    ``known`` (write_only), so are results whose key the cache already answers."""

    def __init__(self, settings: CacheSettings, run_id: str, known=None) -> None:
        super().__init__()
        self._settings = settings
        self._prefix = shard_prefix(settings.location, "entries", run_id, settings.now)
        self._known = known

    def expand(self, results):
        if self._known is not None:
            keyed = results | "KeyResults" >> beam.Map(lambda r: (r.request_key, r))
            known = self._known | "KnownKeys" >> beam.Map(lambda key: (key, None))
            results = ({"results": keyed, "known": known} | "JoinKnown" >> beam.CoGroupByKey()
                       | "NotKnown" >> beam.FlatMap(_unless_known))
        return results | "StoreEntries" >> beam.ParDo(_StoreEntriesFn(self._prefix, self._settings.run_started))


# -- compaction ----------------------------------------------------------------------------------------------------


class _DeleteMergedFn(beam.DoFn):
    """Delete a shard that was read whole, once every merged shard is in place (the side input makes this step wait
    for the writes). If any write failed, nothing is deleted."""

    def __init__(self) -> None:
        self._deleted = metrics.counter("cache_compact_shards_deleted")
        self._kept = metrics.counter("cache_compact_shards_kept")

    def process(self, path: str, written: list[tuple[str, bool]]):
        if not all(ok for _, ok in written):
            self._kept.inc()
            return
        try:
            FileSystems.delete([path])
        except Exception as exc:  # noqa: BLE001 - already gone (another compaction merged it too)
            log.info("cache shard %s not deleted: %r", path, exc)
            self._kept.inc()
            return
        self._deleted.inc()


class CompactCache(beam.PTransform):
    """Merge the shards listed (fixed before the pipeline starts) into new ``compact-...`` shards: one entry per
    key (the newest valid one), expired and invalid entries dropped; then delete exactly the shards that were read
    whole. Shards a concurrent run finalises meanwhile are not in the list, so they are neither read nor deleted."""

    def __init__(self, settings: CacheSettings, shards: list[str], run_id: str) -> None:
        super().__init__()
        self._settings = settings
        self._shards = list(shards)
        self._prefix = shard_prefix(settings.location, "compact", run_id, settings.now)

    def expand(self, pbegin):
        read = pbegin | "ReadCache" >> ReadCacheEntries(self._settings, shards=self._shards)
        written = (read.entries
                   | "Newest" >> beam.CombinePerKey(max)  # (stored_at, sha256, text): newest, then the checksum
                   | "Line" >> beam.Map(lambda kv: (kv[0], encode_line(kv[0], kv[1][0], kv[1][2])))
                   | "WriteMerged" >> WriteCacheShards(self._prefix, "cache_compact_entries_written"))
        read[FULLY_READ] | "DeleteMerged" >> beam.ParDo(_DeleteMergedFn(), AsList(written))
        return written
