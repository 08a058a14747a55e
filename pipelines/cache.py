"""The response cache's options (``--cache``, ``--cache_mode``, ``--cache_ttl_days``) and the ``chatbeam cache``
command. The cache itself: client/cache.py (entries, modes) and transforms/cache.py (the Beam steps).

    add_cache_arguments(parser)                              # from ChatbeamOptions._add_argparse_args
    settings = validate_cache(o, prices=...)      # None without --cache; raises ValueError (collisions: files.py)
    chatbeam cache compact gs://bucket/chatbeam-cache --cache_ttl_days 30 [Beam options, e.g. --runner ...]
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import uuid
from typing import Any, NoReturn, Sequence

from client.cache import CacheMode, CacheSettings, format_compaction, stamp
from client.pricing import PriceTable

__all__ = ["add_cache_arguments", "main", "validate_cache"]

log = logging.getLogger("chatbeam")

# A writer's hidden temporary file older than this belongs to a bundle that was killed: compaction deletes it.
STALE_TEMP_AFTER = datetime.timedelta(days=1)


def add_cache_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("response cache (README: Response cache)")
    group.add_argument("--cache",
                       help="answer records whose request was answered before from this cache (a local directory "
                            "or gs:// prefix shared across runs) and store new answers there")
    group.add_argument("--cache_mode", choices=[m.value for m in CacheMode],
                       help="read_write (default): serve hits, store new answers; read_only: serve, store nothing; "
                            "write_only: serve nothing, store answers the cache lacks; refresh: serve nothing, "
                            "store every answer (replacing older ones)")
    group.add_argument("--cache_ttl_days", type=float,
                       help="do not serve entries stored more than this many days ago (default: no limit)")


def _check_location(location: str) -> str:
    if "://" in location:
        if not location.startswith("gs://") or len(location.rstrip("/")) <= len("gs://"):
            raise ValueError(f"--cache {location!r}: give a local directory or a gs://bucket/prefix")
        return location.rstrip("/")
    if ":" in location.split("/")[0]:
        raise ValueError(f"--cache {location!r} looks like a BigQuery table; the cache is a local directory or a "
                         "gs:// prefix")
    if os.path.exists(location) and not os.path.isdir(location):
        raise ValueError(f"--cache {location!r} is a file, not a directory")
    return os.path.abspath(location)


def _check_writable(location: str) -> None:
    """Local caches only: the nearest existing directory must be writable (gs:// is checked by the writes)."""
    if "://" in location:
        return
    existing = location
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--cache {location!r} is not writable (use --cache_mode read_only to only read it)")


def validate_cache(o: Any, *, prices: PriceTable, now: datetime.datetime | None = None) -> CacheSettings | None:
    """The cache settings of ``o`` (a ChatbeamOptions view), or None without ``--cache``. Raises ValueError (one
    line) for a bad combination. Paths shared with the run's outputs or inputs: transforms/files.py rule 4."""
    if not o.cache:
        if o.cache_mode or o.cache_ttl_days is not None:
            raise ValueError("--cache_mode and --cache_ttl_days need --cache")
        return None
    if o.cache_ttl_days is not None and not o.cache_ttl_days > 0:
        raise ValueError("--cache_ttl_days must be positive")
    location = _check_location(o.cache)
    mode = CacheMode(o.cache_mode or CacheMode.READ_WRITE.value)
    if mode.stores:
        _check_writable(location)
    moment = now or datetime.datetime.now(datetime.timezone.utc)
    return CacheSettings(location=location, mode=mode, ttl_days=o.cache_ttl_days, run_started=stamp(moment),
                         prices=prices)


# -- chatbeam cache compact ----------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ValueError(message)  # main() prints one line and returns 2


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="chatbeam cache", description="Maintain a response cache (see the README).",
                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    compact = sub.add_parser(
        "compact", allow_abbrev=False,
        help="merge the cache's shards into few, one entry per request, dropping expired and invalid entries "
             "(a Beam pipeline; Beam options such as --runner pass through)")
    compact.add_argument("location", help="the cache: a local directory or gs:// prefix")
    compact.add_argument("--cache_ttl_days", type=float, help="also drop entries stored more than N days ago")
    return parser


def compact(location: str, *, ttl_days: float | None = None, beam_args: Sequence[str] = (),
            now: datetime.datetime | None = None) -> dict[str, int]:
    """Run the compaction pipeline over the shards there now; returns its chatbeam counters (with ``shards``)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.cache import CompactCache, list_shards, remove_stale_temp_files
    from transforms.metrics import chatbeam_counters

    moment = now or datetime.datetime.now(datetime.timezone.utc)
    settings = CacheSettings(location=location, ttl_days=ttl_days, run_started=stamp(moment))
    stale = remove_stale_temp_files(location, (moment - STALE_TEMP_AFTER).timestamp())
    shards = list_shards(location)  # fixed now: shards finalised later are neither read nor deleted
    if not shards:
        return {"shards": 0, "stale_temp_files_deleted": stale}
    p = beam.Pipeline(options=PipelineOptions(list(beam_args)))
    _ = p | "CompactCache" >> CompactCache(settings, shards, uuid.uuid4().hex)
    result = p.run()
    result.wait_until_finish()
    return {"shards": len(shards), "stale_temp_files_deleted": stale, **chatbeam_counters(result)}


def main(argv: Sequence[str]) -> int:
    """``chatbeam cache compact LOCATION [--cache_ttl_days N] [Beam options]``; exit 2 for a bad command line."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args, beam_args = _parser().parse_known_args(list(argv))
        from pipelines.argv import check_known_options  # imports Beam: only for the compact command

        check_known_options(beam_args)  # what Beam would only log and ignore: one line, with a suggestion
        if args.cache_ttl_days is not None and not args.cache_ttl_days > 0:
            raise ValueError("--cache_ttl_days must be positive")
        location = _check_location(args.location)
    except ValueError as exc:
        print(f"chatbeam cache: error: {str(exc).replace('--cache ', '')}", file=sys.stderr)
        return 2
    counters = compact(location, ttl_days=args.cache_ttl_days, beam_args=beam_args)
    if not counters["shards"]:
        print(f"chatbeam cache compact {location}: no shards, nothing to do")
        return 0
    print(format_compaction(location, counters["shards"], counters))
    return 0
