"""Constants and small helpers shared by the emulator tests (import as ``tests.emulator._support``)."""

from __future__ import annotations

from typing import Any

MANAGED = "/v1/projects/p/locations/us-central1/endpoints/openapi"
DEPLOYED = "/v1/projects/p/locations/us-central1/endpoints/1234"
PLAIN = "/v1"
CHAT = "/chat/completions"
MODEL = "google/gemini-2.5-flash"
AUTH = {"authorization": "Bearer test-token"}


def user(text: str, **extra: Any) -> dict[str, Any]:
    """A minimal managed-route body with one user message."""
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


class ManualClock:
    """A monotonic clock that moves only when a test calls `advance` (pass it to ``serve_in_thread(clock=...)``):
    fault windows and token lifetimes are then exact however loaded the machine is."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
