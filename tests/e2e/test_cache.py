"""The response cache end to end: the job as a user runs it (pipelines.extract.run) against the emulator, night after
night with one --cache directory. Every input record ends in exactly one result or error; what the cache serves
is never sent; what it holds is never wrong."""

from __future__ import annotations

import datetime
import random
from pathlib import Path

import pytest

from client.cache import decode_entry, encode_line, stamp
from client.pricing import PriceTable
from pipelines.cli import main as cli_main
from pipelines.extract import run
from transforms.cache import list_shards
from tests.conftest import read_jsonl, write_jsonl
from tests.e2e.test_extract import mixed_records

pytestmark = pytest.mark.e2e
NIGHT2_WORKERS = ("--direct_running_mode", "multi_processing", "--direct_num_workers", "2")


def job(emulator, src: Path, out: Path, cache: Path | None, *args: str, replay: bool = False):
    source = ["--replay_errors", str(src)] if replay else ["--input", str(src)]
    cache_args = ["--cache", str(cache)] if cache is not None else []
    return run([*source, "--output", str(out / "results"), "--errors", str(out / "errors"),
                "--emulator_url", emulator.url, "--progress_interval_s", "0", *cache_args, *args])


def outputs(out: Path) -> tuple[list[dict], list[dict]]:
    return read_jsonl(str(out / "results-")), read_jsonl(str(out / "errors-"))


def sent(emulator) -> int:
    return emulator.stats(fingerprints=False)["requests"]


def night(n: int, changed: set[int] = frozenset(), night_no: int = 1) -> list[dict]:
    return [{"id": f"row{i}", "prompt": f"Summarise ticket {i}" + (f" (edited on night {night_no})"
                                                                    if i in changed else ""),
             "metadata": {"row": i}} for i in range(n)]


