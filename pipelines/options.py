"""The extract job's options (Beam conventions: underscores, a PipelineOptions subclass) and their validation.

    opts = PipelineOptions(argv).view_as(ChatbeamOptions)
    plan = validate(PipelineOptions(argv))   # raises UsageError with a one-line message

Every standard Beam/Dataflow option (``--runner``, ``--project``, ``--region``, ``--temp_location``, ...) works too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from dataclasses import dataclass
from typing import Callable

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions

from client.batch_run import BatchSettings
from client.cache import CacheSettings
from client.config import ClientConfig, Target
from client.scrub import split_userinfo
from client.tiers import TierPlan
from pipelines.answer_options import add_answer_arguments, answer_settings
from pipelines.bigquery_options import add_bigquery_arguments, bigquery_io, dated
from pipelines.cache import add_cache_arguments, validate_cache
from pipelines.jobledger import add_ledger_arguments
from pipelines.modes import Modes, add_mode_arguments, validate_modes
from pipelines.nightly import NightlyPlan, add_nightly_arguments, parse_run_date, validate_nightly, with_run_date
from pipelines.reliability import ReliabilityPlan, add_reliability_arguments, check_numbers, check_paths
from schemas.records import DEFAULT_MAX_RECORD_BYTES
from transforms.bigquery import BigQueryIO

__all__ = ["ChatbeamOptions", "Plan", "UsageError", "validate"]

DEFAULT_MODEL = "google/gemini-2.0-flash-001"
EMULATOR_PROJECT = "chatbeam-local"


class UsageError(ValueError):
    """A bad command line: reported as one line and exit code 2, before any Beam work starts."""


def _add_io_arguments(parser) -> None:
    io = parser.add_argument_group("input and output")
    io.add_argument("--input", help="JSONL prompt records: a path or glob, local or gs://")
    io.add_argument("--output", help="results JSONL path prefix, local or gs://")
    io.add_argument("--errors", help="errors JSONL path prefix, local or gs:// (default: OUTPUT + '_errors')")
    io.add_argument("--num_shards", type=int, default=0, help="output shards per sink (0: the runner decides)")
    io.add_argument("--max_record_bytes", type=int, default=DEFAULT_MAX_RECORD_BYTES,
                    help="larger input records become read errors (default 1 MiB)")


def _add_target_arguments(parser) -> None:
    target = parser.add_argument_group("target (exactly one)")
    target.add_argument("--emulator", action="store_true",
                        help="start the local Vertex emulator for this run (DirectRunner only)")
    target.add_argument("--emulator_url",
                        help="use an already-running chatbeam emulator at this URL (e.g. http://127.0.0.1:8090)")
    target.add_argument("--emulator_args", default="",
                        help='extra flags for the emulator, e.g. "--latency_ms 50 --token_ttl_s 2"')
    target.add_argument("--vertex_project", help="Vertex project (default: --project); managed Gemini endpoint")
    target.add_argument("--vertex_location", default="us-central1", help="Vertex location (default us-central1)")
    target.add_argument("--vertex_api_version", default="v1", choices=["v1", "v1beta1"])
    target.add_argument("--endpoint_id", help="a self-deployed model's Vertex endpoint id (same project/location)")
    target.add_argument("--endpoint_url", help="a dedicated endpoint's full URL")
    target.add_argument("--base_url", help="any OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1")
    target.add_argument("--api_key_env", help="name of the environment variable holding the --base_url API key")


def _add_request_arguments(parser) -> None:
    req = parser.add_argument_group("requests")
    req.add_argument("--model", help=f"default model (managed Vertex/emulator default: {DEFAULT_MODEL})")
    req.add_argument("--system", help="default system prompt for records without one")
    req.add_argument("--params", default="{}", help='default params as JSON, e.g. \'{"temperature": 0}\'')
    req.add_argument("--temperature", type=float)
    req.add_argument("--max_tokens", type=int)
    req.add_argument("--schema", help="output schema for every record: a registry name, module:Class, or a "
                                      "JSON-schema file (records may name only registry schemas or this one)")
    req.add_argument("--stream", action="store_true", help="stream responses and assemble them")
    req.add_argument("--thinking_budget", type=int, help="extra_body.google.thinking_config.thinking_budget")
    req.add_argument("--include_thoughts", action="store_true",
                     help="extra_body.google.thinking_config.include_thoughts")
    req.add_argument("--thought_tag_marker", help='e.g. "think": thoughts arrive inline as <think>…</think>')
    req.add_argument("--reasoning_effort", choices=["none", "minimal", "low", "medium", "high"])
    req.add_argument("--media_root", help="local files under this directory may be inlined as data URLs")


def _add_limit_arguments(parser) -> None:
    limits = parser.add_argument_group("retries and limits (--rpm/--tpm for the whole job, the rest per worker "
                                       "process)")
    limits.add_argument("--max_concurrency", type=int, default=64, help="requests in flight (default 64)")
    limits.add_argument("--rpm", type=float,
                        help="requests per minute for the whole job, shared by its worker processes")
    limits.add_argument("--tpm", type=float,
                        help="tokens per minute for the whole job, shared by its worker processes")
    limits.add_argument("--no_adaptive_throttling", action="store_true",
                        help="turn off AIMD (cut concurrency on 429/503, grow it on success)")
    # Defaults (None here) depend on --service_tier: pipelines/modes.py
    limits.add_argument("--max_attempts", type=int, help="attempts per request (default 6; flex 10)")
    limits.add_argument("--request_timeout", type=float,
                        help="seconds per attempt in total, sending to the last byte (default 120; flex 1200)")
    limits.add_argument("--record_deadline", type=float,
                        help="seconds per record, everything included: waits, attempts, backoff, re-asks "
                             "(default 900; flex 3600)")
    limits.add_argument("--max_reasks", type=int, default=1,
                        help="re-ask turns after a schema-invalid answer (default 1)")


# In the README's order (chatbeam --help shows the groups this way).
_ARGUMENT_GROUPS = (_add_io_arguments, _add_target_arguments, _add_request_arguments, _add_limit_arguments,
                    add_answer_arguments, add_reliability_arguments, add_mode_arguments, add_ledger_arguments,
                    add_nightly_arguments, add_cache_arguments, add_bigquery_arguments)


class ChatbeamOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        for add_arguments in _ARGUMENT_GROUPS:
            add_arguments(parser)


@dataclass(frozen=True)
class Plan:
    """A validated command line: what to read, where to write, what to call."""

    input: str  # "" when reading BigQuery or --replay_errors
    output: str | None  # the results path prefix; None when writing --output_table
    errors: str | None  # the errors path prefix; None when writing --errors_table
    num_shards: int
    max_record_bytes: int
    client: ClientConfig  # for --emulator, its target is filled in once the emulator is up
    emulator: bool
    emulator_args: str
    vertex_location: str = "us-central1"
    nightly: NightlyPlan = NightlyPlan()  # run date, resume, replay, dry run, budget (pipelines/nightly.py)
    bigquery: BigQueryIO = BigQueryIO()  # tables and queries (pipelines/bigquery_options.py)
    reliability: ReliabilityPlan = ReliabilityPlan()  # --max_error_rate, --force (pipelines/reliability.py)
    mode: str = "online"  # or "batch" (pipelines/modes.py)
    tiers: TierPlan = TierPlan()  # the online service tier and its deadline
    batch: BatchSettings | None = None  # --mode batch
    cache: CacheSettings | None = None  # --cache (pipelines/cache.py); None: no cache


# The targets, in the order a "choose exactly one" error names them; --vertex_project counts only without --endpoint_id
# (which needs it).
_TARGET_FLAGS = ("emulator", "emulator_url", "endpoint_url", "base_url", "endpoint_id", "vertex_project")


def _targets_given(o: ChatbeamOptions) -> list[str]:
    given = [name for name in _TARGET_FLAGS if getattr(o, name)]
    if "endpoint_id" in given and "vertex_project" in given:
        given.remove("vertex_project")
    return [f"--{name}" for name in given]


def _unset_key_env(name: str) -> str:
    # The value is echoed only when it looks like a variable name: a user who passed the key itself by mistake
    # must not see it printed (or logged by a scheduler).
    if re.fullmatch(r"[A-Z_][A-Z0-9_]{0,63}", name):
        return f"--api_key_env names {name}, but that environment variable is not set"
    return ("--api_key_env must be the NAME of an environment variable holding the key (e.g. MY_API_KEY), not the "
            "key itself; the value given is not a set variable (not shown)")


def _target(o: ChatbeamOptions, project: str | None) -> Target | None:
    given = _targets_given(o)
    if len(given) > 1:
        raise UsageError(f"choose exactly one target; got {' and '.join(given)}")
    if not given:
        if project:  # Beam's --project alone means the managed Gemini endpoint in that project
            return Target.managed(project, o.vertex_location, api_version=o.vertex_api_version)
        raise UsageError("no target: give --emulator, --vertex_project (or --project), --endpoint_id, "
                         "--endpoint_url or --base_url")
    kind = given[0]
    if kind == "--emulator":
        return None
    if kind == "--emulator_url":
        return Target.managed(EMULATOR_PROJECT, o.vertex_location, api_version=o.vertex_api_version,
                              root=o.emulator_url, auth="local_tokens")
    if kind == "--base_url":
        if o.api_key_env and not os.environ.get(o.api_key_env):
            raise UsageError(_unset_key_env(o.api_key_env))
        split_userinfo(o.base_url)  # a password in the URL becomes a live secret: redacted from this process's logs
        return Target.openai_compatible(o.base_url, o.api_key_env)
    if kind == "--endpoint_url":
        return Target.dedicated(o.endpoint_url)
    vertex_project = o.vertex_project or project
    if not vertex_project:
        raise UsageError("--endpoint_id needs --vertex_project (or --project)")
    if kind == "--endpoint_id":
        return Target.endpoint(vertex_project, o.vertex_location, o.endpoint_id, api_version=o.vertex_api_version)
    return Target.managed(vertex_project, o.vertex_location, api_version=o.vertex_api_version)


def _params(o: ChatbeamOptions) -> dict:
    try:
        params = json.loads(o.params or "{}")
    except json.JSONDecodeError as exc:
        raise UsageError(f"--params is not valid JSON: {exc}") from None
    if not isinstance(params, dict):
        raise UsageError("--params must be a JSON object")
    if o.temperature is not None:
        params["temperature"] = o.temperature
    if o.max_tokens is not None:
        params["max_tokens"] = o.max_tokens
    if o.reasoning_effort:
        params["reasoning_effort"] = o.reasoning_effort
    return params


def _google(o: ChatbeamOptions) -> dict:
    google: dict = {}
    thinking = {}
    if o.thinking_budget is not None:
        thinking["thinking_budget"] = o.thinking_budget
    if o.include_thoughts:
        thinking["include_thoughts"] = True
    if thinking:
        google["thinking_config"] = thinking
    if o.thought_tag_marker:
        google["thought_tag_marker"] = o.thought_tag_marker
    return google


@contextlib.contextmanager
def _one_line():
    """The option modules raise ValueError with a one-line message: here it becomes a UsageError (exit 2)."""
    try:
        yield
    except UsageError:
        raise
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@dataclass(frozen=True)
class _Parsed:
    """What the cross-option rules look at: the options and the parts already checked on their own."""

    o: ChatbeamOptions
    bq: BigQueryIO
    output: str | None = None
    nightly: NightlyPlan | None = None
    runner: str | None = None
    params: dict | None = None
    google: dict | None = None
    modes: Modes | None = None


# Each rule: (when it is broken, the one-line error). Checked in order, each table once its parts are parsed.
_Rule = tuple[Callable[[_Parsed], bool], Callable[[_Parsed], str]]
_SOURCE_RULES: tuple[_Rule, ...] = (
    (lambda c: not (c.o.input or c.o.replay_errors or c.bq.reads),
     lambda c: "no input: give --input (a JSONL path or glob), --input_table or --input_query"),
    (lambda c: not (c.o.output or c.bq.output_table),
     lambda c: "no output: give --output (a path prefix for the results) or --output_table"),
)
_RUN_RULES: tuple[_Rule, ...] = (
    (lambda c: not c.output and (c.nightly.dry_run or (c.nightly.resume and not c.nightly.checkpoint_dir)),
     lambda c: "--dry_run and --resume keep files beside the results: give --output, or for --resume a "
               "--checkpoint_dir"),
)
_RUNNER_RULES: tuple[_Rule, ...] = (
    (lambda c: bool(_local_only(c)) and c.runner not in _DIRECT_RUNNERS,
     lambda c: f"{_local_only(c)[0]} works only with DirectRunner, not {c.runner}"),
)
_REQUEST_RULES: tuple[_Rule, ...] = (
    (lambda c: "reasoning_effort" in c.params and "thinking_config" in c.google,
     lambda c: "--reasoning_effort and thinking options (--thinking_budget/--include_thoughts) cannot be combined: "
               "Vertex rejects requests that carry both"),
)
_MODE_RULES: tuple[_Rule, ...] = (
    (lambda c: c.modes.mode == "batch" and bool(c.o.model) and not c.o.model.startswith("google/gemini-"),
     lambda c: f"--mode batch sends Gemini's native format: --model {c.o.model} is not a google/gemini-* model"),
    (lambda c: c.modes.tiers.deadline is not None and not (c.o.input or c.o.replay_errors),
     lambda c: "--deadline needs --input (or --replay_errors) files: it counts them to project the finish"),
    *((lambda c, name=name: _value(c, name) < 1, lambda c, name=name: f"--{name} must be at least 1")
      for name in ("max_concurrency", "max_attempts", "max_record_bytes")),
    (lambda c: c.modes.request_timeout <= 0, lambda c: "--request_timeout must be positive"),
    (lambda c: bool(c.o.media_root) and not os.path.isdir(c.o.media_root),
     lambda c: f"--media_root {c.o.media_root!r} is not a directory"),
)
_DIRECT_RUNNERS = (None, "DirectRunner", "direct", "BundleBasedDirectRunner")


def _local_only(c: _Parsed) -> list[str]:
    return [flag for flag, on in (("--emulator", c.o.emulator), ("--bigquery_endpoint", c.bq.endpoint)) if on]


def _value(c: _Parsed, name: str):
    """An option's value after the tier defaults (pipelines/modes.py) are applied."""
    return getattr(c.modes, name) if hasattr(c.modes, name) else getattr(c.o, name)


