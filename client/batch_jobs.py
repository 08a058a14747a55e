"""Vertex batch prediction jobs through google-genai's ``client.batches``: submit, poll, cancel. No Beam import.

    >>> target = BatchTarget.from_target(Target.managed("my-proj", "us-central1"))   # ValueError: no batch API
    >>> jobs = BatchJobClient(target)
    >>> name = jobs.submit(model="google/gemini-2.5-flash", input_uri="gs://b/run/job-0/input.jsonl",
    ...                    output_prefix="gs://b/run/job-0/output", display_name="chatbeam-1a2b-0-0")
    >>> done = jobs.wait([name], poll_s=30, max_wait_s=86_400, on_progress=print)[name]
    >>> done.state, done.output_dir, done.successful, done.failed

Why google-genai and not hand-written REST: it is Google's maintained client for these jobs (``batches.create`` /
``get`` / ``list`` / ``cancel``), takes the emulator through ``http_options.base_url``, and refreshes Application
Default Credentials itself. google-cloud-aiplatform's ``BatchPredictionJob`` would do too, but it drags in the
whole Vertex SDK and its gRPC job service, which the emulator does not serve.

* **Idempotent submission.** A job's display name is derived from the run and the chunk. Before creating, and
  after a create whose outcome is unknown (a timeout, a reset, a 5xx), the client looks for a job with that name
  and adopts it, so a retried Beam bundle or a lost response never pays for the same lines twice.
* **Retries.** google-genai is built with no retries of its own; ours retry 408/429/5xx and transport errors with
  jittered exponential backoff (tenacity, injected sleep). A poll that keeps failing gives up after
  ``POLL_FAILURES`` polls in a row: the jobs are then reported with state ``UNKNOWN``.
* **Deadline.** ``wait`` cancels jobs still running after ``max_wait_s`` (Vertex itself ends jobs after 24 hours
  of running; they may queue up to 72 hours) and waits for them to stop, so their completed lines are still read.

Auth: ``adc`` uses Application Default Credentials (google-genai's own lookup); ``local_tokens`` (the emulator)
uses opaque tokens re-minted as they age, like the online path's `client.auth.LocalTokenSource`.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import httpx
import httpx2
import tenacity

from client.config import AuthKind, Target
from client.constants import LOCAL_TOKEN_LIFETIME_S, RETRYABLE_STATUS
from client.errors import register_secret

__all__ = ["BatchJobClient", "BatchTarget", "JobStatus", "POLL_FAILURES", "TERMINAL_STATES"]

log = logging.getLogger(__name__)

TERMINAL_STATES = frozenset({"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
                             "JOB_STATE_PARTIALLY_SUCCEEDED", "JOB_STATE_EXPIRED", "UNKNOWN"})
POLL_FAILURES = 10  # polls in a row that may fail before the job's state is given up as UNKNOWN
_MANAGED = re.compile(r"^(?P<root>https?://[^/]+)/(?P<version>v1|v1beta1)/projects/(?P<project>[^/]+)/locations/"
                      r"(?P<location>[^/]+)/endpoints/openapi$")


@dataclass(frozen=True)
class BatchTarget:
    """Where batch jobs are created: Vertex's managed Gemini in one project and location (or the emulator)."""

    root: str
    api_version: str
    project: str
    location: str
    auth: AuthKind

    @classmethod
    def from_target(cls, target: Target) -> "BatchTarget":
        """The batch API behind an online target; ValueError for targets that have none."""
        match = _MANAGED.match(target.base_url) if target.kind == "vertex" else None
        if match is None:
            raise ValueError("batch prediction needs Vertex's managed Gemini endpoint (--vertex_project, or "
                             "--emulator); an OpenAI-compatible server, a self-deployed or a dedicated endpoint "
                             "has no batch API")
        return cls(match["root"], match["version"], match["project"], match["location"], target.auth)


@dataclass
class JobStatus:
    name: str
    state: str
    successful: int = 0
    failed: int = 0
    incomplete: int = 0
    output_dir: str | None = None
    error: str | None = None
    seconds: float = 0.0  # from submission to the end of wait()

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def short_state(self) -> str:
        return self.state.removeprefix("JOB_STATE_")


def _retryable(exc: BaseException) -> bool:
    from google.genai import errors as genai_errors

    if isinstance(exc, genai_errors.APIError):
        return exc.code in RETRYABLE_STATUS
    return isinstance(exc, (httpx.TransportError, httpx2.TransportError, ConnectionError, TimeoutError))


def _local_credentials() -> Any:
    """google-auth credentials minting opaque tokens for the emulator (refreshed as they age)."""
    import datetime

    from google.auth import credentials

    class LocalCredentials(credentials.Credentials):
        def refresh(self, request: Any) -> None:
            self.token = "local-" + secrets.token_urlsafe(24)
            register_secret(self.token)
            self.expiry = (datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
                           + datetime.timedelta(seconds=LOCAL_TOKEN_LIFETIME_S))

    creds = LocalCredentials()
    creds.refresh(None)
    return creds


