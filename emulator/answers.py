"""Deterministic answer and thought texts derived from the prompt.

The answer quotes the first words of the last user message and acknowledges every
media part (``[image/png 1234 bytes]``, ``[gs://bucket/x.jpg]``), then adds filler words
drawn from the request's seeded RNG, so different prompts give different answers and
the same prompt (and ``--seed``) always gives the same one.

Usage::

    import random
    answer_text(random.Random(1), ["capital", "of", "France"], ["[gs://b/x.jpg]"])
    # 'Emulated answer about: capital of France. Received [gs://b/x.jpg]. ...'
    thought_text(random.Random(1), ["capital"], "medium")
"""

from __future__ import annotations

import random
from typing import Sequence

__all__ = ["answer_text", "thought_text", "ECHO_WORDS"]

ECHO_WORDS = 12  # how many words of the last user message the answer quotes

_VOCAB = (
    "the", "model", "considers", "this", "request", "carefully", "and", "returns", "a", "short",
    "deterministic", "reply", "based", "on", "its", "input", "with", "some", "extra", "words",
    "so", "that", "token", "counts", "vary", "between", "prompts", "while", "remaining", "stable",
    "across", "retries", "of", "same", "body", "emulator", "keeps", "answers", "plain", "useful",
    "for", "tests", "benchmarks", "pipelines", "checking", "usage", "totals", "results", "data",
    "records", "batch", "summary", "detail", "context", "example", "value", "field", "output",
)
_THOUGHT_OPENERS = (
    "The user asks about", "I need to address", "Let me think about", "First, consider",
)
_EFFORT_LENGTH = {"none": (0, 0), "minimal": (4, 8), "low": (8, 16), "medium": (16, 32), "high": (32, 64)}


def _filler(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choices(_VOCAB, k=rng.randint(low, high)))


def answer_text(rng: random.Random, words: Sequence[str], acks: Sequence[str]) -> str:
    """The visible answer for one choice."""
    echo = " ".join(words[:ECHO_WORDS]) or "an empty prompt"
    received = f" Received {' '.join(acks)}." if acks else ""
    return f"Emulated answer about: {echo}.{received} {_filler(rng, 12, 40).capitalize()}."


def thought_text(rng: random.Random, words: Sequence[str], effort: str = "medium") -> str:
    """A short thought for one choice; longer for higher ``effort``."""
    low, high = _EFFORT_LENGTH.get(effort, _EFFORT_LENGTH["medium"])
    topic = " ".join(words[:6]) or "the request"
    return f"{rng.choice(_THOUGHT_OPENERS)} {topic}. {_filler(rng, low, high).capitalize()}."