def _enforce(rules: tuple[_Rule, ...], c: _Parsed) -> None:
    for broken, message in rules:
        if broken(c):
            raise UsageError(message(c))


def validate(options: PipelineOptions) -> Plan:
    """Check the command line and turn it into a Plan; raises UsageError (one line) on anything wrong."""
    o = options.view_as(ChatbeamOptions)
    with _one_line():
        c = _Parsed(o=o, bq=bigquery_io(o))
        _enforce(_SOURCE_RULES, c)
        run_date = parse_run_date(o.run_date)
        output = with_run_date(o.output, run_date)
        errors = with_run_date(o.errors, run_date) or (f"{output}_errors" if output and not c.bq.errors_table
                                                       else None)
        nightly = validate_nightly(o, output=output, errors=errors)
        reliability = check_numbers(o)
        cache = validate_cache(o, prices=nightly.price_table)
        check_paths(input=with_run_date(o.input, run_date), output=output, errors=errors,
                    checkpoint_dir=nightly.checkpoint_dir, replay=nightly.replay_errors,
                    cache=cache.location if cache else None)
        c = dataclasses.replace(c, bq=dated(c.bq, run_date), output=output, nightly=nightly,
                                runner=options.view_as(StandardOptions).runner)
        _enforce(_RUN_RULES, c)
        target = _target(o, options.view_as(GoogleCloudOptions).project)
        _enforce(_RUNNER_RULES, c)
        c = dataclasses.replace(c, params=_params(o), google=_google(o))
        _enforce(_REQUEST_RULES, c)
        answers = answer_settings(o)  # --tools, --tool_choice, --structured_output, --on_truncation, schemas
        c = dataclasses.replace(c, modes=_modes(o, options, target))
        _enforce(_MODE_RULES, c)
    return Plan(input=with_run_date(o.input, run_date) or "", output=output, errors=errors,
                num_shards=o.num_shards, max_record_bytes=o.max_record_bytes, client=_client_config(c, target, answers),
                emulator=o.emulator, emulator_args=o.emulator_args, vertex_location=o.vertex_location,
                nightly=nightly, bigquery=c.bq, cache=cache, reliability=reliability, mode=c.modes.mode,
                tiers=c.modes.tiers, batch=c.modes.batch)


