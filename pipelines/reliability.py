"""The run-safety options and checks: bad numbers, colliding paths, the files a run reads and writes.

    add_reliability_arguments(parser)                  # from ChatbeamOptions._add_argparse_args
    check_numbers(options_view)                        # from options.validate(): NaN, negative, zero -> ValueError
    check_paths(input=..., output=..., ...)            # from options.validate(): the pure collision rules
    check_files(plan)                                  # from extract.run(), before any work: the file system

Each raises ValueError with a one-line message (options.validate turns it into a UsageError: exit 2). The rules
themselves live in transforms/files.py; this module only applies them to a command line.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any

from client.constants import MAX_RESPONSE_BYTES
from transforms.files import (RunFilesError, cache_collision, check_existing_inputs, check_input,
                              check_output_prefix, check_results_absent, normalize, reads_own_files,
                              replay_into_results, run_files, sink_collision)

__all__ = ["DEFAULT_MAX_ERROR_RATE", "ReliabilityPlan", "add_reliability_arguments", "check_files", "check_numbers",
           "check_paths"]

DEFAULT_MAX_ERROR_RATE = 0.25  # the Quickstart's 2 broken lines of 14 (14 %) must still exit 0


def add_reliability_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("reliability (see README 'Reliability')")
    group.add_argument("--max_error_rate", type=float, default=DEFAULT_MAX_ERROR_RATE,
                       help="exit 3 after writing everything when more than this share of the records are errors "
                            f"(default {DEFAULT_MAX_ERROR_RATE:g}; 1 never fails a run for its errors)")
    group.add_argument("--max_response_bytes", type=int, default=MAX_RESPONSE_BYTES,
                       help="a larger answer becomes a response_too_large error and is not read further "
                            f"(default {MAX_RESPONSE_BYTES:,} = 8 MiB)")
    group.add_argument("--force", action="store_true",
                       help="break another run's lock on the output prefixes (only when that run is dead)")


@dataclass(frozen=True)
class ReliabilityPlan:
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE
    force: bool = False


# Options whose value None means "not given". Ranges checked elsewhere (pipelines/nightly.py, options.validate) are
# not repeated; NaN and infinity pass every comparison there, so every float option is checked for them here.
_FLOATS = ("temperature", "max_error_rate", "rpm", "tpm", "request_timeout", "record_deadline",
           "checkpoint_interval_s", "progress_interval_s", "max_cost_usd", "ledger_heartbeat_s", "ledger_dead_after_s")
_POSITIVE = ("rpm", "tpm", "request_timeout", "record_deadline")
_AT_LEAST = {"num_shards": 0, "max_reasks": 0, "max_tokens": 1, "max_response_bytes": 1024}


def check_numbers(o: Any) -> ReliabilityPlan:
    """Every number of the command line is finite and in range (``--rpm nan``, ``--record_deadline -5``, ...)."""
    for name in _FLOATS:
        value = getattr(o, name, None)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{name} must be a finite number, not {value}")
    for name in _POSITIVE:
        value = getattr(o, name, None)
        if value is not None and not value > 0:
            raise ValueError(f"--{name} must be positive, not {value:g}")
    for name, low in _AT_LEAST.items():
        value = getattr(o, name, None)
        if value is not None and value < low:
            raise ValueError(f"--{name} must be at least {low}, not {value:g}")
    if not 0 <= o.max_error_rate <= 1:
        raise ValueError(f"--max_error_rate is a share of the records, from 0 to 1, not {o.max_error_rate:g}")
    return ReliabilityPlan(max_error_rate=o.max_error_rate, force=o.force)


def check_paths(*, input: str | None, output: str | None, errors: str | None, checkpoint_dir: str | None,
                replay: str | None, cache: str | None = None) -> None:
    """The collision rules that need no file system: sinks that would delete each other's files (or the cache's
    shards), a cache sharing a path with the outputs, and input or replay globs that would read this run's own
    outputs or the cache."""
    for flag, prefix in (("--output", output), ("--errors", errors)):
        if prefix:
            check_output_prefix(flag, prefix)
    families = run_files(*(normalize(p) if p else None for p in (output, errors, checkpoint_dir, cache)))
    problem = cache_collision(normalize(cache), families) if cache else sink_collision(families)
    for flag, glob in (("--input", input), ("--replay_errors", replay)):
        if problem is None and glob:
            problem = reads_own_files(flag, normalize(glob), families)
    if problem is None and replay:
        problem = replay_into_results(normalize(replay), normalize(output) if output else None)
    if problem:
        raise ValueError(problem)


def check_files(plan: Any) -> None:
    """Before any work (extract.run): the input exists and is readable, no file it matches now is one of this run's
    outputs, and a replay does not write over existing results. Raises ValueError."""
    n = plan.nightly
    cache = plan.cache.location if getattr(plan, "cache", None) else None
    families = run_files(*(normalize(p) if p else None for p in (plan.output, plan.errors, n.checkpoint_dir, cache)))
    try:
        for flag, glob in (("--replay_errors", n.replay_errors), ("--input", plan.input)):
            if glob:
                check_existing_inputs(flag, check_input(glob, flag), families)
        if n.replay_errors and plan.output and not n.resume and not n.dry_run:
            check_results_absent(plan.output)
    except RunFilesError as exc:
        raise ValueError(str(exc)) from None
