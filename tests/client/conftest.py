"""The core's shared test helpers (scripted transport, fake clock, ``harness``) live in tests/unit/conftest.py until
the test layout is unified (issue 12); re-exported here so tests/client/ can use them."""

from tests.unit.conftest import anyio_backend, harness  # noqa: F401