def genai_client(target: BatchTarget) -> Any:
    """A google-genai client on ``target`` (no retries of its own: this module owns them)."""
    from google import genai
    from google.genai import types

    creds = _local_credentials() if target.auth == "local_tokens" else None
    return genai.Client(vertexai=True, project=target.project, location=target.location, credentials=creds,
                        http_options=types.HttpOptions(base_url=target.root + "/", api_version=target.api_version))


def _status(job: Any) -> JobStatus:
    stats = getattr(job, "completion_stats", None)
    error = getattr(job, "error", None)
    info = getattr(job, "output_info", None)
    state = getattr(job, "state", None)
    return JobStatus(
        name=job.name, state=getattr(state, "name", None) or str(state or "JOB_STATE_UNSPECIFIED"),
        successful=int(getattr(stats, "successful_count", 0) or 0), failed=int(getattr(stats, "failed_count", 0) or 0),
        incomplete=int(getattr(stats, "incomplete_count", 0) or 0),
        output_dir=getattr(info, "gcs_output_directory", None),
        error=getattr(error, "message", None) if error is not None else None)


class BatchJobClient:
    """Submit, poll and cancel batch prediction jobs. Blocking calls (it runs in a DoFn's thread)."""

    def __init__(self, target: BatchTarget, *, client: Any = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, attempts: int = 6, max_backoff_s: float = 60.0) -> None:
        self.target = target
        self._client = client if client is not None else genai_client(target)
        self._sleep, self._clock = sleep, clock
        self._retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(attempts), retry=tenacity.retry_if_exception(_retryable),
            wait=tenacity.wait_random_exponential(multiplier=1, max=max_backoff_s), sleep=sleep, reraise=True)

    def _retry(self) -> tenacity.Retrying:
        return self._retrying.copy()  # a Retrying keeps per-call state

    def find(self, display_name: str) -> str | None:
        """The name of a job of this project and location with ``display_name``, if any (newest first)."""
        from google.genai import types

        config = types.ListBatchJobsConfig(page_size=100, filter=f'display_name="{display_name}"')

        def search() -> str | None:  # the pager fetches further pages as it is iterated: retry the whole search
            for job in self._client.batches.list(config=config):
                if getattr(job, "display_name", None) == display_name:
                    return job.name
            return None

        return self._retry()(search)

    def submit(self, *, model: str, input_uri: str, output_prefix: str, display_name: str) -> str:
        """Create the job (or adopt the one a previous attempt created); returns its resource name."""
        from google.genai import types

        existing = self.find(display_name)
        if existing:
            log.info("batch job %s already exists as %s: adopting it", display_name, existing)
            return existing
        config = types.CreateBatchJobConfig(dest=output_prefix, display_name=display_name)
        for attempt in self._retry():
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    existing = self.find(display_name)  # the last create may have happened after all
                    if existing:
                        return existing
                job = self._client.batches.create(model=model.removeprefix("google/"), src=input_uri, config=config)
        return job.name

    def status(self, name: str) -> JobStatus:
        return _status(self._retry()(self._client.batches.get, name=name))

    def cancel(self, name: str) -> None:
        try:
            self._retry()(self._client.batches.cancel, name=name)
        except Exception as exc:  # noqa: BLE001 - a job that already ended cannot be cancelled; wait() reads it
            log.warning("cancelling %s failed: %s", name, exc)

    def wait(self, names: Iterable[str], *, poll_s: float, max_wait_s: float,
             on_progress: Callable[[list[JobStatus], float], None] | None = None) -> dict[str, JobStatus]:
        """Poll until every job has ended; cancel those still running after ``max_wait_s``."""
        started = self._clock()
        current = {name: JobStatus(name, "JOB_STATE_PENDING") for name in names}
        failures = {name: 0 for name in current}
        cancelled: set[str] = set()
        while True:
            for name, job in current.items():
                if job.done:
                    continue
                try:
                    current[name] = self.status(name)
                    failures[name] = 0
                except Exception as exc:  # noqa: BLE001 - one failed poll is not the job's failure
                    failures[name] += 1
                    log.warning("polling %s failed (%d in a row): %s", name, failures[name], exc)
                    if failures[name] >= POLL_FAILURES:
                        current[name] = JobStatus(name, "UNKNOWN", error=f"the job could not be polled: {exc}")
            elapsed = self._clock() - started
            if on_progress is not None:
                on_progress(list(current.values()), elapsed)
            if all(job.done for job in current.values()):
                break
            if elapsed >= max_wait_s:
                for name, job in current.items():
                    if not job.done and name not in cancelled:
                        log.warning("batch job %s still %s after %.0f s: cancelling it", name, job.short_state,
                                    elapsed)
                        self.cancel(name)
                        cancelled.add(name)
            self._sleep(poll_s)
        for job in current.values():
            job.seconds = self._clock() - started
        return current
