"""Glob patterns with GitHub Actions filter semantics.

`*` matches any run of characters except `/`, `**` also crosses `/`, `?` matches one character
except `/`, `[...]` is a character class (`[!...]` or `[^...]` negated), and `\\` escapes the next
character. A pattern matches the whole value, never a substring.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

_META = frozenset("*?[")


class GlobError(ValueError):
    """A pattern that cannot be compiled (an unclosed class, a trailing escape)."""


def is_literal(pattern: str) -> bool:
    """True when the pattern matches exactly one string (no unescaped wildcard or class)."""
    escaped = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in _META:
            return False
    return not escaped  # a trailing escape is malformed, left to the compiler to report


def literal_text(pattern: str) -> str:
    """The one string a literal pattern matches (escapes removed)."""
    return re.sub(r"\\(.)", r"\1", pattern)


def _translate(pattern: str) -> str:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\":
            if i + 1 == n:
                raise GlobError(f"pattern {pattern!r} ends with an escape character")
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif char == "*":
            if pattern.startswith("**", i):
                out.append(".*")
                i += 2
                while i < n and pattern[i] == "*":
                    i += 1
            else:
                out.append("[^/]*")
                i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[":
            end = pattern.find("]", i + 2 if pattern.startswith(("[!", "[^"), i) else i + 1)
            if end == -1:
                raise GlobError(f"pattern {pattern!r} has an unclosed '['")
            body = pattern[i + 1 : end]
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            if not body:
                raise GlobError(f"pattern {pattern!r} has an empty character class")
            body = body.replace("\\", "\\\\")
            out.append(f"[{'^' if negate else ''}{body}]")
            i = end + 1
        else:
            out.append(re.escape(char))
            i += 1
    return "".join(out)


@lru_cache(maxsize=8192)
def compile_glob(pattern: str) -> Callable[[str], bool]:
    """A predicate matching whole strings against `pattern`. Raises GlobError when malformed."""
    if is_literal(pattern):
        text = literal_text(pattern)
        return lambda value: value == text
    try:
        regex = re.compile(_translate(pattern), re.DOTALL)
    except re.error as exc:  # e.g. a reversed range [z-a]
        raise GlobError(f"pattern {pattern!r} is invalid: {exc}") from None
    fullmatch = regex.fullmatch
    return lambda value: fullmatch(value) is not None
