"""RFC 8785 (JSON Canonicalization Scheme) encoding of records, and bounded strict JSON parsing.

Records use only strings, integers, booleans, null, arrays and objects; floats are refused so that
no two implementations can disagree on number formatting.

Failure posture: :func:`parse_json` raises :class:`RecordFormatError` for anything it will not
accept — not UTF-8, not JSON, duplicate members, non-finite numbers, integers longer than
:data:`MAX_INT_DIGITS` digits, nesting deeper than :data:`MAX_DEPTH` — and never lets a
``RecursionError`` or ``ValueError`` from the parser escape, whatever the input.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

from evidence.errors import RecordFormatError

_MAX_SAFE_INT = 2**53 - 1
#: Enough for every I-JSON integer (2^53 - 1 has 16 digits), far below Python's 4,300-digit cap.
MAX_INT_DIGITS = 20
#: Records nest a few levels (record → body → media → chunks); anything deeper is hostile.
MAX_DEPTH = 32


def _check(value: Any, where: str) -> None:
    """Refuse floats, unsafe integers and non-JSON types; iterative, so depth cannot hurt."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, at = stack.pop()
        if item is None or isinstance(item, (bool, str)):
            continue
        if isinstance(item, int):
            if abs(item) > _MAX_SAFE_INT:
                raise RecordFormatError(f"{at}: integer outside the I-JSON safe range")
            continue
        if isinstance(item, float):
            raise RecordFormatError(f"{at}: floats are not allowed in records")
        if isinstance(item, (list, tuple)):
            stack.extend((sub, f"{at}[{i}]") for i, sub in enumerate(item))
            continue
        if isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise RecordFormatError(f"{at}: object key {key!r} is not a string")
                stack.append((sub, f"{at}.{key}"))
            continue
        raise RecordFormatError(f"{at}: unsupported type {type(item).__name__}")


def depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), computed without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level + 1)
            stack.extend((sub, level + 1) for sub in item)
    return deepest


def canonical_bytes(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of a JSON value (no floats)."""
    _check(value, "$")
    if depth(value) > MAX_DEPTH:
        raise RecordFormatError(f"nested deeper than {MAX_DEPTH} levels")
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:  # e.g. a lone UTF-16 surrogate in a string
        raise RecordFormatError(f"cannot be canonicalized: {exc}") from exc


def _nesting_exceeds(text: str, limit: int) -> bool:
    """True when brackets outside strings nest deeper than ``limit`` (a cheap pre-scan)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    level, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            level += 1
            if level > limit:
                return True
        elif ch in "]}":
            level -= 1
    return False


def parse_json(data: bytes) -> Any:
    """Parse JSON strictly and within bounds (see the module docstring)."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, item in pairs:
            if key in out:
                raise RecordFormatError(f"duplicate key {key!r}")
            out[key] = item
        return out

    def no_constant(name: str) -> Any:
        raise RecordFormatError(f"non-finite number {name}")

    def bounded_int(text: str) -> int:
        if len(text.lstrip("-")) > MAX_INT_DIGITS:
            raise RecordFormatError(f"integer of {len(text)} digits (at most {MAX_INT_DIGITS})")
        return int(text)

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordFormatError(f"not UTF-8: {exc}") from exc
    if _nesting_exceeds(text, MAX_DEPTH):
        raise RecordFormatError(f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(
            text,
            object_pairs_hook=no_duplicates,
            parse_constant=no_constant,
            parse_int=bounded_int,
        )
    except json.JSONDecodeError as exc:
        raise RecordFormatError(f"not JSON: {exc}") from exc
    except (RecursionError, ValueError) as exc:  # defence in depth: never escape as a crash
        raise RecordFormatError(f"not acceptable JSON: {exc}") from exc
