"""The files a run reads and writes (local or gs://, through Beam's FileSystems): checks before any work, and tidying
after it. The collision rules are pure functions of the paths, so they are tested without a file system.

    families = run_files(output="out/r", errors="out/e", checkpoint_dir="out/r-checkpoint")
    sink_collision(families)                    # None, or one line: which sink would delete which files
    reads_own_files("--input", "out/*.jsonl", families)   # None, or why that glob would read this run's outputs
    check_input("in/*.jsonl")                   # raises RunFilesError: missing, a directory, unreadable
    check_existing_inputs("--input", "in/*.jsonl", families)   # an existing input file that is an output of ours
    check_output_prefix("--output", "out/r")    # a trailing '/', a parent that is a file
    remove_stale_shards("out/r", since=started_at)          # after the run: shards of an older shard count

What a run writes, for ``--output O``, ``--errors E`` and the journal ``C`` (default ``O-checkpoint``):

==========================  ===============================================  =====================================
family                      files                                            deleted by its sink before writing
==========================  ===============================================  =====================================
results                     ``O-SSSSS-of-NNNNN.jsonl``                       ``O-*-of-NNNNN.jsonl``
error                       ``E-SSSSS-of-NNNNN.jsonl``                       ``E-*-of-NNNNN.jsonl``
dry-run (``--dry_run``)     ``O-dry-run-SSSSS.jsonl``, ``E-dry-run-SSSSS.jsonl``  ``O-dry-run-*.jsonl``, ``E-dry-run-*.jsonl``
summaries and report        ``O-summary.json``, ``O-dry-run-summary.json``, ``O-report.html``  (replaced)
journal                     ``C/part-*.jsonl``                               (never)
lock                        ``O.lock``, ``E.lock``                           (never)
response cache (``--cache``)  ``K/entries-*.jsonl``, ``K/compact-*.jsonl``     (only by ``chatbeam cache compact``)
==========================  ===============================================  =====================================

The rules, each a one-line error (exit 2) before any work:

1. No sink's delete glob may match a file of another family (``--errors`` equal to ``--output``, or either a
   ``PREFIX-`` extension of the other: Beam's sink would delete the other's files, and the summary would still
   count them).
2. The ``--input`` glob may not match any file of this run, existing or future (a rerun would read the previous
   run's results as input; a literal input named like a shard would be overwritten).
3. The ``--replay_errors`` glob may not match any file of this run, and a replay may not write into a prefix that
   already holds results (it would replace the replayed run's results with its own).
4. The ``--cache`` directory ``K`` is the cache's alone: it may not be (or lie under) the ``--output`` or ``--errors``
   prefix or the journal, none of those may lie inside it, and no sink may delete its shards. Rules 2 and 3 cover
   its shards too: an input glob that would read cache shards as prompts is refused.

"Could match" is decided on sample names (shard 0 of 1, 1 of 2, 3 of 4, 9 of 10, 123 of 1000) with Beam's own glob
semantics (``FileSystem.translate_pattern``), so a glob that only matches shard numbers no sample has would slip
through; no real glob we know of does.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from apache_beam.io.filesystem import FileSystem
from apache_beam.io.filesystems import FileSystems

__all__ = ["DRY_RUN_SHARDS", "Family", "RunFilesError", "cache_collision", "check_existing_inputs", "check_input",
           "check_output_prefix", "check_results_absent", "lock_path", "normalize", "reads_own_files",
           "remove_stale_shards", "replay_into_results", "run_files", "sink_collision"]

log = logging.getLogger(__name__)

DRY_RUN_SHARDS = "-SSSSS"  # the dry run's shard names: no "-of-NNNNN", so a real run's sink leaves them alone
_SAMPLE_SHARDS = ((0, 1), (1, 2), (3, 4), (9, 10), (123, 1000))
_SHARD = re.compile(r"-\d{5}-of-(\d{5})\.jsonl$")


class RunFilesError(ValueError):
    """A run's files are wrong before it starts (a missing input, a collision): one line, exit 2."""


@dataclass(frozen=True)
class Family:
    """One kind of file a run writes. ``samples`` are names it may create; ``pattern`` matches all of them;
    ``clears`` is the glob its sink deletes before writing (None: it replaces only its own names)."""

    what: str
    flag: str
    prefix: str  # the flag's value
    samples: tuple[str, ...]
    pattern: str
    clears: tuple[str, ...] = ()


def normalize(path: str) -> str:
    """Local paths made absolute (so ``./out/r`` and ``out/r`` compare equal); other schemes untouched."""
    return path if "://" in path else os.path.abspath(path)


def lock_path(prefix: str) -> str:
    return f"{prefix}.lock"