def _default_model(o: ChatbeamOptions, target: Target | None) -> str | None:
    """--model, else the managed Gemini default where there is one (the emulator, Vertex's managed endpoint)."""
    if o.model is not None:
        return o.model
    managed_vertex = target is not None and target.kind == "vertex" and not (o.endpoint_id or o.endpoint_url)
    return DEFAULT_MODEL if (o.emulator or o.emulator_url or managed_vertex) else None


def _client_config(c: _Parsed, target: Target | None, answers: dict) -> ClientConfig:
    o, modes = c.o, c.modes
    return ClientConfig(
        target=target or Target("http://emulator.invalid", "local_tokens"),
        model=_default_model(o, target), system=o.system, params=c.params, google=c.google, schema=o.schema,
        stream=o.stream, max_attempts=modes.max_attempts, request_timeout=modes.request_timeout,
        record_deadline_s=modes.record_deadline,
        max_reasks=o.max_reasks, max_concurrency=o.max_concurrency, rpm=o.rpm, tpm=o.tpm,
        adaptive=not o.no_adaptive_throttling,
        media_root=os.path.realpath(o.media_root) if o.media_root else None,
        max_response_bytes=o.max_response_bytes,
        service_tier=o.service_tier, **answers,
    )


def _modes(o: ChatbeamOptions, options: PipelineOptions, target: Target | None) -> Modes:
    """--mode, --service_tier, --deadline (pipelines/modes.py); the emulator (target None) counts as managed."""
    managed = target is None or (target.kind == "vertex" and target.base_url.endswith("/endpoints/openapi"))
    return validate_modes(o, managed=managed, temp_location=options.view_as(GoogleCloudOptions).temp_location,
                          emulator=bool(o.emulator or o.emulator_url))
