"""Token sources: where the bearer token of each request comes from, refreshed before it expires.

    >>> source = token_source_for(Target.managed(project="p"))        # GoogleTokenSource (ADC)
    >>> client = openai.AsyncOpenAI(api_key=source.token, base_url=..., max_retries=0)
    >>> # the SDK awaits source.token() on every attempt; it refreshes only when the credentials are not valid

Every source has ``async token() -> str`` (the SDK's callable ``api_key``) and ``async force_refresh(rejected)
-> bool``: after a 401, refresh unless the current token already differs from the ``rejected`` one (so fifty
requests that fail together with one expired token cause one refresh); False when the source has nothing to
refresh (a fixed key: the 401 is final). Sources are safe to share between threads and coroutines: state changes
happen under a threading lock, and the blocking Google refresh runs in a worker thread so it never stalls the
event loop.

- ``GoogleTokenSource``: Application Default Credentials (on Dataflow: the worker service account).
- ``LocalTokenSource``: the emulator's stand-in for ADC; mints a fresh opaque token every ``lifetime_s`` seconds.
- ``EnvKeySource``: a fixed API key read from an environment variable when the source is built (in ``setup()``).
- ``NoAuth``: no Authorization header at all (``anonymous = True``).

``TokenAuth(source)`` puts a source on an httpx2 client as its auth flow (httpx's ``Auth.async_auth_flow``): every
request gets ``Authorization: Bearer <token>``; a 401 forces one refresh of the token that request carried and the
request is sent once more; a second 401 is returned (final). The refreshed response's ``history`` holds the 401.
"""


from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from typing import Any, AsyncGenerator, Callable, Generator, Mapping, Protocol

import httpx2

from client.config import Target
from client.constants import CLOUD_PLATFORM_SCOPE, LOCAL_TOKEN_LIFETIME_S
from client.errors import AuthError, ChatbeamError, ConnectionFailed, register_secret

__all__ = ["EnvKeySource", "GoogleTokenSource", "LocalTokenSource", "NoAuth", "TokenAuth", "TokenSource",
           "token_source_for"]


class TokenSource(Protocol):
    async def token(self) -> str: ...

    async def force_refresh(self, rejected: str | None = None) -> bool: ...


def _translate_google_error(exc: Exception) -> ChatbeamError:
    from google.auth import exceptions as gexc

    if isinstance(exc, gexc.DefaultCredentialsError):
        return AuthError(f"no Google credentials: {exc} (run `gcloud auth application-default login`, or set "
                         "GOOGLE_APPLICATION_CREDENTIALS; on Dataflow check the worker service account)")
    if isinstance(exc, gexc.TransportError) or getattr(exc, "retryable", False):
        return ConnectionFailed(f"token refresh failed (transient): {type(exc).__name__}: {exc}")
    return AuthError(f"token refresh failed: {type(exc).__name__}: {exc}")


class GoogleTokenSource:
    """ADC tokens, built lazily on first use and refreshed only when ``not credentials.valid`` (google-auth
    treats a token as expired a few minutes early) or when forced after a 401."""

    def __init__(self, scopes: tuple[str, ...] = (CLOUD_PLATFORM_SCOPE,), *, credentials: Any = None,
                 request_factory: Callable[[], Any] | None = None) -> None:
        self._scopes = scopes
        self._credentials = credentials  # injectable for tests; otherwise google.auth.default() on first use
        self._request_factory = request_factory
        self._request: Any = None
        self._lock = threading.Lock()
        self.refreshes = 0

    async def token(self) -> str:
        creds = self._credentials
        if creds is not None and creds.valid and creds.token:
            return creds.token  # the fast path: no thread hop while the token is good
        return await asyncio.to_thread(self._refresh, False, None)

    async def force_refresh(self, rejected: str | None = None) -> bool:
        await asyncio.to_thread(self._refresh, True, rejected)
        return True

    def _refresh(self, forced: bool, rejected: str | None) -> str:
        with self._lock:
            try:
                creds = self._ensure_credentials()
                if forced:
                    needed = rejected is None or creds.token == rejected
                else:
                    needed = not creds.valid or not creds.token
                if needed:
                    creds.refresh(self._transport())
                    self.refreshes += 1
            except ChatbeamError:
                raise
            except Exception as exc:  # google.auth errors and the transport's own (requests) errors
                raise _translate_google_error(exc) from exc
            register_secret(creds.token)
            return creds.token

    def _ensure_credentials(self) -> Any:
        if self._credentials is None:
            import google.auth

            self._credentials, _project = google.auth.default(scopes=list(self._scopes))
        return self._credentials

    def _transport(self) -> Any:
        if self._request is None:
            if self._request_factory is not None:
                self._request = self._request_factory()
            else:
                from google.auth.transport.requests import Request

                self._request = Request()
        return self._request