def test_second_night_with_ten_percent_of_rows_changed_sends_only_those(vertex_emulator, tmp_path):
    """The acceptance scenario at 2,000 rows (bench/cache.py runs it at 10,000); the second night runs on two
    worker processes, as on Dataflow."""
    n, cache = 2000, tmp_path / "cache"
    changed = set(random.Random(14).sample(range(n), n // 10))
    first = job(vertex_emulator, write_jsonl(tmp_path / "n1.jsonl", night(n)), tmp_path / "n1", cache)
    assert sent(vertex_emulator) == n and first.summary["cache"]["entries_written"] == n
    vertex_emulator.reset()
    second = job(vertex_emulator, write_jsonl(tmp_path / "n2.jsonl", night(n, changed, 2)), tmp_path / "n2", cache,
                 *NIGHT2_WORKERS)
    requests = sent(vertex_emulator)
    assert requests == len(changed) <= 1.05 * len(changed)

    before = {r["id"]: r for r in outputs(tmp_path / "n1")[0]}
    results, errors = outputs(tmp_path / "n2")
    assert errors == [] and sorted(r["id"] for r in results) == sorted(f"row{i}" for i in range(n))  # once each
    for r in results:
        i = int(r["id"][3:])
        if i in changed:
            assert r["cached"] is False and r["request_key"] != before[r["id"]]["request_key"]
        else:  # identical to the first night's answer, latency and usage included; only `cached` differs
            assert r["cached"] is True and {**r, "cached": False} == before[r["id"]]
    s = second.summary
    assert (s["cache"]["hits"], s["cache"]["misses"], s["records_called"]) == (n - len(changed), len(changed),
                                                                              len(changed))
    assert s["cache"]["tokens_saved"] == sum(before[f"row{i}"]["usage"]["total_tokens"]
                                             for i in range(n) if i not in changed)
    assert s["tokens"]["total"] == sum(r["usage"]["total_tokens"] for r in results if not r["cached"])  # billed
    prices = PriceTable.load()
    saved = sum(prices.cost(r["model"], r["usage"]["prompt_tokens"], r["usage"]["completion_tokens"])
                for r in before.values() if int(r["id"][3:]) not in changed)
    assert s["cache"]["cost_saved_usd"] == pytest.approx(saved, abs=1e-5) and saved > 0
    assert s["cache"]["entries_written"] == len(changed) and s["cache"]["invalid_entries"] == 0
    assert vertex_emulator.stats(fingerprints=False)["duplicate_ok"] == 0


def test_id_and_metadata_come_from_todays_input_and_the_dry_run_counts_the_savings(vertex_emulator, tmp_path):
    cache = tmp_path / "cache"
    job(vertex_emulator, write_jsonl(tmp_path / "a.jsonl", night(30)), tmp_path / "a", cache)
    renamed = [{**r, "id": f"ticket-{i}", "metadata": {"source": "today"}} for i, r in enumerate(night(40))]
    src = write_jsonl(tmp_path / "b.jsonl", renamed)
    vertex_emulator.reset()
    dry = job(vertex_emulator, src, tmp_path / "dry", cache, "--dry_run")
    assert sent(vertex_emulator) == 0
    assert (dry.summary["records"], dry.summary["cache"]["hits"]) == (10, 30)
    assert dry.summary["cache"]["cost_saved_usd"] > 0
    job(vertex_emulator, src, tmp_path / "b", cache)
    results = {r["id"]: r for r in outputs(tmp_path / "b")[0]}
    assert sent(vertex_emulator) == 10 and len(results) == 40
    assert all(r["metadata"] == {"source": "today"} for r in results.values())
    assert [results[f"ticket-{i}"]["cached"] for i in (0, 29, 30, 39)] == [True, True, False, False]


def _shards(cache: Path) -> list[Path]:
    return [Path(p) for p in list_shards(str(cache))]


def test_modes_read_only_write_only_refresh(vertex_emulator, tmp_path):
    cache = tmp_path / "cache"
    src = write_jsonl(tmp_path / "in.jsonl", night(20))
    job(vertex_emulator, write_jsonl(tmp_path / "half.jsonl", night(10)), tmp_path / "seed", cache)
    seeded = _shards(cache)

    vertex_emulator.reset()
    ro = job(vertex_emulator, src, tmp_path / "ro", cache, "--cache_mode", "read_only")
    assert sent(vertex_emulator) == 10 and ro.summary["cache"]["hits"] == 10 and _shards(cache) == seeded

    vertex_emulator.reset()
    wo = job(vertex_emulator, src, tmp_path / "wo", cache, "--cache_mode", "write_only")
    assert sent(vertex_emulator) == 20 and not any(r["cached"] for r in outputs(tmp_path / "wo")[0])
    assert (wo.summary["cache"]["bypassed"], wo.summary["cache"]["entries_written"]) == (10, 10)

    vertex_emulator.reset()
    job(vertex_emulator, src, tmp_path / "refresh", cache, "--cache_mode", "refresh")
    assert sent(vertex_emulator) == 20
    refreshed = {r["id"]: r["latency_ms"] for r in outputs(tmp_path / "refresh")[0]}

    vertex_emulator.reset()
    job(vertex_emulator, src, tmp_path / "after", cache)
    after = outputs(tmp_path / "after")[0]
    assert sent(vertex_emulator) == 0 and all(r["cached"] for r in after)
    assert {r["id"]: r["latency_ms"] for r in after} == refreshed  # the refresh's answers replaced the older ones


def _age(cache: Path, days: float) -> None:
    """Rewrite every entry as if stored ``days`` ago (a valid entry: the checksum is recomputed)."""
    when = stamp(datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=days))
    for shard in _shards(cache):
        entries = [decode_entry(line) for line in shard.read_bytes().splitlines() if line.strip()]
        shard.write_text("".join(encode_line(e.key, when, e.result_text) + "\n" for e in entries))


def test_entries_older_than_the_ttl_are_called_again(vertex_emulator, tmp_path):
    cache, src = tmp_path / "cache", write_jsonl(tmp_path / "in.jsonl", night(15))
    job(vertex_emulator, src, tmp_path / "a", cache)
    _age(cache, 10)
    vertex_emulator.reset()
    fresh_enough = job(vertex_emulator, src, tmp_path / "b", cache, "--cache_ttl_days", "30")
    assert sent(vertex_emulator) == 0 and fresh_enough.summary["cache"]["hits"] == 15
    expired = job(vertex_emulator, src, tmp_path / "c", cache, "--cache_ttl_days", "7")
    assert sent(vertex_emulator) == 15 and expired.summary["cache"]["expired_entries"] == 15
    assert expired.summary["cache"]["entries_written"] == 15  # the new answers replace the expired ones
    job(vertex_emulator, src, tmp_path / "d", cache, "--cache_ttl_days", "7")
    assert sent(vertex_emulator) == 15  # nothing more: served from the new entries


def test_corrupt_and_truncated_shards_are_skipped_counted_and_never_served(vertex_emulator, tmp_path, caplog):
    cache, records = tmp_path / "cache", night(30)
    src = write_jsonl(tmp_path / "in.jsonl", records)
    job(vertex_emulator, src, tmp_path / "a", cache)
    lines = b"".join(s.read_bytes() for s in _shards(cache)).splitlines(keepends=True)
    for s in _shards(cache)[1:]:
        s.unlink()
    shard = _shards(cache)[0]
    # Ten entries stay whole; the next is cut off mid-line, then garbage, then one tampered with (its checksum no
    # longer matches); the other 18 are gone.
    tampered = lines[11].replace(b"Emulated answer", b"A WRONG answer")
    shard.write_bytes(b"".join(lines[:10]) + lines[10][:80] + b"\n" + b"\x00\xff\xfe garbage \x80\n" + tampered)
    extra = cache / shard.name.replace(shard.name.split("-")[2], "deadbeef" * 4)
    extra.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)  # a binary file under a shard's name
    vertex_emulator.reset()
    second = job(vertex_emulator, src, tmp_path / "b", cache)
    results, errors = outputs(tmp_path / "b")
    assert errors == [] and len(results) == 30 and sent(vertex_emulator) == 20
    assert sum(r["cached"] for r in results) == 10
    assert not any("WRONG" in (r["content"] or "") for r in results)
    assert second.summary["cache"]["invalid_entries"] >= 3
    assert "skipped" in caplog.text


