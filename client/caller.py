"""ChatCaller: one record in, exactly one ResultRecord or ErrorRecord out. Retries, re-asks, 401 refresh, limiter.

    >>> caller = ChatCaller(ClientConfig(target=Target.managed(project="p"), model="google/gemini-2.5-flash"))
    >>> out = await caller.complete(InputRecord(id="a1", prompt="Say hi"))   # ResultRecord | ErrorRecord
    >>> await caller.aclose()

One retry layer (ours): the SDK client is built with ``max_retries=0``. Per record:
build the request (pure; BadRequest/MediaError become an ErrorRecord at once) -> up to ``max_attempts`` attempts
under the RetryPolicy -> each attempt takes a limiter permit, sends (or streams and assembles), and parses; a 401
forces one token refresh and sends once more within the attempt (the HTTP client's auth flow, client/auth.py
``TokenAuth``; both requests count as attempts, neither as a retry) -> a schema-invalid answer is re-asked up to
``max_reasks`` times with the validation error (for tool calls: the assistant's calls, each answered by a ``tool``
message carrying the error) -> ResultRecord, or ErrorRecord with stage/error_type/retryable, the usage of every
answered attempt and the model's ``response_text`` when it answered.

A cut-off answer (finish_reason ``length``) follows ``config.on_truncation``: ``result`` (default) keeps it as a
result with its text; ``error`` makes it a ``truncated`` error that keeps ``response_text``; ``retry`` sends it
once more with the output limit doubled (at most TRUNCATION_RETRY_MAX_TOKENS) and keeps the second answer, cut or
not. With a schema (or a tool-call answer) a cut-off answer is always an error, after the retry if asked.

The limiter seam (client/limits.py implements it; a plain concurrency cap is used when none is given)::

    permit = await limiter.acquire(est_tokens)          # before every HTTP attempt
    permit.done(outcome, tokens_used=total_or_None)     # exactly once after it; outcome "ok" | "throttled" | "error"

"throttled" means the attempt was answered 429 or 503.

Deadlines: ``request_timeout`` bounds each attempt in total (sending to the last byte, a stream included), not just
the gap between bytes; ``record_deadline_s`` bounds everything a record does (budget wait, limiter waits, attempts
in flight, backoff sleeps, re-asks). Both are ``asyncio.timeout`` scopes, so a cancelled wait or attempt still
releases its permit (``finally``) and its budget hold, and the usage of attempts already answered is kept.
Responses are cut off at ``max_response_bytes`` (client/http_cap.py). A circuit breaker (client/breaker.py) stops
sending after a run of identical 401/403/404 answers: the records it refuses are checked just before sending.
Every output passes ``scrub_output``: live credentials a server echoed never reach a record.

The hot path (docs/hotpath.md): a non-streaming attempt is sent on the SDK's HTTP client without the SDK's per-call
machinery (``_post``: the body serialised once, the SDK's status errors, the SDK's ChatCompletion parsed from the
bytes); streaming goes through ``create(stream=True)``. The HTTP pool is aiohttp's (client/http_pool.py).

The budget seam (client/budget.py; optional): once per record, after the request is built and before its first
attempt, ``hold = await budget.reserve(request)``; None means the budget is spent, and the record becomes a
``budget_exhausted`` error (retryable, nothing sent). ``hold.settle(usage)`` once the record is done.

The tier seam (client/tiers.py): every attempt asks ``tiers.current()`` which service tier to use and sends its
headers; the record reports the tier of its last attempt (``service_tier``), is priced at it, and is counted per
tier (``tier_records_<tier>``). Without a selector every attempt uses ``config.service_tier``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol

import httpx2
import openai
from openai.types.chat import ChatCompletion

from client.auth import TokenAuth, TokenSource, token_source_for
from client.breaker import Breaker
from client.budget import Budget, BudgetExhausted, Hold
from client.config import ClientConfig
from client.constants import REASK_TEMPLATE, THROTTLE_STATUS, TOOL_REASK_TEMPLATE, TRUNCATION_RETRY_MAX_TOKENS
from client.errors import (ChatbeamError, InternalError, RequestTimeout, SchemaInvalid, StreamBroken, Truncated,
                           map_errors)
from client.http_cap import cap_responses
from client.http_pool import new_http_client
from client.metrics import RunCounters
from client.parsing import ParsedCompletion, StreamAssembler, completion_from_json, parse_completion, usage_of
from client.requests import ChatRequest, build_request, estimate_tokens
from client.retry import RetryPolicy
from client.scrub import scrub_output, split_userinfo
from client.tiers import TierPlan, TierSelector, tier_headers
from schemas.records import ErrorRecord, InputRecord, ResultRecord, Usage, error_record

__all__ = ["ChatCaller", "Limiter", "Permit", "utc_iso"]

log = logging.getLogger(__name__)


class Permit(Protocol):
    def done(self, outcome: str, tokens_used: int | None = None) -> None: ...


class Limiter(Protocol):
    async def acquire(self, est_tokens: int) -> Permit: ...


class _ConcurrencyPermit:
    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self._semaphore: asyncio.Semaphore | None = semaphore

    def done(self, outcome: str, tokens_used: int | None = None) -> None:
        if self._semaphore is not None:
            self._semaphore.release()
            self._semaphore = None


class _ConcurrencyLimiter:
    """The default when no limiter is given: at most ``n`` attempts in flight (so none waits on the HTTP pool)."""

    def __init__(self, n: int) -> None:
        self._semaphore = asyncio.Semaphore(max(1, n))

    async def acquire(self, est_tokens: int) -> Permit:
        await self._semaphore.acquire()
        return _ConcurrencyPermit(self._semaphore)


@dataclass
class _RecordState:
    start: float
    started_at: str | None = None  # wall-clock ISO-8601 UTC, for the run report's timeline
    attempts: int = 0
    usage: Usage | None = None
    phase: str = "building the request"  # what the record was doing, for a deadline's message
    last_error: str | None = None
    last_answer: str | None = None  # the last answer that was re-asked (kept if a later attempt fails otherwise)
    tier: str | None = None  # the service tier of the last attempt


def utc_iso(epoch_s: float) -> str:
    """``2025-01-31T02:13:07.412+00:00``: ISO-8601 in UTC with milliseconds (what ``started_at``/``finished_at``
    hold; ``datetime.fromisoformat`` reads it back on every supported Python)."""
    return datetime.datetime.fromtimestamp(epoch_s, datetime.timezone.utc).isoformat(timespec="milliseconds")


# The SDK insists on an API key; the HTTP client's auth flow replaces (or, for NoAuth, removes) its header.
_SDK_PLACEHOLDER_KEY = "set-by-the-auth-flow"


class ChatCaller:
    """The core client for one worker process. Build it where it will run (``DoFn.setup()``), on the event loop
    that will call ``complete()``; it is not picklable."""

    def __init__(self, config: ClientConfig, *, http_client: httpx2.AsyncClient | None = None,
                 token_source: TokenSource | None = None, limiter: Limiter | None = None,
                 counters: RunCounters | None = None, budget: Budget | None = None,
                 breaker: Breaker | None = None,
                 tiers: TierSelector | None = None,
                 sleep: Callable[[float], Awaitable[None] | None] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.tiers = tiers if tiers is not None else TierSelector(TierPlan(config.service_tier))
        self.tokens = token_source if token_source is not None else token_source_for(config.target)
        self.limiter = limiter if limiter is not None else _ConcurrencyLimiter(config.max_concurrency)
        self.counters = counters if counters is not None else RunCounters()
        self.budget = budget
        self.breaker = breaker if breaker is not None else Breaker(clock=clock)
        self.policy = RetryPolicy.from_config(config)
        self._sleep, self._clock, self._wall_clock = sleep, clock, wall_clock
        timeout = httpx2.Timeout(config.request_timeout, connect=config.connect_timeout)
        # A key in the URL's userinfo would be in every request log line: send it as Basic auth instead.
        base_url, basic_auth = split_userinfo(config.target.base_url)
        self._owns_http = http_client is None
        if http_client is None:
            http_client = new_http_client(config.max_concurrency, timeout)  # aiohttp's pool (client/http_pool.py)
        # Credentials are the HTTP client's auth flow (client/auth.py TokenAuth): a 401 refreshes the token once
        # and resends, below the SDK. A key in the URL's userinfo is sent as Basic auth instead (no refresh).
        http_client.auth = (httpx2.BasicAuth(*basic_auth) if basic_auth is not None else
                            TokenAuth(self.tokens, on_refresh=lambda: self.counters.inc("auth_refreshes")))
        cap_responses(http_client, config.max_response_bytes)
        self._http = http_client
        # The SDK's own bearer header is replaced by the auth flow; it never sees the token.
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=_SDK_PLACEHOLDER_KEY,
                                          max_retries=0, timeout=timeout, http_client=http_client)
        self._completions_url = httpx2.URL(str(self._client.base_url).rstrip("/") + "/chat/completions")
        self._timeout_extension = {"timeout": timeout.as_dict()}
        self._headers_by_tier: dict[str, list[tuple[str, str]]] = {}

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> "ChatCaller":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------------------------------ one record

    async def complete(self, record: InputRecord) -> ResultRecord | ErrorRecord:
        """Never raises for a per-record problem: every failure becomes an ErrorRecord."""
        state = _RecordState(start=self._clock(), started_at=utc_iso(self._wall_clock()))
        self.counters.inc("requests")
        request: ChatRequest | None = None
        hold: Hold | None = None
        try:
            deadline = asyncio.timeout(self.config.record_deadline_s)
            try:
                async with deadline:
                    if record.messages and any(isinstance(m.get("content"), list) for m in record.messages):
                        request = await asyncio.to_thread(build_request, record, self.config)  # may read media
                    else:
                        request = build_request(record, self.config)
                    if self.budget is not None:
                        state.phase = "waiting for the budget"
                        hold = await self.budget.reserve(request, tier=self.tiers.current())
                        if hold is None:
                            raise BudgetExhausted(self.budget.exhausted_message())
                    parsed = await self._complete_truncation(request, state)
            except TimeoutError:
                if not deadline.expired():
                    raise
                raise self._deadline_passed(state) from None
            return scrub_output(self._result(record, request, parsed, state))
        except ChatbeamError as exc:
            return scrub_output(self._error(record, request, exc, state))
        except Exception as exc:  # a bug, not a record problem: still one error record, and a loud log line
            log.exception("internal error on record %s", record.id)
            internal = InternalError(f"internal error: {type(exc).__name__}: {exc}")
            return self._error(record, request, internal, state)
        finally:
            if hold is not None:
                hold.settle(state.usage, tier=state.tier)
            self.tiers.record_done(state.tier)

    def _deadline_passed(self, state: _RecordState) -> RequestTimeout:
        last = f"; the last error: {state.last_error}" if state.last_error else ""
        return RequestTimeout(f"--record_deadline {self.config.record_deadline_s:g} s passed while {state.phase} "
                              f"(after {state.attempts} attempts{last})")

    async def _complete_truncation(self, request: ChatRequest, state: _RecordState) -> ParsedCompletion:
        """The record's answer under ``on_truncation`` (see the module docstring)."""
        policy = self.config.on_truncation
        try:
            return await self._complete(request, state, keep_truncated=policy == "result")
        except Truncated as exc:
            if policy != "retry":
                raise
            bigger = _doubled_limit(request, exc)
            partial = getattr(exc, "partial", None)
            if bigger is None:  # at the cap already: keep what came back (a plain answer) or fail (a schema)
                if partial is not None and request.schema is None and not partial.tool_calls:
                    return partial
                raise
            self.counters.inc("truncation_retries")
            return await self._complete(request.with_max_output_tokens(bigger), state, keep_truncated=True)

    async def _complete(self, request: ChatRequest, state: _RecordState, *,
                        keep_truncated: bool = False) -> ParsedCompletion:
        messages = request.messages
        for reask in range(self.config.max_reasks + 1):
            try:
                return await self.policy.call(self._attempt, request, messages, state, keep_truncated,
                                              sleep=self._sleep, clock=self._clock, start=state.start,
                                              on_retry=lambda exc, seconds: self._on_retry(exc, seconds, state))
            except SchemaInvalid as exc:
                self.counters.inc("parse_failures")
                state.last_answer = exc.response_text
                if reask == self.config.max_reasks:
                    raise
                self.counters.inc("reasks")
                messages = [*messages, *_reask_turns(exc)]
        raise AssertionError("unreachable")

    def _on_retry(self, exc: BaseException, seconds: float, state: _RecordState) -> None:
        state.phase, state.last_error = f"backing off {seconds:.1f} s", str(exc)[:300]
        self.counters.inc("retries")
        self.counters.inc("backoff_ms", round(seconds * 1000))
        log.debug("retrying in %.2fs after %s", seconds, exc)

    async def _attempt(self, request: ChatRequest, messages: list[dict[str, Any]],
                       state: _RecordState, keep_truncated: bool = False) -> ParsedCompletion:
        # One attempt; a 401 refresh and resend happen inside it, in the HTTP client's auth flow (TokenAuth), and
        # count as an attempt of their own (state.attempts) though not as a retry.
        return await self._send_once(request, messages, state, keep_truncated)

    def _breaker_saw(self, status_code: int | None, model: str | None) -> None:
        opened = self.breaker.opened
        self.breaker.record(status_code, model)
        if self.breaker.opened > opened:
            self.counters.inc("breaker_opened")
            log.warning("the last %d requests were all answered HTTP %s: chatbeam stops sending%s and turns the "
                        "remaining records into retryable errors (one probe every %g s)", self.breaker.window,
                        status_code, f" for model {model}" if status_code == 404 else "",
                        self.breaker.probe_interval_s)

    async def _send_once(self, request: ChatRequest, messages: list[dict[str, Any]],
                         state: _RecordState, keep_truncated: bool = False) -> ParsedCompletion:
        est = (request.est_prompt_tokens if messages is request.messages
               else estimate_tokens(messages, None if request.schema_via_tool else request.schema, request.tools))
        waited_from = self._clock()
        state.phase = "waiting for a limiter permit"
        permit = await self.limiter.acquire(est)
        self.counters.inc("permit_wait_ms", round((self._clock() - waited_from) * 1000))
        refused = self.breaker.check(request.model)  # just before sending: records queued while it opened too
        if refused is not None:
            permit.done("error", tokens_used=0)
            self.counters.inc("breaker_refused")
            raise refused
        state.attempts += 1
        state.tier = self.tiers.current()
        state.phase = f"attempt {state.attempts} was in flight"
        self.counters.inc("attempts")
        outcome, tokens_used = "error", None
        try:
            completion = await self._call_within_timeout(request, messages, state)
            self._breaker_saw(200, request.model)
            outcome = "ok"
            usage = usage_of(getattr(completion, "usage", None))
            tokens_used = usage.total_tokens if getattr(completion, "usage", None) is not None else None
            self._count_usage(usage, state)
            self.counters.inc("status_200")
        except ChatbeamError as exc:
            self._breaker_saw(exc.status_code, request.model)  # a 401 here is final: the auth flow refreshed once
            if exc.status_code is not None:
                self.counters.inc(f"status_{exc.status_code}")
            if exc.status_code in THROTTLE_STATUS:
                outcome = "throttled"
                self.counters.inc("throttled")
            raise
        finally:
            permit.done(outcome, tokens_used=tokens_used)
        state.phase = "parsing the answer"
        return parse_completion(completion, schema=request.schema, thought_marker=request.thought_marker,
                                tools=request.tools, schema_via_tool=request.schema_via_tool,
                                keep_truncated=keep_truncated)

    async def _call_within_timeout(self, request: ChatRequest, messages: list[dict[str, Any]],
                                   state: _RecordState) -> ChatCompletion:
        """One attempt with a total deadline: a server that trickles its body or streams forever is cut off."""
        limit = asyncio.timeout(self.config.request_timeout)
        try:
            async with limit:
                if self.config.stream:
                    return await self._stream(request, messages, state)
                return await self._post(request, messages, state)
        except TimeoutError:
            if not limit.expired():
                raise
            raise RequestTimeout(f"the attempt took longer than --request_timeout {self.config.request_timeout:g} s "
                                 "(sending to the last byte, streaming included)") from None

    def _headers(self, tier: str | None) -> httpx2.Headers:
        """The headers of a non-streaming request at ``tier`` but its Content-Length, built once per tier
        (Authorization: the auth flow). Host is included: ``_new_request`` builds the request from a stream, so
        httpx2 adds none of its automatic headers."""
        tier = tier or "standard"
        headers = self._headers_by_tier.get(tier)
        if headers is None:
            headers = httpx2.Headers([("Host", self._completions_url.netloc.decode("ascii")),
                                      ("Accept", "application/json"), ("Content-Type", "application/json"),
                                      *tier_headers(tier).items()])
            self._headers_by_tier[tier] = headers
        return headers

    def _new_request(self, body: bytes, tier: str | None) -> httpx2.Request:
        """``httpx2.Request("POST", url, headers=..., content=body)`` with the same headers (Host, Content-Length),
        built from the per-tier headers and the body as a stream: httpx2's own header normalisation and body
        encoding were a visible share of the CPU per record at zero latency. ``read()`` loads the body (one bytes
        object), so the request is what ``content=`` makes: its ``content`` is known and it can be resent."""
        headers = self._headers(tier).copy()
        headers["Content-Length"] = str(len(body))
        request = httpx2.Request("POST", self._completions_url, headers=headers, stream=httpx2.ByteStream(body),
                                 extensions=self._timeout_extension)
        request.read()
        return request

    async def _post(self, request: ChatRequest, messages: list[dict[str, Any]],
                    state: _RecordState) -> ChatCompletion:
        """A non-streaming attempt on the SDK's own HTTP client, without the SDK's per-call machinery: the body is
        the request's JSON serialised once (ChatRequest.body), errors are the SDK's status errors, and the answer
        is the SDK's ChatCompletion parsed from the bytes in one step (completion_from_json). The SDK's
        ``create()`` builds options, transforms params, serialises and constructs the response model in pure
        Python on every call: most of the CPU per record at zero latency (docs/hotpath.md)."""
        http_request = self._new_request(request.body(messages), state.tier)
        async with map_errors():
            response = await self._http.send(http_request, stream=True)
            try:
                state.attempts += len(response.history)  # a 401 answered by a token refresh sent the request twice
                if not response.is_success:
                    await response.aread()
                    raise self._client._make_status_error_from_response(response)  # the SDK's typed error
                body = await _read_body(response)
            finally:
                await response.aclose()
        return completion_from_json(body)

    async def _stream(self, request: ChatRequest, messages: list[dict[str, Any]],
                      state: _RecordState) -> ChatCompletion:
        """A streaming attempt through the SDK (``create(stream=True)``), its chunks assembled into a completion."""
        args = request.create_args(messages)
        headers = tier_headers(state.tier or "standard")
        if headers:
            args["extra_headers"] = headers
        async with map_errors():
            stream = await self._client.chat.completions.create(**args, stream=True,
                                                                stream_options={"include_usage": True})
        state.attempts += len(stream.response.history)  # a 401 answered by a token refresh sent it twice
        assembler = StreamAssembler()
        try:
            async with map_errors(streaming=True):
                async for chunk in stream:
                    assembler.feed(chunk)
        except StreamBroken as exc:
            exc.response_text = exc.response_text or assembler.partial_text() or None  # what came before the break
            raise
        finally:
            await stream.close()
        if not assembler.finished:
            raise StreamBroken(f"stream ended after {assembler.chunks} chunks without a finish_reason",
                               response_text=assembler.partial_text() or None)
        return assembler.completion()

    def _count_usage(self, usage: Usage, state: _RecordState) -> None:
        self.counters.inc("tokens_prompt", usage.prompt_tokens)
        self.counters.inc("tokens_completion", usage.completion_tokens)
        self.counters.inc("tokens_reasoning", usage.reasoning_tokens)
        self.counters.inc("tokens_cached", usage.cached_tokens)
        self.counters.inc("tokens_total", usage.total_tokens)
        # A record's usage is what all its answered attempts cost (a re-ask pays for the first answer too).
        if state.usage is None:
            state.usage = usage.model_copy()
        else:
            for name in Usage.model_fields:
                setattr(state.usage, name, getattr(state.usage, name) + getattr(usage, name))

    # ------------------------------------------------------------------------------------------ records out

    def _latency_ms(self, state: _RecordState) -> float:
        return round((self._clock() - state.start) * 1000, 3)

    def _result(self, record: InputRecord, request: ChatRequest, parsed: ParsedCompletion,
                state: _RecordState) -> ResultRecord:
        self.counters.inc("results")
        if parsed.finish_reason == "length":
            self.counters.inc("results_truncated")
        self.counters.inc(f"tier_records_{state.tier}")
        return ResultRecord(
            id=record.id or "", request_key=request.request_key, model=parsed.model or request.model,
            content=parsed.content, thoughts=parsed.thoughts, parsed=parsed.parsed,
            finish_reason=parsed.finish_reason, usage=state.usage or parsed.usage, attempts=state.attempts,
            latency_ms=self._latency_ms(state), alternatives=parsed.alternatives, tool_calls=parsed.tool_calls,
            metadata=record.metadata, service_tier=state.tier, started_at=state.started_at,
            finished_at=utc_iso(self._wall_clock()))

    def _error(self, record: InputRecord, request: ChatRequest | None, exc: ChatbeamError,
               state: _RecordState) -> ErrorRecord:
        self.counters.inc("errors")
        self.counters.inc(f"error_{exc.error_type}")
        if state.usage is not None:  # what failed records spent (the summary's tokens include it and say so)
            self.counters.inc("error_tokens_total", state.usage.total_tokens)
        if exc.response_text is None and state.last_answer is not None:
            exc.response_text = state.last_answer  # e.g. a re-ask that then failed with a 5xx: keep the answer
        if state.tier is not None:
            self.counters.inc(f"tier_records_{state.tier}")
        return error_record(exc, record=record, request_key=request.request_key if request else None,
                            attempts=state.attempts, usage=state.usage, service_tier=state.tier,
                            started_at=state.started_at, finished_at=utc_iso(self._wall_clock()))


