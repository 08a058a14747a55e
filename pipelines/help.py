"""``chatbeam --help`` (every chatbeam option, in the README's groups) and ``chatbeam --help_beam`` (Beam's own).

    wants_help(argv)     # "chatbeam" / "beam" / None
    print_help()         # the chatbeam options
    print_beam_help()    # every Apache Beam / Dataflow pipeline option chatbeam also accepts

Beam's ``PipelineOptions`` parses with a parser of its own that knows nothing of our groups (``chatbeam --help``
used to print just ``usage: chatbeam [-h]``), so help is answered here, before Beam sees the command line.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence, TextIO

__all__ = ["print_beam_help", "print_help", "wants_help"]

DESCRIPTION = """\
Run LLM prompts over datasets on Apache Beam: read prompt records (JSONL or BigQuery), call Vertex AI Gemini
(or any OpenAI-compatible server) with retries and limits, write results and errors to separate sinks.

  chatbeam --emulator --input examples/prompts.jsonl --output out/results --errors out/errors
"""

EPILOG = """\
Apache Beam and Dataflow options (--runner, --project, --region, --temp_location, --setup_file,
--direct_num_workers, --direct_running_mode, --max_num_workers, ...) are accepted too; `chatbeam --help_beam`
lists every one of them.

Exit codes: 0 done; 1 crashed (traceback); 2 refused before any work (bad command line, colliding paths,
output locked by another run); 3 finished but failed (more than --max_error_rate errors, or the circuit breaker
stopped sending); 130 / 143 stopped by SIGINT / SIGTERM (finish with --resume). See README "Reliability".
"""


def wants_help(argv: Sequence[str]) -> str | None:
    if "--help_beam" in argv:
        return "beam"
    if "-h" in argv or "--help" in argv:
        return "chatbeam"
    return None


def _subcommands() -> str:
    from pipelines.cli import SUBCOMMANDS

    if not SUBCOMMANDS:
        return ""
    return "Subcommands: " + ", ".join(f"chatbeam {name} ..." for name in sorted(SUBCOMMANDS)) + "\n\n"


def print_help(out: TextIO | None = None) -> None:
    from pipelines.options import ChatbeamOptions

    parser = argparse.ArgumentParser(prog="chatbeam", description=DESCRIPTION, epilog=_subcommands() + EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    ChatbeamOptions._add_argparse_args(parser)  # noqa: SLF001 - Beam's own hook for declaring options
    for action in parser._actions:  # noqa: SLF001
        if "--chatbeam_dry_run" in action.option_strings:
            action.option_strings = ["--dry_run"]  # what users type (pipelines/nightly.normalize_argv)
    parser.print_help(out or sys.stdout)


def print_beam_help(out: TextIO | None = None) -> None:
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    from pipelines.options import ChatbeamOptions

    out = out or sys.stdout
    out.write("Apache Beam / Dataflow pipeline options accepted by chatbeam (chatbeam's own: chatbeam --help)\n")
    seen: set[type] = set()
    todo = list(PipelineOptions.__subclasses__())
    while todo:
        cls = todo.pop(0)
        todo += cls.__subclasses__()
        if cls in seen or cls is ChatbeamOptions or not cls.__module__.startswith("apache_beam."):
            continue
        seen.add(cls)
        parser = _BeamArgumentParser(prog="chatbeam", add_help=False, usage=argparse.SUPPRESS)
        cls._add_argparse_args(parser)  # noqa: SLF001 - Beam's own hook for declaring options
        if not parser._actions:  # noqa: SLF001
            continue
        body = parser.format_help().strip().partition("\n")[2]  # drop argparse's "options:" heading
        out.write(f"\n{cls.__name__} ({cls.__module__}):\n{body}\n")
