"""Secrets never leave the process, and local media never come from outside ``--media_root``.

Secrets: runs with recognisable fake keys and tokens; none of them may appear in any log line (the pipeline run as a
subprocess with every logger at DEBUG, stdout and stderr captured), result, error record or exception message --
including when a misbehaving server echoes the credential back in its error bodies.

Media: local paths in ``image_url`` / ``input_audio`` are inlined only when their real path lies under
``--media_root``; ``..``, absolute paths, ``file://`` URLs and symlinks that lead out are ``media_error`` records,
never sent.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from emulator import EmulatorConfig, serve_in_thread
from tests.conftest import read_jsonl, write_jsonl
from tests.reliability.conftest import assert_each_id_once, settled_stats

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-chatbeam-FAKE-KEY-7f3a9c1e5b"  # recognisable; matches the sk- redaction pattern
BARE_KEY = "zq7TESTKEYnopattern0123456789"  # matches no redaction pattern: only the live-secret registry hides it
WRONG_KEY = "sk-chatbeam-WRONG-KEY-0d2e4f6a8c"
LOCAL_TOKEN = re.compile(r"local-[A-Za-z0-9_-]{20,}")  # LocalTokenSource's minted tokens

# Every logger at DEBUG (the SDK, httpx, Beam): stricter than the CLI's own WARNING/INFO setup.
DEBUG_MAIN = ("import logging, sys\n"
              "logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,"
              " format='%(levelname)s %(name)s: %(message)s')\n"
              "from pipelines.extract import main\n"
              "sys.exit(main(sys.argv[1:]))\n")


def run_cli(tmp_path: Path, name: str, records: list, target: list[str], env: dict[str, str],
            *args: str) -> tuple[subprocess.CompletedProcess, list[dict], list[dict]]:
    src = write_jsonl(tmp_path / f"{name}.jsonl", records)
    out = tmp_path / name
    proc = subprocess.run([sys.executable, "-c", DEBUG_MAIN, "--input", str(src), "--output", str(out / "results"),
                           "--errors", str(out / "errors"), *target, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=150, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, read_jsonl(str(out / "results")), read_jsonl(str(out / "errors"))


def assert_nowhere(secrets: list[str], *texts: str, pattern: re.Pattern | None = None) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"secret {secret[:12]}... leaked: ...{text[max(0, text.find(secret) - 200):][:400]}"
        if pattern is not None:
            found = pattern.search(text)
            assert found is None, f"token leaked: {text[max(0, found.start() - 200):found.end() + 50]}"


@pytest.fixture(scope="module")
def keyed_emulator():
    """An emulator whose plain /v1 route requires KEY."""
    with serve_in_thread(EmulatorConfig(seed=3, api_key=KEY)) as emu:
        yield emu


def test_api_key_from_env_never_logged_or_written(keyed_emulator, tmp_path):
    """--base_url + --api_key_env: a good run with server faults, then a run with the wrong key (401 for all)."""
    keyed_emulator.set_faults(error_500_rate=0.1, reset_rate=0.05)
    keyed_emulator.reset()
    records = [{"id": f"k{i}", "prompt": f"secret test {i}"} for i in range(30)]
    target = ["--base_url", keyed_emulator.url + "/v1", "--api_key_env", "CHATBEAM_SECRET_TEST_KEY",
              "--model", "any-model"]
    good, results, errors = run_cli(tmp_path, "good", records, target, {"CHATBEAM_SECRET_TEST_KEY": KEY})
    assert len(results) == 30 and errors == []
    stats = settled_stats(keyed_emulator)
    assert stats["by_status"].get("500", 0) > 0 and stats["faults"].get("reset", 0) > 0  # errors were logged

    keyed_emulator.set_faults({})
    bad, results2, errors2 = run_cli(tmp_path, "bad", records[:5], target, {"CHATBEAM_SECRET_TEST_KEY": WRONG_KEY},
                                     "--max_error_rate", "1")  # every record fails on purpose: not an exit 3
    assert results2 == [] and len(errors2) == 5
    assert {(e["error_type"], e["status_code"], e["attempts"]) for e in errors2} == {("auth_error", 401, 1)}
    assert "DEBUG" in good.stderr  # the capture really saw debug logging
    assert_nowhere([KEY, WRONG_KEY], good.stdout, good.stderr, bad.stdout, bad.stderr,
                   json.dumps(results + errors + results2 + errors2))


def test_local_tokens_never_logged_or_written(vertex_emulator, tmp_path):
    """The Vertex path's bearer tokens (LocalTokenSource, standing in for ADC): expiring every second, so the run
    has 401s, forced refreshes and retries in its logs."""
    vertex_emulator.set_faults(token_ttl_s=1.0, latency_ms=50, error_503_rate=0.05)
    records = [{"id": f"t{i}", "prompt": f"token leak test {i}"} for i in range(120)]
    proc, results, errors = run_cli(tmp_path, "tokens", records, ["--emulator_url", vertex_emulator.url], {},
                                    "--max_concurrency", "4")
    assert len(results) + len(errors) == 120
    stats = settled_stats(vertex_emulator)
    assert stats["by_status"].get("401", 0) >= 1
    assert_nowhere([], proc.stdout, proc.stderr, json.dumps(results + errors), pattern=LOCAL_TOKEN)


class _EchoingProxy(BaseHTTPRequestHandler):
    """A misbehaving gateway: echoes the caller's Authorization header in its error bodies."""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length") or 0))
        auth = self.headers.get("authorization", "")
        bare = auth.partition(" ")[2]
        if "json" in self.path or self.server.calls % 2 == 0:
            status, ctype = 401, "application/json"
            body = json.dumps({"error": {"message": f"key {bare} rejected (header was '{auth}')",
                                         "type": "invalid_request_error", "code": "invalid_api_key"}})
        else:
            status, ctype = 502, "text/html"
            body = f"<html><body>Bad gateway. Request headers: Authorization={auth}; key={bare}</body></html>"
        self.server.calls += 1
        data = body.encode()
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def echoing_proxy():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingProxy)
    server.calls = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("key", [KEY, BARE_KEY], ids=["sk-key", "bare-key"])
