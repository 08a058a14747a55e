"""Fast JSON helpers: orjson when installed, the standard library otherwise.

Usage::

    from emulator._json import dumps, loads, canonical
    dumps({"a": 1})        # b'{"a":1}'
    canonical({"b": 1, "a": 2}) == canonical({"a": 2, "b": 1})
"""

from __future__ import annotations

from typing import Any

__all__ = ["dumps", "loads", "canonical", "JSONDecodeError"]

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only without orjson
    _orjson = None

if _orjson is not None:
    JSONDecodeError = _orjson.JSONDecodeError
    loads = _orjson.loads

    def dumps(value: Any) -> bytes:
        """Compact JSON bytes."""
        return _orjson.dumps(value)

    def canonical(value: Any) -> bytes:
        """Compact JSON bytes with sorted keys: equal values give equal bytes."""
        return _orjson.dumps(value, option=_orjson.OPT_SORT_KEYS)

else:  # pragma: no cover
    import json as _json

    JSONDecodeError = ValueError

    def loads(data: bytes | str) -> Any:
        return _json.loads(data)

    def dumps(value: Any) -> bytes:
        return _json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    def canonical(value: Any) -> bytes:
        return _json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()
