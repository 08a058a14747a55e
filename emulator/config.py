"""Emulator configuration: dataclasses buildable from code, argv or a JSON file.

Precedence: defaults < ``--config file.json`` < explicit flags.  The JSON file holds
the `EmulatorConfig` keys and the `FaultConfig` keys side by side (flat), or the fault
keys under ``"faults"``; ``POST /emulator/faults`` takes the same fault keys.

Usage::

    cfg = EmulatorConfig(seed=7, faults=FaultConfig(latency_ms=300, capacity_rps=50))
    cfg = EmulatorConfig.from_argv(["--port", "0", "--error_500_rate", "0.1"])
    cfg = EmulatorConfig.from_json("faults.json")
    faults = FaultConfig.from_dict({"storm_429_s": 3})
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

__all__ = ["EmulatorConfig", "FaultConfig", "DEFAULT_MODELS", "DEFAULT_THINKING_MODELS", "parse_endpoints"]

DEFAULT_MODELS: tuple[str, ...] = (
    "google/gemini-2.0-flash-001",
    "google/gemini-2.0-flash-lite-001",
    "google/gemini-2.5-flash",
    "google/gemini-2.5-pro",
    "google/gemini-2.5-flash-preview-04-17",
    "google/gemini-2.5-flash-lite",
)
DEFAULT_THINKING_MODELS: tuple[str, ...] = tuple(m for m in DEFAULT_MODELS if "2.5" in m)

_RATES = (
    "error_500_rate",
    "error_503_rate",
    "hang_rate",
    "reset_rate",
    "stream_drop_rate",
    "malformed_rate",
    "schema_violation_rate",
    "truncate_rate",
    "flex_429_rate",
    "batch_line_failure_rate",
    "batch_job_failure_rate",
    "batch_fail_at",
)
_BOOLS = ("retry_info", "flex_global_only", "storm_from_first_request")


@dataclass(frozen=True)
class FaultConfig:
    """Fault settings; every rate is a probability per admitted request (0..1).

    ``reset_rate + hang_rate + error_500_rate + error_503_rate`` must be <= 1 (one draw
    picks at most one of them); the other rates are drawn independently on 200 answers.
    """

    latency_ms: float = 0.0  # mean simulated generation time
    latency_jitter_ms: float = 0.0  # uniform +/- around the mean, clipped at 0
    capacity_rps: float = 0.0  # admitted requests per sliding 1 s window; 0 = unlimited
    retry_info: bool = True  # put google.rpc.RetryInfo into 429 bodies
    retry_delay_s: float = 1.0
    storm_429_s: float = 0.0  # every request 429 for this long from when the faults are set
    storm_from_first_request: bool = False  # the storm starts with the first request after the set instead
    error_500_rate: float = 0.0
    error_503_rate: float = 0.0
    hang_rate: float = 0.0
    hang_s: float = 3600.0
    reset_rate: float = 0.0
    stream_drop_rate: float = 0.0
    malformed_rate: float = 0.0
    schema_violation_rate: float = 0.0
    truncate_rate: float = 0.0
    token_ttl_s: float = 0.0  # 0 = tokens never expire
    # Service tiers (emulator/tiers.py): flex is slower and throttled sooner, priority gets more of the pool.
    flex_latency_factor: float = 3.0
    flex_capacity_share: float = 0.5  # flex is admitted while the window holds < capacity_rps x this
    flex_429_rate: float = 0.0  # extra 429s for flex requests even below capacity
    priority_latency_factor: float = 1.0
    priority_capacity_share: float = 1.25
    flex_global_only: bool = True  # flex / priority headers outside locations/global -> 400
    # Batch prediction jobs (emulator/batch.py).
    batch_queue_s: float = 0.2  # time a job stays PENDING
    batch_duration_s: float = 1.0  # time a job stays RUNNING (its lines are answered evenly over it)
    batch_line_failure_rate: float = 0.0  # a line fails (status set, no response)
    batch_job_failure_rate: float = 0.0  # a job fails (FAILED) after batch_fail_at of its lines
    batch_fail_at: float = 0.5
    batch_max_requests: float = 200000.0  # lines per job; more -> the job FAILS

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _BOOLS:
                if not isinstance(value, bool):
                    raise ValueError(f"{f.name} must be a boolean")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ValueError(f"{f.name} must be a number")
            if value < 0:
                raise ValueError(f"{f.name} must be >= 0")
            if f.name in _RATES and value > 1:
                raise ValueError(f"{f.name} must be <= 1")
        exclusive = self.reset_rate + self.hang_rate + self.error_500_rate + self.error_503_rate
        if exclusive > 1 + 1e-9:
            raise ValueError("reset_rate + hang_rate + error_500_rate + error_503_rate must be <= 1")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FaultConfig":
        """Build from a JSON object; unknown keys raise ValueError."""
        if not isinstance(data, dict):
            raise ValueError("faults must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown fault keys: {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_endpoints(text: str) -> dict[str, str]:
    """``"1234=gemma-2-9b-it,99=llama"`` -> ``{"1234": "gemma-2-9b-it", "99": "llama"}``."""
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        endpoint, sep, model = item.partition("=")
        if not endpoint.isdigit():
            raise ValueError(f"endpoint id must be numeric: {item!r}")
        out[endpoint] = model.strip() if sep else ""
    return out


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything the app factory needs.

    ``deployed_endpoints=None`` lets every numeric endpoint id answer; a mapping restricts
    them to ``{endpoint_id: model_name}``.  ``api_key`` guards only the plain ``/v1`` routes.
    ``thinking_by_default`` makes thinking models think (and bill reasoning tokens) even
    without a thinking_config, as Gemini 2.5 does.
    """

    host: str = "127.0.0.1"
    port: int = 8090
    seed: int = 0
    models: tuple[str, ...] = DEFAULT_MODELS
    thinking_models: tuple[str, ...] = DEFAULT_THINKING_MODELS
    thinking_by_default: bool = False
    deployed_endpoints: dict[str, str] | None = None
    api_key: str | None = field(default=None, repr=False)
    access_log: bool = False
    faults: FaultConfig = field(default_factory=FaultConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EmulatorConfig":
        """Build from a JSON object: config keys, plus fault keys flat or under ``"faults"``."""
        if not isinstance(data, dict):
            raise ValueError("config must be a JSON object")
        data = dict(data)
        fault_names = {f.name for f in dataclasses.fields(FaultConfig)}
        faults = dict(data.pop("faults", None) or {})
        faults.update({k: data.pop(k) for k in list(data) if k in fault_names})
        names = {f.name for f in dataclasses.fields(cls)} - {"faults"}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        for key in ("models", "thinking_models"):
            if key in data:
                data[key] = tuple(data[key])
        if isinstance(data.get("deployed_endpoints"), str):
            data["deployed_endpoints"] = parse_endpoints(data["deployed_endpoints"])
        return cls(**data, faults=FaultConfig.from_dict(faults))

    @classmethod
    def from_json(cls, path: str) -> "EmulatorConfig":
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))

    @classmethod
    def from_argv(cls, argv: Sequence[str] | None = None) -> "EmulatorConfig":
        """Parse ``python -m emulator`` flags (see ``--help``)."""
        args = vars(_parser().parse_args(argv))
        base = cls.from_json(args.pop("config")) if args.get("config") else cls()
        args.pop("config", None)
        merged = base.to_dict()
        merged.update(args)
        return cls.from_dict(merged)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "faults"}
        out.update(self.faults.to_dict())
        return out

    def with_faults(self, **changes: Any) -> "EmulatorConfig":
        """A copy with some fault settings changed: ``cfg.with_faults(latency_ms=300)``."""
        return dataclasses.replace(self, faults=dataclasses.replace(self.faults, **changes))


