"""Run the emulator: in a background thread (tests) or in the foreground (``python -m emulator``).

Usage::

    with serve_in_thread(EmulatorConfig(seed=1)) as emu:
        client = openai.OpenAI(base_url=emu.url + "/v1", api_key="x", max_retries=0)
        emu.set_faults(storm_429_s=2)     # same keys as the config file
        emu.stats()["requests"]
        emu.reset()

    serve(EmulatorConfig(port=0))   # prints {"event": "ready", "url": "http://127.0.0.1:PORT"}
"""

from __future__ import annotations

import copy
import importlib.util
import json
import socket
import sys
import threading
import time
import urllib.request
from typing import Any, Callable

import uvicorn

from emulator.app import create_app
from emulator.config import EmulatorConfig

__all__ = ["RunningEmulator", "serve_in_thread", "serve", "bind"]

_BACKLOG = 4096


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 picks a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(_BACKLOG)
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(app: Any, config: EmulatorConfig) -> uvicorn.Config:
    kwargs: dict[str, Any] = {}
    if importlib.util.find_spec("httptools"):
        kwargs["http"] = "httptools"
    if importlib.util.find_spec("uvloop"):
        kwargs["loop"] = "uvloop"
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"  # stdout carries only the ready line
    return uvicorn.Config(
        app,
        log_config=log_config,
        access_log=config.access_log,  # uvicorn's access log has no headers, so no tokens
        log_level="info" if config.access_log else "warning",
        lifespan="off",
        backlog=_BACKLOG,
        timeout_keep_alive=30,
        **kwargs,
    )


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.should_exit:
            self._on_ready()


class RunningEmulator:
    """A handle on an emulator served from a daemon thread; a context manager."""

    def __init__(self, server: _Server, thread: threading.Thread, url: str, app: Any) -> None:
        self._server = server
        self._thread = thread
        self.url = url
        self.app = app

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stats(self, fingerprints: bool = True) -> dict[str, Any]:
        """``GET /emulator/stats``."""
        return self._call("GET", "/emulator/stats" + ("" if fingerprints else "?fingerprints=0"))

    def reset(self) -> None:
        """``POST /emulator/reset``: clear stats and token first-use times."""
        self._call("POST", "/emulator/reset")

    def set_faults(self, faults: dict[str, Any] | None = None, **keys: Any) -> dict[str, Any]:
        """``POST /emulator/faults``: replace every fault setting (unnamed keys get defaults)."""
        return self._call("POST", "/emulator/faults", {**(faults or {}), **keys})

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> "RunningEmulator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_in_thread(config: EmulatorConfig | None = None, timeout_s: float = 10.0,
                    store: Any = None, clock: Callable[[], float] | None = None) -> RunningEmulator:
    """Serve on 127.0.0.1 (a free port) from a daemon thread; return once it accepts connections. ``store``: where
    batch jobs read and write (default: Cloud Storage via STORAGE_EMULATOR_HOST; `emulator.gcs.MemoryStore`).
    ``clock``: the app's clock for fault windows and token expiry (default ``time.monotonic``; see `create_app`)."""
    config = config or EmulatorConfig()
    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = create_app(config, store, clock or time.monotonic)
    ready = threading.Event()
    server = _Server(_uvicorn_config(app, config), ready.set)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="emulator", daemon=True)
    thread.start()
    if not ready.wait(timeout_s):
        server.should_exit = True
        raise RuntimeError("the emulator did not start in time")
    return RunningEmulator(server, thread, url, app)


def serve(config: EmulatorConfig) -> None:
    """Serve in the foreground; print one ready line to stdout once accepting connections."""
    sock = bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def ready() -> None:
        sys.stdout.write(json.dumps({"event": "ready", "url": url}) + "\n")
        sys.stdout.flush()
        print(f"emulator listening on {url} (seed {config.seed})", file=sys.stderr, flush=True)

    _Server(_uvicorn_config(create_app(config), config), ready).run(sockets=[sock])
