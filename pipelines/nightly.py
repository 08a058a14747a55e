"""The nightly-job options: run date, resume and its journal, replay, dry run, budget, progress.

    add_nightly_arguments(parser)                    # from ChatbeamOptions._add_argparse_args
    nightly = validate_nightly(options_view)         # from options.validate(); raises ValueError (one line)
    with_run_date("gs://b/{run_date}/results", "2025-01-31")  # 'gs://b/2025-01-31/results'

``{run_date}`` in ``--input``, ``--output``, ``--errors``, ``--checkpoint_dir`` and ``--replay_errors`` (and, once
the BigQuery options land, in table names) becomes ``--run_date`` (default: today in UTC), so each night's run
writes to its own paths and never overwrites another's. See docs/nightly.md.
"""

from __future__ import annotations

import argparse
import datetime
import re
from dataclasses import dataclass
from typing import Any, Sequence

from client.budget import DEFAULT_OUTPUT_TOKENS
from client.journal import DEFAULT_EVERY, DEFAULT_INTERVAL_S
from client.pricing import PriceTable
from client.progress import DEFAULT_INTERVAL_S as DEFAULT_PROGRESS_S

__all__ = ["NightlyPlan", "RUN_DATE", "add_nightly_arguments", "normalize_argv", "parse_run_date", "template_argv",
           "today_utc", "validate_nightly", "with_run_date"]

RUN_DATE = "{run_date}"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def today_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


def parse_run_date(text: str | None) -> str:
    """``YYYY-MM-DD`` (a real calendar date) or None for today in UTC; raises ValueError otherwise."""
    if text is None or text == "":
        return today_utc()
    text = text.strip()
    try:
        if not _DATE.match(text):
            raise ValueError
        return datetime.date.fromisoformat(text).isoformat()
    except ValueError:
        raise ValueError(f"--run_date {text!r} is not a date: want YYYY-MM-DD, e.g. 2025-01-31") from None


def with_run_date(template: str | None, run_date: str) -> str | None:
    """Substitute ``{run_date}``; only that placeholder (other braces, e.g. in a glob, are left alone)."""
    return template.replace(RUN_DATE, run_date) if template else template


def add_nightly_arguments(parser: argparse.ArgumentParser) -> None:
    nightly = parser.add_argument_group("nightly runs (see docs/nightly.md)")
    nightly.add_argument("--run_date", help="YYYY-MM-DD substituted for {run_date} in paths (default: today, UTC)")
    nightly.add_argument("--resume", action="store_true",
                         help="skip records this run already completed (its checkpoint journal and finished "
                              "outputs) and write the union")
    nightly.add_argument("--checkpoint_dir",
                         help="journal of completed outputs, local or gs:// (default: OUTPUT + '-checkpoint')")
    nightly.add_argument("--no_checkpoint", action="store_true", help="do not write the checkpoint journal")
    nightly.add_argument("--checkpoint_every", type=int, default=DEFAULT_EVERY,
                         help=f"outputs per journal file (default {DEFAULT_EVERY})")
    nightly.add_argument("--checkpoint_interval_s", type=float, default=DEFAULT_INTERVAL_S,
                         help=f"...or a journal file at least this often, in seconds (default {DEFAULT_INTERVAL_S:g})")
    nightly.add_argument("--replay_errors",
                         help="instead of --input: an earlier run's error files (path or glob); runs only their "
                              "retryable failures")
    # Written --dry_run on the command line (normalize_argv): Beam's own TestOptions already owns that name (and
    # on Dataflow it means "don't submit"), while ours runs the pipeline and only skips the calls.
    nightly.add_argument("--chatbeam_dry_run", action="store_true",
                         help="--dry_run: send nothing; write the request bodies to OUTPUT-dry-run and estimate "
                              "tokens and cost")
    nightly.add_argument("--price_table", help="prices JSON (default: the bundled client/prices.json)")
    nightly.add_argument("--est_output_tokens", type=int, default=DEFAULT_OUTPUT_TOKENS,
                         help=f"assumed output tokens per choice when a record sets no max_tokens "
                              f"(default {DEFAULT_OUTPUT_TOKENS})")
    nightly.add_argument("--max_cost_usd", type=float,
                         help="stop sending when the whole job has spent this much (all worker processes; see "
                              "docs/nightly.md)")
    nightly.add_argument("--max_total_tokens", type=int,
                         help="stop sending when the whole job has used this many tokens (all worker processes)")
    nightly.add_argument("--progress_interval_s", type=float, default=DEFAULT_PROGRESS_S,
                         help=f"log a progress line this often, per worker process; 0: never "
                              f"(default {DEFAULT_PROGRESS_S:g})")


