"""Refuse a command line naming an option nobody knows, before any work: one line, a "did you mean", exit 2.

    check_known_options(["--input", "in.jsonl", "--max_cots_usd", "1"])
    # UsageError: unknown option --max_cots_usd (did you mean --max_cost_usd?)

Beam itself only logs "Discarding unparseable args" and runs on, so a misspelt ``--max_cost_usd`` used to run with no
budget at all. An option is known when chatbeam's ChatbeamOptions or any other PipelineOptions subclass (Beam's
standard, Google Cloud, worker, setup, debug, portable and runner options: everything Dataflow and the other runners
read) declares it. The parser and the suggestion rule (difflib's closest match among every known option) are Beam's
own (``PipelineOptions.get_all_options`` / ``_warn_on_unknown_options``); only the outcome differs: an error.
"""

from __future__ import annotations

import difflib
from typing import Sequence

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

__all__ = ["check_known_options", "known_option_names"]  # help: pipelines/help.py

_HELP = frozenset({"-h", "--help"})


class _RaisingParser(_BeamArgumentParser):
    """Beam's parser (no prefix matching; ambiguity ignored), raising instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        if message.startswith("ambiguous option: "):
            return
        raise ValueError(message)


def _parser() -> _RaisingParser:
    parser = _RaisingParser(allow_abbrev=False, add_help=False)
    seen: dict[str, type[PipelineOptions]] = {}
    for cls in PipelineOptions.__subclasses__():  # as Beam does: the last definition of each class wins
        seen[str(cls)] = cls
    for cls in seen.values():
        cls._add_argparse_args(parser)  # noqa: SLF001 - Beam's own registration hook
    return parser


def known_option_names() -> list[str]:
    """Every ``--option`` chatbeam or a Beam/Dataflow PipelineOptions class declares."""
    return sorted({opt for action in _parser()._actions for opt in action.option_strings})  # noqa: SLF001


def check_known_options(argv: Sequence[str], error: type[Exception] = ValueError) -> None:
    """Raise ``error`` with one line for the first unknown option (or stray argument, or bad value), naming the
    closest known option. ``--help`` is left to Beam's parser (it prints every option)."""
    if _HELP & set(argv):
        return
    parser = _parser()
    try:
        _, unknown = parser.parse_known_args(list(argv))
    except ValueError as exc:
        raise error(str(exc)) from None
    for arg in unknown:
        if arg.startswith("-"):
            name = arg.split("=", 1)[0]
            known = [opt for action in parser._actions for opt in action.option_strings]  # noqa: SLF001
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise error(f"unknown option {name}{hint}")
    if unknown:
        raise error(f"unexpected argument {unknown[0]!r} (options are written --name value)")
