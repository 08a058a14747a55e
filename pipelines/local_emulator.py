"""Start the bundled Vertex emulator as a subprocess for one ``--emulator`` run, and stop it afterwards.

    with LocalEmulator(extra_args="--latency_ms 20") as emu:
        emu.url    # "http://127.0.0.1:PORT"

The pipeline starts it by module path (``python -m emulator``) and never imports it: the emulator stays a separate
program that could equally be any other Vertex-compatible server.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import threading

__all__ = ["EmulatorStartError", "LocalEmulator"]

READY_TIMEOUT_S = 30.0


class EmulatorStartError(RuntimeError):
    pass


class LocalEmulator:
    def __init__(self, extra_args: str = "", ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        self._args = [sys.executable, "-m", "emulator", "--host", "127.0.0.1", "--port", "0",
                      *shlex.split(extra_args)]
        self._timeout = ready_timeout_s
        self._proc: subprocess.Popen | None = None
        self.url: str | None = None

    def __enter__(self) -> "LocalEmulator":
        self._proc = subprocess.Popen(self._args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready: dict = {}

        def read_ready() -> None:
            for line in self._proc.stdout:  # the first JSON line with event=ready carries the URL
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(event, dict) and event.get("event") == "ready":
                    ready.update(event)
                    break
            threading.Thread(target=self._proc.stdout.read, daemon=True).start()  # keep the pipe drained

        reader = threading.Thread(target=read_ready, daemon=True)
        reader.start()
        reader.join(self._timeout)
        if "url" not in ready:
            self.__exit__(None, None, None)
            err = self._proc.stderr.read()[-2000:] if self._proc.poll() is not None else "(no ready line in time)"
            raise EmulatorStartError(f"the local emulator did not start: {err.strip()}")
        threading.Thread(target=self._proc.stderr.read, daemon=True).start()
        self.url = ready["url"]
        return self

    def __exit__(self, *exc) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
