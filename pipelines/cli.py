"""The ``chatbeam`` command: the extract job, or a subcommand named by the first argument.

    chatbeam --input in.jsonl --output out/results --emulator      # the job (pipelines/extract.py)
    chatbeam SUBCOMMAND ...                                         # a tool, looked up in SUBCOMMANDS

A subcommand is ``"module:function"``; the function takes the remaining argv and returns an exit code. Modules are
imported only when their subcommand is used, so ``chatbeam --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

__all__ = ["SUBCOMMANDS", "main"]

SUBCOMMANDS: dict[str, str] = {
    "cache": "pipelines.cache:main",  # chatbeam cache compact LOCATION [--cache_ttl_days N]
    "report": "pipelines.report:main",  # chatbeam report RESULTS_PREFIX [ERRORS_PREFIX]: the run report page
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        module, _, function = SUBCOMMANDS[argv[0]].partition(":")
        return getattr(importlib.import_module(module), function)(argv[1:])
    from pipelines.extract import main as extract_main

    return extract_main(argv)


if __name__ == "__main__":
    sys.exit(main())
