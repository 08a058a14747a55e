r"""The emulator's deterministic tokenizer (a documented stand-in for Gemini's).

Rule (docs/emulator.md repeats it; the client's estimator is tuned against it):

* text: one token per match of ``\w+|[^\w\s]`` (a word, or one punctuation character);
  a word longer than 8 characters counts ``ceil(len / 4)``;
* prompt: ``REQUEST_OVERHEAD`` (3) + per message ``MESSAGE_OVERHEAD`` (4) + the text tokens of
  its text content, its ``name`` and its tool calls' function names and arguments;
* media part referenced by URI (``gs://``, ``https://``): ``MEDIA_URI_TOKENS`` (258);
  inline data (data URL or raw base64): ``ceil(decoded_bytes / 100)``, at least 1;
* ``response_format`` json_schema: the text tokens of the schema's compact JSON;
  ``tools``: the text tokens of the tools list's compact JSON;
* completion: the text tokens of the answer (thought tags excluded) plus the reasoning
  tokens (the text tokens of the thought).

Usage::

    >>> count_text("Hello, world!")
    4
    >>> count_text("internationalization")   # 20 chars -> ceil(20/4)
    5
    >>> truncate_text("one two three four", 2)
    ('one two', 2)
"""

from __future__ import annotations

import re

__all__ = [
    "count_text",
    "truncate_text",
    "inline_media_tokens",
    "REQUEST_OVERHEAD",
    "MESSAGE_OVERHEAD",
    "MEDIA_URI_TOKENS",
    "INLINE_BYTES_PER_TOKEN",
]

REQUEST_OVERHEAD = 3
MESSAGE_OVERHEAD = 4
MEDIA_URI_TOKENS = 258
INLINE_BYTES_PER_TOKEN = 100
_LONG_WORD = 8

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def _cost(piece: str) -> int:
    n = len(piece)
    return 1 if n <= _LONG_WORD else -(-n // 4)


def count_text(text: str) -> int:
    """Tokens in ``text`` under the emulator's rule."""
    total = 0
    for piece in _TOKEN_RE.findall(text):
        n = len(piece)
        total += 1 if n <= _LONG_WORD else -(-n // 4)
    return total


def truncate_text(text: str, max_tokens: int) -> tuple[str, int]:
    """The longest prefix of ``text`` (ending at a token) costing <= ``max_tokens``, and its cost."""
    if max_tokens <= 0:
        return "", 0
    total = 0
    end = 0
    for match in _TOKEN_RE.finditer(text):
        cost = _cost(match.group())
        if total + cost > max_tokens:
            return text[:end], total
        total += cost
        end = match.end()
    return text, total


def inline_media_tokens(n_bytes: int) -> int:
    """Prompt tokens for ``n_bytes`` of inline (base64) media."""
    return max(1, -(-n_bytes // INLINE_BYTES_PER_TOKEN))
