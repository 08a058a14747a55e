"""The main job: prompt records → Chat Completions → results and errors sinks.

    chatbeam --input examples/prompts.jsonl --output out/results --errors out/errors --emulator
    python -m pipelines.extract ...   # the same job

Data flows one way: options → read (records or read errors) → call (results or call errors) → write.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from typing import Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from client.config import Target
from pipelines.local_emulator import EmulatorStartError, LocalEmulator
from pipelines.options import EMULATOR_PROJECT, Plan, UsageError, validate
from transforms import CallChatCompletions, ReadPrompts, WriteErrors, WriteResults

__all__ = ["build_pipeline", "main", "run"]

log = logging.getLogger("chatbeam")


def _check_input(pattern: str) -> None:
    """A missing or unreadable input is a CLI error before the run, not a crash inside it."""
    try:
        matches = FileSystems.match([pattern])[0].metadata_list
    except Exception as exc:  # Beam raises BeamIOError / ValueError for bad schemes and unreachable stores
        raise UsageError(f"cannot list --input {pattern!r}: {exc}") from None
    if not matches:
        raise UsageError(f"--input {pattern!r} matches no files")
    for meta in matches:
        if "://" not in meta.path and not os.access(meta.path, os.R_OK):
            raise UsageError(f"--input file {meta.path!r} is not readable")


def build_pipeline(p: beam.Pipeline, plan: Plan) -> None:
    """Wire the labelled steps; nothing here opens a connection."""
    read = p | "ReadPrompts" >> ReadPrompts(plan.input, max_record_bytes=plan.max_record_bytes)
    called = read.records | "CallChatCompletions" >> CallChatCompletions(plan.client)
    called.results | "WriteResults" >> WriteResults(plan.output, num_shards=plan.num_shards)
    ((read.errors, called.errors) | "AllErrors" >> beam.Flatten()
     | "WriteErrors" >> WriteErrors(plan.errors, num_shards=plan.num_shards))


@contextlib.contextmanager
def _target_for_run(plan: Plan):
    """For --emulator: start it, aim the managed target at it, stop it at the end. Otherwise: the plan as is."""
    if not plan.emulator:
        yield plan
        return
    with LocalEmulator(plan.emulator_args) as emu:
        target = Target.managed(EMULATOR_PROJECT, plan.vertex_location, root=emu.url, auth="local_tokens")
        log.info("local emulator at %s", emu.url)
        yield dataclasses.replace(plan, client=dataclasses.replace(plan.client, target=target))


def run(argv: Sequence[str] | None = None):
    """Run the job; returns the Beam PipelineResult. Raises UsageError for a bad command line."""
    options = PipelineOptions(list(argv) if argv is not None else None)
    plan = validate(options)
    _check_input(plan.input)
    with _target_for_run(plan) as plan:
        p = beam.Pipeline(options=options)
        build_pipeline(p, plan)
        result = p.run()
        result.wait_until_finish()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    try:
        run(sys.argv[1:] if argv is None else argv)
    except (UsageError, EmulatorStartError) as exc:
        print(f"chatbeam: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