class LocalTokenSource:
    """Opaque random tokens for the emulator (and tests): a new one every ``lifetime_s`` seconds or when forced.

    Keep ``lifetime_s`` below the emulator's ``--token_ttl_s`` so tokens are renewed before it rejects them.
    """

    def __init__(self, lifetime_s: float = LOCAL_TOKEN_LIFETIME_S, *, clock: Callable[[], float] = time.monotonic,
                 prefix: str = "local-") -> None:
        self.lifetime_s = lifetime_s
        self._clock = clock
        self._prefix = prefix
        self._lock = threading.Lock()
        self._token: str | None = None
        self._minted_at = 0.0
        self.minted = 0

    def _mint(self) -> str:
        self._token = self._prefix + secrets.token_urlsafe(24)
        self._minted_at = self._clock()
        self.minted += 1
        register_secret(self._token)
        return self._token

    async def token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() - self._minted_at >= self.lifetime_s:
                return self._mint()
            return self._token

    async def force_refresh(self, rejected: str | None = None) -> bool:
        with self._lock:
            if rejected is None or rejected == self._token:
                self._mint()
        return True


class EnvKeySource:
    """A fixed API key from the environment variable ``env_name``, read once when the source is built."""

    def __init__(self, env_name: str, *, environ: Mapping[str, str] | None = None) -> None:
        value = (os.environ if environ is None else environ).get(env_name, "").strip()
        if not value:
            raise AuthError(f"environment variable {env_name} is not set or is empty; it must hold the API key "
                            "for the OpenAI-compatible server (set it on the workers, not on the command line)")
        self.env_name = env_name
        self._key = value
        register_secret(value)

    async def token(self) -> str:
        return self._key

    async def force_refresh(self, rejected: str | None = None) -> bool:
        return False  # a fixed key cannot be refreshed: a 401 is final

    def __repr__(self) -> str:
        return f"EnvKeySource({self.env_name!r})"  # never the value


class NoAuth:
    """No credentials: the caller omits the Authorization header entirely."""

    anonymous = True

    async def token(self) -> str:
        return ""

    async def force_refresh(self, rejected: str | None = None) -> bool:
        return False


def token_source_for(target: Target, *, local_token_lifetime_s: float = LOCAL_TOKEN_LIFETIME_S) -> TokenSource:
    """The token source a target's ``auth`` asks for. Reads no credential until the first ``token()``
    (except ``api_key_env``, whose variable is checked here so a missing key fails ``setup()`` clearly)."""
    if target.auth == "adc":
        return GoogleTokenSource()
    if target.auth == "local_tokens":
        return LocalTokenSource(local_token_lifetime_s)
    if target.auth == "api_key_env":
        if not target.api_key_env:
            raise AuthError("auth 'api_key_env' needs the name of an environment variable (--api_key_env)")
        return EnvKeySource(target.api_key_env)
    if target.auth == "none":
        return NoAuth()
    raise AuthError(f"unknown auth kind {target.auth!r}")


class TokenAuth(httpx2.Auth):
    """A token source as an httpx2 auth flow: send with the current token; on a 401 refresh that token once and
    send again (see the module docstring). ``on_refresh()`` is called for each refresh that led to a resend.

        client = httpx2.AsyncClient(auth=TokenAuth(LocalTokenSource(), on_refresh=lambda: counters.inc("x")))

    The token is never logged or stored outside the request's header (``__repr__`` names only the source's kind).
    Async clients only: the sources' ``token()`` is a coroutine.
    """

    requires_request_body = True  # the body is sent again after a refresh

    def __init__(self, source: TokenSource, *, on_refresh: Callable[[], None] | None = None) -> None:
        self.source = source
        self._on_refresh = on_refresh

    def sync_auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        raise RuntimeError("TokenAuth works with httpx2.AsyncClient only (token sources are async)")

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        token = await self.source.token()
        _authorize(request, token)
        response = yield request
        if response.status_code != 401 or not await self.source.force_refresh(token or None):
            return
        if self._on_refresh is not None:
            self._on_refresh()
        # A new request, not the sent one changed in place: the 401 response keeps the request it answered.
        retry = httpx2.Request(request.method, request.url, headers=request.headers, content=request.content,
                               extensions=request.extensions)
        _authorize(retry, await self.source.token())
        yield retry

    def __repr__(self) -> str:
        return f"TokenAuth({type(self.source).__name__})"


def _authorize(request: httpx2.Request, token: str) -> None:
    if token:
        request.headers["Authorization"] = f"Bearer {token}"
    else:  # NoAuth: no header at all (also none the SDK may have set)
        request.headers.pop("Authorization", None)
