"""Scalar values for the schema generator: strings (lengths, patterns, formats), integers, numbers.

Usage::

    import random
    rng = random.Random(0)
    string_value({"type": "string", "maxLength": 5}, rng, ["Paris", "rain"])   # 'rain' ('rain Paris' cut at 5, trailing space dropped)
    integer_value({"type": "integer", "exclusiveMinimum": 0, "maximum": 3}, rng)
    number_value({"type": "number", "minimum": 0, "exclusiveMaximum": 1}, rng)
"""

from __future__ import annotations

import math
import random
import re
from typing import Any, Sequence

from emulator.regex_gen import Unsupported
from emulator.regex_gen import generate as regex_generate

__all__ = ["string_value", "integer_value", "number_value", "FORMATS"]

FORMATS = {"date", "date-time", "time", "email", "uri", "url", "uuid", "ipv4", "hostname"}


def string_value(node: dict[str, Any], rng: random.Random, words: Sequence[str]) -> str:
    """A string honouring min/maxLength, a simple pattern or a known format; words from the prompt."""
    lo = int(node.get("minLength", 0))
    hi = node.get("maxLength")
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        found = _from_pattern(pattern, lo, hi, rng, words)
        if found is not None:
            return found
    fmt = node.get("format")
    if fmt in FORMATS:
        return _from_format(fmt, rng, words)
    text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
    while len(text) < lo:
        text += " " + rng.choice(words)
    if isinstance(hi, int) and len(text) > hi:
        cut = text[:hi]
        text = cut.rstrip() if len(cut.rstrip()) >= lo else cut
    return text


def _from_pattern(pattern: str, lo: int, hi: Any, rng: random.Random, words: Sequence[str]) -> str | None:
    try:
        compiled = re.compile(pattern)
    except re.error:
        return None
    candidates = [w for w in words if compiled.search(w)]
    for _ in range(12):
        try:
            text = regex_generate(pattern, rng)
        except (Unsupported, ValueError):
            break
        candidates.append(text)
    for text in candidates:
        if compiled.search(text) and len(text) >= lo and (not isinstance(hi, int) or len(text) <= hi):
            return text
    return None


def _from_format(fmt: str, rng: random.Random, words: Sequence[str]) -> str:
    r = rng
    date = f"{r.randint(2000, 2030):04d}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"
    time = f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}"
    slug = re.sub(r"[^a-z0-9]", "", rng.choice(words).lower()) or "user"
    return {
        "date": date,
        "date-time": f"{date}T{time}Z",
        "time": f"{time}Z",
        "email": f"{slug}@example.com",
        "uri": f"https://example.com/{slug}",
        "url": f"https://example.com/{slug}",
        "uuid": "%08x-%04x-4%03x-a%03x-%012x" % (r.getrandbits(32), r.getrandbits(16), r.getrandbits(12),
                                                 r.getrandbits(12), r.getrandbits(48)),
        "ipv4": ".".join(str(r.randint(1, 254)) for _ in range(4)),
        "hostname": f"{slug}.example.com",
    }[fmt]


def integer_value(node: dict[str, Any], rng: random.Random) -> int:
    """An integer within inclusive/exclusive bounds (draft-4 booleans too) and multipleOf."""
    lo, lo_ex, hi, hi_ex = _bounds(node)
    low = -math.inf if lo is None else (math.floor(lo) + 1 if lo_ex else math.ceil(lo))
    high = math.inf if hi is None else (math.ceil(hi) - 1 if hi_ex else math.floor(hi))
    if low == -math.inf and high == math.inf:
        low, high = 0, 100
    elif low == -math.inf:
        low = high - 100
    elif high == math.inf:
        high = low + 100
    low, high = int(low), int(high)
    step = node.get("multipleOf")
    if isinstance(step, (int, float)) and not isinstance(step, bool) and step > 0 and float(step).is_integer():
        step = int(step)
        k_lo, k_hi = -(-low // step), high // step
        if k_lo <= k_hi:
            return rng.randint(k_lo, k_hi) * step
    return rng.randint(low, max(low, high))


def number_value(node: dict[str, Any], rng: random.Random) -> float | int:
    """A number within inclusive/exclusive bounds and multipleOf; two decimals when that fits."""
    lo, lo_ex, hi, hi_ex = _bounds(node)
    step = node.get("multipleOf")
    if isinstance(step, (int, float)) and not isinstance(step, bool) and step > 0:
        k_lo = -math.inf if lo is None else math.floor(lo / step) + 1 if lo_ex else math.ceil(lo / step)
        k_hi = math.inf if hi is None else math.ceil(hi / step) - 1 if hi_ex else math.floor(hi / step)
        k_lo = k_lo if k_lo != -math.inf else (k_hi - 20 if k_hi != math.inf else 0)
        k_hi = k_hi if k_hi != math.inf else k_lo + 20
        if k_lo <= k_hi:
            k = rng.randint(int(k_lo), int(k_hi))
            return k * step if isinstance(step, int) else round(k * step, 12)
    low = lo if lo is not None else (hi - 100 if hi is not None else 0.0)
    high = hi if hi is not None else low + 100
    for _ in range(8):
        value = low + (high - low) * rng.uniform(0.05, 0.95)
        for candidate in (round(value, 2), value):
            if _in_bounds(candidate, lo, lo_ex, hi, hi_ex):
                return candidate
    return (low + high) / 2


def _bounds(node: dict[str, Any]) -> tuple[float | None, bool, float | None, bool]:
    """(low, low_exclusive, high, high_exclusive), accepting draft-4 boolean exclusives."""
    def num(v: Any) -> float | None:
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    lo, hi = num(node.get("minimum")), num(node.get("maximum"))
    lo_ex = hi_ex = False
    ex_lo, ex_hi = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")
    if ex_lo is True:
        lo_ex = lo is not None
    elif num(ex_lo) is not None and (lo is None or ex_lo >= lo):
        lo, lo_ex = ex_lo, True
    if ex_hi is True:
        hi_ex = hi is not None
    elif num(ex_hi) is not None and (hi is None or ex_hi <= hi):
        hi, hi_ex = ex_hi, True
    return lo, lo_ex, hi, hi_ex


def _in_bounds(v: float, lo: float | None, lo_ex: bool, hi: float | None, hi_ex: bool) -> bool:
    if lo is not None and (v <= lo if lo_ex else v < lo):
        return False
    if hi is not None and (v >= hi if hi_ex else v > hi):
        return False
    return True
