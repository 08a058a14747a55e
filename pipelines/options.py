"""The extract job's options (Beam conventions: underscores, a PipelineOptions subclass) and their validation.

    opts = PipelineOptions(argv).view_as(ChatbeamOptions)
    plan = validate(PipelineOptions(argv))   # raises UsageError with a one-line message

Every standard Beam/Dataflow option (``--runner``, ``--project``, ``--region``, ``--temp_location``, ...) works too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions

from client.batch_run import BatchSettings
from client.cache import CacheSettings
from client.config import ClientConfig, Target
from client.scrub import split_userinfo
from client.tiers import TierPlan
from pipelines.answer_options import add_answer_arguments, answer_settings
from pipelines.cache import add_cache_arguments, validate_cache
from pipelines.jobledger import add_ledger_arguments
from pipelines.modes import Modes, add_mode_arguments, validate_modes
from pipelines.nightly import NightlyPlan, add_nightly_arguments, parse_run_date, validate_nightly, with_run_date
from pipelines.reliability import ReliabilityPlan, add_reliability_arguments, check_numbers, check_paths
from schemas.records import DEFAULT_MAX_RECORD_BYTES
from transforms.bigquery import BigQueryIO, add_bigquery_arguments

__all__ = ["ChatbeamOptions", "Plan", "UsageError", "validate"]

DEFAULT_MODEL = "google/gemini-2.0-flash-001"
EMULATOR_PROJECT = "chatbeam-local"


class UsageError(ValueError):
    """A bad command line: reported as one line and exit code 2, before any Beam work starts."""


class ChatbeamOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        io = parser.add_argument_group("input and output")
        io.add_argument("--input", help="JSONL prompt records: a path or glob, local or gs://")
        io.add_argument("--output", help="results JSONL path prefix, local or gs://")
        io.add_argument("--errors", help="errors JSONL path prefix, local or gs:// (default: OUTPUT + '_errors')")
        io.add_argument("--num_shards", type=int, default=0, help="output shards per sink (0: the runner decides)")
        io.add_argument("--max_record_bytes", type=int, default=DEFAULT_MAX_RECORD_BYTES,
                        help="larger input records become read errors (default 1 MiB)")

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
        add_answer_arguments(parser)
        add_reliability_arguments(parser)
        add_mode_arguments(parser)
        add_ledger_arguments(parser)
        add_nightly_arguments(parser)
        add_cache_arguments(parser)
        add_bigquery_arguments(parser)


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
    bigquery: BigQueryIO = BigQueryIO()  # tables and queries (transforms/bigquery.py)
    reliability: ReliabilityPlan = ReliabilityPlan()  # --max_error_rate, --force (pipelines/reliability.py)
    mode: str = "online"  # or "batch" (pipelines/modes.py)
    tiers: TierPlan = TierPlan()  # the online service tier and its deadline
    batch: BatchSettings | None = None  # --mode batch
    cache: CacheSettings | None = None  # --cache (pipelines/cache.py); None: no cache


def _targets_given(o: ChatbeamOptions) -> list[str]:
    given = []
    if o.emulator:
        given.append("--emulator")
    if o.emulator_url:
        given.append("--emulator_url")
    if o.endpoint_url:
        given.append("--endpoint_url")
    if o.base_url:
        given.append("--base_url")
    if o.endpoint_id:
        given.append("--endpoint_id")
    elif o.vertex_project:
        given.append("--vertex_project")
    return given


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


def validate(options: PipelineOptions) -> Plan:
    """Check the command line and turn it into a Plan; raises UsageError (one line) on anything wrong."""
    o = options.view_as(ChatbeamOptions)
    project = options.view_as(GoogleCloudOptions).project
    try:
        bq = BigQueryIO.from_options(o)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not (o.input or o.replay_errors or bq.reads):
        raise UsageError("no input: give --input (a JSONL path or glob), --input_table or --input_query")
    if not (o.output or bq.output_table):
        raise UsageError("no output: give --output (a path prefix for the results) or --output_table")
    try:
        run_date = parse_run_date(o.run_date)
        output = with_run_date(o.output, run_date)
        errors = with_run_date(o.errors, run_date) or (f"{output}_errors" if output and not bq.errors_table else None)
        nightly = validate_nightly(o, output=output, errors=errors)
        reliability = check_numbers(o)
        cache = validate_cache(o, prices=nightly.price_table)
        check_paths(input=with_run_date(o.input, run_date), output=output, errors=errors,
                    checkpoint_dir=nightly.checkpoint_dir, replay=nightly.replay_errors,
                    cache=cache.location if cache else None)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    # In table names {run_date} is YYYYMMDD, BigQuery's date-sharded convention (Beam's table references allow no
    # dashes); in a query it stays YYYY-MM-DD, fit for a DATE literal.
    compact = run_date.replace("-", "")
    bq = dataclasses.replace(bq, input_query=with_run_date(bq.input_query, run_date),
                             **{name: with_run_date(getattr(bq, name), compact)
                                for name in ("input_table", "output_table", "errors_table")})
    if not output and (nightly.dry_run or (nightly.resume and not nightly.checkpoint_dir)):
        raise UsageError("--dry_run and --resume keep files beside the results: give --output, or for --resume a "
                         "--checkpoint_dir")
    target = _target(o, project)
    runner = options.view_as(StandardOptions).runner
    local_only = [flag for flag, on in (("--emulator", o.emulator), ("--bigquery_endpoint", bq.endpoint)) if on]
    if local_only and runner and runner not in ("DirectRunner", "direct", "BundleBasedDirectRunner"):
        raise UsageError(f"{local_only[0]} works only with DirectRunner, not {runner}")
    params = _params(o)
    google = _google(o)
    if "reasoning_effort" in params and "thinking_config" in google:
        raise UsageError("--reasoning_effort and thinking options (--thinking_budget/--include_thoughts) "
                         "cannot be combined: Vertex rejects requests that carry both")
    try:
        answers = answer_settings(o)  # --tools, --tool_choice, --structured_output, --on_truncation, schemas
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    modes = _modes(o, options, target)
    if modes.mode == "batch" and o.model and not o.model.startswith("google/gemini-"):
        raise UsageError(f"--mode batch sends Gemini's native format: --model {o.model} is not a google/gemini-* "
                         "model")
    if modes.tiers.deadline is not None and not (o.input or o.replay_errors):
        raise UsageError("--deadline needs --input (or --replay_errors) files: it counts them to project the finish")
    for name, value in (("max_concurrency", o.max_concurrency), ("max_attempts", modes.max_attempts),
                        ("max_record_bytes", o.max_record_bytes)):
        if value < 1:
            raise UsageError(f"--{name} must be at least 1")
    if modes.request_timeout <= 0:
        raise UsageError("--request_timeout must be positive")
    if o.media_root and not os.path.isdir(o.media_root):
        raise UsageError(f"--media_root {o.media_root!r} is not a directory")
    model = o.model
    if model is None and (o.emulator or o.emulator_url or (target is not None and target.kind == "vertex" and not o.endpoint_id
                                         and not o.endpoint_url)):
        model = DEFAULT_MODEL
    client = ClientConfig(
        target=target or Target("http://emulator.invalid", "local_tokens"),
        model=model, system=o.system, params=params, google=google, schema=o.schema, stream=o.stream,
        max_attempts=modes.max_attempts, request_timeout=modes.request_timeout,
        record_deadline_s=modes.record_deadline,
        max_reasks=o.max_reasks, max_concurrency=o.max_concurrency, rpm=o.rpm, tpm=o.tpm,
        adaptive=not o.no_adaptive_throttling,
        media_root=os.path.realpath(o.media_root) if o.media_root else None,
        max_response_bytes=o.max_response_bytes,
        service_tier=o.service_tier, **answers,
    )
    return Plan(input=with_run_date(o.input, run_date) or "", output=output, errors=errors,
                num_shards=o.num_shards, max_record_bytes=o.max_record_bytes, client=client, emulator=o.emulator,
                emulator_args=o.emulator_args, vertex_location=o.vertex_location, nightly=nightly,
                bigquery=bq, cache=cache, reliability=reliability, mode=modes.mode, tiers=modes.tiers,
                batch=modes.batch)


def _modes(o: ChatbeamOptions, options: PipelineOptions, target: Target | None) -> Modes:
    """--mode, --service_tier, --deadline (pipelines/modes.py); the emulator (target None) counts as managed."""
    managed = target is None or (target.kind == "vertex" and target.base_url.endswith("/endpoints/openapi"))
    try:
        return validate_modes(o, managed=managed, temp_location=options.view_as(GoogleCloudOptions).temp_location,
                              emulator=bool(o.emulator or o.emulator_url))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
