"""RFC 8785 (JSON Canonicalization Scheme) encoding of records, and bounded strict JSON parsing.

Records use only strings, integers, booleans, null, arrays and objects; floats are refused so that
no two implementations can disagree on number formatting.

Within that domain the C encoder of the standard library (sorted keys, no whitespace, UTF-8 as
is) writes exactly the RFC 8785 bytes, except where RFC 8785 orders keys by UTF-16 code units and
Python by code points: they differ only for a key with a character beyond U+FFFF, and such a
record goes through the ``rfc8785`` library instead. The library is pure Python and took about
0.4 ms per segment record (a fifth of sealing a segment, most of loading records to verify);
``tests/test_evidence_format.py`` checks the two agree on generated values.

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


#: a path into a value, built only as linked pairs (formatted only for an error message)
_Path = tuple["_Path | None", "str | int"] | None


def _where(path: _Path) -> str:
    parts: list[str] = []
    while path is not None:
        path, step = path
        parts.append(f"[{step}]" if isinstance(step, int) else f".{step}")
    return "$" + "".join(reversed(parts))


def _check(value: Any) -> bool:
    """Refuse floats, unsafe integers, non-JSON types and nesting deeper than
    :data:`MAX_DEPTH`; iterative, so depth cannot hurt. True when every object key is within
    the Basic Multilingual Plane (see the module)."""
    bmp_keys = True
    stack: list[tuple[Any, int, _Path]] = [(value, 0, None)]
    while stack:
        item, level, path = stack.pop()
        if item is None or isinstance(item, (bool, str)):
            continue
        if isinstance(item, int):
            if abs(item) > _MAX_SAFE_INT:
                raise RecordFormatError(f"{_where(path)}: integer outside the I-JSON safe range")
            continue
        if isinstance(item, float):
            raise RecordFormatError(f"{_where(path)}: floats are not allowed in records")
        if not isinstance(item, (list, tuple, dict)):
            raise RecordFormatError(f"{_where(path)}: unsupported type {type(item).__name__}")
        if level >= MAX_DEPTH:
            raise RecordFormatError(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise RecordFormatError(f"{_where(path)}: object key {key!r} is not a string")
                if bmp_keys and not key.isascii() and max(key, default="") > "\uffff":
                    bmp_keys = False
                stack.append((sub, level + 1, (path, key)))
        else:
            stack.extend((sub, level + 1, (path, i)) for i, sub in enumerate(item))
    return bmp_keys


def canonical_bytes(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of a JSON value (no floats)."""
    if _check(value):
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone UTF-16 surrogate in a string
            raise RecordFormatError(f"cannot be canonicalized: {exc.reason}") from exc
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:  # e.g. a lone UTF-16 surrogate in a string
        raise RecordFormatError(f"cannot be canonicalized: {exc}") from exc
    except UnicodeEncodeError as exc:  # a lone surrogate in a key, met by its UTF-16 sort
        raise RecordFormatError(f"cannot be canonicalized: {exc.reason}") from exc


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
