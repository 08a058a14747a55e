"""The Flex Template entry point (FLEX_TEMPLATE_PYTHON_PY_FILE in dataflow/Dockerfile).

The launcher runs this file with every template parameter as ``--name=value`` plus Dataflow's own options
(``--project``, ``--region``, ``--temp_location``, ``--setup_file``, ...). It builds the job, submits it and exits:
a Flex Template launcher must not wait for the job (no wait_until_finish), so there is no summary file — the run's
numbers are the job's Beam metrics (namespace ``chatbeam``) in the Dataflow console.

On/off parameters arrive as ``--resume=true``; ``template_argv`` turns them into the bare flags argparse wants.
"""

from __future__ import annotations

import argparse
import sys

from pipelines.extract import main
from pipelines.nightly import template_argv
from pipelines.options import ChatbeamOptions


def launcher_argv(argv: list[str]) -> list[str]:
    parser = argparse.ArgumentParser(add_help=False)
    ChatbeamOptions._add_argparse_args(parser)
    return template_argv(argv, parser)


if __name__ == "__main__":
    try:
        args = launcher_argv(sys.argv[1:])
    except ValueError as exc:
        print(f"chatbeam: error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(args, wait=False))
