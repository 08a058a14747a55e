"""Load benchmark for the Vertex emulator: is it fast enough never to be a benchmark's bottleneck?

Starts ``python -m emulator --port 0`` as a subprocess per scenario, drives it over loopback with
wrk (C, cheap; ``apt-get install -y wrk``; a Lua script makes every body unique) or, without wrk,
a bounded asyncio keep-alive load generator, then reads ``/emulator/stats``.  Prints one table
per run and a table of medians over the runs.

Scenarios (each bounded in time):

* ``plain``       non-streaming, no latency, 64 connections            -> target >= 1,500 req/s
* ``stream``      streaming with include_usage, no latency, 64 connections
* ``structured``  json_schema response_format, no latency, 64 connections
* ``latency500``  ``--latency_ms 500``, 2,200 connections              -> target max_in_flight >= 2,000

Usage::

    python bench/emulator_load.py                      # 3 runs of every scenario, medians at the end
    python bench/emulator_load.py --runs 1 --scenarios plain,latency500 --duration 4 --tool python
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SCENARIOS", "Scenario", "Result", "run_scenario", "main"]

ROOT = Path(__file__).resolve().parents[1]
PATH = "/v1/projects/bench/locations/us-central1/endpoints/openapi/chat/completions"
MODEL = "google/gemini-2.5-flash"
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["title", "year", "tags", "rating"],
          "properties": {"title": {"type": "string", "maxLength": 40}, "year": {"type": "integer", "minimum": 1900,
                         "maximum": 2030}, "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
                         "rating": {"anyOf": [{"type": "number", "minimum": 0, "maximum": 5}, {"type": "null"}]}}}


@dataclass(frozen=True)
class Scenario:
    name: str
    connections: int
    emulator_args: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # merged into every request body


SCENARIOS = {
    "plain": Scenario("plain", 64),
    "stream": Scenario("stream", 64, extra={"stream": True, "stream_options": {"include_usage": True}}),
    "structured": Scenario("structured", 64, extra={"response_format": {
        "type": "json_schema", "json_schema": {"name": "Film", "strict": True, "schema": SCHEMA}}}),
    "latency500": Scenario("latency500", 2200, emulator_args=("--latency_ms", "500")),
}


@dataclass
class Result:
    scenario: str
    requests: int
    seconds: float
    errors: int  # non-200 answers seen by the load generator
    p50_ms: float
    p99_ms: float
    max_in_flight: int = 0
    duplicate_ok: int = 0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


# -- the emulator subprocess -----------------------------------------------------------------------

class Emulator:
    def __init__(self, args: tuple[str, ...]) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-m", "emulator", "--port", "0", *args], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        try:
            self.url = json.loads(line)["url"]
        except (ValueError, KeyError):
            self.stop()
            raise RuntimeError(f"emulator did not start: {line!r}") from None

    def call(self, method: str, path: str) -> dict[str, Any]:
        req = urllib.request.Request(self.url + path, method=method)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# -- wrk ---------------------------------------------------------------------------------------------

_LUA = r"""
local threads_started = 0
function setup(thread)
  threads_started = threads_started + 1
  thread:set("tid", threads_started)
end
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench"
request = function()
  counter = counter + 1
  local body = string.format(PREFIX, tid, counter) .. SUFFIX
  return wrk.format(nil, PATH, nil, body)
