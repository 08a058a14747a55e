"""The progress line (client/progress.py): format, an ETA that is honest for slow and stalled runs, the
launcher's monitor (plain lines and a tqdm line), and the per-process count."""

from __future__ import annotations

import io
import logging
import time

from client.progress import Progress, ProgressMonitor, ProgressSettings, RateWindow, format_line


def test_line_with_a_known_total_has_rate_eta_429s_spend_and_in_flight():
    line = format_line(1204, 2000, 31.2, 26.0, totals={"attempts": 1310, "status_429": 11,
                                                       "cost_nano_usd": 12_300_000, "in_flight": 64})
    assert line == ("chatbeam progress: 1,204/2,000 records (60%), 31.2 records/s, ETA 26s, "
                    "429 0.8% of 1,310 requests, ~$0.0123, 64 in flight")
    assert format_line(2000, 2000, 500.0, None) == "chatbeam progress: 2,000/2,000 records (100%), 500.0 records/s"
    assert "ETA 1h23m" in format_line(10, 5000, 1.0, 4980.0)


def test_line_without_a_total_or_an_eta():
    assert format_line(50, None, 5.0, None) == "chatbeam progress: 50 records, 5.0 records/s"
    assert format_line(3, 120, 0.01, None) == "chatbeam progress: 3/120 records (2%), 0.6 records/min, ETA unknown"


def test_the_eta_waits_for_enough_recent_completions():
    window = RateWindow()
    window.add(0.0, 0)
    for t in range(1, 9):
        window.add(float(t), t * 100)  # 100 records/s, but only 8 s so far
    assert window.eta(8.0, 10_000) is None  # shorter than the minimum window: no guess yet
    window.add(12.0, 1200)
    assert window.eta(12.0, 10_000) == 88.0  # 8,800 to go at 100/s


def test_a_slow_run_gets_no_eta_until_it_means_something_then_an_honest_one():
    """--rpm 0.1-like: one record every 100 s. An average since the start would promise minutes."""
    window = RateWindow()
    window.add(0.0, 0)
    done = 0
    for t in range(5, 1200, 5):
        if t % 100 == 0:
            done += 1
        window.add(float(t), done)
        if done < 10:
            assert window.eta(float(t), 120) is None, t
    eta = window.eta(1195.0, 120)
    assert eta is not None and eta > 100 * 100  # ~108 records at one per 100 s: three hours, not 30 s


def test_a_stall_lowers_the_rate_and_is_named():
    window = RateWindow()
    for t in range(0, 21):
        window.add(float(t), t * 10)  # 10/s for 20 s
    rate_before = window.rate(20.0)
    for t in range(21, 81):
        window.add(float(t), 200)  # then nothing for a minute
    assert window.rate(80.0) < rate_before / 2
    assert window.stalled_for(80.0) == 60.0
    line = format_line(200, 1000, window.rate(80.0), window.eta(80.0, 1000), stalled_s=window.stalled_for(80.0))
    assert line.endswith("no record finished for 1m00s")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_monitor_prints_even_when_nothing_finishes():
    clock, totals = FakeClock(), {"done": 0, "in_flight": 3, "attempts": 3, "status_429": 0}
    monitor = ProgressMonitor(lambda: dict(totals), total=120, interval_s=5, terminal=False, clock=clock)
    monitor.window.add(0.0, 0)
    for _ in range(12):
        clock.now += 5
        monitor.tick()
    assert len(monitor.lines) == 12  # one per tick: a hung run is never silent
    assert monitor.lines[-1] == ("chatbeam progress: 0/120 records (0%), 0.0 records/s, ETA unknown, "
                                 "429 0.0% of 3 requests, 3 in flight, no record finished for 1m00s")


def test_the_monitor_says_starting_before_any_worker_wrote_and_survives_read_errors():
    clock = FakeClock()
    reads = iter([None, RuntimeError("gcs hiccup"), {"done": 4, "in_flight": 1}])

    def read():
        value = next(reads)
        if isinstance(value, Exception):
            raise value
        return value

    monitor = ProgressMonitor(read, total=10, terminal=False, clock=clock)
    assert monitor.tick() == "chatbeam progress: 0/10 records, starting"
    assert monitor.tick() == "chatbeam progress: 0/10 records, starting"
    assert monitor.tick().startswith("chatbeam progress: 4/10 records (40%)")


def test_on_a_terminal_it_is_one_updating_tqdm_line():
    stream = io.StringIO()
    clock = FakeClock()
    totals = {"done": 0}
    monitor = ProgressMonitor(lambda: dict(totals), total=100, terminal=True, stream=stream, clock=clock)
    for done in (10, 50, 100):
        clock.now += 1
        totals["done"] = done
        monitor.tick()
    monitor._bar.close()
    text = stream.getvalue()
    assert text.count("\n") <= 1 and text.count("\r") >= 3  # redrawn in place
    assert "100/100 records (100%)" in text and "chatbeam" in text


def test_start_resets_per_run_and_stop_is_reference_counted():
    now = [0.0]
    progress = Progress(clock=lambda: now[0])
    progress.start(ProgressSettings(total=10, interval_s=0))
    progress.start(ProgressSettings(total=99, interval_s=0))  # a second DoFn instance of the same run
    progress.advance(4)
    now[0] = 2.0
    assert progress.line() == "chatbeam progress: 4/10 records (40%), 2.0 records/s, ETA unknown"
    progress.stop()
    progress.stop()
    progress.stop()  # extra stops are harmless
    progress.start(ProgressSettings(total=5, interval_s=0))
    assert progress.done == 0


def test_a_worker_s_own_line_is_logged_every_interval_even_when_idle(caplog):
    progress = Progress()
    with caplog.at_level(logging.INFO, logger="chatbeam.progress"):
        progress.start(ProgressSettings(total=100, interval_s=0.05))
        progress.advance(10)
        deadline = time.monotonic() + 5
        while len(caplog.records) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        progress.stop()
    assert len(caplog.records) >= 3  # nothing changed after the first, and it kept logging
    assert caplog.records[0].getMessage().startswith("chatbeam progress: 10/100 records (10%)")
