"""``python -m emulator``: the ready line, flags, the JSON config file; EmulatorConfig parsing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from emulator import EmulatorConfig, FaultConfig
from tests.emulator._support import AUTH, CHAT, MANAGED, user

ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r'^\{"event": "ready", "url": "http://127\.0\.0\.1:(\d+)"\}\n$')


def start(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "emulator", "--port", "0", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    match = READY.match(line)
    if not match:
        proc.kill()
        raise AssertionError(f"no ready line: {line!r} {proc.stderr.read()}")
    return proc, f"http://127.0.0.1:{match.group(1)}"


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    return out


def test_ready_line_then_serving(tmp_path):
    proc, url = start("--seed", "3")
    try:
        response = httpx2.post(url + MANAGED + CHAT, json=user("hello"), headers=AUTH)
        assert response.status_code == 200 and "hello" in response.json()["choices"][0]["message"]["content"]
    finally:
        rest = stop(proc)
    assert rest == ""  # exactly one line on stdout


def test_config_file_and_flags(tmp_path):
    config = tmp_path / "emu.json"
    config.write_text(json.dumps({"seed": 5, "storm_429_s": 60, "faults": {"retry_delay_s": 7}}))
    proc, url = start("--config", str(config), "--retry_info", "true")
    try:
        storm = httpx2.post(url + MANAGED + CHAT, json=user("hello"), headers=AUTH)
        faults = httpx2.get(url + "/emulator/faults").json()
    finally:
        stop(proc)
    assert storm.status_code == 429 and storm.json()[0]["error"]["details"][0]["retryDelay"] == "7s"
    assert faults["storm_429_s"] == 60


def test_bad_flags_exit_with_2():
    result = subprocess.run([sys.executable, "-m", "emulator", "--error_500_rate", "3"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "error_500_rate" in result.stderr and result.stdout == ""


def test_from_argv_precedence(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"seed": 9, "latency_ms": 100, "models": ["google/x"]}))
    cfg = EmulatorConfig.from_argv(["--config", str(path), "--latency_ms", "5", "--deployed_endpoints", "12=gemma,34=llama"])

    assert cfg.seed == 9 and cfg.models == ("google/x",)
    assert cfg.faults.latency_ms == 5  # the flag wins over the file
    assert cfg.deployed_endpoints == {"12": "gemma", "34": "llama"}
    assert EmulatorConfig.from_argv([]) == EmulatorConfig()


def test_config_round_trips_and_rejects_unknown_keys():
    cfg = EmulatorConfig(seed=4, api_key="secret", faults=FaultConfig(capacity_rps=3))
    assert EmulatorConfig.from_dict(cfg.to_dict()) == cfg
    assert "secret" not in repr(cfg)
    with pytest.raises(ValueError, match="unknown config keys"):
        EmulatorConfig.from_dict({"colour": "blue"})
    with pytest.raises(ValueError):
        FaultConfig(latency_ms=-1)
    with pytest.raises(SystemExit):  # argparse reports the bad value
        EmulatorConfig.from_argv(["--deployed_endpoints", "abc=model"])


def test_access_log_goes_to_stderr_without_tokens_or_keys():
    proc, url = start("--access_log", "--api_key", "key-SECRET-2")
    try:
        httpx2.post(url + MANAGED + CHAT, json=user("hello"), headers={"authorization": "Bearer tok-SECRET-1"})
        httpx2.get(url + "/v1/models", headers={"authorization": "Bearer key-SECRET-2"})
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert out == "" and "POST /v1/projects/p/locations/us-central1/endpoints/openapi/chat/completions" in err
    assert "SECRET" not in err