end
"""


def _lua_script(scenario: Scenario, tag: str) -> str:
    body = json.dumps({"model": MODEL, **scenario.extra, "messages": [{"role": "user", "content": "@@"}]})
    prefix, suffix = body.split('"@@"')
    prefix += f'"Summarise {tag} record %d-%d of the batch, briefly"'
    lua = _LUA.replace("PREFIX", _lua_str(prefix)).replace("SUFFIX", _lua_str(suffix)).replace("PATH", _lua_str(PATH))
    return lua


def _lua_str(text: str) -> str:
    return "[==[" + text + "]==]"


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(url: str, scenario: Scenario, duration: float, tag: str) -> Result:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(_lua_script(scenario, tag))
    try:
        threads = 2 if scenario.connections > 256 else 1
        out = subprocess.run(["wrk", f"-t{threads}", f"-c{scenario.connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
                              "--latency", "-s", fh.name, url], capture_output=True, text=True,
                             timeout=duration + 60).stdout
    finally:
        os.unlink(fh.name)
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if total is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    pct = {p: _ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    errors += sum(map(int, socket_errors.groups())) if socket_errors else 0
    seconds = _ms(total.group(2), total.group(3)) / 1000
    return Result(scenario.name, int(total.group(1)), seconds, errors, pct.get("50", 0.0), pct.get("99", 0.0))


# -- the asyncio fallback ---------------------------------------------------------------------------

async def _worker(host: str, port: int, scenario: Scenario, tag: str, wid: int, deadline: float,
                  latencies: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    n = 0
    try:
        while time.perf_counter() < deadline:
            n += 1
            body = json.dumps({"model": MODEL, **scenario.extra, "messages": [
                {"role": "user", "content": f"Summarise {tag} record {wid}-{n} of the batch, briefly"}]}).encode()
            head = (f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer bench\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
            started = time.perf_counter()
            writer.write(head + body)
            status, headers = await _read_head(reader)
            if headers.get("transfer-encoding") == "chunked":
                while (size := int((await reader.readline()).strip(), 16)) > 0:
                    await reader.readexactly(size + 2)
                await reader.readline()
            else:
                await reader.readexactly(int(headers.get("content-length", 0)))
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return int(lines[0].split(" ", 2)[1]), headers


async def _python_load(url: str, scenario: Scenario, duration: float, tag: str) -> Result:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(*(_worker(host, int(port), scenario, tag, w, deadline, latencies, errors)
                           for w in range(scenario.connections)))
    seconds = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0

    return Result(scenario.name, len(latencies), seconds, len(errors), pct(0.50), pct(0.99))


def run_python(url: str, scenario: Scenario, duration: float, tag: str) -> Result:
    try:
        import uvloop

        return uvloop.run(_python_load(url, scenario, duration, tag))
    except ImportError:
        return asyncio.run(_python_load(url, scenario, duration, tag))


# -- driver --------------------------------------------------------------------------------------------

def run_scenario(scenario: Scenario, duration: float, tool: str, run: int) -> Result:
    emu = Emulator(scenario.emulator_args)
    try:
        load = run_wrk if tool == "wrk" else run_python
        load(emu.url, replace_connections(scenario, 8), min(1.0, duration), f"warmup{run}")  # warm up, then forget
        deadline = time.time() + 10
        while emu.call("GET", "/emulator/stats?fingerprints=0")["in_flight"] and time.time() < deadline:
            time.sleep(0.05)  # warm-up requests abandoned by the load tool finish their latency first
        emu.call("POST", "/emulator/reset")
        result = load(emu.url, scenario, duration, f"run{run}")
        stats = emu.call("GET", "/emulator/stats?fingerprints=0")
        result.max_in_flight = stats["max_in_flight"]
        result.duplicate_ok = stats["duplicate_ok"]
        return result
    finally:
        emu.stop()


def replace_connections(scenario: Scenario, connections: int) -> Scenario:
    return Scenario(scenario.name, connections, scenario.emulator_args, scenario.extra)


def table(results: list[Result], title: str) -> str:
    rows = [f"{title}",
            f"{'scenario':<12} {'requests':>9} {'seconds':>8} {'req/s':>8} {'max_in_flight':>13} {'p50 ms':>8} "
            f"{'p99 ms':>8} {'errors':>6} {'dup_ok':>6}"]
    for r in results:
        rows.append(f"{r.scenario:<12} {r.requests:>9} {r.seconds:>8.2f} {r.rps:>8.0f} {r.max_in_flight:>13} "
                    f"{r.p50_ms:>8.1f} {r.p99_ms:>8.1f} {r.errors:>6} {r.duplicate_ok:>6}")
    return "\n".join(rows)


def medians(runs: list[list[Result]]) -> list[Result]:
    out = []
    for per_scenario in zip(*runs):
        med = lambda attr: statistics.median(getattr(r, attr) for r in per_scenario)  # noqa: E731
        result = Result(per_scenario[0].scenario, int(med("requests")), med("seconds"), int(med("errors")),
                        med("p50_ms"), med("p99_ms"), int(med("max_in_flight")), int(med("duplicate_ok")))
        rps = statistics.median(r.rps for r in per_scenario)
        result.seconds = result.requests / rps if rps else 0.0  # so that .rps shows the median req/s
        out.append(result)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0, help="seconds of load per scenario and run")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, from {list(SCENARIOS)}")
    p.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto")
    p.add_argument("--json", dest="json_path", help="also write the median results as JSON here")
    args = p.parse_args(argv)
    tool = ("wrk" if shutil.which("wrk") else "python") if args.tool == "auto" else args.tool
    chosen = [SCENARIOS[name] for name in args.scenarios.split(",")]
    print(f"emulator load benchmark: tool={tool}, {args.runs} run(s) x {args.duration:g}s, cpus={os.cpu_count()}")
    runs = []
    for run in range(args.runs):
        results = [run_scenario(s, args.duration, tool, run) for s in chosen]
        runs.append(results)
        print(table(results, f"\nrun {run + 1}"), flush=True)
    final = medians(runs)
    print(table(final, f"\nmedian of {args.runs} run(s)"))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps([{**r.__dict__, "rps": r.rps} for r in final], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
