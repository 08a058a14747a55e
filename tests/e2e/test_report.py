"""The run report as a user gets it: a real run (two worker processes, a pool that answers 429 when overloaded,
some 500s, broken lines) writes OUTPUT-report.html; Chromium opens it with no console error and no network
request, every chart draws data, and a screenshot is saved; `chatbeam report` rebuilds the same page later."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from pipelines.cli import main as cli_main
from tests.report.browser import open_report, require_browser

pytestmark = pytest.mark.e2e

SCREENSHOT_DIR = os.environ.get("CHATBEAM_SCREENSHOT_DIR")  # CI may keep the screenshots


def _records(n: int) -> list:
    records: list = [{"id": f"r{i}", "prompt": f"Summarise item {i} in one line."} for i in range(n)]
    records[7] = '{"id": "cut-7", "prompt": "this line is cut'
    records[8] = {"id": "typo-8", "promt": "misspelt"}
    return records


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    """One run for the module's tests: 300 records against a 40 req/s pool with 60 ms latency and 3 % 500s."""
    from emulator import EmulatorConfig, FaultConfig, serve_in_thread
    from tests.conftest import read_jsonl, write_jsonl
    from pipelines.extract import run

    tmp = tmp_path_factory.mktemp("report")
    src = write_jsonl(tmp / "in.jsonl", _records(300))
    faults = FaultConfig(latency_ms=60, latency_jitter_ms=40, capacity_rps=40, error_500_rate=0.03)
    with serve_in_thread(EmulatorConfig(seed=3, faults=faults)) as emu:
        result = run(["--input", str(src), "--output", str(tmp / "out/results"), "--errors", str(tmp / "out/errors"),
                      "--emulator_url", emu.url, "--max_concurrency", "24", "--progress_interval_s", "1",
                      "--direct_running_mode", "multi_processing", "--direct_num_workers", "2",
                      "--api_key_env", "NOT_A_SECRET_NAME"])
    return {"dir": tmp / "out", "result": result, "results": read_jsonl(str(tmp / "out/results")),
            "errors": read_jsonl(str(tmp / "out/errors"))}


def test_a_waited_run_writes_its_report_beside_the_outputs(report_run):
    out, result = report_run["dir"], report_run["result"]
    page = out / "results-report.html"
    assert result.report_path == str(page) and page.exists()
    size = page.stat().st_size
    assert size < 2_000_000, f"{size:,} bytes"
    text = page.read_text()
    assert "<script src=" not in text and "https://" not in text.split("<style>")[0]  # nothing to fetch
    # Two worker processes each wrote their engine samples; the run's options were recorded.
    telemetry = sorted(p.name for p in (out / "results-telemetry").iterdir())
    assert any(name.startswith("run-") for name in telemetry)
    assert len([n for n in telemetry if not n.startswith("run-")]) >= 1


def test_the_page_opens_in_chromium_with_every_chart_drawn(report_run, tmp_path):
    require_browser()
    shot = tmp_path / "report.png"
    seen = open_report(report_run["dir"] / "results-report.html", screenshot=shot)
    assert seen.problems == []
    assert seen.requests == []  # self-contained: no network, not even a font
    assert set(seen.chart_ink) == {"completions", "concurrency", "throttling", "latency", "cost"}
    assert seen.missing_charts == []
    empty = {k: v for k, v in seen.chart_ink.items() if v < 50}
    assert not empty, f"charts with no data drawn: {empty}"
    assert shot.exists() and shot.stat().st_size > 20_000
    if SCREENSHOT_DIR:
        shutil.copy(shot, Path(SCREENSHOT_DIR) / "report-e2e.png")
    # What the reader learns: the counts match the sinks, errors by type, and the 429 storm was seen.
    results, errors = report_run["results"], report_run["errors"]
    assert f"{len(results) + len(errors):,}" in seen.text
    for error_type in {e["error_type"] for e in errors}:
        assert error_type in seen.text
    assert "invalid_json" in seen.text and "invalid_record" in seen.text


def test_the_numbers_match_the_sinks_and_the_engine(report_run):
    from pipelines.report import build_report

    out = report_run["dir"]
    _, data = build_report(str(out / "results"), str(out / "errors"), out=str(out / "again.html"))
    results, errors = report_run["results"], report_run["errors"]
    assert data["totals"]["results"] == len(results) and data["totals"]["errors"] == len(errors)
    assert sum(data["timeline"]["results"]) == len(results)  # every result has times
    assert sum(data["timeline"]["errors"]) == len([e for e in errors if e["stage"] != "read"])
    assert sum(m["total_tokens"] for m in data["by_model"]) == sum(r["usage"]["total_tokens"] for r in results)
    summary = json.loads((out / "results-summary.json").read_text())
    assert summary["status_429"] > 0, "the pool was meant to answer some 429s"
    engine_429 = sum(data["timeline"]["http_429"])
    # The engine samples saw the 429s (a worker process's last second may be cut off when the runner ends it).
    assert 0 < engine_429 <= summary["status_429"]
    assert max(data["timeline"]["in_flight"]) > 0 and max(data["timeline"]["limit"]) > 0
    assert data["latency"]["p50"] <= data["latency"]["p95"] <= data["latency"]["p99"]
    assert data["options"]["api_key_env"] == "NOT_A_SECRET_NAME" and data["options"]["direct_num_workers"] == 2


def test_chatbeam_report_rebuilds_the_page_from_the_sinks(report_run, tmp_path, capsys):
    out = report_run["dir"]
    target = tmp_path / "rebuilt.html"
    assert cli_main(["report", str(out / "results"), str(out / "errors"), "--out", str(target)]) == 0
    assert "rebuilt.html" in capsys.readouterr().out
    assert target.stat().st_size > 1_000_000 and 'data-chart="latency"' in target.read_text()
    # A prefix with no results files is a one-line error, exit 2.
    assert cli_main(["report", str(tmp_path / "nothing")]) == 2
    assert "no results files" in capsys.readouterr().err
