"""Vertex batch prediction jobs for Gemini: create / get / list / cancel / delete, input and output on GCS.

A job reads the JSONL file(s) of ``inputConfig.gcsSource.uris`` (one ``{"request": <GenerateContentRequest>}`` per
line), answers every line with the native answer the ``:generateContent`` route would give (same seed, so the
same answer as online; `emulator.native`), and writes ``{"status", "processed_time", "request", "response"}``
lines to ``{outputUriPrefix}/prediction-model-<time>/predictions.jsonl`` (``outputInfo.gcsOutputDirectory``), in
an order shuffled from the input's, as a client must not rely on position.

States: ``JOB_STATE_PENDING`` (``batch_queue_s``) → ``JOB_STATE_RUNNING`` (``batch_duration_s``, lines answered
evenly over it; ``completionStats`` counts them as they go) → ``JOB_STATE_SUCCEEDED`` (no line failed),
``JOB_STATE_PARTIALLY_SUCCEEDED`` (some lines failed: their ``status`` says why and they have no ``response``),
``JOB_STATE_FAILED`` (input unreadable, more than ``batch_max_requests`` lines, every line failed, or the seeded
``batch_job_failure_rate`` draw — then after ``batch_fail_at`` of its lines) or ``JOB_STATE_CANCELLED``
(``:cancel``: ``JOB_STATE_CANCELLING`` until the runner stops). Lines answered before a job is cancelled or fails
are written (as Vertex exports completed rows of a terminated job). Which parts of this match Vertex exactly
could not be checked: docs/emulator.md lists the guesses.

A line fails with ``batch_line_failure_rate`` (an emulated 500), or when its request is invalid (the 400 the
online route would answer): ``status`` is ``"<reason>: {\"error\": {...}}"``.

Usage::

    jobs = BatchJobs(emulator, GcsStore())
    resource = await jobs.create("p", "us-central1", body)     # ApiError 400/404 for a bad body
    jobs.get("p", "us-central1", job_id)["state"]
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import itertools
import random
import time
from typing import TYPE_CHECKING, Any, Callable

from emulator import errors
from emulator._json import JSONDecodeError, canonical, dumps, loads
from emulator.errors import ApiError, invalid_argument, not_found
from emulator.gcs import GcsStore, ObjectStore, split_uri
from emulator.native import error_status

if TYPE_CHECKING:
    from emulator.service import Emulator

__all__ = ["BatchJobs", "TERMINAL"]

PENDING, RUNNING, CANCELLING = "JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_CANCELLING"
SUCCEEDED, FAILED, CANCELLED = "JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"
PARTIAL = "JOB_STATE_PARTIALLY_SUCCEEDED"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, PARTIAL})
_PACE_SLICE_S = 0.02  # sleep at least this long at a time while pacing lines over the job's duration


def _now_iso(clock: Callable[[], float]) -> str:
    return datetime.datetime.fromtimestamp(clock(), datetime.timezone.utc).isoformat().replace("+00:00", "Z")


class _Job:
    def __init__(self, name: str, body: dict[str, Any], model: str, created: str) -> None:
        self.name = name
        self.body = body
        self.model = model
        self.state = PENDING
        self.create_time = self.update_time = created
        self.start_time: str | None = None
        self.end_time: str | None = None
        self.ok = self.failed = self.incomplete = 0
        self.output_dir: str | None = None
        self.error: dict[str, Any] | None = None
        self.cancel_requested = False
        self.task: asyncio.Task | None = None

    def resource(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "displayName": self.body.get("displayName"), "model": self.body["model"],
            "inputConfig": self.body["inputConfig"], "outputConfig": self.body["outputConfig"],
            "state": self.state, "createTime": self.create_time, "updateTime": self.update_time,
            # int64 fields are strings in Google's REST JSON
            "completionStats": {"successfulCount": str(self.ok), "failedCount": str(self.failed),
                                "incompleteCount": str(self.incomplete)},
        }
        if self.body.get("labels"):
            out["labels"] = self.body["labels"]
        if self.start_time:
            out["startTime"] = self.start_time
        if self.end_time:
            out["endTime"] = self.end_time
        if self.output_dir:
            out["outputInfo"] = {"gcsOutputDirectory": self.output_dir}
        if self.error:
            out["error"] = self.error
        return out


def _gcs_config(config: Any, key: str, fmt_key: str, holder: str, field: str) -> Any:
    """``config[holder][field]`` of a jsonl-on-GCS input or output config; 400 for anything else."""
    if not isinstance(config, dict):
        raise invalid_argument(f"{key} is required.")
    if config.get(fmt_key) == "bigquery" or "bigquerySource" in config or "bigqueryDestination" in config:
        raise invalid_argument(f"{key}: BigQuery sources and destinations are not supported by this emulator "
                               "(use jsonl on Cloud Storage).")
    if config.get(fmt_key) != "jsonl":
        raise invalid_argument(f"{key}.{fmt_key} must be 'jsonl'.")
    inner = config.get(holder)
    if not isinstance(inner, dict) or inner.get(field) is None:
        raise invalid_argument(f"{key}.{holder}.{field} is required.")
    return inner[field]


class BatchJobs:
    """The jobs of one emulator, each run by a task on the server's event loop."""

    def __init__(self, emulator: "Emulator", store: ObjectStore | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._emu = emulator
        self.store = store if store is not None else GcsStore()
        self._clock = clock
        self._jobs: dict[str, _Job] = {}
        self._ids = itertools.count(1)

    # -- the API ----------------------------------------------------------------------------------------------
    def create(self, project: str, location: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise invalid_argument("Request body must be a JSON object.")
        if not isinstance(body.get("displayName"), str) or not body["displayName"]:
            raise invalid_argument("displayName is required.")
        model = body.get("model")
        if not isinstance(model, str) or not model.startswith("publishers/google/models/"):
            raise invalid_argument("model must be 'publishers/google/models/<MODEL_ID>' for Gemini batch prediction.")
        model = self._emu.publisher_model(model, {"project": project, "location": location})
        uris = _gcs_config(body.get("inputConfig"), "inputConfig", "instancesFormat", "gcsSource", "uris")
        prefix = _gcs_config(body.get("outputConfig"), "outputConfig", "predictionsFormat", "gcsDestination",
                             "outputUriPrefix")
        try:
            if not isinstance(uris, list) or not uris:
                raise ValueError("inputConfig.gcsSource.uris must be a non-empty list")
            for uri in [*uris, prefix]:
                split_uri(uri)
        except ValueError as exc:
            raise invalid_argument(str(exc)) from None
        job_id = str(8_000_000_000_000_000_000 + next(self._ids))
        job = _Job(f"projects/{project}/locations/{location}/batchPredictionJobs/{job_id}", body, model,
                   _now_iso(self._clock))
        self._jobs[job.name] = job
        self._emu.stats.batch_job_created()
        job.task = asyncio.get_running_loop().create_task(self._run(job))
        return job.resource()

    def get(self, project: str, location: str, job_id: str) -> dict[str, Any]:
        return self._job(project, location, job_id).resource()

    def list(self, project: str, location: str, page_size: int = 100, page_token: str = "") -> dict[str, Any]:
        parent = f"projects/{project}/locations/{location}/"
        jobs = [j for name, j in self._jobs.items() if name.startswith(parent)]
        start = int(page_token) if page_token.isdigit() else 0
        page = jobs[start:start + max(1, page_size)]
        out: dict[str, Any] = {"batchPredictionJobs": [j.resource() for j in page]}
        if start + len(page) < len(jobs):
            out["nextPageToken"] = str(start + len(page))
        return out

    def cancel(self, project: str, location: str, job_id: str) -> dict[str, Any]:
        job = self._job(project, location, job_id)
        if job.state in TERMINAL:
            raise ApiError(400, "FAILED_PRECONDITION", f"Job {job.name} is already in state {job.state}.")
        job.cancel_requested = True
        job.state = CANCELLING
        job.update_time = _now_iso(self._clock)
        return {}

    def delete(self, project: str, location: str, job_id: str) -> dict[str, Any]:
        job = self._job(project, location, job_id)
        if job.state not in TERMINAL:
            raise ApiError(400, "FAILED_PRECONDITION", f"Job {job.name} is running; cancel it before deleting.")
        del self._jobs[job.name]
        return {"name": f"{job.name}/operations/{job_id}", "done": True}

    def _job(self, project: str, location: str, job_id: str) -> _Job:
        name = f"projects/{project}/locations/{location}/batchPredictionJobs/{job_id}"
        if name not in self._jobs:
            raise not_found(f"BatchPredictionJob `{name}` not found.")
        return self._jobs[name]

    # -- the runner -------------------------------------------------------------------------------------------
    async def _run(self, job: _Job) -> None:
        fc = self._emu.faults.config
        try:
            await asyncio.sleep(fc.batch_queue_s)
            if job.cancel_requested:
                return await self._finish(job, CANCELLED, [])
            job.state, job.start_time = RUNNING, _now_iso(self._clock)
            job.update_time = job.start_time
            try:
                lines = await asyncio.to_thread(self._read_input, job)
            except Exception as exc:  # noqa: BLE001 - any storage failure fails the job, as on Vertex
                return await self._finish(job, FAILED, [], f"Failed to read the input: {type(exc).__name__}: {exc}")
            if len(lines) > fc.batch_max_requests:
                return await self._finish(job, FAILED, [], f"The input has {len(lines)} requests; a batch prediction "
                                    f"job takes at most {int(fc.batch_max_requests)}.")
            await self._answer_lines(job, lines)
        except Exception as exc:  # an emulator bug must not leave a job RUNNING forever
            await self._finish(job, FAILED, [], f"internal emulator error: {type(exc).__name__}: {exc}")
            raise

    def _read_input(self, job: _Job) -> list[bytes]:
        lines: list[bytes] = []
        for uri in job.body["inputConfig"]["gcsSource"]["uris"]:
            matched = self.store.match(uri)
            if not matched:
                raise FileNotFoundError(f"no object matches {uri}")
            for name in matched:
                lines += [line for line in self.store.read(name).splitlines() if line.strip()]
        return lines

    async def _answer_lines(self, job: _Job, lines: list[bytes]) -> None:
        fc = self._emu.faults.config
        seed = self._emu.config.seed
        fails = random.Random(f"{seed}:{job.name}:job").random() < fc.batch_job_failure_rate
        fail_at = int(len(lines) * fc.batch_fail_at) if fails else None
        job.incomplete = len(lines)
        loop = asyncio.get_running_loop()
        started, outputs = loop.time(), []
        for i, line in enumerate(lines):
            if job.cancel_requested:
                return await self._finish(job, CANCELLED, outputs)
            if i == fail_at:
                return await self._finish(job, FAILED, outputs, "The batch prediction job failed (emulated failure).")
            outputs.append(self._line(job, line, i))
            job.incomplete -= 1
            job.update_time = _now_iso(self._clock)
            due = started + fc.batch_duration_s * (i + 1) / len(lines)
            if due - loop.time() >= _PACE_SLICE_S or i % 100 == 99 or i == len(lines) - 1:
                await asyncio.sleep(max(0.0, due - loop.time()))  # also lets the server answer other requests
        if job.cancel_requested:
            return await self._finish(job, CANCELLED, outputs)
        if lines and job.ok == 0:
            return await self._finish(job, FAILED, outputs, f"All {len(lines)} requests failed.")
        await self._finish(job, PARTIAL if job.failed else SUCCEEDED, outputs)

    def _line(self, job: _Job, raw: bytes, index: int) -> bytes:
        emu, seed = self._emu, self._emu.config.seed
        processed = _now_iso(self._clock)
        request: Any = None
        try:
            try:
                request = loads(raw)["request"]
            except (JSONDecodeError, TypeError, KeyError):
                raise invalid_argument("Each line must be a JSON object with a 'request' field.") from None
            req = emu.parse_native(request, job.model)
            if random.Random(f"{seed}:{job.name}:{index}").random() < emu.faults.config.batch_line_failure_rate:
                raise errors.internal()
            fingerprint = hashlib.sha256(canonical(request)).hexdigest()
            draw = emu.faults.draw(random.Random(f"{seed}:batch:{fingerprint}"))
            answer, completion, reasoning = emu.native_answer(req, job.model, "batch", violate=draw.violate,
                                                              truncate=draw.truncate, response_id=fingerprint[:24])
        except ApiError as err:
            job.failed += 1
            emu.stats.batch_line(False)
            return dumps({"status": error_status(err), "processed_time": processed, "request": request})
        job.ok += 1
        emu.stats.batch_line(True, req.prompt_tokens, completion, reasoning)
        return dumps({"status": "", "processed_time": processed, "request": request, "response": answer})

    async def _finish(self, job: _Job, state: str, outputs: list[bytes], error: str | None = None) -> None:
        if outputs:
            stamp = job.create_time.replace(":", "-")
            job.output_dir = (f"{job.body['outputConfig']['gcsDestination']['outputUriPrefix'].rstrip('/')}"
                              f"/prediction-model-{stamp}-{job.name.rsplit('/', 1)[1]}")
            random.Random(job.name).shuffle(outputs)  # Vertex does not keep the input's order
            data = b"\n".join(outputs) + b"\n"
            try:
                await asyncio.to_thread(self.store.write, f"{job.output_dir}/predictions.jsonl", data)
            except Exception as exc:  # noqa: BLE001
                state, error = FAILED, f"Failed to write the output: {type(exc).__name__}: {exc}"
        if error is not None:
            job.error = {"code": 13 if state == FAILED else 1, "message": error}
        job.state = state
        job.end_time = job.update_time = _now_iso(self._clock)
        self._emu.stats.batch_job_done(state)
