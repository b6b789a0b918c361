"""Scalar value formats shared by records, bodies, receipts and wire messages.

Every pattern ends in ``\\Z`` and is applied with ``fullmatch`` here (a ``$`` anchor would let a
trailing newline through; ``\\Z`` keeps the patterns safe for callers that use ``.match``).

Failure posture: the ``parse_*`` functions raise :class:`RecordFormatError` (times:
:class:`InvalidTimeError`, its own kind) and never return a partly checked value.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime

from evidence.errors import InvalidTimeError, RecordFormatError

DEVICE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
SAFE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
HEX64_RE = re.compile(r"[0-9a-f]{64}\Z")
KEY_ID_RE = re.compile(r"ed25519:[0-9a-f]{32}\Z")
RECIPIENT_RE = re.compile(r"x25519:[0-9a-f]{32}\Z")
SIG_RE = re.compile(r"[A-Za-z0-9+/]{86}==\Z")
UTC_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{6})Z\Z")
UTC_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
MAX_SAFE_INT = 2**53 - 1
#: Bounds of free text members (notes, details, preamble text) and of short tokens (kinds).
MAX_TEXT_CHARS = 16_384
MAX_TOKEN_CHARS = 64
MAX_ID_CHARS = 128


def format_utc(dt: datetime) -> str:
    """The record time format: UTC, microseconds, trailing Z."""
    if dt.tzinfo is None:
        raise ValueError("naive datetime: record times must be timezone-aware")
    return dt.astimezone(UTC).strftime(UTC_FORMAT)


def parse_utc(text: object) -> datetime:
    """A record time; :class:`InvalidTimeError` for a wrong shape or an impossible date."""
    if not isinstance(text, str):
        raise InvalidTimeError(f"time {text!r} is not a string")
    m = UTC_RE.fullmatch(text)
    if m is None:
        raise InvalidTimeError(f"time {text[:40]!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
    year, month, day, hour, minute, second, micro = (int(g) for g in m.groups())
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
    except ValueError as exc:
        raise InvalidTimeError(f"time {text!r} is not a real date and time: {exc}") from exc


def is_device_id(value: object) -> bool:
    return isinstance(value, str) and DEVICE_ID_RE.fullmatch(value) is not None


def is_safe_name(value: object) -> bool:
    return isinstance(value, str) and SAFE_NAME_RE.fullmatch(value) is not None


def is_hex64(value: object) -> bool:
    return isinstance(value, str) and HEX64_RE.fullmatch(value) is not None


def is_safe_int(value: object, lo: int = -MAX_SAFE_INT, hi: int = MAX_SAFE_INT) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def has_control(text: str) -> bool:
    """True when ``text`` holds a control or format character other than newline and tab."""
    if text.isprintable():  # no Cc or Cf character at all: one C-level scan, the usual case
        return False
    return any(unicodedata.category(c) in ("Cc", "Cf") and c not in "\n\t" for c in text)


def require_text(value: object, where: str, *, max_chars: int = MAX_TEXT_CHARS) -> str:
    if not isinstance(value, str):
        raise RecordFormatError(f"{where} is not a string")
    if len(value) > max_chars:
        raise RecordFormatError(f"{where} is longer than {max_chars} characters")
    return value


def require_token(value: object, where: str) -> str:
    """A short non-empty label (kind, cause, reason) without control characters."""
    text = require_text(value, where, max_chars=MAX_TOKEN_CHARS)
    if not text or has_control(text) or "\n" in text or "\t" in text:
        raise RecordFormatError(f"{where} is not a non-empty single-line label")
    return text
