"""The core's unit tests share the scripted Vertex double and fake clock of tests/unit (to be merged by issue 12)."""

from tests.unit.conftest import anyio_backend, harness  # noqa: F401 - fixtures
