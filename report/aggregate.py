"""A run's outputs → the small, JSON-able numbers the report page draws. Pure: no Beam, no files, no plotting.

    agg = RunAggregate(prices=PriceTable.load())
    for line in result_lines: agg.add_line(line)        # results and errors alike (an error has ``error_type``)
    for doc in telemetry_docs: agg.add_telemetry(doc)   # client/telemetry.py files, when the run wrote them
    agg.run_info, agg.summary = run_json, summary_json  # optional: the run's options, the CLI summary
    data = agg.data()                                    # {"totals", "timeline", "latency", "by_model", ...}

Memory is bounded whatever the run's size, apart from 4 bytes per result for exact latency percentiles (40 MB for
ten million results): the timeline is counted per wall-clock second and binned at the end (at most ``MAX_BINS``
bins), error examples and the slowest records are capped, and nothing else of a record is kept. So the page for a
100,000-record run is the same size as for 1,000.
"""

from __future__ import annotations

import array
import datetime
import heapq
import itertools
import math
import re
from collections import defaultdict
from typing import Any, Iterable, Mapping

import numpy as np
import orjson

from client.errors import redact
from client.pricing import PriceTable

__all__ = ["MAX_BINS", "RunAggregate", "bin_width", "redact_options"]

MAX_BINS = 150  # time bins per chart: enough to see a 429 storm, few enough that a bin is not noise
NICE_WIDTHS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
EXAMPLES_PER_TYPE = 3
SLOWEST = 15
MESSAGE_CHARS = 300
HIST_BINS = 40

# Per wall-clock second of the run: outputs finished, records started, retries, final rate_limited errors.
_RESULTS, _ERRORS, _STARTED, _RETRIES, _RATE_LIMITED = range(5)

_USERINFO = re.compile(r"(://[^/@:\s]+:)[^@/\s]+@")
_SECRET_NAME = re.compile(r"(?i)(key|token|secret|password|credential)")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_SECRET_JSON_VALUE = re.compile(r'(?i)("[^"]*(?:key|token|secret|password)[^"]*"\s*:\s*")[^"]*"')


def bin_width(span_s: float, max_bins: int = MAX_BINS) -> int:
    """The smallest 'nice' width (1 s, 2 s, 5 s, ... 1 day) that covers ``span_s`` in at most ``max_bins`` bins."""
    for width in NICE_WIDTHS_S:
        if span_s / width <= max_bins:
            return width
    return int(math.ceil(span_s / max_bins / 86400)) * 86400