async def _read_body(response: httpx2.Response) -> bytes:
    """The body of a streamed response: read straight from its stream (the hooks' cap and the pool's error mapping
    included) when it is not content-encoded, skipping httpx2's decoder and chunker layers (``aread``), which were a
    visible share of the CPU per record at zero latency; an encoded body (a server that compresses although asked
    not to) is decoded by ``aread`` as before."""
    if response.headers.get("content-encoding", "identity") != "identity":
        return await response.aread()
    async with contextlib.aclosing(response.stream.__aiter__()) as chunks:
        return b"".join([chunk async for chunk in chunks])


def _doubled_limit(request: ChatRequest, exc: Truncated) -> int | None:
    """The output limit for the one --on_truncation retry: twice the request's (or, with none set, twice what the
    cut answer used), at most TRUNCATION_RETRY_MAX_TOKENS; None when the limit is already there."""
    current = request.max_output_tokens()
    if current is None:
        partial = getattr(exc, "partial", None)
        current = partial.usage.completion_tokens if partial is not None else 0
    if current >= TRUNCATION_RETRY_MAX_TOKENS:
        return None
    return min(max(2 * current, 1), TRUNCATION_RETRY_MAX_TOKENS)


def _reask_turns(exc: SchemaInvalid) -> list[dict[str, Any]]:
    """The turns that ask again after a schema-invalid answer: the answer, then the validation error — as a user
    turn after text, or as one ``tool`` message per call after tool calls (each call must be answered)."""
    calls = getattr(exc, "tool_calls", None)
    if not calls:
        return [{"role": "assistant", "content": exc.response_text or ""},
                {"role": "user", "content": REASK_TEMPLATE.format(error=exc.message)}]
    turns: list[dict[str, Any]] = [{"role": "assistant", "content": None, "tool_calls": calls}]
    for call in calls:
        turns.append({"role": "tool", "tool_call_id": call.get("id") or "",
                      "content": TOOL_REASK_TEMPLATE.format(error=exc.message)})
    return turns
