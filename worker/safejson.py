"""Parsing untrusted JSON (HTTP ingest bodies, `gradesync publish` files) without a crash.

The standard library parser turns some hostile documents into exceptions that are not
``JSONDecodeError``: a 5 000-digit integer is a ``ValueError`` (Python's int/str conversion limit),
5 000 nested arrays a ``RecursionError``. Here:

- a number longer than :data:`MAX_NUMBER_CHARS` and ``NaN``/``Infinity`` parse into a :class:`Refused`
  marker, so validation refuses it *at its field* (``score_given: a number with 5000 digits …``);
- nesting deeper than :data:`MAX_DEPTH` raises :class:`JSONInputError` naming the top-level field (and
  the batch item) where it happened, found by a cheap scan of the text, never by recursion;
- anything else malformed raises :class:`JSONInputError` with the parser's reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

#: characters of the longest number accepted (scores, bytes of a file attachment, metadata counters)
MAX_NUMBER_CHARS = 40
#: containers nested deeper than this are refused (an event is 4 levels deep; metadata gets the rest)
MAX_DEPTH = 32


@dataclass(frozen=True)
class Refused:
    """A JSON value the parser refused to build; validation reports ``reason`` at the value's field."""

    reason: str

    def __repr__(self) -> str:
        return f"<refused: {self.reason}>"


class JSONInputError(ValueError):
    """The input is not acceptable JSON. ``index`` (batch item) and ``field`` locate it when known."""

    def __init__(self, message: str, *, index: int | None = None, field: str = "(body)") -> None:
        super().__init__(message)
        self.message = message
        self.index = index
        self.field = field


def _int(text: str) -> int | Refused:
    digits = len(text.lstrip("-"))
    if len(text) > MAX_NUMBER_CHARS:
        return Refused(f"a number with {digits} digits (at most {MAX_NUMBER_CHARS} characters allowed)")
    return int(text)


def _float(text: str) -> float | Refused:
    if len(text) > MAX_NUMBER_CHARS:
        return Refused(f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS} allowed)")
    return float(text)


def _constant(name: str) -> Refused:
    return Refused(f"{name} is not a number (must be a finite number)")


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"(\s*:)?|[\[\]{},]')


def _too_deep(text: str, limit: int) -> JSONInputError | None:
    """Where ``text`` first nests deeper than ``limit`` (scanned with a regex, no recursion)."""
    stack: list[str] = []
    index = 0
    keys: dict[int, str] = {}
    for m in _TOKEN.finditer(text):
        tok = m.group(0)
        if tok in ("[", "{"):
            stack.append(tok)
            if len(stack) > limit:
                batch = stack[0] == "["
                key = keys.get(2 if batch else 1)
                return JSONInputError(f"nested too deeply (at most {limit} levels allowed)",
                                      index=index if batch else None, field=key or "(event)")
        elif tok in ("]", "}"):
            if stack:
                stack.pop()
        elif tok == ",":
            if len(stack) == 1 and stack[0] == "[":
                index += 1
        elif m.group(1):  # a key
            try:
                keys[len(stack)] = str(json.loads(tok[: tok.rindex('"') + 1]))
            except ValueError:
                keys[len(stack)] = "(event)"
    return None


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of a parsed document (iterative: never recurses); stops counting past ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def loads(data: str | bytes) -> Any:
    """Parse ``data``; :class:`JSONInputError` for anything malformed or nested too deeply."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        raise JSONInputError("not valid JSON: not UTF-8") from None
    try:
        value = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise JSONInputError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise _too_deep(text, MAX_DEPTH) or JSONInputError("nested too deeply") from None
    except ValueError as exc:  # anything else the parser raises on a hostile document
        raise JSONInputError(f"not valid JSON: {exc}") from None
    if depth(value) > MAX_DEPTH:
        raise _too_deep(text, MAX_DEPTH) or JSONInputError(f"nested too deeply (at most {MAX_DEPTH} levels)")
    return value
