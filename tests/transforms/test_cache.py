"""The cache's Beam steps under a real in-memory pipeline: the keyed join (CacheLookup), storing (CacheStore), reading
damaged and vanished shards, and compaction (CompactCache) with a concurrent writer."""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import os
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from client.cache import CacheMode, CacheSettings, encode_entry, stamp
from client.config import ClientConfig, Target
from client.pricing import PriceTable
from client.requests import build_request
from pipelines.summary import chatbeam_counters
from schemas.records import InputRecord, ResultRecord, Usage
from transforms.cache import CacheLookup, CacheStore, CompactCache, ReadCacheEntries, list_shards

CONFIG = ClientConfig(target=Target("http://127.0.0.1:9/v1", "local_tokens"), model="google/gemini-test")
NOW = datetime.datetime(2026, 11, 30, 2, 0, tzinfo=datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


def rec(i: int, text: str | None = None, **fields) -> InputRecord:
    return InputRecord(id=f"r{i}", prompt=text or f"question {i}", metadata={"today": i}, **fields)


def key(record: InputRecord) -> str:
    return build_request(record, CONFIG).request_key


def answer(record: InputRecord, content: str | None = None) -> ResultRecord:
    return ResultRecord(id="old-" + record.id, request_key=key(record), model="google/gemini-2.0-flash-001",
                        content=content or f"answer to {record.prompt}", metadata={"yesterday": True},
                        usage=Usage(prompt_tokens=100, completion_tokens=20, total_tokens=120), latency_ms=5.0)


def shard(directory: Path, name: str, lines: list[str | bytes], newline_at_end: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"entries-20261129T020000Z-{name:0<32}-00000-of-00001.jsonl"
    data = b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines)
    path.write_bytes(data + (b"\n" if newline_at_end else b""))
    return path


def settings(tmp_path: Path, mode: CacheMode = CacheMode.READ_WRITE, ttl: float | None = None) -> CacheSettings:
    return CacheSettings(location=str(tmp_path / "cache"), mode=mode, ttl_days=ttl, run_started=stamp(NOW),
                         prices=PriceTable.load())


def _to_line(item) -> str:
    return item.model_dump_json() if hasattr(item, "model_dump_json") else json.dumps(item)


def run_lookup(records, s: CacheSettings, config: ClientConfig = CONFIG):
    """Run CacheLookup; its three outputs come back through files (the runner pickles everything it runs)."""
    out_dir = Path(s.location).parent / f"lookup-{next(_RUNS)}"
    p = TestPipeline()
    lookup = p | beam.Create(records) | CacheLookup(config, s)
    for name in ("todo", "hits", "known"):
        (getattr(lookup, name) | f"Json{name}" >> beam.Map(_to_line)
         | f"Write{name}" >> beam.io.WriteToText(str(out_dir / name)))
    result = p.run()
    result.wait_until_finish()
    parse = {"todo": InputRecord.model_validate_json, "hits": ResultRecord.model_validate_json, "known": json.loads}
    out = {name: [parse[name](line) for f in sorted(out_dir.glob(f"{name}-*")) for line in open(f) if line.strip()]
           for name in parse}
    return out, chatbeam_counters(result)


_RUNS = itertools.count()


def test_records_with_a_valid_entry_are_answered_from_it_the_rest_go_on_to_the_call(tmp_path):
    records = [rec(i) for i in range(6)]
    cache = tmp_path / "cache"
    good = [encode_entry(answer(records[i]), stamp(NOW - DAY)) for i in (0, 1, 2)]
    newer = encode_entry(answer(records[2], "a newer answer"), stamp(NOW - DAY / 2))
    shard(cache, "a1", [good[0], good[1]])
    shard(cache, "b2", [good[2], newer])
    out, counters = run_lookup(records, settings(tmp_path))
    hits = {r.id: r for r in out["hits"]}
    assert sorted(hits) == ["r0", "r1", "r2"] and sorted(r.id for r in out["todo"]) == ["r3", "r4", "r5"]
    assert hits["r2"].content == "a newer answer"  # the newest entry wins
    assert all(h.cached and h.metadata == {"today": int(h.id[1:])} for h in hits.values())  # today's id, metadata
    assert hits["r0"].usage.total_tokens == 120 and hits["r0"].latency_ms == 5.0  # the original answer's
    assert (counters["cache_hits"], counters["cache_misses"], counters["cache_tokens_saved"]) == (3, 3, 360)
    assert counters["cache_cost_saved_nano_usd"] > 0 and counters["cache_shards_read"] == 2


@pytest.mark.parametrize("policy, served", [("result", ["r0", "r1"]), ("error", ["r1"]), ("retry", ["r1"])])
def test_a_cut_off_answer_is_served_only_to_a_run_that_keeps_cut_off_answers(tmp_path, policy, served):
    records = [rec(0), rec(1)]
    cut_off = answer(records[0]).model_copy(update={"finish_reason": "length"})
    shard(tmp_path / "cache", "a1", [encode_entry(cut_off, stamp(NOW - DAY)),
                                     encode_entry(answer(records[1]), stamp(NOW - DAY))])
    out, counters = run_lookup(records, settings(tmp_path), dataclasses.replace(CONFIG, on_truncation=policy))
    assert sorted(h.id for h in out["hits"]) == served  # --on_truncation error/retry: record 0 is called again
    assert sorted(r.id for r in out["todo"]) == sorted({"r0", "r1"} - set(served))
    assert counters.get("cache_invalid_entries", 0) == 0  # a valid entry, just not this run's to serve


def test_duplicate_requests_under_several_ids_each_get_the_answer_once(tmp_path):
    a, b = rec(1, "same question"), rec(2, "same question")
    shard(tmp_path / "cache", "a1", [encode_entry(answer(a), stamp(NOW - DAY))] * 3)
    out, counters = run_lookup([a, b], settings(tmp_path))
    assert sorted(h.id for h in out["hits"]) == ["r1", "r2"] and counters["cache_hits"] == 2


def test_damaged_shards_are_skipped_counted_and_never_answer_wrongly(tmp_path, caplog):
    records = [rec(i) for i in range(4)]
    cache = tmp_path / "cache"
    lines = [encode_entry(answer(r), stamp(NOW - DAY)) for r in records]
    shard(cache, "c1", [lines[0], lines[1][:57]], newline_at_end=False)  # a writer cut off mid-line
    shard(cache, "d2", [b"\x00\xffgarbage\xfe", b"{not json", lines[2].replace("question 2", "question 3")])
    forged = json.loads(lines[3])
    forged["result"] = forged["result"].replace("answer to", "WRONG answer to")  # checksum no longer matches
    shard(cache, "e3", [json.dumps(forged), b"x" * 100])
    (cache / "notes.jsonl").write_text("not a shard: never read\n")
    out, counters = run_lookup(records, settings(tmp_path))
    assert [h.id for h in out["hits"]] == ["r0"] and sorted(r.id for r in out["todo"]) == ["r1", "r2", "r3"]
    assert counters["cache_invalid_entries"] == 6 and counters["cache_entries_read"] == 1
    assert "skipped" in caplog.text and "c1" in caplog.text


def test_an_entry_stored_under_the_wrong_key_is_not_served(tmp_path):
    a, b = rec(1), rec(2)
    stored = json.loads(encode_entry(answer(a), stamp(NOW - DAY)))
    from client.cache import encode_line

    shard(tmp_path / "cache", "f4", [encode_line(key(b), stored["stored_at"], stored["result"])])  # valid checksum
    out, counters = run_lookup([a, b], settings(tmp_path))
    assert out["hits"] == [] and counters["cache_invalid_entries"] == 1 and counters["cache_misses"] == 2


def test_expired_entries_are_not_served(tmp_path):
    old, fresh = rec(1), rec(2)
    shard(tmp_path / "cache", "a5", [encode_entry(answer(old), stamp(NOW - 10 * DAY)),
                                     encode_entry(answer(fresh), stamp(NOW - 2 * DAY))])
    out, counters = run_lookup([old, fresh], settings(tmp_path, ttl=7))
    assert [h.id for h in out["hits"]] == ["r2"] and counters["cache_expired_entries"] == 1


def test_write_only_calls_everything_and_reports_the_keys_already_cached(tmp_path):
    a, b = rec(1), rec(2)
    shard(tmp_path / "cache", "a6", [encode_entry(answer(a), stamp(NOW - DAY))])
    out, counters = run_lookup([a, b], settings(tmp_path, CacheMode.WRITE_ONLY))
    assert out["hits"] == [] and sorted(r.id for r in out["todo"]) == ["r1", "r2"]
    assert out["known"] == [key(a)] and counters["cache_bypassed"] == 1


def test_an_unbuildable_record_goes_to_the_call_step_which_writes_its_error(tmp_path):
    bad = rec(1, params={"stream": True})  # build_request refuses reserved params
    out, counters = run_lookup([bad], settings(tmp_path))
    assert [r.id for r in out["todo"]] == ["r1"] and counters["cache_misses"] == 1


def test_a_shard_that_vanished_after_listing_costs_misses_not_the_run(tmp_path):
    p = TestPipeline()
    entries = p | ReadCacheEntries(settings(tmp_path), shards=[str(tmp_path / "cache" / "gone.jsonl")])
    assert_that(entries.entries, equal_to([]))
    result = p.run()
    result.wait_until_finish()
    assert chatbeam_counters(result)["cache_shards_unreadable"] == 1


def _store(tmp_path, results, s: CacheSettings, known=None, run_id="1234abcd" * 4):
    p = TestPipeline()
    res = p | "Results" >> beam.Create(results)
    known_pc = p | "Known" >> beam.Create(known) if known is not None else None
    res | CacheStore(s, run_id, known=known_pc)
    result = p.run()
    result.wait_until_finish()
    return chatbeam_counters(result)


def test_stored_answers_are_served_to_the_next_run_and_cached_ones_are_not_stored_again(tmp_path):
    records = [rec(i) for i in range(5)]
    fresh = [answer(r) for r in records[:4]] + [answer(records[4]).model_copy(update={"cached": True})]
    counters = _store(tmp_path, fresh, settings(tmp_path))
    assert counters["cache_entries_written"] == 4
    shards = list_shards(str(tmp_path / "cache"))
    assert shards and all("/entries-20261130T020000Z-1234abcd" in s for s in shards)
    assert not [f for f in os.listdir(tmp_path / "cache") if f.endswith(".tmp")]
    out, _ = run_lookup(records, settings(tmp_path))
    assert sorted(h.id for h in out["hits"]) == ["r0", "r1", "r2", "r3"] and [r.id for r in out["todo"]] == ["r4"]


def test_write_only_does_not_store_over_an_existing_entry(tmp_path):
    a, b = rec(1), rec(2)
    counters = _store(tmp_path, [answer(a, "new"), answer(b, "new")], settings(tmp_path, CacheMode.WRITE_ONLY),
                      known=[key(a)])
    assert counters["cache_entries_written"] == 1
    written = [json.loads(line) for s in list_shards(str(tmp_path / "cache")) for line in open(s)]
    assert [w["key"] for w in written] == [key(b)]


def test_an_unwritable_cache_is_counted_and_the_run_goes_on(tmp_path):
    (tmp_path / "cache").write_text("a file where the cache directory should be")
    counters = _store(tmp_path, [answer(rec(1))], settings(tmp_path))
    assert counters["cache_write_failures"] == 1 and not counters.get("cache_entries_written")


def _compact(tmp_path, shards, ttl=None, run_id="c0ffee00" * 4):
    p = TestPipeline()
    p | CompactCache(settings(tmp_path, ttl=ttl), shards, run_id)
    result = p.run()
    result.wait_until_finish()
    return chatbeam_counters(result)


def test_compaction_merges_keeps_the_newest_drops_expired_and_invalid_and_spares_later_shards(tmp_path):
    cache = tmp_path / "cache"
    records = [rec(i) for i in range(4)]
    s1 = shard(cache, "a1", [encode_entry(answer(records[0], "old"), stamp(NOW - 3 * DAY)),
                             encode_entry(answer(records[1]), stamp(NOW - 3 * DAY)), b"{cut off"])
    s2 = shard(cache, "b2", [encode_entry(answer(records[0], "new"), stamp(NOW - DAY)),
                             encode_entry(answer(records[2]), stamp(NOW - 40 * DAY))])
    listed = list_shards(str(cache))
    # A concurrent run finalises its shard after the compaction listed the cache: it must survive untouched.
    late = shard(cache, "c3", [encode_entry(answer(records[3]), stamp(NOW))])
    temp = cache / ".entries-x.jsonl.0123.tmp"
    temp.write_text("a concurrent writer's unfinished file\n")
    counters = _compact(tmp_path, listed, ttl=30)
    assert not s1.exists() and not s2.exists() and late.exists() and temp.exists()
    assert counters["cache_compact_shards_deleted"] == 2 and counters["cache_expired_entries"] == 1
    assert counters["cache_invalid_entries"] == 1 and counters["cache_compact_entries_written"] == 2
    merged = [s for s in list_shards(str(cache)) if "/compact-" in s]
    assert len(merged) == 1
    out, _ = run_lookup(records, settings(tmp_path))
    hits = {h.id: h.content for h in out["hits"]}
    assert hits == {"r0": "new", "r1": "answer to question 1", "r3": "answer to question 3"}


def test_compaction_deletes_nothing_when_its_write_fails(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    s1 = shard(cache, "a1", [encode_entry(answer(rec(1)), stamp(NOW - DAY))])

    def fail(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("transforms.cache.write_lines", fail)
    counters = _compact(tmp_path, list_shards(str(cache)))
    assert s1.exists() and counters["cache_write_failures"] == 1 and counters["cache_compact_shards_kept"] == 1


def test_compaction_spreads_many_entries_over_several_shards(tmp_path, monkeypatch):
    monkeypatch.setattr("transforms.cache.ENTRIES_PER_SHARD", 40)
    records = [rec(i) for i in range(100)]
    assert _store(tmp_path, [answer(r) for r in records], settings(tmp_path))["cache_entries_written"] == 100
    counters = _compact(tmp_path, list_shards(str(tmp_path / "cache")))
    shards = list_shards(str(tmp_path / "cache"))
    assert counters["cache_compact_entries_written"] == 100
    assert len(shards) == 3 and all(s.endswith("-of-00003.jsonl") and "/compact-" in s for s in shards)
    out, _ = run_lookup(records, settings(tmp_path))
    assert len(out["hits"]) == 100


@pytest.mark.parametrize("mode", [CacheMode.READ_ONLY, CacheMode.READ_WRITE])
def test_an_empty_or_missing_cache_is_all_misses(tmp_path, mode):
    out, counters = run_lookup([rec(1), rec(2)], settings(tmp_path, mode))
    assert len(out["todo"]) == 2 and counters["cache_misses"] == 2 and not counters.get("cache_shards_read")


def test_only_stale_temporary_files_of_killed_writers_are_tidied(tmp_path):
    from transforms.cache import remove_stale_temp_files

    cache = tmp_path / "cache"
    cache.mkdir()
    old, fresh = cache / ".entries-x-0123456789ab.jsonl.aaaa.tmp", cache / ".entries-y-0123456789ab.jsonl.bbbb.tmp"
    notes = cache / "notes.tmp"
    for f in (old, fresh, notes):
        f.write_text("partial\n")
    two_days_ago = NOW.timestamp() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    os.utime(notes, (two_days_ago, two_days_ago))
    os.utime(fresh, (NOW.timestamp(), NOW.timestamp()))
    assert remove_stale_temp_files(str(cache), NOW.timestamp() - 86400) == 1
    assert not old.exists() and fresh.exists() and notes.exists()
