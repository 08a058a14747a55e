"""Live credentials never reach a record, even when a server echoes them in a 200 answer (client/scrub.py)."""

from __future__ import annotations

import pytest

from client.errors import register_secret
from client.scrub import scrub_output, split_userinfo
from schemas.records import ErrorRecord, InputRecord, ResultRecord
from tests.client.test_deadlines import complete
from tests.client._support import completion

SECRET = "sk-scrub-test-4f1d2c3b5a6978"


def test_split_userinfo_moves_the_password_out_of_the_url():
    url, auth = split_userinfo("http://bob:p%40ss-w0rd-secret@127.0.0.1:8080/v1")
    assert url == "http://127.0.0.1:8080/v1" and auth == ("bob", "p@ss-w0rd-secret")
    assert split_userinfo("https://host/v1") == ("https://host/v1", None)
    from client.errors import redact
    assert "p@ss-w0rd-secret" not in redact("connecting with p@ss-w0rd-secret")  # registered as a live secret


def test_scrub_replaces_live_secrets_in_server_filled_fields_only():
    register_secret(SECRET)
    result = ResultRecord(id="a", request_key="k", content=f"your key is {SECRET}", thoughts=SECRET,
                          parsed={"key": [SECRET, 1], SECRET: True}, alternatives=[SECRET],
                          metadata={"note": SECRET})
    clean = scrub_output(result)
    dumped = clean.model_dump_json(exclude={"metadata"})
    assert SECRET not in dumped and "[REDACTED]" in clean.content and clean.parsed["key"][1] == 1
    assert clean.metadata == {"note": SECRET}  # the user's own data stays as it was
    error = ErrorRecord(id="b", stage="validate", error_type="schema_validation", message="m",
                        response_text=f"echo {SECRET}", record={"prompt": "x"})
    assert SECRET not in scrub_output(error).response_text
    untouched = ResultRecord(id="c", request_key="k", content="nothing secret")
    assert scrub_output(untouched) is untouched


@pytest.mark.anyio
async def test_a_server_echoing_the_token_in_its_answer_does_not_leak_it(harness):
    def echo(request):
        token = request.headers["authorization"].partition(" ")[2]
        import httpx2
        return httpx2.Response(200, json=completion(f'{{"name": "{token}", "date": "x", "participants": []}}'))

    h = harness([echo], schema="CalendarEvent")
    out = await complete(h, InputRecord(id="e1", prompt="echo my token"))
    assert isinstance(out, ResultRecord)
    token = h.script.requests[0].headers["authorization"].partition(" ")[2]
    assert token.startswith("local-") and token not in out.model_dump_json()
    assert out.parsed["name"] == "[REDACTED]"
