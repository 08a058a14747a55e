"""Local emulator of Vertex AI's OpenAI-compatible Chat Completions API (Gemini).

Imports nothing from the pipeline packages, and they import nothing from it.

Usage::

    python -m emulator --port 0 --latency_ms 200 --capacity_rps 50

    from emulator import EmulatorConfig, FaultConfig, create_app, serve_in_thread
    with serve_in_thread(EmulatorConfig(seed=1)) as emu:
        base_url = emu.url + "/v1/projects/p/locations/us-central1/endpoints/openapi"
        ...
        assert emu.stats()["duplicate_ok"] == 0

See docs/emulator.md for routes, faults, stats and the token-counting rule.
"""

from emulator.app import create_app
from emulator.config import EmulatorConfig, FaultConfig
from emulator.server import RunningEmulator, serve_in_thread

__all__ = ["create_app", "EmulatorConfig", "FaultConfig", "serve_in_thread", "RunningEmulator"]
