"""Token sources: lazy ADC, refresh only when invalid and under a lock, forced refresh after a 401, local tokens."""

from __future__ import annotations

import asyncio
import threading

import pytest
from google.auth import exceptions as gexc

from client.auth import EnvKeySource, GoogleTokenSource, LocalTokenSource, NoAuth, token_source_for
from client.config import Target
from client.errors import AuthError, ConnectionFailed, redact
from tests.client._support import FakeClock

pytestmark = pytest.mark.anyio


class FakeCredentials:
    """google.auth credentials double: ``valid`` until ``expire()``; ``refresh`` mints ``ya29.tok-N``."""

    def __init__(self, *, valid: bool = False, gate: threading.Event | None = None, error: Exception | None = None):
        self.token: str | None = "ya29.tok-0" if valid else None
        self.valid = valid
        self.refreshes = 0
        self.in_refresh = 0
        self.max_in_refresh = 0
        self.threads: set[int] = set()
        self.gate = gate
        self.error = error

    def refresh(self, request: object) -> None:
        self.in_refresh += 1
        self.max_in_refresh = max(self.max_in_refresh, self.in_refresh)
        self.threads.add(threading.get_ident())
        try:
            if self.gate is not None:
                assert self.gate.wait(5), "test gate never opened"
            if self.error is not None:
                raise self.error
            self.refreshes += 1
            self.token = f"ya29.tok-{self.refreshes}"
            self.valid = True
        finally:
            self.in_refresh -= 1

    def expire(self) -> None:
        self.valid = False


def google_source(creds: FakeCredentials) -> GoogleTokenSource:
    return GoogleTokenSource(credentials=creds, request_factory=object)


async def test_google_credentials_are_built_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    creds = FakeCredentials()

    def fake_default(scopes=None, **kw):
        calls.append(scopes)
        return creds, "proj"

    monkeypatch.setattr("google.auth.default", fake_default)
    source = GoogleTokenSource(request_factory=object)
    assert calls == []  # building the source reads no credential (a pipeline can be built without ADC)
    assert await source.token() == "ya29.tok-1"
    assert calls == [["https://www.googleapis.com/auth/cloud-platform"]]


async def test_google_refreshes_only_when_not_valid() -> None:
    creds = FakeCredentials()
    source = google_source(creds)
    assert [await source.token() for _ in range(3)] == ["ya29.tok-1"] * 3
    assert creds.refreshes == 1
    creds.expire()
    assert await source.token() == "ya29.tok-2"
    assert creds.refreshes == 2 and source.refreshes == 2


async def test_concurrent_callers_share_one_refresh_run_off_the_loop() -> None:
    gate = threading.Event()
    creds = FakeCredentials(gate=gate)
    source = google_source(creds)
    tasks = [asyncio.ensure_future(source.token()) for _ in range(8)]
    # The refresh blocks in a worker thread; the event loop keeps running meanwhile.
    while creds.in_refresh == 0:
        await asyncio.sleep(0)
    assert threading.get_ident() not in creds.threads
    gate.set()
    tokens = await asyncio.gather(*tasks)
    assert set(tokens) == {"ya29.tok-1"}
    assert creds.refreshes == 1 and creds.max_in_refresh == 1


async def test_force_refresh_replaces_a_rejected_token_once() -> None:
    creds = FakeCredentials(valid=True)
    source = google_source(creds)
    rejected = await source.token()
    assert rejected == "ya29.tok-0" and creds.refreshes == 0
    # Two requests got a 401 with the same (still "valid") token: only the first forces a refresh.
    assert await source.force_refresh(rejected) is True
    assert await source.force_refresh(rejected) is True
    assert creds.refreshes == 1
    assert await source.token() == "ya29.tok-1"
    await source.force_refresh()  # no token known: refresh unconditionally
    assert creds.refreshes == 2


@pytest.mark.parametrize(("error", "expected"), [
    (gexc.RefreshError("invalid_grant: account disabled"), AuthError),
    (gexc.TransportError("metadata server unreachable"), ConnectionFailed),
    (gexc.RefreshError("temporarily unavailable", retryable=True), ConnectionFailed),
])
async def test_google_refresh_errors_join_the_tree(error: Exception, expected: type) -> None:
    source = google_source(FakeCredentials(error=error))
    with pytest.raises(expected, match="token refresh failed"):
        await source.token()


async def test_missing_adc_is_a_clear_auth_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_adc(**kw):
        raise gexc.DefaultCredentialsError("Your default credentials were not found.")

    monkeypatch.setattr("google.auth.default", no_adc)
    with pytest.raises(AuthError, match="application-default login"):
        await GoogleTokenSource().token()


async def test_local_tokens_rotate_by_lifetime_and_on_force() -> None:
    clock = FakeClock()
    source = LocalTokenSource(lifetime_s=30, clock=clock)
    first = await source.token()
    clock.now += 29
    assert await source.token() == first
    clock.now += 1
    second = await source.token()
    assert second != first
    await source.force_refresh(second)
    third = await source.token()
    assert third not in (first, second)
    await source.force_refresh(second)  # stale: someone already replaced that token
    assert await source.token() == third
    assert third not in redact(f"token {third} rejected")


async def test_env_key_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_LLM_KEY", "secret-value-1234")
    source = EnvKeySource("MY_LLM_KEY")
    assert await source.token() == "secret-value-1234"
    assert await source.force_refresh(0) is False  # a fixed key: a 401 is final
    assert "secret" not in repr(source)


@pytest.mark.parametrize("value", [None, "", "   "])
async def test_env_key_missing_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("MISSING_KEY_VAR", raising=False)
    else:
        monkeypatch.setenv("MISSING_KEY_VAR", value)
    with pytest.raises(AuthError, match="MISSING_KEY_VAR"):
        EnvKeySource("MISSING_KEY_VAR")


async def test_no_auth() -> None:
    source = NoAuth()
    assert await source.token() == "" and source.anonymous and await source.force_refresh() is False


async def test_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K", "key-12345678")
    assert isinstance(token_source_for(Target.managed(project="p")), GoogleTokenSource)
    assert isinstance(token_source_for(Target("http://x", "local_tokens")), LocalTokenSource)
    assert isinstance(token_source_for(Target.openai_compatible("http://x/v1", "K")), EnvKeySource)
    assert isinstance(token_source_for(Target.openai_compatible("http://x/v1")), NoAuth)
    assert token_source_for(Target("http://x", "local_tokens"), local_token_lifetime_s=5).lifetime_s == 5
    with pytest.raises(AuthError):
        token_source_for(Target("http://x", "api_key_env"))
