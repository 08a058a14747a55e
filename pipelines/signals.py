"""SIGINT and SIGTERM stop a run cleanly: outputs journaled, children stopped, one line, exit 130 / 143.

    with stop_on_signals():
        try:
            result = run(argv)
        except RunInterrupted as stop:
            return finish_interrupted(stop)         # flush, stop children, print stop.line(); 130 or 143

A signal raises ``RunInterrupted`` in the main thread, wherever it is (inside Beam's runner, usually), so every
``with``/``finally`` on the way out runs: the ``--emulator`` child is terminated, the run lock released, and Beam
closes its worker processes (``--direct_running_mode multi_processing``) by closing their control channel, so they
exit normally and flush their own journals (``client.journal.flush_all`` runs at interpreter exit). Then this
process's journal buffers are flushed, any child still alive gets SIGTERM and, ``CHILD_GRACE_S`` later, SIGKILL,
and one line says how to ``--resume``. No traceback: Beam's log records of the unwinding and the threads it leaves
failing are silenced once a stop has begun.

A second signal, or an unwinding that takes longer than ``GRACE_S`` (a runner that waits on a worker forever), ends
the process at once the same way: flush, children killed, the line, ``os._exit``. A terminal's Ctrl-C also reaches
the children directly (they share the process group); Python workers then print their own KeyboardInterrupt.

Process discovery reads ``/proc`` (Linux; elsewhere no children are found and Beam's own cleanup is all there is).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
import warnings
from typing import Iterator

from client.journal import flush_all

__all__ = ["CHILD_GRACE_S", "GRACE_S", "RunInterrupted", "descendants", "finish_interrupted", "set_resume_hint",
           "stop_children", "stop_on_signals"]

GRACE_S = 30.0  # the unwinding may take this long before the process ends itself
CHILD_GRACE_S = 5.0  # children get this long after SIGINT before SIGKILL
_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}
_HINT = ["rerun the same command to do the work again"]


def set_resume_hint(hint: str) -> None:
    """What the stop line tells the user to do; extract.run sets it once it knows the run's paths."""
    _HINT[0] = hint


class RunInterrupted(BaseException):
    """The run was stopped by a signal. A BaseException, like KeyboardInterrupt, so no ``except Exception`` on the
    way out swallows it. Beam re-raises exceptions from a DoFn as ``type(exc)(message + " [while running ...]")``,
    so it is also built from such a message (the signal is read back from it)."""

    def __init__(self, what: int | str) -> None:
        if isinstance(what, int):
            signum, text = what, f"stopped by {_NAMES.get(what, what)}"
        else:
            signum = next((sig for sig, name in _NAMES.items() if f"stopped by {name}" in what), signal.SIGTERM)
            text = what
        super().__init__(text)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum

    def line(self) -> str:
        return f"chatbeam: stopped by {_NAMES.get(self.signum, self.signum)}; {_HINT[0]}"


class _QuietInterrupt(logging.Filter):
    """Drops the log records of an interrupted run's unwinding: Beam logs each exception it re-raises, with its
    traceback, and relays its workers' complaints as they are shut down. The one line of ``finish_interrupted`` is
    what the user sees."""

    stopping = False

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, RunInterrupted) or "RunInterrupted" in str(record.msg):
            return False
        return not (self.stopping and record.name.startswith("apache_beam"))


def descendants(pid: int | None = None) -> list[int]:
    """Every live descendant of ``pid`` (default: this process), children before grandchildren."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode("ascii", "replace")
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()  # after "(comm)": state, ppid, ...
        if len(fields) > 1 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], list(children.get(root, []))
    while todo:
        child = todo.pop(0)
        found.append(child)
        todo += children.get(child, [])
    return found


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def stop_children(grace_s: float = CHILD_GRACE_S) -> None:
    """SIGTERM to every descendant, then SIGKILL to those still alive after ``grace_s``."""
    pids = descendants()
    if not pids:
        return
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and descendants():
        time.sleep(0.05)
    _signal_all(descendants(), signal.SIGKILL)


def finish_interrupted(stop: RunInterrupted, *, grace_s: float = CHILD_GRACE_S) -> int:
    """After the unwinding: flush this process's journals, stop the children, print the line; the exit code."""
    flush_all()
    stop_children(grace_s)
    # Work cut off mid-flight (a connection attempt of the HTTP pool) is torn down at exit; its "never awaited"
    # warnings would bury the one line that matters.
    warnings.simplefilter("ignore", RuntimeWarning)
    print(stop.line(), file=sys.stderr, flush=True)
    return stop.exit_code


def _hard_exit(stop: RunInterrupted, why: str) -> None:
    try:
        flush_all()
        _signal_all(descendants(), signal.SIGKILL)
        print(f"{stop.line()} ({why})", file=sys.stderr, flush=True)
    finally:
        os._exit(stop.exit_code)


def _quiet_threads(args: threading.ExceptHookArgs) -> None:
    pass


@contextlib.contextmanager
def stop_on_signals(grace_s: float = GRACE_S) -> Iterator[None]:
    """While inside: SIGINT/SIGTERM raise RunInterrupted in the main thread (see the module docstring). Only in the
    main thread (Python allows handlers nowhere else); elsewhere the block runs with the signals untouched."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    first: list[RunInterrupted] = []
    quiet = _QuietInterrupt()

    def handler(signum: int, frame: object) -> None:
        if first:
            _hard_exit(first[0], "a second signal: stopped at once")
        stop = RunInterrupted(signum)
        first.append(stop)
        threading.excepthook = _quiet_threads  # Beam's worker threads fail as their workers go: consequences
        quiet.stopping = True
        # Handlers installed later (a terminal's progress bar) lack the filter: silence Beam at the source too.
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL + 1)
        timer = threading.Timer(grace_s, _hard_exit, (stop, f"still stopping after {grace_s:g} s: stopped at once"))
        timer.daemon = True
        timer.start()
        raise stop

    previous = {sig: signal.signal(sig, handler) for sig in _NAMES}
    handlers = logging.getLogger().handlers
    for log_handler in handlers:
        log_handler.addFilter(quiet)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        if not quiet.stopping:  # after a stop, Beam's teardown at interpreter exit stays quiet too
            for log_handler in handlers:
                log_handler.removeFilter(quiet)