def _sharded(what: str, flag: str, prefix: str) -> Family:
    samples = tuple(f"{prefix}-{i:05d}-of-{n:05d}.jsonl" for i, n in _SAMPLE_SHARDS)
    clears = tuple(f"{prefix}-*-of-{n:05d}.jsonl" for _, n in _SAMPLE_SHARDS)
    return Family(what, flag, prefix, samples, f"{prefix}-?????-of-?????.jsonl", clears)


def _dry_run(what: str, flag: str, prefix: str) -> Family:
    stem = f"{prefix}-dry-run"
    return Family(what, flag, prefix, tuple(f"{stem}-{i:05d}.jsonl" for i, _ in _SAMPLE_SHARDS),
                  f"{stem}-?????.jsonl", (f"{stem}-*.jsonl",))


def _single(what: str, flag: str, prefix: str, path: str) -> Family:
    return Family(what, flag, prefix, (path,), path)


def _cache_shards(location: str) -> list[Family]:
    """The response cache's shards (client/cache.py names them): a run's, one per bundle, and compaction's."""
    k = location.rstrip("/")
    return [Family("response cache", "--cache", location,
                   (f"{k}/entries-20261130T031000Z-0123abcd-0123456789ab.jsonl",), f"{k}/entries-*.jsonl"),
            Family("response cache", "--cache", location,
                   (f"{k}/compact-20261130T031000Z-0123abcd-00000-of-00001.jsonl",), f"{k}/compact-*.jsonl")]


def run_files(output: str | None, errors: str | None, checkpoint_dir: str | None,
              cache: str | None = None) -> list[Family]:
    """Every family of files a run with these prefixes writes (real and dry runs alike, since both leave files a
    later run must not trip over), and the shards of its ``--cache``. Paths are compared as given: pass them
    through ``normalize`` first."""
    families: list[Family] = _cache_shards(cache) if cache else []
    if output:
        families += [_sharded("results", "--output", output), _dry_run("dry-run results", "--output", output),
                     _single("summary", "--output", output, f"{output}-summary.json"),
                     _single("dry-run summary", "--output", output, f"{output}-dry-run-summary.json"),
                     _single("report", "--output", output, f"{output}-report.html"),
                     _single("lock", "--output", output, lock_path(output))]
    if errors:
        families += [_sharded("error", "--errors", errors), _dry_run("dry-run error", "--errors", errors),
                     _single("lock", "--errors", errors, lock_path(errors))]
    if checkpoint_dir:
        journal = checkpoint_dir.rstrip("/")
        families.append(Family("journal", "--checkpoint_dir", checkpoint_dir, (f"{journal}/part-0123abcd.jsonl",),
                               f"{journal}/part-*.jsonl"))
    return families


def _matches(path: str, glob: str) -> bool:
    return re.match(FileSystem.translate_pattern(glob), path) is not None


def sink_collision(families: Sequence[Family]) -> str | None:
    """Rule 1: a sink that would delete (or overwrite) another family's files. None when the sinks are apart."""
    for sink in families:
        for other in families:
            if other is sink or (other.flag == sink.flag and other.what == sink.what):
                continue
            for name in other.samples:
                hit = next((g for g in sink.clears if _matches(name, g)), None) or (name if name in sink.samples
                                                                                   else None)
                if hit is not None:
                    return (f"{other.flag} {other.prefix!r} collides with {sink.flag} {sink.prefix!r}: the "
                            f"{sink.what} sink deletes {hit!r} before writing, which would delete the {other.what} "
                            f"files; give each its own prefix that does not start with the other's, e.g. "
                            f"{_suggest(sink, other)}")
    return None


def _inside(path: str, directory: str) -> bool:
    directory = directory.rstrip("/")
    return path.rstrip("/") == directory or path.startswith(directory + "/")


def cache_collision(cache: str, families: Sequence[Family]) -> str | None:
    """Rule 4: the ``--cache`` directory shares no path with this run's prefixes (``families`` from ``run_files``
    with that cache). None when it is apart."""
    for family in families:
        if family.flag == "--cache":
            continue
        if _inside(cache, family.prefix):
            return (f"--cache {cache!r} lies under {family.flag} {family.prefix!r}: keep the cache, which outlives "
                    "runs and is shared between them, in a directory of its own")
        if _inside(family.prefix, cache):
            return (f"{family.flag} {family.prefix!r} lies inside --cache {cache!r}; keep outputs out of the cache "
                    "(give the cache a directory of its own)")
    return sink_collision(families)


def _suggest(sink: Family, other: Family) -> str:
    flags = {sink.flag: sink.prefix, other.flag: other.prefix}
    if "--output" in flags and "--errors" in flags:
        return f"--output {flags['--output']} --errors {flags['--output']}_errors"
    return "another directory"


