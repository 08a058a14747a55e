"""The Starlette app: a routes table that reads like Vertex's URL map, plus admin routes.

Usage::

    from emulator import EmulatorConfig, create_app
    app = create_app(EmulatorConfig(seed=1))
    # in-process:  httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://emu")
    # or:          uvicorn.run(app, host="127.0.0.1", port=8090)
    app.state.emulator.stats.snapshot()
"""

from __future__ import annotations

import time
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emulator import errors
from emulator._json import JSONDecodeError, dumps, loads
from emulator.auth import check_api_key
from emulator.batch import BatchJobs
from emulator.config import EmulatorConfig, FaultConfig
from emulator.errors import ApiError
from emulator.gcs import ObjectStore
from emulator.service import DEPLOYED, MANAGED, PLAIN, Emulator
from emulator.transport import SEND_KEY

__all__ = ["create_app", "EmulatorApp"]

_JSON = "application/json"
_ADMIN = "/emulator/"


class EmulatorApp(Starlette):
    """Starlette plus in-flight accounting around every API request (until its last body byte is sent).

    Stores uvicorn's raw ``send`` in the scope so faults can reach the transport.
    """

    emulator: Emulator

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(_ADMIN):
            await super().__call__(scope, receive, send)
            return
        scope[SEND_KEY] = send
        stats = self.emulator.stats
        stats.enter()
        answered = False

        async def send_and_track(message: Any) -> None:
            nonlocal answered
            if not answered and message["type"] == "http.response.body" and not message.get("more_body"):
                answered = True  # the last byte is handed over: no longer in flight
                stats.leave()
            await send(message)

        try:
            await super().__call__(scope, receive, send_and_track)
        finally:
            if not answered:  # reset, hang cancelled, client gone mid-stream
                stats.leave()


def _json(value: Any, status: int = 200) -> Response:
    return Response(dumps(value), status, media_type=_JSON)


async def managed_chat(request: Request) -> Response:
    return await request.app.emulator.chat(request, MANAGED)


async def deployed_chat(request: Request) -> Response:
    return await request.app.emulator.chat(request, DEPLOYED)


async def openai_chat(request: Request) -> Response:
    return await request.app.emulator.chat(request, PLAIN)


async def generate_content(request: Request) -> Response:
    return await request.app.emulator.generate_content(request)


async def _batch_call(request: Request, action: str) -> Response:
    """A batchPredictionJobs call: Vertex auth, then the job store; errors in Vertex's list shape."""
    emu: Emulator = request.app.emulator
    emu.stats.begin(f"batch_{action}")
    p = request.path_params
    try:
        emu.check_vertex_auth(request)
        jobs: BatchJobs = request.app.batch_jobs
        if action == "create":
            try:
                body = loads(await request.body())
            except JSONDecodeError:
                raise errors.invalid_argument("Invalid JSON payload received.") from None
            result = jobs.create(p["project"], p["location"], body)
        elif action == "list":
            q = request.query_params
            size = q.get("pageSize", "100")
            result = jobs.list(p["project"], p["location"], int(size) if size.isdigit() else 100,
                               q.get("pageToken", ""))
        else:
            result = getattr(jobs, action)(p["project"], p["location"], p["job"])
    except ApiError as err:
        emu.stats.status(err.code)
        return Response(errors.vertex_body(err), err.code, media_type=_JSON)
    emu.stats.status(200)
    return _json(result)


async def batch_jobs(request: Request) -> Response:
    return await _batch_call(request, "create" if request.method == "POST" else "list")


async def batch_job(request: Request) -> Response:
    return await _batch_call(request, "delete" if request.method == "DELETE" else "get")


async def batch_cancel(request: Request) -> Response:
    return await _batch_call(request, "cancel")


async def openai_models(request: Request) -> Response:
    emu: Emulator = request.app.emulator
    emu.stats.begin("openai_models")
    err = check_api_key(request.headers.get("authorization"), emu.config.api_key)
    if err is not None:
        emu.stats.status(err.code)
        return Response(errors.openai_body(err), err.code, media_type=_JSON)
    emu.stats.status(200)
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "google"} for m in emu.config.models]
    return _json({"object": "list", "data": data})


async def get_stats(request: Request) -> Response:
    with_fingerprints = request.query_params.get("fingerprints", "1") not in ("0", "false", "no")
    return _json(request.app.emulator.stats.snapshot(fingerprints=with_fingerprints))


async def post_reset(request: Request) -> Response:
    request.app.emulator.reset()
    return _json({"reset": True})


async def faults(request: Request) -> Response:
    emu: Emulator = request.app.emulator
    if request.method == "POST":
        try:
            emu.faults.set(FaultConfig.from_dict(loads(await request.body())))
        except (JSONDecodeError, TypeError, ValueError) as exc:
            return _json({"error": {"message": str(exc)}}, 400)
    return _json(emu.faults.config.to_dict())


routes = [
    # Managed Gemini (publisher models) through the OpenAI-compatible endpoint.
    Route("/v1/projects/{project}/locations/{location}/endpoints/openapi/chat/completions", managed_chat, methods=["POST"]),
    Route("/v1beta1/projects/{project}/locations/{location}/endpoints/openapi/chat/completions", managed_chat, methods=["POST"]),
    # Self-deployed models on a numeric endpoint id.
    Route("/v1/projects/{project}/locations/{location}/endpoints/{endpoint_id}/chat/completions", deployed_chat, methods=["POST"]),
    Route("/v1beta1/projects/{project}/locations/{location}/endpoints/{endpoint_id}/chat/completions", deployed_chat, methods=["POST"]),
    # Gemini's native API and Vertex batch prediction jobs (v1 and v1beta1, as google-genai uses).
    *[route for version in ("v1", "v1beta1") for route in (
        Route(f"/{version}/projects/{{project}}/locations/{{location}}/publishers/google/models/{{model}}:generateContent",
              generate_content, methods=["POST"]),
        Route(f"/{version}/projects/{{project}}/locations/{{location}}/batchPredictionJobs/{{job}}:cancel",
              batch_cancel, methods=["POST"]),
        Route(f"/{version}/projects/{{project}}/locations/{{location}}/batchPredictionJobs/{{job}}", batch_job,
              methods=["GET", "DELETE"]),
        Route(f"/{version}/projects/{{project}}/locations/{{location}}/batchPredictionJobs", batch_jobs,
              methods=["GET", "POST"]),
    )],
    # A plain OpenAI-compatible server (for --base_url).
    Route("/v1/chat/completions", openai_chat, methods=["POST"]),
    Route("/v1/models", openai_models, methods=["GET"]),
    # Emulator control.
    Route("/emulator/stats", get_stats, methods=["GET"]),
    Route("/emulator/reset", post_reset, methods=["POST"]),
    Route("/emulator/faults", faults, methods=["GET", "POST"]),
]


def create_app(config: EmulatorConfig | None = None, store: ObjectStore | None = None,
               clock: Callable[[], float] = time.monotonic) -> Starlette:
    """A fresh app with its own state; ``app.state.emulator`` is the `Emulator`, ``app.batch_jobs`` its batch
    prediction jobs (input and output in ``store``: Cloud Storage by default, through STORAGE_EMULATOR_HOST).
    ``clock`` (seconds, monotonic) times the 429 storm, the capacity window and token expiry; tests pass a fake one."""
    app = EmulatorApp(routes=routes)
    app.emulator = Emulator(config or EmulatorConfig(), clock)
    app.state.emulator = app.emulator
    app.batch_jobs = app.state.batch_jobs = BatchJobs(app.emulator, store)
    return app
