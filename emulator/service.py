"""The request pipeline behind every chat route, independent of the routing table.

Order of checks for one chat request (each step may end it):

1. read the body, fingerprint it, count it as received (attempt = earlier arrivals);
2. auth: Vertex bearer token (+ expiry) or the plain route's API key -> 401;
3. body validation -> 400; model / endpoint checks -> 400 / 404;
4. the service tier from Vertex's headers (emulator/tiers.py; 400 for bad values), then the 429 storm, then
   capacity scaled by the tier's share, then flex's extra 429s (answered at once, no latency);
5. the seeded fault draw: reset (immediately), hang, latency (times the tier's factor), then 500 / 503;
6. the answer (``violate`` / ``truncate`` / ``malformed`` / ``stream_drop`` applied).

The native ``:generateContent`` route (`Emulator.generate_content`) follows the same order without streaming,
resets or hangs; `Emulator.native_answer` is the answer alone, which batch prediction jobs use for each line.

Usage::

    emu = Emulator(EmulatorConfig())
    response = await emu.chat(request, route="managed_chat")   # a Starlette Response
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import random
import time
from typing import Any, AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from emulator import errors
from emulator._json import JSONDecodeError, canonical, dumps, loads
from emulator.auth import TokenClock, check_api_key
from emulator.completion import make_choices
from emulator.config import EmulatorConfig
from emulator.errors import ApiError
from emulator.faults import FaultState
from emulator.native import to_chat, to_response
from emulator.render import completion_body, stream_events
from emulator.request import ChatRequest, parse_chat
from emulator.stats import Stats
from emulator.tiers import tier_of
from emulator.transport import NoResponse, abort_connection, wait_disconnect

__all__ = ["Emulator", "MANAGED", "DEPLOYED", "PLAIN", "NATIVE"]

MANAGED, DEPLOYED, PLAIN, NATIVE = "managed_chat", "deployed_chat", "openai_chat", "generate_content"
_JSON = "application/json"


class Emulator:
    """Shared state (stats, faults, token clock) and the chat pipeline."""

    def __init__(self, config: EmulatorConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.stats = Stats()
        self.faults = FaultState(config.faults, clock)
        self.tokens = TokenClock(clock)
        self._models = frozenset(config.models)
        self._thinkers = frozenset(config.thinking_models)
        self._seed = str(config.seed)

    def reset(self) -> None:
        self.stats.reset()
        self.tokens.reset()

    # -- the pipeline -------------------------------------------------------------------
    async def chat(self, request: Request, route: str) -> Response:
        stats = self.stats
        stats.begin(route)
        vertex = route != PLAIN
        try:
            raw = await request.body()
            try:
                body: Any = loads(raw)
                fingerprint = hashlib.sha256(canonical(body)).hexdigest()
            except (JSONDecodeError, TypeError):
                body, fingerprint = _NOT_JSON, hashlib.sha256(raw).hexdigest()
            attempt = stats.receive(fingerprint)
            self._auth(request, vertex)
            if body is _NOT_JSON:
                raise errors.invalid_argument("Invalid JSON payload received.")
            req = parse_chat(body, can_think=self._can_think(route, body),
                             think_by_default=self.config.thinking_by_default)
            model = self._model(route, req, request.path_params)
            ec = req.extra_content
            if ec[0] or ec[1] or ec[2]:
                stats.extra(*ec)
            tier = self._tier(request, vertex)
            self._admit(tier, fingerprint, attempt)
            return await self._answer(request, req, model, fingerprint, attempt, tier)
        except ApiError as err:
            stats.status(err.code)
            if vertex:
                return Response(errors.vertex_body(err), err.code, media_type=_JSON)
            return Response(errors.openai_body(err), err.code, headers=err.headers, media_type=_JSON)
        except Exception:  # an emulator bug: count it, and let Starlette answer a plain 500 and log it
            stats.status(500)
            raise

    async def generate_content(self, request: Request) -> Response:
        """``POST …/publishers/google/models/{model}:generateContent``: one native request, one native answer."""
        stats = self.stats
        stats.begin(NATIVE)
        try:
            raw = await request.body()
            try:
                body: Any = loads(raw)
                fingerprint = hashlib.sha256(canonical(body)).hexdigest()
            except (JSONDecodeError, TypeError):
                body, fingerprint = _NOT_JSON, hashlib.sha256(raw).hexdigest()
            attempt = stats.receive(fingerprint)
            self._auth(request, True)
            if body is _NOT_JSON:
                raise errors.invalid_argument("Invalid JSON payload received.")
            params = request.path_params
            model = self.publisher_model(params.get("model", ""), params)
            req = self.parse_native(body, model)
            tier = self._tier(request, True)
            self._admit(tier, fingerprint, attempt)
            draw = self.faults.draw(random.Random(f"{self._seed}:{fingerprint}:{attempt}"))
            latency = self._latency(draw.latency_s, tier)
            if latency > 0:
                await asyncio.sleep(latency)
            if draw.error in ("error_500", "error_503"):
                stats.fault(draw.error)
                raise errors.internal() if draw.error == "error_500" else errors.unavailable()
            answer, completion, reasoning = self.native_answer(req, model, tier, violate=draw.violate,
                                                               truncate=draw.truncate,
                                                               response_id=f"{fingerprint[:20]}{attempt:x}")
            stats.status(200)
            stats.ok(fingerprint, req.prompt_tokens, completion, reasoning, tier)
            return Response(dumps(answer), 200, media_type=_JSON)
        except ApiError as err:
            stats.status(err.code)
            return Response(errors.vertex_body(err), err.code, media_type=_JSON)
        except Exception:
            stats.status(500)
            raise

    def publisher_model(self, model_id: str, params: dict[str, str]) -> str:
        """``gemini-2.5-flash`` (or ``publishers/google/models/gemini-2.5-flash``) → ``google/gemini-2.5-flash``;
        404 when the emulator does not know it."""
        model_id = model_id.removeprefix("publishers/google/models/").removeprefix("google/")
        name = f"google/{model_id}"
        if not model_id or name not in self._models:
            raise errors.not_found(
                f"Publisher Model `projects/{params.get('project')}/locations/{params.get('location')}/publishers/"
                f"google/models/{model_id}` was not found or your project does not have access to it.")
        return name

    def parse_native(self, body: Any, model: str) -> ChatRequest:
        """A GenerateContentRequest validated as the chat request it is equivalent to (400 `ApiError` if invalid)."""
        return parse_chat(to_chat(body, model=model), can_think=model in self._thinkers,
                          think_by_default=self.config.thinking_by_default)

    def native_answer(self, req: ChatRequest, model: str, tier: str, *, violate: bool, truncate: bool,
                      response_id: str) -> tuple[dict[str, Any], int, int]:
        """The GenerateContentResponse for ``req`` (seeded like the chat answer), its completion and reasoning
        tokens. Counts the violation / truncation faults it applies."""
        if violate and (req.format != "text" or req.calls):
            self.stats.fault("schema_violation")
        if truncate and req.tool is None:
            self.stats.fault("truncate")
        choices = make_choices(req, random.Random(f"{self._seed}:{req.answer_key}"), violate=violate,
                               truncate=truncate)
        created = datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
        answer = to_response(choices, req, model.removeprefix("google/"), tier=tier, response_id=response_id,
                             create_time=created)
        return answer, sum(c.completion_tokens for c in choices), sum(c.reasoning_tokens for c in choices)

    def check_vertex_auth(self, request: Request) -> None:
        """Vertex's bearer-token check (401 `ApiError`), for routes outside the chat pipeline."""
        self._auth(request, True)

    def _auth(self, request: Request, vertex: bool) -> None:
        header = request.headers.get("authorization")
        if vertex:
            err = self.tokens.check(header, self.faults.config.token_ttl_s)
            if err is not None and err.details and err.details[0].get("reason") == "ACCESS_TOKEN_EXPIRED":
                self.stats.fault("token_expired")
        else:
            err = check_api_key(header, self.config.api_key)
        if err is not None:
            raise err

    def _tier(self, request: Request, vertex: bool) -> str:
        """The service tier asked for (standard on the plain route, which has no tiers); counted per tier."""
        tier = "standard"
        if vertex:
            tier = tier_of(request.headers, location=request.path_params.get("location"),
                           global_only=self.faults.config.flex_global_only)
        self.stats.tier_request(tier)
        return tier

    def _admit(self, tier: str, fingerprint: str, attempt: int) -> None:
        """The 429 storm and the shared pool, scaled by the tier's share; flex's extra 429s. Raises the 429."""
        fc = self.faults.config
        share = {"flex": fc.flex_capacity_share, "priority": fc.priority_capacity_share}.get(tier, 1.0)
        refused = self.faults.admit(share)
        if not refused and tier == "flex" and fc.flex_429_rate > 0:
            if random.Random(f"{self._seed}:{fingerprint}:{attempt}:flex").random() < fc.flex_429_rate:
                refused = "flex_429"
        if refused:
            self.stats.fault(refused)
            self.stats.tier_throttled(tier)
            raise errors.resource_exhausted(fc.retry_info, fc.retry_delay_s)

    def _latency(self, latency_s: float, tier: str) -> float:
        fc = self.faults.config
        return latency_s * {"flex": fc.flex_latency_factor, "priority": fc.priority_latency_factor}.get(tier, 1.0)

    def _can_think(self, route: str, body: Any) -> bool:
        """Managed models outside ``thinking_models`` can't think (unknown models get their 404 later)."""
        if route != MANAGED or not isinstance(body, dict):
            return True
        model = body.get("model")
        return model in self._thinkers or model not in self._models

    def _model(self, route: str, req: ChatRequest, params: dict[str, str]) -> str:
        """The model to echo; raises 400/404 for models or endpoints that don't exist."""
        if route == MANAGED:
            name = req.model
            if not name or not name.startswith("google/") or len(name) <= len("google/"):
                raise errors.invalid_argument("'model' must look like 'google/<model name>', e.g. google/gemini-2.5-flash.")
            if name not in self._models:
                raise errors.not_found(
                    f"Publisher Model `projects/{params.get('project')}/locations/{params.get('location')}/publishers/"
                    f"google/models/{name[7:]}` was not found or your project does not have access to it."
                )
            return name
        if route == DEPLOYED:
            endpoint = params.get("endpoint_id", "")
            deployed = self.config.deployed_endpoints
            if not endpoint.isdigit() or (deployed is not None and endpoint not in deployed):
                raise errors.not_found(
                    f"Endpoint `projects/{params.get('project')}/locations/{params.get('location')}/endpoints/"
                    f"{endpoint}` not found."
                )
            return req.model or (deployed or {}).get(endpoint) or f"endpoint-{endpoint}"
        return req.model or "emulator"

    async def _answer(self, request: Request, req: ChatRequest, model: str, fingerprint: str, attempt: int,
                      tier: str) -> Response:
        stats, seed = self.stats, self._seed
        draw = self.faults.draw(random.Random(f"{seed}:{fingerprint}:{attempt}"))
        draw.latency_s = self._latency(draw.latency_s, tier)
        if draw.error == "reset":
            stats.fault("reset")
            return await abort_connection(request.scope)
        if draw.error == "hang":
            stats.fault("hang")
            if await wait_disconnect(request.receive, self.faults.config.hang_s):
                stats.fault("hang_cancelled")
                stats.status(499)  # nginx's "client closed request"; nothing was sent
                return NoResponse()
        if not req.stream and draw.latency_s > 0:
            await asyncio.sleep(draw.latency_s)
        if draw.error in ("error_500", "error_503"):
            stats.fault(draw.error)
            raise errors.internal() if draw.error == "error_500" else errors.unavailable()
        if draw.violate and (req.format != "text" or req.calls):
            stats.fault("schema_violation")
        if draw.truncate and req.tool is None:  # a tool call is never truncated
            stats.fault("truncate")
        choices = make_choices(req, random.Random(f"{seed}:{req.answer_key}"), violate=draw.violate,
                               truncate=draw.truncate)
        cid = f"chatcmpl-{fingerprint[:20]}{attempt:x}"
        created = int(time.time())
        thinking = req.thinking.enabled
        reasoning = sum(c.reasoning_tokens for c in choices)
        completion = sum(c.completion_tokens for c in choices)
        stats.status(200)
        if not req.stream:
            body = completion_body(cid, created, model, choices, req.prompt_tokens, thinking)
            if draw.malformed:
                stats.fault("malformed")
                return Response(body[: len(body) // 2], 200, media_type=_JSON)
            stats.ok(fingerprint, req.prompt_tokens, completion, reasoning, tier)
            return Response(body, 200, media_type=_JSON)
        events = stream_events(cid, created, model, choices, req.prompt_tokens, include_usage=req.include_usage,
                               thinking=thinking, marker=req.thinking.marker or "")
        if draw.malformed:
            stats.fault("malformed")
            mid = len(events) // 2
            events[mid] = events[mid][: len(events[mid]) // 2] + b"\n\n"
        on_done = None if draw.malformed else (lambda: stats.ok(fingerprint, req.prompt_tokens, completion, reasoning,
                                                                tier))
        if draw.stream_drop:
            stats.fault("stream_drop")
            on_done = None
        gen = _stream(events, draw.latency_s, drop=draw.stream_drop, scope=request.scope, on_done=on_done)
        return StreamingResponse(gen, media_type="text/event-stream", headers={"cache-control": "no-cache"})


_NOT_JSON = object()


async def _stream(events: list[bytes], latency_s: float, *, drop: bool, scope: dict[str, Any],
                  on_done: Callable[[], None] | None) -> AsyncIterator[bytes]:
    """Yield SSE events, spreading ``latency_s`` over them; ``drop`` aborts mid-way without [DONE]."""
    pause = latency_s / len(events) if latency_s > 0 else 0.0
    stop_at = max(1, len(events) // 2) if drop else len(events)
    for event in events[:stop_at]:
        if pause:
            await asyncio.sleep(pause)
        yield event
    if drop:
        await abort_connection(scope)
        return
    if on_done is not None:
        on_done()