@dataclass(frozen=True)
class NightlyPlan:
    """The validated nightly options. Paths here already have ``{run_date}`` substituted."""

    run_date: str = ""
    resume: bool = False
    checkpoint_dir: str | None = None  # None: no journal
    checkpoint_every: int = DEFAULT_EVERY
    checkpoint_interval_s: float = DEFAULT_INTERVAL_S
    replay_errors: str | None = None
    dry_run: bool = False
    prices: PriceTable | None = None  # None: the bundled table
    est_output_tokens: int = DEFAULT_OUTPUT_TOKENS
    max_cost_usd: float | None = None
    max_total_tokens: int | None = None
    progress_interval_s: float = DEFAULT_PROGRESS_S

    @property
    def price_table(self) -> PriceTable:
        return self.prices if self.prices is not None else PriceTable.load()


def validate_nightly(o: Any, *, output: str | None, errors: str | None) -> NightlyPlan:
    """Check the nightly options of ``o`` (a ChatbeamOptions view); ``output``/``errors`` are the final prefixes.

    Raises ValueError with a one-line message.
    """
    run_date = parse_run_date(o.run_date)
    if o.max_cost_usd is not None and not o.max_cost_usd > 0:
        raise ValueError("--max_cost_usd must be positive")
    if o.max_total_tokens is not None and o.max_total_tokens < 1:
        raise ValueError("--max_total_tokens must be at least 1")
    if o.checkpoint_every < 1:
        raise ValueError("--checkpoint_every must be at least 1")
    if not o.checkpoint_interval_s > 0:
        raise ValueError("--checkpoint_interval_s must be positive")
    if o.est_output_tokens < 0:
        raise ValueError("--est_output_tokens must be 0 or more")
    if o.progress_interval_s < 0:
        raise ValueError("--progress_interval_s must be 0 (off) or positive")
    if o.chatbeam_dry_run and o.resume:
        raise ValueError("--dry_run and --resume cannot be combined")
    if o.no_checkpoint and o.checkpoint_dir:
        raise ValueError("--no_checkpoint and --checkpoint_dir cannot be combined")
    replay = with_run_date(o.replay_errors, run_date)
    if replay and o.input:
        raise ValueError("give --input or --replay_errors, not both")
    # A replay glob that matches this run's own files is refused with the other path rules (pipelines/reliability.py).
    prices = None
    if o.price_table:
        try:
            prices = PriceTable.load(o.price_table)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"--price_table {o.price_table!r} is not a readable price table: {exc}") from None
    checkpoint = None
    if not o.no_checkpoint:
        checkpoint = with_run_date(o.checkpoint_dir, run_date) or (f"{output}-checkpoint" if output else None)
    return NightlyPlan(
        run_date=run_date, resume=o.resume, checkpoint_dir=checkpoint, checkpoint_every=o.checkpoint_every,
        checkpoint_interval_s=o.checkpoint_interval_s, replay_errors=replay, dry_run=o.chatbeam_dry_run,
        prices=prices, est_output_tokens=o.est_output_tokens, max_cost_usd=o.max_cost_usd,
        max_total_tokens=o.max_total_tokens,
        progress_interval_s=o.progress_interval_s)


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


def normalize_argv(argv: Sequence[str]) -> list[str]:
    """``--dry_run`` (or ``--dry_run=true|false``) → our ``--chatbeam_dry_run`` flag, before Beam parses anything:
    Beam's TestOptions defines a ``--dry_run`` that takes a value and, on Dataflow, stops the job from being
    submitted at all."""
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        if name != "--dry_run":
            out.append(arg)
        elif not eq or value.strip().lower() in _TRUE:
            out.append("--chatbeam_dry_run")
        elif value.strip().lower() not in _FALSE:
            raise ValueError(f"--dry_run takes true or false, not {value!r}")
    return out


def _store_true_flags(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions if isinstance(action, argparse._StoreTrueAction)
            for opt in action.option_strings}


def template_argv(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """A Flex Template launcher passes every parameter as ``--name=value``; argparse refuses a value on an on/off
    flag, so ``--resume=true`` becomes ``--resume`` and ``--resume=false`` is dropped (for the flags ``parser``
    knows as store_true)."""
    flags = _store_true_flags(parser)
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        if eq and name in flags:
            if value.strip().lower() in _TRUE:
                out.append(name)
            elif value.strip().lower() not in _FALSE:
                raise ValueError(f"{name} takes true or false, not {value!r}")
            continue
        out.append(arg)
    return out
