r"""Strings matching simple regular expressions, for JSON Schema ``pattern``.

Supports literals, ``.``, escapes (``\d \w \s \D \W \S``, escaped punctuation), character
classes with ranges and negation, groups (``(...)``, ``(?:...)``), alternation, the
quantifiers ``* + ? {n} {n,} {n,m}`` (lazy or not) and the anchors ``^ $``.  Anything else
(look-arounds, back-references, named groups) raises `Unsupported`; the caller falls back.
The result is always re-checked with ``re.search`` by the caller.

Usage::

    import random
    s = generate(r"^[A-Z]{2}-\d{3}$", random.Random(1))   # 'SZ-417'
"""

from __future__ import annotations

import random
import string
from typing import Any

__all__ = ["generate", "Unsupported"]

_DIGITS = string.digits
_WORD = string.ascii_letters + string.digits + "_"
_SPACE = " "
_PRINTABLE = string.ascii_letters + string.digits + "-_.:/ "
_MAX_EXTRA = 3  # at most this many repetitions beyond the minimum for * + {n,}


class Unsupported(ValueError):
    """The pattern uses a construct this generator does not handle."""


def generate(pattern: str, rng: random.Random) -> str:
    """A string matching ``pattern`` (best effort; see module docstring)."""
    parser = _Parser(pattern)
    node = parser.alternation()
    if parser.pos != len(pattern):
        raise Unsupported(f"unexpected {pattern[parser.pos]!r} at {parser.pos}")
    out: list[str] = []
    _emit(node, rng, out)
    return "".join(out)


# AST nodes are tuples: ("lit", str) ("set", chars, negated) ("seq", [nodes]) ("alt", [nodes])
# ("rep", node, lo, hi) ("empty",)
class _Parser:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.pos = 0

    def _peek(self) -> str | None:
        return self.p[self.pos] if self.pos < len(self.p) else None

    def alternation(self) -> tuple[Any, ...]:
        branches = [self.sequence()]
        while self._peek() == "|":
            self.pos += 1
            branches.append(self.sequence())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def sequence(self) -> tuple[Any, ...]:
        items: list[tuple[Any, ...]] = []
        while (c := self._peek()) is not None and c not in "|)":
            atom = self.atom()
            items.append(self.quantified(atom))
        return ("seq", items)

    def atom(self) -> tuple[Any, ...]:
        c = self.p[self.pos]
        self.pos += 1
        if c in "^$":
            return ("empty",)
        if c == ".":
            return ("set", _PRINTABLE, False)
        if c == "(":
            if self.p.startswith("?:", self.pos):
                self.pos += 2
            elif self._peek() == "?":
                raise Unsupported("look-arounds and named groups are not supported")
            node = self.alternation()
            if self._peek() != ")":
                raise Unsupported("unbalanced parenthesis")
            self.pos += 1
            return node
        if c == "[":
            return self.char_class()
        if c == "\\":
            return self.escape(in_class=False)
        if c in "*+?{":
            raise Unsupported(f"nothing to repeat at {self.pos - 1}")
        return ("lit", c)

    def escape(self, in_class: bool) -> tuple[Any, ...]:
        if self.pos >= len(self.p):
            raise Unsupported("trailing backslash")
        c = self.p[self.pos]
        self.pos += 1
        classes = {"d": _DIGITS, "w": _WORD, "s": _SPACE, "D": string.ascii_letters, "W": "-. ",
                   "S": string.ascii_letters}
        if c in classes:
            return ("set", classes[c], False)
        if c in "nrtfv":
            return ("lit", {"n": "\n", "r": "\r", "t": "\t", "f": "\f", "v": "\v"}[c])
        if c == "u" and self.pos + 4 <= len(self.p):
            code = self.p[self.pos:self.pos + 4]
            self.pos += 4
            return ("lit", chr(int(code, 16)))
        if c.isalnum():
            raise Unsupported(f"escape \\{c} is not supported")
        return ("lit", c)

    def char_class(self) -> tuple[Any, ...]:
        negated = self._peek() == "^"
        if negated:
            self.pos += 1
        chars: list[str] = []
        first = True
        while True:
            c = self._peek()
            if c is None:
                raise Unsupported("unterminated character class")
            if c == "]" and not first:
                self.pos += 1
                break
            first = False
            if c == "\\":
                self.pos += 1
                node = self.escape(in_class=True)
                chars.extend(node[1])
                continue
            self.pos += 1
            if self._peek() == "-" and self.pos + 1 < len(self.p) and self.p[self.pos + 1] != "]":
                end = self.p[self.pos + 1]
                self.pos += 2
                if ord(end) < ord(c):
                    raise Unsupported("bad range in character class")
                chars.extend(chr(i) for i in range(ord(c), min(ord(end), ord(c) + 256) + 1))
            else:
                chars.append(c)
        if negated:
            allowed = [ch for ch in _PRINTABLE if ch not in chars]
            if not allowed:
                raise Unsupported("negated class excludes every candidate character")
            return ("set", "".join(allowed), False)
        return ("set", "".join(chars), False)

    def quantified(self, atom: tuple[Any, ...]) -> tuple[Any, ...]:
        c = self._peek()
        if c is None or c not in "*+?{":
            return atom
        if c == "{":
            end = self.p.find("}", self.pos)
            body = self.p[self.pos + 1:end] if end > 0 else ""
            lo_s, comma, hi_s = body.partition(",")
            if not lo_s.isdigit() or (hi_s and not hi_s.isdigit()):
                return atom  # a literal "{", as in Python's re
            self.pos = end + 1
            lo = int(lo_s)
            hi = int(hi_s) if hi_s else (lo + _MAX_EXTRA if comma else lo)
        else:
            self.pos += 1
            lo, hi = {"*": (0, _MAX_EXTRA), "+": (1, 1 + _MAX_EXTRA), "?": (0, 1)}[c]
        if self._peek() == "?":  # lazy quantifier: same language
            self.pos += 1
        return ("rep", atom, lo, hi)


def _emit(node: tuple[Any, ...], rng: random.Random, out: list[str]) -> None:
    kind = node[0]
    if kind == "lit":
        out.append(node[1])
    elif kind == "set":
        out.append(rng.choice(node[1]))
    elif kind == "seq":
        for item in node[1]:
            _emit(item, rng, out)
    elif kind == "alt":
        _emit(rng.choice(node[1]), rng, out)
    elif kind == "rep":
        for _ in range(rng.randint(node[2], min(node[3], node[2] + _MAX_EXTRA))):
            _emit(node[1], rng, out)
