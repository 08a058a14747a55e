"""The response cache's pure core (client/cache.py): the entry format and its validation, TTL, modes, shard names,
the bounded line reader and the summary lines."""

from __future__ import annotations

import datetime
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.cache import (CacheMode, InvalidEntry, answer_from, bounded_lines, cache_summary, decode_entry,
                          encode_entry, encode_line, format_cache_summary, is_expired, is_shard, newest_first,
                          saved_cost, shard_prefix, stamp)
from client.pricing import PriceTable
from schemas.records import InputRecord, ResultRecord, Usage

KEY = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"
T0 = "2026-11-20T02:00:00.000000Z"
UTC = datetime.timezone.utc


def result(key: str = KEY, **fields) -> ResultRecord:
    base = dict(id="yesterday-7", request_key=key, model="google/gemini-2.0-flash-001", content="Paris",
                finish_reason="stop", usage=Usage(prompt_tokens=1000, completion_tokens=200, total_tokens=1200),
                attempts=3, latency_ms=812.5, metadata={"row": 7, "night": 1})
    return ResultRecord(**{**base, **fields})


def record(**fields) -> InputRecord:
    return InputRecord(**{"id": "today-42", "prompt": "Capital of France?", "metadata": {"night": 2}, **fields})


def test_a_stored_answer_comes_back_with_todays_id_and_metadata_and_everything_else_as_stored():
    line = encode_entry(result(), T0)
    entry = decode_entry(line.encode())
    served = answer_from(entry, record(), KEY)
    assert (served.id, served.metadata, served.cached) == ("today-42", {"night": 2}, True)
    original = result().model_dump(exclude={"id", "metadata", "cached"})
    assert served.model_dump(exclude={"id", "metadata", "cached"}) == original  # usage, attempts, latency, ...
    stored = json.loads(json.loads(line)["result"])
    assert "id" not in stored and "metadata" not in stored and "cached" not in stored  # not the cache's to keep


def test_fields_the_reading_version_does_not_know_are_ignored_and_missing_ones_default():
    stored = {**result().model_dump(exclude={"id", "metadata", "cached"}), "finished_at": "2026-11-20T02:00:01Z"}
    entry = decode_entry(encode_line(KEY, T0, json.dumps(stored)))
    assert answer_from(entry, record(), KEY).content == "Paris"
    minimal = decode_entry(encode_line(KEY, T0, json.dumps({"request_key": KEY, "content": "x"})))
    assert answer_from(minimal, record(), KEY).usage == Usage()


def test_every_cut_off_prefix_of_an_entry_is_rejected():
    line = encode_entry(result(content="a longer answer, with \"quotes\" and ünïcode"), T0)
    for cut in range(len(line)):
        with pytest.raises(InvalidEntry):
            decode_entry(line[:cut])


@pytest.mark.parametrize("damage, reason", [
    (lambda d: {**d, "v": 2}, "version"),
    (lambda d: {**d, "key": "not-a-key"}, "key"),
    (lambda d: {**d, "stored_at": "yesterday"}, "stored_at"),
    (lambda d: {**d, "result": d["result"].replace("Paris", "Lyon")}, "checksum"),
    (lambda d: {**d, "key": OTHER}, "checksum"),
    (lambda d: {k: v for k, v in d.items() if k != "sha256"}, "checksum missing"),
    (lambda d: [d], "not a JSON object"),
])
def test_damaged_entries_are_rejected_with_the_reason(damage, reason):
    good = json.loads(encode_entry(result(), T0))
    with pytest.raises(InvalidEntry, match=reason):
        decode_entry(json.dumps(damage(good)))


@pytest.mark.parametrize("garbage", [b"", b"\x00\xff\xfe garbage", b"\xff" * 40, b"null", b"{}", b"[1,2]",
                                     b'{"v":1}', b"{" * 5000])
def test_garbage_is_rejected(garbage):
    with pytest.raises(InvalidEntry):
        decode_entry(garbage)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_no_bytes_make_decoding_fail_other_than_invalid_entry(data):
    try:
        decode_entry(data)
    except InvalidEntry:
        pass


def test_an_entry_is_only_served_for_the_key_its_result_answers():
    # Consistent checksum, but the stored result answers another request: never served.
    entry = decode_entry(encode_line(KEY, T0, result(key=OTHER).model_dump_json(exclude={"id", "metadata"})))
    with pytest.raises(InvalidEntry, match="another request"):
        answer_from(entry, record(), KEY)
    with pytest.raises(InvalidEntry, match="offered for key"):
        answer_from(decode_entry(encode_entry(result(), T0)), record(), OTHER)


def test_a_stored_result_that_is_not_a_result_is_rejected_when_served():
    entry = decode_entry(encode_line(KEY, T0, json.dumps({"request_key": KEY, "usage": "lots"})))
    with pytest.raises(InvalidEntry, match="not a valid result"):
        answer_from(entry, record(), KEY)
    with pytest.raises(InvalidEntry, match="not an object"):
        answer_from(decode_entry(encode_line(KEY, T0, "[]")), record(), KEY)