def test_resume_and_replay_work_with_the_cache(vertex_emulator, tmp_path):
    cache, src = tmp_path / "cache", write_jsonl(tmp_path / "in.jsonl", mixed_records(60))
    out = tmp_path / "night"
    job(vertex_emulator, src, out, cache)
    finished = outputs(out)
    # Resuming a finished run calls nothing and rewrites the same outputs (cached stays false: its own answers).
    vertex_emulator.reset()
    resumed = job(vertex_emulator, src, out, cache, "--resume")
    assert sent(vertex_emulator) == 0 and resumed.summary["resumed"] == 40
    key = lambda r: r["id"]  # noqa: E731
    assert sorted(outputs(out)[0], key=key) == sorted(finished[0], key=key)

    # A run killed after journaling everything (no final outputs, no cache shards): --resume stores the journaled
    # answers in the cache, so the next run is served from it.
    for f in [*out.glob("results-*-of-*.jsonl"), *out.glob("errors-*-of-*.jsonl"), *_shards(cache)]:
        f.unlink()
    job(vertex_emulator, src, out, cache, "--resume")
    assert sent(vertex_emulator) == 0 and _shards(cache)
    job(vertex_emulator, src, tmp_path / "next", cache)
    assert sent(vertex_emulator) == 0 and sum(r["cached"] for r in outputs(tmp_path / "next")[0]) == 40

    # --replay_errors: retryable failures whose request another run has since answered are served from the cache.
    records = night(20)
    vertex_emulator.set_faults(error_500_rate=1.0)
    job(vertex_emulator, write_jsonl(tmp_path / "failing.jsonl", records), tmp_path / "failed", None,
        "--max_attempts", "1")
    assert {e["error_type"] for e in outputs(tmp_path / "failed")[1]} == {"server_error"}
    vertex_emulator.set_faults({})
    job(vertex_emulator, write_jsonl(tmp_path / "other.jsonl", records[:15]), tmp_path / "other", cache)
    vertex_emulator.reset()
    replay = job(vertex_emulator, tmp_path / "failed" / "errors-*.jsonl", tmp_path / "replay", cache, replay=True)
    results, errors = outputs(tmp_path / "replay")
    assert errors == [] and len(results) == 20 and sent(vertex_emulator) == 5
    assert replay.summary["cache"]["hits"] == 15


def test_compact_command_merges_shards_and_the_cache_still_answers(vertex_emulator, tmp_path, capsys):
    cache = tmp_path / "cache"
    for i in range(3):
        job(vertex_emulator, write_jsonl(tmp_path / f"in{i}.jsonl", night(10 + 5 * i)), tmp_path / f"o{i}", cache,
            "--cache_mode", "refresh")
    runs = _shards(cache)
    assert len({s.name.split("-")[2] for s in runs}) == 3  # three runs' shards
    assert cli_main(["cache", "compact", str(cache)]) == 0
    printed = capsys.readouterr().out
    assert f"{len(runs)} shards, 45 valid entries → 20 entries (25 duplicates dropped)" in printed
    assert [s.name.split("-")[0] for s in _shards(cache)] == ["compact"]
    vertex_emulator.reset()
    job(vertex_emulator, write_jsonl(tmp_path / "all.jsonl", night(20)), tmp_path / "all", cache)
    assert sent(vertex_emulator) == 0

    assert cli_main(["cache", "compact", str(tmp_path / "empty")]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert cli_main(["cache", "compact"]) == 2
    assert cli_main(["cache", "compact", str(cache), "--cache_ttl_day", "3"]) == 2
    assert cli_main(["cache", "compact", "proj:dataset.table"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("chatbeam cache: error: ") for e in errors)


@pytest.mark.parametrize("where", ["output", "input"])
def test_a_cache_colliding_with_the_runs_files_is_a_one_line_exit_2(vertex_emulator, tmp_path, capsys, where):
    """The cache at the --output prefix, or an --input glob that would read its shards: refused before any work."""
    (tmp_path / "in").mkdir()
    src = write_jsonl(tmp_path / "in" / "a.jsonl", night(5))
    if where == "output":
        argv = ["--input", str(src), "--output", str(tmp_path / "o" / "r"), "--cache", str(tmp_path / "o" / "r")]
    else:
        argv = ["--input", str(tmp_path / "in" / "*.jsonl"), "--output", str(tmp_path / "o" / "r"),
                "--cache", str(tmp_path / "in")]
    code = cli_main([*argv, "--emulator_url", vertex_emulator.url, "--progress_interval_s", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("chatbeam: error:"), err
    assert ("lies under --output" if where == "output" else "response cache files") in err
    assert sent(vertex_emulator) == 0 and not (tmp_path / "o").exists()