def _csv(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m emulator",
        description="Local emulator of Vertex AI's OpenAI-compatible Chat Completions API.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--config", help="JSON file with config and fault keys (flags override it)")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port; 0 picks a free one (default 8090)")
    p.add_argument("--seed", type=int, help="seed for answers and fault draws (default 0)")
    p.add_argument("--models", type=_csv, help="comma-separated known managed models (google/...)")
    p.add_argument("--thinking_models", type=_csv, help="comma-separated models that can think")
    p.add_argument("--thinking_by_default", action="store_true", help="thinking models think unasked")
    p.add_argument("--deployed_endpoints", type=_endpoints, help="ID=MODEL,... (default: any numeric id)")
    p.add_argument("--api_key", help="key required on the plain /v1 routes (default: none)")
    p.add_argument("--access_log", action="store_true", help="uvicorn access log (no headers are logged)")
    for f in dataclasses.fields(FaultConfig):
        if f.name in _BOOLS:
            p.add_argument(f"--{f.name}", type=_bool, help=f"fault: {f.name} (default {str(f.default).lower()})")
        else:
            p.add_argument(f"--{f.name}", type=float, help=f"fault: {f.name} (default {f.default})")
    return p


def _endpoints(text: str) -> dict[str, str]:
    try:
        return parse_endpoints(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")
