"""Shared fixtures for the emulator tests: one emulator served from a thread, reset before each test, and one on a
manual clock (`clocked`) for the tests of time windows (storms, capacity, token expiry).

The repo root goes first on sys.path: an editable install made while ``emulator/`` was empty registers
it as a namespace package, which would hide ``emulator/__init__.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import httpx2
import pytest

ROOT = str(Path(__file__).resolve().parents[2])
if sys.path[0] != ROOT:
    sys.path.insert(0, ROOT)
if getattr(sys.modules.get("emulator"), "__file__", "") is None:  # imported as a namespace: import afresh
    for name in [m for m in sys.modules if m == "emulator" or m.startswith("emulator.")]:
        del sys.modules[name]

from emulator import EmulatorConfig, RunningEmulator, serve_in_thread  # noqa: E402
from tests.emulator._support import ManualClock  # noqa: E402


@pytest.fixture(scope="session")
def _server() -> Iterator[RunningEmulator]:
    with serve_in_thread(EmulatorConfig(seed=1)) as running:
        yield running


@pytest.fixture
def emu(_server: RunningEmulator) -> RunningEmulator:
    """The shared emulator with default faults and empty stats."""
    _server.set_faults({})
    _server.reset()
    return _server


@pytest.fixture
def http(emu: RunningEmulator) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=emu.url, timeout=10) as client:
        yield client


@pytest.fixture(scope="session")
def _clocked_server() -> Iterator[tuple[RunningEmulator, ManualClock]]:
    clock = ManualClock()
    with serve_in_thread(EmulatorConfig(seed=1), clock=clock) as running:
        yield running, clock


@pytest.fixture
def clocked(_clocked_server: tuple[RunningEmulator, ManualClock]) -> tuple[RunningEmulator, ManualClock]:
    """(emulator, clock): an emulator whose fault windows and token lifetimes follow ``clock.advance`` only."""
    running, clock = _clocked_server
    running.set_faults({})
    running.reset()
    return running, clock


@pytest.fixture
def clocked_http(clocked: tuple[RunningEmulator, ManualClock]) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=clocked[0].url, timeout=30) as client:
        yield client
