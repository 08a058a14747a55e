"""The request pipeline behind every chat route, independent of the routing table.

Order of checks for one chat request (each step may end it):

1. read the body, fingerprint it, count it as received (attempt = earlier arrivals);
2. auth: Vertex bearer token (+ expiry) or the plain route's API key -> 401;
3. body validation -> 400; model / endpoint checks -> 400 / 404;
4. 429 storm, then capacity (answered at once, no latency);
5. the seeded fault draw: reset (immediately), hang, latency, then 500 / 503;
6. the answer (``violate`` / ``truncate`` / ``malformed`` / ``stream_drop`` applied).

Usage::

    emu = Emulator(EmulatorConfig())
    response = await emu.chat(request, route="managed_chat")   # a Starlette Response
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from typing import Any, AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from emulator import errors
from emulator._json import JSONDecodeError, canonical, loads
from emulator.auth import TokenClock, check_api_key
from emulator.completion import make_choices
from emulator.config import EmulatorConfig
from emulator.errors import ApiError
from emulator.faults import FaultState
from emulator.render import completion_body, stream_events
from emulator.request import ChatRequest, parse_chat
from emulator.stats import Stats
from emulator.transport import NoResponse, abort_connection, wait_disconnect

__all__ = ["Emulator", "MANAGED", "DEPLOYED", "PLAIN"]

MANAGED, DEPLOYED, PLAIN = "managed_chat", "deployed_chat", "openai_chat"
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
            refused = self.faults.admit()
            if refused:
                stats.fault(refused)
                fc = self.faults.config
                raise errors.resource_exhausted(fc.retry_info, fc.retry_delay_s)
            return await self._answer(request, req, model, fingerprint, attempt, _content_key(body, fingerprint))
        except ApiError as err:
            stats.status(err.code)
            if vertex:
                return Response(errors.vertex_body(err), err.code, media_type=_JSON)
            return Response(errors.openai_body(err), err.code, headers=err.headers, media_type=_JSON)
        except Exception:  # an emulator bug: count it, and let Starlette answer a plain 500 and log it
            stats.status(500)
            raise

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
                      content_key: str) -> Response:
        stats, seed = self.stats, self._seed
        draw = self.faults.draw(random.Random(f"{seed}:{fingerprint}:{attempt}"))
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
        choices = make_choices(req, random.Random(f"{seed}:{content_key}"), violate=draw.violate,
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
            stats.ok(fingerprint, req.prompt_tokens, completion, reasoning)
            return Response(body, 200, media_type=_JSON)
        events = stream_events(cid, created, model, choices, req.prompt_tokens, include_usage=req.include_usage,
                               thinking=thinking, marker=req.thinking.marker or "")
        if draw.malformed:
            stats.fault("malformed")
            mid = len(events) // 2
            events[mid] = events[mid][: len(events[mid]) // 2] + b"\n\n"
        on_done = None if draw.malformed else (lambda: stats.ok(fingerprint, req.prompt_tokens, completion, reasoning))
        if draw.stream_drop:
            stats.fault("stream_drop")
            on_done = None
        gen = _stream(events, draw.latency_s, drop=draw.stream_drop, scope=request.scope, on_done=on_done)
        return StreamingResponse(gen, media_type="text/event-stream", headers={"cache-control": "no-cache"})


_NOT_JSON = object()
_STREAM_KEYS = ("stream", "stream_options")


def _content_key(body: dict[str, Any], fingerprint: str) -> str:
    """The seed of the answer: the body without its stream settings, so a streamed answer equals the plain one."""
    if not any(k in body for k in _STREAM_KEYS):
        return fingerprint
    rest = {k: v for k, v in body.items() if k not in _STREAM_KEYS}
    return hashlib.sha256(canonical(rest)).hexdigest()


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
