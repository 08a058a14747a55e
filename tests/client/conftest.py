"""The core's tests share the scripted Vertex double, the fake clock and their fixtures (tests/client/_support.py)."""

from tests.client._support import anyio_backend, budget_caller, harness  # noqa: F401 - fixtures