def test_a_server_echoing_the_key_does_not_leak_it(echoing_proxy, run_job, monkeypatch, caplog, capsys, key):
    monkeypatch.setenv("CHATBEAM_ECHO_KEY", key)
    caplog.set_level("DEBUG")
    records = [{"id": f"e{i}", "prompt": f"echo {i}"} for i in range(6)]
    out = run_job(records, "--max_attempts", "2", "--model", "m",
                  target=("--base_url", echoing_proxy + "/v1", "--api_key_env", "CHATBEAM_ECHO_KEY"))
    assert_each_id_once(records, out)
    assert out.results == [] and {e["status_code"] for e in out.errors} <= {401, 502}
    assert all(e["message"] for e in out.errors)
    messages = " ".join(e["message"] for e in out.errors)
    assert "rejected" in messages or "Bad gateway" in messages  # the server's text is kept ...
    captured = capsys.readouterr()
    assert_nowhere([key], json.dumps(out.results + out.errors), caplog.text, captured.out, captured.err)  # ... not the key


def test_usage_error_names_the_variable_not_a_value(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "x"}])
    env = {k: v for k, v in os.environ.items() if k != "CHATBEAM_UNSET_KEY"}
    proc = subprocess.run([sys.executable, "-m", "pipelines.extract", "--input", str(src), "--output",
                           str(tmp_path / "o"), "--base_url", "http://127.0.0.1:9/v1", "--api_key_env",
                           "CHATBEAM_UNSET_KEY"], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2
    assert "CHATBEAM_UNSET_KEY" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------- media_root

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


@pytest.fixture
def media(tmp_path):
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "cat.png").write_bytes(PNG)
    (root / "sub" / "dog.png").write_bytes(PNG + b"\0" * 10)
    (outside / "secret.png").write_bytes(b"TOPSECRET-FILE-CONTENT" + PNG)
    (root / "link-out.png").symlink_to(outside / "secret.png")
    (root / "link-dir").symlink_to(outside, target_is_directory=True)
    (root / "link-in.png").symlink_to(root / "cat.png")
    return root, outside


def image(rid: str, url: str, *, bare: bool = False) -> dict:
    part = {"type": "image_url", "image_url": url if bare else {"url": url}}
    return {"id": rid, "messages": [{"role": "user", "content": [{"type": "text", "text": "describe"}, part]}]}


def test_media_root_inlines_inside_and_refuses_everything_that_leads_out(media, run_job, vertex_emulator):
    root, outside = media
    allowed = {
        "relative": (image("relative", "cat.png"), len(PNG)),
        "nested": (image("nested", "sub/dog.png", bare=True), len(PNG) + 10),
        "dotdot-inside": (image("dotdot-inside", "sub/../cat.png"), len(PNG)),
        "absolute-inside": (image("absolute-inside", str(root / "sub" / "dog.png")), len(PNG) + 10),
        "file-url-inside": (image("file-url-inside", (root / "cat.png").as_uri()), len(PNG)),
        "symlink-inside": (image("symlink-inside", "link-in.png"), len(PNG)),
    }
    refused = [
        image("dotdot", "../outside/secret.png"),
        image("dotdot-deep", "sub/../../outside/secret.png"),
        image("absolute", str(outside / "secret.png")),
        image("file-url", (outside / "secret.png").as_uri()),
        image("symlink-file", "link-out.png"),
        image("symlink-dir", "link-dir/secret.png"),
        image("etc-passwd", "/etc/passwd"),
        image("missing", "nope.png"),
        image("a-directory", "sub"),
        {"id": "audio-out", "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"format": "wav", "data": "../outside/secret.png"}}]}]},
    ]
    records = [rec for rec, _ in allowed.values()] + refused
    out = run_job(records, "--media_root", str(root))
    assert_each_id_once(records, out)
    by_id = out.by_id()
    for rid, (_, size) in allowed.items():
        assert "error_type" not in by_id[rid], by_id[rid]
        assert f"[image/png {size} bytes]" in by_id[rid]["content"]  # the emulator decoded the inlined bytes
    for rec in refused:
        err = by_id[rec["id"]]
        assert (err.get("error_type"), err["stage"], err["retryable"], err["attempts"]) == \
            ("media_error", "request", False, 0), err
        assert "TOPSECRET" not in json.dumps(err)
    assert "TOPSECRET" not in json.dumps(out.results)
    assert settled_stats(vertex_emulator)["requests"] == len(allowed)  # refused records were never sent


def test_local_paths_need_media_root(media, run_job, vertex_emulator):
    root, _ = media
    records = [image("no-root", str(root / "cat.png")), image("remote", "gs://bucket/cat.png")]
    out = run_job(records)
    by_id = out.by_id()
    assert by_id["no-root"]["error_type"] == "media_error" and "--media_root" in by_id["no-root"]["message"]
    assert "[gs://bucket/cat.png]" in by_id["remote"]["content"]  # URIs pass through untouched
