"""Service tiers: which one a request asked for (from Vertex's headers), and how each is treated.

Vertex selects the tier with headers, never with a body field (vertex-notes.md "Service tiers"):

* ``X-Vertex-AI-LLM-Request-Type: shared`` + ``X-Vertex-AI-LLM-Shared-Request-Type: flex`` → Flex PayGo;
* ``X-Vertex-AI-LLM-Shared-Request-Type: priority`` → Priority PayGo;
* no tier headers → Standard PayGo. ``X-Vertex-AI-LLM-Request-Type: dedicated`` (Provisioned Throughput only) is
  answered as standard here: the emulator has no Provisioned Throughput.

Flex and priority are served on the ``global`` location only (``flex_global_only``). Unknown header values are a
400, as a typo should be. The native API reports the tier served in ``usageMetadata.trafficType``.

How the tiers differ here (guesses, configurable through `emulator.config.FaultConfig`): flex answers
``flex_latency_factor`` times slower and is admitted only while the capacity window holds fewer than
``capacity_rps × flex_capacity_share`` requests (so it is throttled sooner), plus ``flex_429_rate`` extra 429s;
priority is admitted up to ``capacity_rps × priority_capacity_share`` (beyond the standard pool) and answers
``priority_latency_factor`` times the latency.

Usage::

    tier = tier_of(request.headers, location="global")     # "standard" | "flex" | "priority", or ApiError 400
    TRAFFIC_TYPE[tier]                                      # "ON_DEMAND_FLEX"
"""

from __future__ import annotations

from typing import Mapping

from emulator.errors import ApiError, invalid_argument

__all__ = ["TIERS", "TRAFFIC_TYPE", "REQUEST_TYPE", "SHARED_REQUEST_TYPE", "tier_of"]

TIERS = ("standard", "flex", "priority")
TRAFFIC_TYPE = {"standard": "ON_DEMAND", "flex": "ON_DEMAND_FLEX", "priority": "ON_DEMAND_PRIORITY",
                "batch": "BATCH"}
REQUEST_TYPE = "x-vertex-ai-llm-request-type"
SHARED_REQUEST_TYPE = "x-vertex-ai-llm-shared-request-type"
_REQUEST_TYPES = ("shared", "dedicated")
_SHARED_TYPES = ("flex", "priority")


def tier_of(headers: Mapping[str, str], *, location: str | None, global_only: bool = True) -> str:
    """The tier a Vertex request asked for; raises a 400 `ApiError` for values Vertex would not accept."""
    request_type = (headers.get(REQUEST_TYPE) or "").strip().lower()
    shared = (headers.get(SHARED_REQUEST_TYPE) or "").strip().lower()
    if request_type and request_type not in _REQUEST_TYPES:
        raise invalid_argument(f"Invalid value for header X-Vertex-AI-LLM-Request-Type: {request_type!r} "
                               f"(expected one of {list(_REQUEST_TYPES)}).")
    if shared and shared not in _SHARED_TYPES:
        raise invalid_argument(f"Invalid value for header X-Vertex-AI-LLM-Shared-Request-Type: {shared!r} "
                               f"(expected one of {list(_SHARED_TYPES)}).")
    if request_type == "dedicated" and shared:
        raise invalid_argument("X-Vertex-AI-LLM-Request-Type: dedicated cannot be combined with "
                               "X-Vertex-AI-LLM-Shared-Request-Type.")
    tier = shared or "standard"
    if tier != "standard" and global_only and location != "global":
        raise _not_here(tier, location)
    return tier


def _not_here(tier: str, location: str | None) -> ApiError:
    name = "Flex PayGo" if tier == "flex" else "Priority PayGo"
    return invalid_argument(f"{name} is only available on the global endpoint (locations/global), "
                            f"not locations/{location}.")
