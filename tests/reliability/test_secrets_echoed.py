"""Issue 16 item 9: secrets stay out of records, journals and logs in the cases the first round missed.

* a server that echoes the API key in a **200** answer: the key reached the result, the journal, and (schema-invalid)
  the error's ``response_text``;
* ``--api_key_env <the key itself>``: the usage error printed the key;
* a key in ``--base_url`` userinfo (``http://user:SECRET@host``): the HTTP client's INFO log lines showed it.
The runs are subprocesses with every logger at DEBUG, stdout and stderr captured.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import read_jsonl, write_jsonl
from tests.reliability.servers import always, echo_auth, misbehaving
from tests.reliability.test_secrets_and_media import DEBUG_MAIN

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-chatbeam-ECHOED-KEY-93bd7a1f"
BARE_KEY = "Zq7EchoedBareKey0123456789xyz"  # no redaction pattern matches it


def run_cli(tmp_path: Path, name: str, target: list[str], env: dict[str, str], *args: str):
    src = write_jsonl(tmp_path / f"{name}.jsonl", [{"id": f"{name}{i}", "prompt": f"echo {i}"} for i in range(4)])
    out = tmp_path / name
    proc = subprocess.run([sys.executable, "-c", DEBUG_MAIN, "--input", str(src), "--output", str(out / "r"),
                           "--errors", str(out / "e"), "--max_error_rate", "1", "--progress_interval_s", "0",
                           *target, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=240, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = "".join(p.read_text() for p in sorted(out.rglob("*")) if p.is_file())  # sinks, journal, summary
    return proc, read_jsonl(str(out / "r-")), read_jsonl(str(out / "e-")), written


@pytest.mark.parametrize("key", [KEY, BARE_KEY], ids=["sk-key", "bare-key"])
def test_a_key_echoed_in_a_200_answer_reaches_no_record_journal_or_log(tmp_path, key):
    with misbehaving(echo_auth()) as server:
        target = ["--base_url", server.url, "--api_key_env", "CHATBEAM_ECHO_200_KEY", "--model", "m"]
        plain, results, errors, written = run_cli(tmp_path, "plain", target, {"CHATBEAM_ECHO_200_KEY": key})
        assert len(results) == 4 and errors == [] and "[REDACTED]" in results[0]["content"]
        schema, results2, errors2, written2 = run_cli(tmp_path, "schema", target, {"CHATBEAM_ECHO_200_KEY": key},
                                                      "--schema", "CalendarEvent", "--max_reasks", "0")
        assert {e["error_type"] for e in errors2} == {"schema_validation"}
        assert all("[REDACTED]" in e["response_text"] for e in errors2)
    assert any((tmp_path / "plain" / "r-checkpoint").glob("part-*.jsonl"))  # the journal was written, and read
    for text in (plain.stdout, plain.stderr, schema.stdout, schema.stderr, written, written2):
        assert key not in text


@pytest.mark.parametrize("key", [KEY, BARE_KEY], ids=["sk-key", "bare-key"])
def test_a_key_given_as_api_key_env_is_not_echoed(tmp_path, key):
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "x"}])
    env = {k: v for k, v in os.environ.items() if k != key}
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "--input", str(src), "--output",
                           str(tmp_path / "o"), "--base_url", "http://127.0.0.1:9/v1", "--api_key_env", key],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert key not in proc.stderr + proc.stdout and "NAME of an environment variable" in proc.stderr


def test_a_password_in_the_base_url_is_sent_as_basic_auth_and_never_logged(tmp_path):
    password = "UrlPassw0rdSecret-5521"
    with misbehaving(always(403, "no")) as server:
        url = server.url.replace("http://", f"http://alice:{password}@")
        proc, results, errors, written = run_cli(tmp_path, "userinfo", ["--base_url", url, "--model", "m"], {})
        auth = server.auth_headers[0]
    assert auth == "Basic " + base64.b64encode(f"alice:{password}".encode()).decode()  # what httpx sent before
    assert {e["error_type"] for e in errors} == {"permission_denied"}
    assert "HTTP Request: POST http://" in proc.stderr  # the client's INFO lines were captured ...
    for text in (proc.stdout, proc.stderr, written):
        assert password not in text  # ... without the password
