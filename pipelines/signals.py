"""SIGINT and SIGTERM stop a run cleanly: outputs journaled, children stopped, one line, exit 130 / 143.

    with stop_on_signals():
        try:
            result = run(argv)
        except RunInterrupted as stop:
            return finish_interrupted(stop)         # flush, stop children, print stop.line(); 130 or 143

A signal raises ``RunInterrupted`` in the main thread, wherever it is (inside Beam's runner, usually), so every
``with``/``finally`` on the way out runs: the ``--emulator`` child is terminated, the run lock released. Then the
checkpoint journal buffers of this process are flushed (``client.journal.flush_all``) and any child process still
alive (Beam's multi-process workers) gets SIGINT — Python workers then exit through their own ``atexit`` journal
flush — and SIGKILL after ``CHILD_GRACE_S``. No traceback: one line saying how to ``--resume``.

SIGTERM is also forwarded (as SIGINT) to the children at once, since unlike a terminal's Ctrl-C it reached only
this process. A second signal, or an unwinding that takes longer than ``GRACE_S`` (a runner that waits on a worker
forever), ends the process at once the same way: flush, children killed, the line, ``os._exit``.

Process discovery reads ``/proc`` (Linux; elsewhere no children are found and Beam's own cleanup is all there is).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
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
    way out swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum

    def line(self) -> str:
        return f"chatbeam: stopped by {_NAMES.get(self.signum, self.signum)}; {_HINT[0]}"


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
    """SIGINT to every descendant, then SIGKILL to those still alive after ``grace_s``."""
    pids = descendants()
    if not pids:
        return
    _signal_all(pids, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and descendants():
        time.sleep(0.05)
    _signal_all(descendants(), signal.SIGKILL)


def finish_interrupted(stop: RunInterrupted, *, grace_s: float = CHILD_GRACE_S) -> int:
    """After the unwinding: flush this process's journals, stop the children, print the line; the exit code."""
    flush_all()
    stop_children(grace_s)
    print(stop.line(), file=sys.stderr, flush=True)
    return stop.exit_code


def _hard_exit(stop: RunInterrupted, why: str) -> None:
    try:
        flush_all()
        _signal_all(descendants(), signal.SIGKILL)
        print(f"{stop.line()} ({why})", file=sys.stderr, flush=True)
    finally:
        os._exit(stop.exit_code)


@contextlib.contextmanager
def stop_on_signals(grace_s: float = GRACE_S) -> Iterator[None]:
    """While inside: SIGINT/SIGTERM raise RunInterrupted in the main thread (see the module docstring). Only in the
    main thread (Python allows handlers nowhere else); elsewhere the block runs with the signals untouched."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    first: list[RunInterrupted] = []

    def handler(signum: int, frame: object) -> None:
        if first:
            _hard_exit(first[0], "a second signal: stopped at once")
        stop = RunInterrupted(signum)
        first.append(stop)
        if signum == signal.SIGTERM:
            _signal_all(descendants(), signal.SIGINT)
        timer = threading.Timer(grace_s, _hard_exit, (stop, f"still stopping after {grace_s:g} s: stopped at once"))
        timer.daemon = True
        timer.start()
        raise stop

    previous = {sig: signal.signal(sig, handler) for sig in _NAMES}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
