"""What the core needs to know to call an endpoint: the target and the run's settings. Plain, picklable data.

    >>> target = Target.managed(project="my-proj", location="us-central1")
    >>> target.base_url
    'https://us-central1-aiplatform.googleapis.com/v1/projects/my-proj/locations/us-central1/endpoints/openapi'
    >>> Target.managed(project="p", location="global").base_url
    'https://aiplatform.googleapis.com/v1/projects/p/locations/global/endpoints/openapi'
    >>> config = ClientConfig(target=target, model="google/gemini-2.0-flash-001")

A ClientConfig is built from the pipeline options at construction time and pickled onto the DoFn; nothing in it
opens a connection or reads a credential. The DoFn builds the live client from it in ``setup()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from client.constants import MAX_RESPONSE_BYTES

__all__ = ["AuthKind", "ClientConfig", "Target"]

AuthKind = Literal["adc", "local_tokens", "api_key_env", "none"]


def _vertex_host(location: str) -> str:
    # The global location has no regional prefix on the host.
    return "aiplatform.googleapis.com" if location == "global" else f"{location}-aiplatform.googleapis.com"


@dataclass(frozen=True)
class Target:
    """Where requests go and how they authenticate.

    ``auth``: ``adc`` (Google Application Default Credentials, refreshed), ``local_tokens`` (the emulator's
    stand-in for ADC: a fresh opaque token on every refresh), ``api_key_env`` (a key read from the environment
    variable named ``api_key_env`` in the worker, never from the command line), ``none``.
    """

    base_url: str
    auth: AuthKind
    kind: Literal["vertex", "openai"] = "vertex"
    api_key_env: str | None = None

    @classmethod
    def managed(cls, project: str, location: str = "us-central1", *, api_version: str = "v1",
                root: str | None = None, auth: AuthKind = "adc") -> "Target":
        """Vertex's managed Gemini endpoint (``…/endpoints/openapi``). ``root`` overrides the scheme+host."""
        root = root or f"https://{_vertex_host(location)}"
        return cls(f"{root.rstrip('/')}/{api_version}/projects/{project}/locations/{location}/endpoints/openapi", auth)

    @classmethod
    def endpoint(cls, project: str, location: str, endpoint_id: str, *, api_version: str = "v1",
                 root: str | None = None, auth: AuthKind = "adc") -> "Target":
        """A self-deployed model on a Vertex endpoint (``…/endpoints/{ENDPOINT_ID}``)."""
        root = root or f"https://{_vertex_host(location)}"
        return cls(f"{root.rstrip('/')}/{api_version}/projects/{project}/locations/{location}/endpoints/{endpoint_id}",
                   auth)

    @classmethod
    def dedicated(cls, url: str, *, auth: AuthKind = "adc") -> "Target":
        """A dedicated endpoint's full URL (its own DNS name); requests go to ``{url}/chat/completions``."""
        return cls(url.rstrip("/").removesuffix("/chat/completions"), auth)

    @classmethod
    def openai_compatible(cls, base_url: str, api_key_env: str | None = None) -> "Target":
        """Any OpenAI-compatible server (``…/v1``); the key comes from the env var ``api_key_env`` if given."""
        return cls(base_url.rstrip("/"), "api_key_env" if api_key_env else "none", "openai", api_key_env)


@dataclass(frozen=True)
class ClientConfig:
    """The run's settings for the core client. Defaults match the CLI's."""

    target: Target
    model: str | None = None  # default model; a record's `model` overrides it
    system: str | None = None  # default system prompt for `prompt` records without `system`
    params: dict[str, Any] = field(default_factory=dict)  # default params (temperature, max_tokens, ...)
    google: dict[str, Any] = field(default_factory=dict)  # default extra_body.google (thinking_config, ...)
    schema: str | None = None  # default output schema spec (registry name, module:Class, path.json)
    stream: bool = False
    max_attempts: int = 6  # attempts per request, first one included
    request_timeout: float = 120.0  # seconds per attempt, in total: sending to the last byte, streaming included
    connect_timeout: float = 10.0
    record_deadline_s: float = 900.0  # one record, everything included: waits, attempts, backoff, re-asks
    max_retry_delay: float = 60.0  # cap on one backoff sleep (a server's retryDelay is honoured up to 120 s)
    max_reasks: int = 1  # re-ask turns after a schema-invalid answer
    max_concurrency: int = 64  # requests in flight per worker process
    rpm: float | None = None  # requests per minute cap per worker process
    tpm: float | None = None  # tokens per minute cap per worker process
    adaptive: bool = True  # AIMD: cut in-flight limit on 429/503, grow it on success
    media_root: str | None = None  # local files under this directory may be inlined as data URLs
    max_media_bytes: int = 20 * 1024 * 1024
    max_response_bytes: int = MAX_RESPONSE_BYTES  # a larger answer is a response_too_large error, never held whole
    service_tier: str = "standard"  # standard | flex | priority: Vertex's tier headers (client/tiers.py)
    # The results contract (README "Answers: function calling, structured output, cut-off answers"):
    tools: tuple[Any, ...] | None = None  # default `tools` (--tools FILE.json); a record's params.tools overrides
    tool_choice: Any = None  # default `tool_choice` (--tool_choice); a record's params.tool_choice overrides
    structured_output: Literal["json_schema", "tool"] = "json_schema"  # how a schema is asked (--structured_output)
    on_truncation: Literal["result", "error", "retry"] = "result"  # a cut-off answer (--on_truncation)
    schema_registry: tuple[str, ...] = ()  # modules that register() schemas records may name (--schema_registry)
