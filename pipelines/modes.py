"""How the records are sent: online at a service tier (``--service_tier``, ``--deadline``) or through Vertex batch
prediction jobs (``--mode batch``). Option parsing and validation only.

    add_mode_arguments(parser)                           # from ChatbeamOptions._add_argparse_args
    modes = validate_modes(o, managed=True, vertex=True, temp_location="gs://b/tmp")   # ValueError: one line

* ``--service_tier flex|priority`` sends Vertex's tier headers; only Vertex's managed Gemini endpoint (or the
  emulator) on ``--vertex_location global`` serves them, so anything else is a CLI error unless
  ``--force_service_tier``. Flex raises the defaults of ``--request_timeout`` (1200 s: Google's flex default is
  20 minutes, at most 30), ``--record_deadline`` (3600 s) and ``--max_attempts`` (10), because flex answers slowly
  and is throttled sooner.
* ``--deadline`` (``HH:MM`` UTC — the next such time —, or an ISO timestamp): with flex (or standard) the remaining
  requests escalate to standard, then priority, when the projected finish passes it (client/tiers.py).
* ``--mode batch`` needs Vertex's managed Gemini endpoint (or ``--emulator``) and a gs:// staging prefix
  (``--batch_staging``, default ``{--temp_location}/chatbeam-batch``).
"""

from __future__ import annotations

import argparse
import datetime
from dataclasses import dataclass
from typing import Any

from client.batch_run import BatchSettings
from client.tiers import ONLINE_TIERS, TierPlan

__all__ = ["DEFAULTS", "FLEX_DEFAULTS", "Modes", "add_mode_arguments", "parse_deadline", "validate_modes"]

DEFAULTS = {"request_timeout": 120.0, "record_deadline": 900.0, "max_attempts": 6}
FLEX_DEFAULTS = {"request_timeout": 1200.0, "record_deadline": 3600.0, "max_attempts": 10}
MAX_FLEX_TIMEOUT_S = 1800.0  # Google: a flex request may run at most 30 minutes


def add_mode_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("service tiers and batch prediction")
    group.add_argument("--mode", choices=["online", "batch"], default="online",
                       help="online (Chat Completions calls, the default) or batch (Vertex batch prediction jobs: "
                            "half price, up to a day)")
    group.add_argument("--service_tier", choices=list(ONLINE_TIERS), default="standard",
                       help="online tier on Vertex: standard, flex (half price, slower) or priority (faster, dearer)")
    group.add_argument("--force_service_tier", action="store_true",
                       help="send the tier headers even to a target that is not Vertex's managed global endpoint")
    group.add_argument("--deadline", help="HH:MM (UTC) or an ISO timestamp: escalate flex → standard → priority "
                                          "when the projected finish passes it")
    group.add_argument("--batch_staging", help="gs:// prefix for batch input and output files "
                                               "(default: --temp_location + /chatbeam-batch)")
    group.add_argument("--batch_fallback", choices=["online", "error"], default="online",
                       help="lines a batch job did not answer (and schema re-asks) finish online in this run "
                            "(default), or become retryable error records")
    group.add_argument("--batch_max_requests", type=int, default=200_000,
                       help="requests per batch job (default 200000); more records make several jobs")
    group.add_argument("--batch_poll_interval_s", type=float,
                       help="seconds between polls of a batch job (default 30; 1 with the emulator)")
    group.add_argument("--batch_max_wait_s", type=float, default=96 * 3600.0,
                       help="cancel jobs still not done after this long (default 96 h: 72 h queued + 24 h running)")


@dataclass(frozen=True)
class Modes:
    mode: str
    tiers: TierPlan
    batch: BatchSettings | None
    request_timeout: float
    record_deadline: float
    max_attempts: int