def test_only_fresh_answers_of_this_run_are_storable():
    with pytest.raises(ValueError, match="not stored again"):
        encode_entry(result(cached=True), T0)
    with pytest.raises(ValueError, match="request_key"):
        encode_entry(result(key=""), T0)
    with pytest.raises(ValueError):
        encode_entry(result(content="lone \ud800 surrogate"), T0)


def test_ttl_counts_from_stored_at():
    now = datetime.datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
    assert not is_expired(T0, now, None)
    assert not is_expired(T0, now, 10.0)
    assert is_expired(T0, now, 9.99)
    assert is_expired(stamp(now - datetime.timedelta(hours=13)), now, 0.5)


def test_the_newest_valid_entry_wins_and_ties_break_the_same_way_every_time():
    old, new = (decode_entry(encode_entry(result(content=c), t)) for c, t in
                (("old", T0), ("new", "2026-11-21T02:00:00.000000Z")))
    assert [e.result_text for e in newest_first([old, new])] == [new.result_text, old.result_text]
    a, b = (decode_entry(encode_entry(result(content=c), T0)) for c in ("a", "b"))
    assert newest_first([a, b]) == newest_first([b, a])


def test_modes():
    table = {m.value: (m.serves, m.stores, m.reads) for m in CacheMode}
    assert table == {"read_write": (True, True, True), "read_only": (True, False, True),
                     "write_only": (False, True, True), "refresh": (False, True, False)}


def test_shard_names_are_per_run_and_nothing_else_is_a_shard():
    moment = datetime.datetime(2026, 11, 30, 2, 0, 5, tzinfo=UTC)
    prefix = shard_prefix("gs://b/cache/", "entries", "3b70d74c2d134a8cbdd2b75bd5afb050", moment)
    assert prefix == "gs://b/cache/entries-20261130T020005Z-3b70d74c2d134a8cbdd2b75bd5afb050"
    assert is_shard(prefix + "-00000-of-00002.jsonl", "gs://b/cache")  # compaction's
    assert is_shard(prefix + "-0123456789ab.jsonl", "gs://b/cache")  # a run's, one per bundle
    for other in (prefix + "-00000-of-00002.jsonl.tmp", "gs://b/cache/." + prefix.split("/")[-1] + ".tmp",
                  "gs://b/cache/beam-temp-x/" + prefix.split("/")[-1] + "-00000-of-00001.jsonl",
                  "gs://b/cache/notes.jsonl", "gs://b/cache2/" + prefix.split("/")[-1] + "-00000-of-00001.jsonl"):
        assert not is_shard(other, "gs://b/cache"), other
    with pytest.raises(ValueError):
        shard_prefix("/c", "entries", "not hex", moment)


def _reference_lines(data: bytes, limit: int):
    out = []
    for part in data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"):
        out.append(part + b"\n" if len(part) <= limit else None)
    if out and not data.endswith(b"\n") and out[-1] is not None:
        out[-1] = out[-1][:-1]
    return [x for x in out if x != b""]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=12), st.booleans(),
       st.integers(1, 16), st.integers(1, 40))
def test_bounded_lines_splits_like_split_and_skips_only_long_lines(parts, final_newline, chunk, limit):
    data = b"\n".join(parts) + (b"\n" if final_newline and parts else b"")
    got = [x for x in bounded_lines(io.BytesIO(data), max_bytes=limit, chunk_size=chunk) if x != b""]
    assert got == _reference_lines(data, limit)


def test_saved_cost_prices_the_stored_usage_at_the_tier_it_was_served_at():
    prices = PriceTable.load()
    assert saved_cost(result(), prices) == prices.cost("google/gemini-2.0-flash-001", 1000, 200) > 0
    batch = saved_cost(result(service_tier="batch"), prices)
    assert batch == prices.cost("google/gemini-2.0-flash-001", 1000, 200, tier="batch") < saved_cost(result(), prices)


def test_summary_lines():
    assert cache_summary({"records_read": 10}) is None and format_cache_summary(None) == []
    s = cache_summary({"cache_hits": 9000, "cache_misses": 1000, "cache_tokens_saved": 1_200_000,
                       "cache_cost_saved_nano_usd": 250_000_000, "cache_entries_written": 1000,
                       "cache_invalid_entries": 3, "cache_expired_entries": 5})
    assert (s["hits"], s["misses"], s["cost_saved_usd"], s["invalid_entries"]) == (9000, 1000, 0.25, 3)
    text = "\n".join(format_cache_summary(s))
    assert "9,000 served from the cache (1,200,000 tokens, ~$0.2500 saved), 1,000 called" in text
    assert "1,000 new entries stored" in text and "5 entries older" in text and "3 invalid entries" in text
    assert "would be served" in "\n".join(format_cache_summary(s, dry_run=True))
