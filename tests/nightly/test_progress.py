"""The progress line (client/progress.py): format, ETA, reference-counted start/stop, reset per run."""

from __future__ import annotations

import logging
import time

from client.progress import Progress, ProgressSettings, format_line


def test_line_with_a_known_total_has_rate_and_eta():
    assert format_line(1204, 2000, 4.0) == "chatbeam progress: 1,204/2,000 records (60%), 301.0 records/s, ETA 3s"
    assert format_line(2000, 2000, 4.0).endswith("500.0 records/s")  # done: no ETA
    assert "ETA 1h23m" in format_line(10, 5000, 10.0)


def test_line_without_a_total_shows_done_and_rate():
    assert format_line(50, None, 10.0) == "chatbeam progress: 50 records, 5.0 records/s"


def test_start_resets_per_run_and_stop_is_reference_counted():
    now = [0.0]
    progress = Progress(clock=lambda: now[0])
    progress.start(ProgressSettings(total=10, interval_s=0))
    progress.start(ProgressSettings(total=99, interval_s=0))  # a second DoFn instance of the same run
    progress.advance(4)
    now[0] = 2.0
    assert progress.line() == "chatbeam progress: 4/10 records (40%), 2.0 records/s, ETA 3s"
    progress.stop()
    progress.stop()
    progress.stop()  # extra stops are harmless
    progress.start(ProgressSettings(total=5, interval_s=0))
    assert progress.done == 0


def test_the_thread_logs_while_records_finish(caplog):
    progress = Progress()
    with caplog.at_level(logging.INFO, logger="chatbeam.progress"):
        progress.start(ProgressSettings(total=100, interval_s=0.05))
        progress.advance(10)
        deadline = time.monotonic() + 5
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.02)
        progress.stop()
    assert caplog.records and caplog.records[0].getMessage().startswith("chatbeam progress: 10/100 records (10%)")
