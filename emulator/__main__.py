"""``python -m emulator [--host 127.0.0.1] [--port 8090|0] [--config file.json] [fault flags]``.

Prints exactly one line to stdout once accepting connections::

    {"event": "ready", "url": "http://127.0.0.1:PORT"}
"""

from __future__ import annotations

import sys
from typing import Sequence

from emulator.config import EmulatorConfig
from emulator.server import serve

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = EmulatorConfig.from_argv(argv)
    except (ValueError, OSError) as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    serve(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