def reads_own_files(flag: str, glob: str, families: Sequence[Family]) -> str | None:
    """Rules 2 and 3: the ``--input`` / ``--replay_errors`` glob matches a file this run writes (now or in a
    rerun). None when it cannot."""
    for family in families:
        for name in family.samples:
            if _matches(name, glob):
                return (f"{flag} {glob!r} would also read this run's {family.what} files (e.g. {name!r}), so a rerun "
                        f"reads its own outputs or overwrites its input; put the outputs in another directory or "
                        f"narrow the glob")
    return None


def replay_into_results(replay_glob: str, output: str | None) -> str | None:
    """Rule 3: a replay whose ``--output`` is the replayed run's own (its default errors are what is replayed)."""
    if output and _matches(f"{output}_errors-00000-of-00001.jsonl", replay_glob):
        return (f"--replay_errors {replay_glob!r} reads the errors of the run that wrote --output {output!r}: this "
                "replay would replace that run's results with its own; give the replay its own --output")
    return None


# ---------------------------------------------------------------------------------------------- file system

def _match(pattern: str, flag: str) -> list:
    try:
        return FileSystems.match([pattern])[0].metadata_list
    except Exception as exc:  # noqa: BLE001 - Beam raises BeamIOError / ValueError for bad schemes and stores
        raise RunFilesError(f"cannot list {flag} {pattern!r}: {exc}") from None


def check_input(pattern: str, flag: str = "--input") -> list[str]:
    """The files ``pattern`` matches; a missing, unreadable or directory input is a RunFilesError."""
    if "://" not in pattern and os.path.isdir(pattern):
        raise RunFilesError(f"{flag} {pattern!r} is a directory; give a file or a glob such as "
                            f"{posixpath.join(pattern, '*.jsonl')}")
    matches = _match(pattern, flag)
    if not matches:
        raise RunFilesError(f"{flag} {pattern!r} matches no files")
    for meta in matches:
        if "://" not in meta.path:
            if os.path.isdir(meta.path):
                raise RunFilesError(f"{flag} {pattern!r} matches the directory {meta.path!r}; match files only")
            if not os.access(meta.path, os.R_OK):
                raise RunFilesError(f"{flag} file {meta.path!r} is not readable")
    return [meta.path for meta in matches]


def check_existing_inputs(flag: str, paths: Iterable[str], families: Sequence[Family]) -> None:
    """Rule 2 on the files an input glob matches now: none may be a file of this run (it would be overwritten,
    deleted, or read back as input)."""
    for path in paths:
        for family in families:
            if _matches(normalize(path), family.pattern):
                why = ("cache shards are not prompt records: narrow the glob or move the cache" if family.flag ==
                       "--cache" else "it would be overwritten: move the input or write the outputs elsewhere")
                raise RunFilesError(f"{flag} file {path!r} is one of this run's {family.what} files ({family.flag}); "
                                    f"{why}")


def check_results_absent(prefix: str) -> None:
    """A replay (without --resume) must not write into a prefix that already holds results."""
    existing = _match(f"{prefix}-?????-of-?????.jsonl", "--output")
    if existing:
        raise RunFilesError(f"--output {prefix!r} already holds results ({existing[0].path}); a --replay_errors run "
                            "would replace them with its own: give the replay its own --output")


def check_output_prefix(flag: str, prefix: str) -> None:
    """A prefix names files, not a directory; its parent must be a directory (or not exist yet)."""
    if prefix.endswith("/") or prefix.endswith(os.sep) or posixpath.basename(prefix) in ("", ".", ".."):
        raise RunFilesError(f"{flag} {prefix!r} is a directory, not a file prefix (files would be named "
                            f"'-00000-of-00001.jsonl'); give e.g. {posixpath.join(prefix, 'results')}")
    if "://" in prefix:
        return
    parent = os.path.dirname(os.path.abspath(prefix))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent) if os.path.dirname(parent) != parent else ""
    if parent and not os.path.isdir(parent):
        raise RunFilesError(f"{flag} {prefix!r} cannot be written: {parent!r} is a file, not a directory")
    if parent and not os.access(parent, os.W_OK):
        raise RunFilesError(f"{flag} {prefix!r} cannot be written: no permission to write in {parent!r}")


def remove_stale_shards(prefix: str, since: float) -> None:
    """After a rerun into the same prefix (--resume, or any rerun) with a different shard count, the old run's
    shards (``-SSSSS-of-MMMMM`` with another MMMMM, older than this run) would be read as part of the output."""
    try:
        files = FileSystems.match([f"{prefix}-?????-of-?????.jsonl"])[0].metadata_list
    except Exception:  # noqa: BLE001 - tidying up is best effort
        return
    fresh = {m.group(1) for f in files if (m := _SHARD.search(f.path)) and f.last_updated_in_seconds >= since}
    stale = [f.path for f in files if (m := _SHARD.search(f.path)) and fresh and m.group(1) not in fresh
             and f.last_updated_in_seconds < since]
    if stale:
        log.info("removing %d shard(s) of an earlier run with another shard count: %s", len(stale), stale)
        FileSystems.delete(stale)
