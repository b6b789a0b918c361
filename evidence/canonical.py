"""RFC 8785 (JSON Canonicalization Scheme) encoding of records.

Records use only strings, integers, booleans, null, arrays and objects; floats are refused so that
no two implementations can disagree on number formatting.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

from evidence.errors import RecordFormatError

_MAX_SAFE_INT = 2**53 - 1


def _check(value: Any, where: str) -> None:
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        if abs(value) > _MAX_SAFE_INT:
            raise RecordFormatError(f"{where}: integer {value} outside the I-JSON safe range")
        return
    if isinstance(value, float):
        raise RecordFormatError(f"{where}: floats are not allowed in records")
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise RecordFormatError(f"{where}: object key {key!r} is not a string")
            _check(item, f"{where}.{key}")
        return
    raise RecordFormatError(f"{where}: unsupported type {type(value).__name__}")


def canonical_bytes(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of a JSON value (no floats)."""
    _check(value, "$")
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:  # e.g. a lone UTF-16 surrogate in a string
        raise RecordFormatError(f"cannot be canonicalized: {exc}") from exc


def parse_json(data: bytes) -> Any:
    """Parse JSON strictly: duplicate keys and non-finite numbers are errors."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, item in pairs:
            if key in out:
                raise RecordFormatError(f"duplicate key {key!r}")
            out[key] = item
        return out

    def no_constant(name: str) -> Any:
        raise RecordFormatError(f"non-finite number {name}")

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordFormatError(f"not UTF-8: {exc}") from exc
    try:
        return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        raise RecordFormatError(f"not JSON: {exc}") from exc
