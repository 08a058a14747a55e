"""--service_tier end to end against the emulator: flex with a deadline it cannot meet escalates the remaining
requests (standard, then priority if still late), each record once, each result marked with the tier it was
served at, and the summary counting records and cost per tier."""

from __future__ import annotations

import datetime
import json

import pytest

from tests.conftest import read_jsonl

pytestmark = pytest.mark.e2e


def test_flex_with_a_deadline_it_would_miss_escalates(tmp_path):
    from pipelines.extract import run

    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"summarise item {i}"}) + "\n" for i in range(60)))
    # flex: 300 ms x 4 per request, 2 in flight -> about 36 s for 60 records; standard about 9 s; the deadline is
    # 20 s away
    deadline = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=20)).isoformat()
    result = run(["--input", str(path), "--output", str(tmp_path / "results"), "--emulator",
                  "--emulator_args", "--latency_ms 300 --flex_latency_factor 4",
                  "--vertex_location", "global", "--service_tier", "flex", "--deadline", deadline,
                  "--max_concurrency", "2", "--no_adaptive_throttling", "--progress_interval_s", "0"])
    results = read_jsonl(str(tmp_path / "results"))
    summary = result.summary

    assert sorted(r["id"] for r in results) == sorted(f"r{i}" for i in range(60))
    served = {r["service_tier"] for r in results}
    assert "flex" in served and served & {"standard", "priority"}  # escalated part-way
    tiers = summary["tiers"]
    assert sum(row["records"] for row in tiers.values()) == 60
    assert tiers["flex"]["records"] == sum(r["service_tier"] == "flex" for r in results)
    per_record = {t: row["cost_usd"] / row["records"] for t, row in tiers.items() if row["records"]}
    if "standard" in per_record:  # the same kind of record costs about twice as much at standard
        assert per_record["standard"] > 1.5 * per_record["flex"]