def parse_deadline(text: str, now: datetime.datetime | None = None) -> float:
    """``HH:MM[:SS]`` (UTC; the next such time) or an ISO timestamp (UTC when it has no offset) → epoch seconds."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    text = text.strip()
    try:
        clock = datetime.time.fromisoformat(text) if len(text) <= 8 and ":" in text else None
    except ValueError:
        clock = None
    if clock is not None:
        when = datetime.datetime.combine(now.date(), clock, tzinfo=datetime.timezone.utc)
        if when <= now:
            when += datetime.timedelta(days=1)
        return when.timestamp()
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--deadline {text!r} is not a time: give HH:MM (UTC) or an ISO timestamp such as "
                         "2025-01-31T06:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    if when <= now:
        raise ValueError(f"--deadline {text} has already passed")
    return when.timestamp()


def _defaults(o: Any, tier: str) -> dict[str, Any]:
    base = FLEX_DEFAULTS if tier == "flex" else DEFAULTS
    return {name: getattr(o, name) if getattr(o, name) is not None else base[name] for name in base}


def _check_tier(o: Any, *, managed: bool) -> None:
    if o.service_tier == "standard" or o.force_service_tier:
        return
    if not managed:
        raise ValueError(f"--service_tier {o.service_tier} is served only by Vertex's managed Gemini endpoint "
                         "(--vertex_project or --emulator), not by this target; add --force_service_tier to send "
                         "the headers anyway")
    if o.vertex_location != "global":
        raise ValueError(f"--service_tier {o.service_tier} is served only on the global endpoint: add "
                         "--vertex_location global (or --force_service_tier)")


def _batch(o: Any, *, managed: bool, temp_location: str | None, emulator: bool) -> BatchSettings:
    if not managed:
        raise ValueError("--mode batch needs Vertex's managed Gemini endpoint (--vertex_project or --emulator): "
                         "--base_url, --endpoint_id and --endpoint_url have no batch prediction API")
    staging = o.batch_staging or (f"{temp_location.rstrip('/')}/chatbeam-batch" if temp_location else None)
    if not o.chatbeam_dry_run and (not staging or not staging.startswith("gs://")):  # a dry run stages nothing
        raise ValueError("--mode batch needs a gs:// staging location for the job files: give --batch_staging "
                         "gs://BUCKET/PATH or --temp_location gs://BUCKET/PATH")
    if o.batch_max_requests < 1:
        raise ValueError("--batch_max_requests must be at least 1")
    poll_s = o.batch_poll_interval_s if o.batch_poll_interval_s is not None else (1.0 if emulator else 30.0)
    if not poll_s > 0 or not o.batch_max_wait_s > 0:
        raise ValueError("--batch_poll_interval_s and --batch_max_wait_s must be positive")
    if o.deadline:
        raise ValueError("--deadline escalates online tiers; a batch job runs at its own pace (see "
                         "--batch_max_wait_s)")
    return BatchSettings(staging=staging or "", max_requests=o.batch_max_requests, poll_s=poll_s,
                         max_wait_s=o.batch_max_wait_s, fallback_online=o.batch_fallback == "online")


def validate_modes(o: Any, *, managed: bool, temp_location: str | None, emulator: bool = False) -> Modes:
    """Check the mode and tier options of ``o`` (a ChatbeamOptions view); raises ValueError with one line.

    ``managed``: the target is Vertex's managed Gemini endpoint or the emulator (``emulator``).
    """
    _check_tier(o, managed=managed)
    tiers = TierPlan(o.service_tier)
    if o.deadline:
        if o.service_tier == "priority":
            raise ValueError("--deadline escalates flex or standard requests; priority is already the top tier")
        tiers = TierPlan(o.service_tier, deadline=parse_deadline(o.deadline))
    batch = _batch(o, managed=managed, temp_location=temp_location, emulator=emulator) if o.mode == "batch" else None
    d = _defaults(o, o.service_tier)
    if o.service_tier == "flex" and d["request_timeout"] > MAX_FLEX_TIMEOUT_S:
        raise ValueError(f"--request_timeout {d['request_timeout']:g}: a flex request may run at most "
                         f"{MAX_FLEX_TIMEOUT_S:g} s")
    return Modes(o.mode, tiers, batch, d["request_timeout"], d["record_deadline"], int(d["max_attempts"]))
