"""ChatCaller: one record in, exactly one ResultRecord or ErrorRecord out. Retries, re-asks, 401 refresh, limiter.

    >>> caller = ChatCaller(ClientConfig(target=Target.managed(project="p"), model="google/gemini-2.5-flash"))
    >>> out = await caller.complete(InputRecord(id="a1", prompt="Say hi"))   # ResultRecord | ErrorRecord
    >>> await caller.aclose()

One retry layer (ours): the SDK client is built with ``max_retries=0``. Per record:
build the request (pure; BadRequest/MediaError become an ErrorRecord at once) -> up to ``max_attempts`` attempts
under the RetryPolicy -> each attempt takes a limiter permit, sends (or streams and assembles), and parses; a 401
forces one token refresh and repeats that attempt once (not a retry) -> a schema-invalid answer is re-asked up to
``max_reasks`` times with the validation error -> ResultRecord, or ErrorRecord with stage/error_type/retryable.

The limiter seam (client/limits.py implements it; a plain concurrency cap is used when none is given)::

    permit = await limiter.acquire(est_tokens)          # before every HTTP attempt
    permit.done(outcome, tokens_used=total_or_None)     # exactly once after it; outcome "ok" | "throttled" | "error"

"throttled" means the attempt was answered 429 or 503.

The budget seam (client/budget.py; optional): once per record, after the request is built and before its first
attempt, ``hold = await budget.reserve(request)``; None means the budget is spent, and the record becomes a
``budget_exhausted`` error (retryable, nothing sent). ``hold.settle(usage)`` once the record is done.

The tier seam (client/tiers.py): every attempt asks ``tiers.current()`` which service tier to use and sends its
headers; the record reports the tier of its last attempt (``service_tier``), is priced at it, and is counted per
tier (``tier_records_<tier>``). Without a selector every attempt uses ``config.service_tier``.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol

import httpx2
import openai
from openai.types.chat import ChatCompletion

from client.auth import TokenSource, token_source_for
from client.budget import Budget, BudgetExhausted, Hold
from client.config import ClientConfig
from client.constants import REASK_TEMPLATE, THROTTLE_STATUS
from client.errors import (AuthError, ChatbeamError, MalformedResponse, SchemaInvalid, StreamBroken, is_retryable,
                           map_errors, redact)
from client.metrics import RunCounters
from client.parsing import ParsedCompletion, StreamAssembler, parse_completion, usage_of
from client.requests import ChatRequest, build_request, estimate_tokens
from client.retry import RetryPolicy
from client.tiers import TierPlan, TierSelector, tier_headers
from schemas.records import ErrorRecord, InputRecord, ResultRecord, Usage

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
    tier: str | None = None  # the service tier of the last attempt


def utc_iso(epoch_s: float) -> str:
    """``2025-01-31T02:13:07.412+00:00``: ISO-8601 in UTC with milliseconds (what ``started_at``/``finished_at``
    hold; ``datetime.fromisoformat`` reads it back on every supported Python)."""
    return datetime.datetime.fromtimestamp(epoch_s, datetime.timezone.utc).isoformat(timespec="milliseconds")


def _rejected_token(exc: BaseException) -> str | None:
    """The bearer token of the request a 401 answered (read from the SDK error's request), so the token source
    refreshes only if nobody has replaced that token yet. Never logged or stored."""
    request = getattr(getattr(exc.__cause__, "response", None), "request", None)
    header = request.headers.get("authorization", "") if request is not None else ""
    return header.partition(" ")[2] or None


class ChatCaller:
    """The core client for one worker process. Build it where it will run (``DoFn.setup()``), on the event loop
    that will call ``complete()``; it is not picklable."""

    def __init__(self, config: ClientConfig, *, http_client: httpx2.AsyncClient | None = None,
                 token_source: TokenSource | None = None, limiter: Limiter | None = None,
                 counters: RunCounters | None = None, budget: Budget | None = None,
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
        self.policy = RetryPolicy.from_config(config)
        self._sleep, self._clock, self._wall_clock = sleep, clock, wall_clock
        timeout = httpx2.Timeout(config.request_timeout, connect=config.connect_timeout)
        self._owns_http = http_client is None
        if http_client is None:
            # Idle connections are dropped after 4 s: servers close idle ones (llama-server after 5 s), and a
            # request sent on a connection the server is closing fails with "disconnected without a response".
            limits = httpx2.Limits(max_connections=config.max_concurrency,
                                   max_keepalive_connections=config.max_concurrency, keepalive_expiry=4.0)
            http_client = httpx2.AsyncClient(limits=limits, timeout=timeout)
        self._http = http_client
        self._client = openai.AsyncOpenAI(base_url=config.target.base_url, api_key=self.tokens.token,
                                          max_retries=0, timeout=timeout, http_client=http_client)
        # With no credentials the SDK must be told explicitly to send no Authorization header.
        self._extra_headers = {"Authorization": openai.omit} if getattr(self.tokens, "anonymous", False) else None

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
            if record.messages and any(isinstance(m.get("content"), list) for m in record.messages):
                request = await asyncio.to_thread(build_request, record, self.config)  # may read media files
            else:
                request = build_request(record, self.config)
            if self.budget is not None:
                hold = await self.budget.reserve(request, tier=self.tiers.current())
                if hold is None:
                    raise BudgetExhausted(self.budget.exhausted_message())
            return self._result(record, request, await self._complete(request, state), state)
        except ChatbeamError as exc:
            return self._error(record, request, exc, state)
        except Exception as exc:  # a bug, not a record problem: still one error record, and a loud log line
            log.exception("internal error on record %s", record.id)
            internal = ChatbeamError(f"internal error: {type(exc).__name__}: {exc}", error_type="internal_error")
            return self._error(record, request, internal, state)
        finally:
            if hold is not None:
                hold.settle(state.usage, tier=state.tier)
            self.tiers.record_done(state.tier)

    async def _complete(self, request: ChatRequest, state: _RecordState) -> ParsedCompletion:
        messages = request.messages
        for reask in range(self.config.max_reasks + 1):
            try:
                retrying = self.policy.retrying(sleep=self._sleep, clock=self._clock, start=state.start,
                                                on_retry=self._on_retry)
                return await retrying(self._attempt, request, messages, state)
            except SchemaInvalid as exc:
                self.counters.inc("parse_failures")
                if reask == self.config.max_reasks:
                    raise
                self.counters.inc("reasks")
                messages = [*messages, {"role": "assistant", "content": exc.response_text or ""},
                            {"role": "user", "content": REASK_TEMPLATE.format(error=exc.message)}]
        raise AssertionError("unreachable")

    def _on_retry(self, exc: BaseException, seconds: float) -> None:
        self.counters.inc("retries")
        self.counters.inc("backoff_ms", round(seconds * 1000))
        log.debug("retrying in %.2fs after %s", seconds, exc)

    async def _attempt(self, request: ChatRequest, messages: list[dict[str, Any]],
                       state: _RecordState) -> ParsedCompletion:
        try:
            return await self._send_once(request, messages, state)
        except AuthError as exc:
            # An expired/revoked token: refresh once and repeat this attempt (not counted as a retry);
            # a second 401 is final.
            if exc.status_code != 401 or not await self.tokens.force_refresh(_rejected_token(exc)):
                raise
            self.counters.inc("auth_refreshes")
            return await self._send_once(request, messages, state)

    async def _send_once(self, request: ChatRequest, messages: list[dict[str, Any]],
                         state: _RecordState) -> ParsedCompletion:
        est = (request.est_prompt_tokens if messages is request.messages
               else estimate_tokens(messages, request.schema, request.kwargs.get("tools")))
        waited_from = self._clock()
        permit = await self.limiter.acquire(est)
        self.counters.inc("permit_wait_ms", round((self._clock() - waited_from) * 1000))
        state.attempts += 1
        state.tier = self.tiers.current()
        self.counters.inc("attempts")
        outcome, tokens_used = "error", None
        try:
            completion = await self._call(request, messages, state.tier)
            outcome = "ok"
            usage = usage_of(getattr(completion, "usage", None))
            tokens_used = usage.total_tokens if getattr(completion, "usage", None) is not None else None
            self._count_usage(usage, state)
            self.counters.inc("status_200")
        except ChatbeamError as exc:
            if exc.status_code is not None:
                self.counters.inc(f"status_{exc.status_code}")
            if exc.status_code in THROTTLE_STATUS:
                outcome = "throttled"
                self.counters.inc("throttled")
            raise
        finally:
            permit.done(outcome, tokens_used=tokens_used)
        return parse_completion(completion, schema=request.schema, thought_marker=request.thought_marker)

    async def _call(self, request: ChatRequest, messages: list[dict[str, Any]],
                    tier: str = "standard") -> ChatCompletion:
        args = request.create_args(messages)
        headers = {**(self._extra_headers or {}), **tier_headers(tier)}
        if headers:
            args["extra_headers"] = headers
        create = self._client.chat.completions.create
        if not self.config.stream:
            async with map_errors():
                completion = await create(**args)
            if not isinstance(completion, ChatCompletion):  # the SDK returns text for a non-JSON content type
                raise MalformedResponse(f"response is not a chat completion: {str(completion)[:200]!r}")
            return completion
        async with map_errors():
            stream = await create(**args, stream=True, stream_options={"include_usage": True})
        assembler = StreamAssembler()
        try:
            async with map_errors(streaming=True):
                async for chunk in stream:
                    assembler.feed(chunk)
        finally:
            await stream.close()
        if not assembler.finished:
            raise StreamBroken(f"stream ended after {assembler.chunks} chunks without a finish_reason")
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
        self.counters.inc(f"tier_records_{state.tier}")
        return ResultRecord(
            id=record.id or "", request_key=request.request_key, model=parsed.model or request.model,
            content=parsed.content, thoughts=parsed.thoughts, parsed=parsed.parsed,
            finish_reason=parsed.finish_reason, usage=state.usage or parsed.usage, attempts=state.attempts,
            latency_ms=self._latency_ms(state), alternatives=parsed.alternatives, metadata=record.metadata,
            service_tier=state.tier, started_at=state.started_at, finished_at=utc_iso(self._wall_clock()))

    def _error(self, record: InputRecord, request: ChatRequest | None, exc: ChatbeamError,
               state: _RecordState) -> ErrorRecord:
        self.counters.inc("errors")
        self.counters.inc(f"error_{exc.error_type}")
        if state.tier is not None:
            self.counters.inc(f"tier_records_{state.tier}")
        return ErrorRecord(
            id=record.id, request_key=request.request_key if request else None, stage=exc.stage,
            error_type=exc.error_type, status_code=exc.status_code, status=exc.status, message=redact(exc.message),
            retryable=is_retryable(exc), attempts=state.attempts, record=record.to_json_dict(),
            response_text=exc.response_text, metadata=record.metadata, service_tier=state.tier,
            started_at=state.started_at, finished_at=utc_iso(self._wall_clock()))
