"""chatbeam's exit codes, defined once, and the verdict on a finished run.

    code, reasons = verdict(summary, max_error_rate=0.25)

====  ==========================================================================================================
code  meaning
====  ==========================================================================================================
0     the run finished and did its work: every record is in the results or the errors, the error share is at most
      ``--max_error_rate``, and the circuit breaker never refused a record
1     the run crashed (an uncaught exception: a bug in chatbeam, or the runner / Dataflow job failed); outputs may
      be missing or partial, and a Python traceback says where
2     refused before any work: a bad command line, paths that collide, an input that does not exist, or another
      run holding the lock of the output prefix (one line on stderr)
3     the run finished and wrote everything, but failed: more than ``--max_error_rate`` of the records are errors
      (``budget_exhausted`` ones not counted: a run stopped by its budget did what it was told), or the circuit
      breaker stopped sending after a run of identical 401/403/404 answers
130   stopped by SIGINT (Ctrl-C); 143: stopped by SIGTERM. The journal is flushed: ``--resume`` finishes the run
====  ==========================================================================================================
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["CRASHED", "FAILED", "OK", "SIGINT", "SIGTERM", "USAGE", "verdict"]

OK = 0
CRASHED = 1
USAGE = 2
FAILED = 3
SIGINT = 130
SIGTERM = 143


def verdict(summary: Mapping[str, Any], max_error_rate: float) -> tuple[int, list[str]]:
    """(exit code, reasons) for a finished run's summary (pipelines/summary.build_summary)."""
    reasons = []
    refused = int(summary.get("breaker_refused", 0) or 0)
    if refused:
        reasons.append(f"{refused:,} records were not sent because the circuit breaker opened (every recent request "
                       "answered the same 401/403/404); fix the cause and finish them with --replay_errors")
    results, errors = int(summary.get("results", 0) or 0), int(summary.get("errors", 0) or 0)
    # Records the budget held back are not failures of the run: the cap the user set was reached (and said so).
    errors -= int((summary.get("errors_by_type") or {}).get("budget_exhausted", 0) or 0)
    if results + errors and errors / (results + errors) > max_error_rate:
        reasons.append(f"{errors:,} of {results + errors:,} records are errors ({errors / (results + errors):.0%}), "
                       f"more than --max_error_rate {max_error_rate:g}")
    return (FAILED if reasons else OK), reasons
