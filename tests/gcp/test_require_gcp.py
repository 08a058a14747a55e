"""The CI switch: without the GCP emulators these tests skip, except under CHATBEAM_REQUIRE_GCP=1 (.ci/run sets it
after installing them), where a missing emulator is a failure."""

from __future__ import annotations

import pytest

from tests.gcp.conftest import REQUIRE, unavailable


def test_a_missing_emulator_skips_by_default(monkeypatch):
    monkeypatch.delenv(REQUIRE, raising=False)
    with pytest.raises(pytest.skip.Exception, match="gcp-storage-emulator is not installed"):
        unavailable("gcp-storage-emulator is not installed")


@pytest.mark.parametrize("value", ["0", ""])
def test_only_1_turns_the_switch_on(monkeypatch, value):
    monkeypatch.setenv(REQUIRE, value)
    with pytest.raises(pytest.skip.Exception):
        unavailable("bqemulator is not installed")


def test_under_ci_a_missing_emulator_fails(monkeypatch):
    monkeypatch.setenv(REQUIRE, "1")
    with pytest.raises(pytest.fail.Exception, match="CHATBEAM_REQUIRE_GCP=1 but bqemulator is not installed"):
        unavailable("bqemulator is not installed")


def test_ci_sets_the_switch():
    from pathlib import Path

    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert "export CHATBEAM_REQUIRE_GCP=1" in ci
    assert ci.index("start_gcp_emulators.sh --install") < ci.index("export CHATBEAM_REQUIRE_GCP=1") < ci.index(
        "python -m pytest")