def _epoch(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        stamp = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return stamp.timestamp()


def _redact_value(name: str, value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_redact_value(name, v) for v in value]
    if not isinstance(value, str):
        return value
    if name == "api_key_env":  # the name of a variable; anything else there is a key typed by mistake
        return value if _ENV_NAME.match(value) else "[REDACTED]"
    if _SECRET_NAME.search(name) and name not in ("max_total_tokens", "est_output_tokens"):
        return "[REDACTED]"
    value = _SECRET_JSON_VALUE.sub(r'\1[REDACTED]"', redact(value))  # e.g. --params '{"api_key": "..."}'
    return _USERINFO.sub(r"\1[REDACTED]@", value)


def redact_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The run's options for display: known secret patterns (client/errors.py ``redact``), passwords in URLs and
    the values of secret-looking option names are replaced by ``[REDACTED]``."""
    return {name: _redact_value(name, value) for name, value in sorted(options.items())}


class RunAggregate:
    """Feed it every output line (and the telemetry files), then call ``data()`` once."""

    def __init__(self, prices: PriceTable | None = None, *, examples_per_type: int = EXAMPLES_PER_TYPE,
                 slowest: int = SLOWEST) -> None:
        self.prices = prices if prices is not None else PriceTable.load()
        self.run_info: dict[str, Any] | None = None
        self.summary: dict[str, Any] | None = None
        self._examples_per_type = examples_per_type
        self._slowest_n = slowest
        self._seconds: defaultdict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
        self._latencies = array.array("f")
        self._models: dict[tuple[str, str | None], dict[str, float]] = {}
        self._errors: dict[str, dict[str, Any]] = {}
        self._slowest: list[tuple[float, int, dict[str, Any]]] = []
        self._tiebreak = itertools.count()
        self._telemetry: list[dict[str, Any]] = []
        self.results = self.errors = self.read_errors = self.unparsable = self.untimed = self.cached = 0
        self._first: float | None = None
        self._last: float | None = None

    # -- input -----------------------------------------------------------------------------------------------------

    def add_line(self, line: bytes | str) -> None:
        if not line.strip():
            return
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            self.unparsable += 1
            return
        if isinstance(record, dict):
            self.add(record)
        else:
            self.unparsable += 1

    def add(self, record: Mapping[str, Any]) -> None:
        """One result or error record (as its JSON object)."""
        is_error = "error_type" in record
        if not is_error and record.get("cached"):
            # Served from the response cache (--cache): its times, latency and usage are the original call's, on an
            # earlier run; it is not part of this run's timeline, latency or spend.
            self.results += 1
            self.cached += 1
            return
        started, finished = _epoch(record.get("started_at")), _epoch(record.get("finished_at"))
        if finished is not None:
            self._first = finished if self._first is None else min(self._first, finished)
            self._last = finished if self._last is None else max(self._last, finished)
            second = self._seconds[int(finished)]
            second[_ERRORS if is_error else _RESULTS] += 1
            second[_RETRIES] += max(0, int(record.get("attempts") or 0) - 1)
            if is_error and record.get("error_type") == "rate_limited":
                second[_RATE_LIMITED] += 1
        if started is not None:
            self._first = started if self._first is None else min(self._first, started)
            self._seconds[int(started)][_STARTED] += 1
        if is_error:
            self._add_error(record, started, finished)
        else:
            self._add_result(record, started)

    def add_telemetry(self, doc: Mapping[str, Any]) -> None:
        """One worker process's samples (client/telemetry.py's file)."""
        fields = doc.get("fields") or []
        rows = doc.get("samples") or []
        if "t" in fields and rows:
            self._telemetry.append({"fields": list(fields), "samples": rows, "run_id": doc.get("run_id")})

    def _add_result(self, record: Mapping[str, Any], started: float | None) -> None:
        self.results += 1
        latency = float(record.get("latency_ms") or 0.0)
        self._latencies.append(latency)
        if started is None:
            self.untimed += 1
        usage = record.get("usage") or {}
        key = (str(record.get("model") or "unknown"), record.get("service_tier"))
        row = self._models.setdefault(key, {"records": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                            "reasoning_tokens": 0, "cached_tokens": 0, "total_tokens": 0,
                                            "cost_usd": 0.0})
        row["records"] += 1
        self._add_usage(row, key[0], usage)
        self._keep_slow(latency, {"id": record.get("id"), "outcome": record.get("finish_reason") or "result",
                                  "model": key[0], "latency_ms": round(latency, 1),
                                  "attempts": record.get("attempts"), "started_at": record.get("started_at"),
                                  "total_tokens": usage.get("total_tokens")})

    def _add_usage(self, row: dict[str, float], model: str, usage: Mapping[str, Any]) -> None:
        for name in ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens", "total_tokens"):
            row[name] += int(usage.get(name) or 0)
        row["cost_usd"] += self.prices.cost(model, int(usage.get("prompt_tokens") or 0),
                                            int(usage.get("completion_tokens") or 0))

    def _add_error(self, record: Mapping[str, Any], started: float | None, finished: float | None) -> None:
        self.errors += 1
        error_type = str(record.get("error_type"))
        if record.get("stage") == "read":
            self.read_errors += 1
        entry = self._errors.setdefault(error_type, {"error_type": error_type, "stage": record.get("stage"),
                                                     "count": 0, "retryable": bool(record.get("retryable")),
                                                     "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < self._examples_per_type:
            message = redact(str(record.get("message") or ""))
            if len(message) > MESSAGE_CHARS:
                message = message[:MESSAGE_CHARS] + "…"
            entry["examples"].append({"id": redact(str(record.get("id"))) if record.get("id") is not None else None,
                                      "status_code": record.get("status_code"), "attempts": record.get("attempts"),
                                      "message": message})
        usage = record.get("usage")  # errors that were paid for carry usage once the results contract lands
        if isinstance(usage, Mapping) and usage:
            model = str((record.get("record") or {}).get("model") or "unknown")
            key = (model, record.get("service_tier"))
            row = self._models.setdefault(key, {"records": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                                "reasoning_tokens": 0, "cached_tokens": 0, "total_tokens": 0,
                                                "cost_usd": 0.0})
            self._add_usage(row, model, usage)
        if started is not None and finished is not None:
            self._keep_slow((finished - started) * 1000, {
                "id": record.get("id"), "outcome": error_type, "model": None,
                "latency_ms": round((finished - started) * 1000, 1), "attempts": record.get("attempts"),
                "started_at": record.get("started_at"), "total_tokens": None})

    def _keep_slow(self, latency: float, row: dict[str, Any]) -> None:
        item = (latency, next(self._tiebreak), row)
        if len(self._slowest) < self._slowest_n:
            heapq.heappush(self._slowest, item)
        elif latency > self._slowest[0][0]:
            heapq.heapreplace(self._slowest, item)

    # -- output ----------------------------------------------------------------------------------------------------

    def data(self) -> dict[str, Any]:
        timeline = self._timeline()
        return {
            "totals": {"outputs": self.results + self.errors, "results": self.results, "errors": self.errors,
                       "read_errors": self.read_errors, "unparsable_lines": self.unparsable,
                       "results_without_times": self.untimed, "cached_results": self.cached,
                       "first_at": self._first, "last_at": self._last,
                       "span_s": round(self._last - self._first, 3) if self._first is not None else None,
                       "cost_usd": round(sum(r["cost_usd"] for r in self._models.values()), 6),
                       "prices_as_of": self.prices.as_of},
            "timeline": timeline,
            "latency": self._latency(),
            "by_model": [{"model": model, "tier": tier, **{k: (round(v, 6) if k == "cost_usd" else int(v))
                                                           for k, v in row.items()}}
                         for (model, tier), row in sorted(self._models.items(),
                                                          key=lambda kv: (-kv[1]["records"], kv[0][0]))],
            "errors_by_type": sorted(self._errors.values(), key=lambda e: (-e["count"], e["error_type"])),
            "slowest": [row for _, _, row in sorted(self._slowest, key=lambda item: (-item[0], item[1]))],
            "run": {k: v for k, v in (self.run_info or {}).items() if k != "options"},
            "options": redact_options((self.run_info or {}).get("options") or {}),
            "summary": self.summary,
        }

    def _latency(self) -> dict[str, Any] | None:
        if not self._latencies:
            return None
        values = np.frombuffer(self._latencies, dtype=np.float32).astype(np.float64)
        p50, p95, p99 = (float(x) for x in np.percentile(values, [50, 95, 99]))
        low, high = float(values.min()), float(values.max())
        log_bins = low > 0 and high / low > 20  # long tails: log-spaced bins
        if log_bins:
            edges = np.geomspace(low, high, HIST_BINS + 1)
        else:
            edges = np.linspace(low, max(high, low + 1.0), HIST_BINS + 1)
        counts, edges = np.histogram(values, bins=edges)
        return {"count": int(values.size), "p50": round(p50, 1), "p95": round(p95, 1), "p99": round(p99, 1),
                "max": round(high, 1), "mean": round(float(values.mean()), 1), "log_bins": log_bins,
                "edges": [round(float(e), 2) for e in edges], "counts": [int(c) for c in counts]}

    def _timeline(self) -> dict[str, Any] | None:
        start, end = self._span()
        if start is None:
            return None
        width = bin_width(max(end - start, 1.0))
        t0 = math.floor(start / width) * width
        n = int((end - t0) // width) + 1
        results, errors, retries, rate_limited = ([0] * n for _ in range(4))
        started_bins, finished_bins = [0] * n, [0] * n
        for second, row in self._seconds.items():
            i = min(max(int((second - t0) // width), 0), n - 1)
            results[i] += row[_RESULTS]
            errors[i] += row[_ERRORS]
            retries[i] += row[_RETRIES]
            rate_limited[i] += row[_RATE_LIMITED]
            started_bins[i] += row[_STARTED]
            finished_bins[i] += row[_RESULTS] + row[_ERRORS]
        # Records taken by the call step and not yet finished, at the end of each bin (includes records waiting for
        # the limiter or a backoff). Read errors have no times and are not in it.
        in_progress, open_now = [], 0
        for s, f in zip(started_bins, finished_bins):
            open_now += s - f
            in_progress.append(max(open_now, 0))
        timeline = {"t0": t0, "bin_s": width, "n": n, "results": results, "errors": errors, "retries": retries,
                    "rate_limited_errors": rate_limited, "records_in_progress": in_progress}
        timeline.update(self._engine_series(t0, width, n))
        return timeline

    def _span(self) -> tuple[float | None, float]:
        start, end = self._first, self._last
        for doc in self._relevant_telemetry():
            t = [row[0] for row in doc["samples"]]
            start = min(t) if start is None else min(start, min(t))
            end = max(t) if end is None else max(end, max(t))
        return start, end if end is not None else 0.0

    def _relevant_telemetry(self) -> list[dict[str, Any]]:
        """Telemetry of the runs that overlap the outputs' time span (an old run into the same prefix is left out);
        all of it when the outputs carry no times."""
        if self._first is None:
            return self._telemetry
        lo, hi = self._first - 60, (self._last or self._first) + 60
        return [d for d in self._telemetry if d["samples"][-1][0] >= lo and d["samples"][0][0] <= hi]

    def _engine_series(self, t0: float, width: int, n: int) -> dict[str, Any]:
        docs = self._relevant_telemetry()
        if not docs:
            return {"in_flight": None, "limit": None, "http_429": None, "attempts": None, "retries_engine": None}
        in_flight, limit = [0.0] * n, [0.0] * n
        counts = {name: [0.0] * n for name in ("status_429", "attempts", "retries")}
        for doc in docs:
            col = {name: i for i, name in enumerate(doc["fields"])}
            rows = sorted(doc["samples"], key=lambda r: r[0])
            peak: dict[int, float] = {}
            last_limit: dict[int, float] = {}
            previous = None
            for row in rows:
                i = min(max(int((row[0] - t0) // width), 0), n - 1)
                peak[i] = max(peak.get(i, 0.0), _col(row, col, "in_flight"))
                last_limit[i] = _col(row, col, "limit")
                for name in counts:
                    now = _col(row, col, name)
                    counts[name][i] += max(0.0, now - (_col(previous, col, name) if previous else 0.0))
                previous = row
            # A process counts in every bin from its first to its last sample (forward-filled between samples).
            first_i, last_i = min(peak), max(peak)
            current_peak = current_limit = 0.0
            for i in range(first_i, last_i + 1):
                current_peak = peak.get(i, current_peak)
                current_limit = last_limit.get(i, current_limit)
                in_flight[i] += current_peak
                limit[i] += current_limit
        return {"in_flight": in_flight, "limit": limit, "http_429": counts["status_429"],
                "attempts": counts["attempts"], "retries_engine": counts["retries"],
                "processes": len(docs)}


def _col(row: Iterable[float] | None, col: Mapping[str, int], name: str) -> float:
    if row is None or name not in col:
        return 0.0
    return float(row[col[name]])  # type: ignore[index]
