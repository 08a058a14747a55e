"""What the CLI shows of worker processes' logs under --direct_running_mode multi_processing (pipelines/worker_logs.py).

The filter is tested on records shaped like Beam's relay (``Worker: <log entry dump>``); the end-to-end run is in
tests/e2e/test_multiprocess_output.py.
"""

from __future__ import annotations

import logging

from pipelines.worker_logs import RELAY_LOGGER, WorkerLogFilter, quiet_worker_startup


def _relayed(level: int, message: str) -> logging.LogRecord:
    entry = (f'severity: WARN timestamp {{   seconds: 1   nanos: 2 }} message: "{message}" '
             f'log_location: "/x/pipeline_options.py:570" thread: "MainThread"')
    return logging.LogRecord(RELAY_LOGGER, level, __file__, 1, "Worker: %s", (entry,), None)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_start_up_warnings_are_dropped_progress_is_shown_and_other_warnings_pass():
    progress = logging.getLogger("test.worker_logs.progress")
    progress.setLevel(logging.INFO)
    progress.propagate = False
    seen = _Collect()
    progress.addHandler(seen)
    keep = WorkerLogFilter(progress)
    unparseable = _relayed(logging.WARNING, "Discarding unparseable args: [\\'--max_attempts=6\\', \\'--input=x\\']")
    assert keep.filter(unparseable) is False
    assert keep.filter(_relayed(logging.WARNING, "No semi_persistent_directory found: User registered")) is False
    line = "chatbeam progress: 163/300 records (54%), 32.6 records/s, ETA 4s"
    assert keep.filter(_relayed(logging.INFO, line)) is False  # re-logged instead
    assert seen.messages == [line]
    assert keep.filter(_relayed(logging.WARNING, "retrying in 2.00s after RateLimited")) is True
    assert keep.filter(_relayed(logging.ERROR, "Python sdk harness failed")) is True
    assert keep.filter(_relayed(logging.INFO, "Creating client data channel for localhost:1")) is False
    assert keep.filter(logging.LogRecord(RELAY_LOGGER, logging.WARNING, __file__, 1, "not relayed", (), None))


def test_installing_twice_installs_one_filter():
    relay = logging.getLogger(RELAY_LOGGER)
    before = list(relay.filters)
    try:
        quiet_worker_startup()
        quiet_worker_startup()
        assert sum(isinstance(f, WorkerLogFilter) for f in relay.filters) == 1
        assert relay.getEffectiveLevel() <= logging.INFO
    finally:
        relay.filters[:] = before
        relay.setLevel(logging.NOTSET)
