"""Incoming wire messages parsed once into typed, bounded values; records checked strictly.

:func:`parse_up` turns one (topic, payload) into a :class:`Hello`, :class:`Init`, :class:`Fin`,
:class:`Query` or :class:`evidence.transfer.Chunk`, with every bound applied here, once: payload
size, JSON nesting depth, integer size (Python's 4,300-digit limit and the canonical 2^53),
valid RFC 3339 times, device ids and names matched in *full* (a trailing newline is not a name),
no negative counts. :func:`record_problem` is the semantic check of a record that did parse
(called after its signature verified, so a signed but invalid record is quarantined with the
reason, never stored).

Failure posture: everything malformed raises :class:`evidence.transfer.WireError` with a
one-line reason; nothing here raises anything else for any input (fuzzed in
``tests/test_receiver_fuzz.py``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from evidence import layout
from evidence import transfer as wire
from evidence.errors import EvidenceError
from evidence.records import DEVICE_ID_RE, Record, RecordType
from receiver.text import escape

#: Deepest JSON nesting accepted in a message or record (records nest 4 levels today).
MAX_DEPTH = 16
#: Longest single string in a record (notes, officers' names ...).
MAX_STRING_CHARS = 16 * 1024
#: Longest session id.
MAX_SESSION_CHARS = 128
_TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")
_LOOKS_LIKE_TIME = re.compile(r"\d{4}-\d\d-\d\dT")
#: body keys that hold a time: utc, start_utc, utc_end ... (not "outcome")
_TIME_KEY = re.compile(r"utc|utc_\w+|\w+_utc")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: body fields that count something: never negative
_COUNT_KEYS = frozenset(
    {"size", "frames", "dropped_frames", "segments", "chunk_size", "count", "chunks"}
)
_KNOWN_TYPES = frozenset(t.value for t in RecordType)


@dataclass(frozen=True)
class Hello:
    device_utc: str
    device_time: datetime | None  # None: not a valid time (the offset is then unknown)
    pending_segments: int
    oldest_pending_utc: str | None
    head_seq: int | None
    chain_head: object | None = None  # a signed ChainHead (receiver.custody.anchors checks it)
    idle: bool = False  # nothing left to send: its window may go to another device


@dataclass(frozen=True)
class Init:
    record: Record
    record_hash: str


@dataclass(frozen=True)
class Fin:
    record: str
    size: int
    sha256: str
    chunks: int


@dataclass(frozen=True)
class Query:
    records: tuple[str, ...]


Message = Hello | Init | Fin | Query | wire.Chunk


def valid_time(text: object) -> datetime | None:
    """The UTC time ``text`` names, or None unless it is a real RFC 3339 UTC time."""
    if not isinstance(text, str) or not _TIME_RE.fullmatch(text):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:  # 2026-13-45 has the right shape and is still no date
        return None


def _loads(payload: bytes, topic: str) -> dict[str, Any]:
    if len(payload) > wire.MAX_JSON_MESSAGE_BYTES:
        raise wire.WireError(f"message of {len(payload)} bytes exceeds the limit", topic)
    try:
        value = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:  # ValueError: also 5,000-digit integers
        raise wire.WireError(f"not JSON: {str(exc)[:120]}", topic) from None
    except RecursionError:
        raise wire.WireError("JSON nested too deeply", topic) from None
    if not isinstance(value, dict):
        raise wire.WireError("JSON message is not an object", topic)
    if depth(value) > MAX_DEPTH:
        raise wire.WireError(f"JSON nested deeper than {MAX_DEPTH}", topic)
    if value.get("v") != wire.PROTOCOL_VERSION or isinstance(value.get("v"), bool):
        raise wire.WireError("unsupported protocol version", topic)
    return value


def depth(value: object) -> int:
    """Nesting depth of a JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            return level
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _int(msg: dict[str, Any], name: str, topic: str, *, nullable: bool = False) -> int | None:
    value = msg.get(name)
    if value is None and nullable:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**53:
        raise wire.WireError(f"field {name!r} is not a non-negative integer", topic)
    return value


def _hex(msg: dict[str, Any], name: str, topic: str) -> str:
    value = msg.get(name)
    if not isinstance(value, str) or not wire._HEX64.fullmatch(value):
        raise wire.WireError(f"field {name!r} is not a SHA-256 hex digest", topic)
    return value


def parse_hello(payload: bytes, topic: str = "") -> Hello:
    msg = _loads(payload, topic)
    device_utc = msg.get("device_utc")
    if not isinstance(device_utc, str) or len(device_utc) > 64:
        raise wire.WireError("field 'device_utc' is not a time string", topic)
    oldest = msg.get("oldest_pending_utc")
    if oldest is not None and valid_time(oldest) is None:
        raise wire.WireError("field 'oldest_pending_utc' is not a valid time", topic)
    pending = _int(msg, "pending_segments", topic)
    assert pending is not None
    return Hello(
        device_utc,
        valid_time(device_utc),
        pending,
        oldest,
        _int(msg, "head_seq", topic, nullable=True),
        msg.get("chain_head"),
        msg.get(wire.HELLO_IDLE) is True,
    )


def parse_init(payload: bytes, topic: str = "") -> Init:
    msg = _loads(payload, topic)
    try:
        record = Record.from_dict(msg.get("record"))
        record_hash = record.hash()
    except (EvidenceError, ValueError, TypeError, KeyError, RecursionError) as exc:
        raise wire.WireError(f"not a record: {str(exc)[:160]}", topic) from None
    return Init(record, record_hash)


def parse_fin(payload: bytes, topic: str = "") -> Fin:
    msg = _loads(payload, topic)
    size, chunks = _int(msg, "size", topic), _int(msg, "chunks", topic)
    assert size is not None
    assert chunks is not None
    return Fin(_hex(msg, "record", topic), size, _hex(msg, "sha256", topic), chunks)


def parse_query(payload: bytes, topic: str = "", *, max_records: int) -> Query:
    msg = _loads(payload, topic)
    records = msg.get("records")
    if not isinstance(records, list):
        raise wire.WireError("field 'records' is not a list", topic)
    if len(records) > max_records:
        raise wire.WireError(f"query of {len(records)} hashes exceeds {max_records}", topic)
    for h in records:
        if not isinstance(h, str) or not wire._HEX64.fullmatch(h):
            raise wire.WireError("query lists something that is not a record hash", topic)
    return Query(tuple(dict.fromkeys(records)))


def parse_topic(topic: str) -> wire.Topic:
    t = wire.parse_topic(topic)
    if not DEVICE_ID_RE.fullmatch(t.device):  # parse_topic's "$" lets "dev\n" through
        raise wire.WireError("bad device id in topic", topic)
    return t


# -- records ---------------------------------------------------------------------------------
def record_problem(record: Record) -> str | None:
    """Why a (signed) record is invalid as evidence, or None: the reason it is quarantined."""
    if record.type not in _KNOWN_TYPES:
        return f"unknown record type {escape(record.type)[:40]!r}"
    if len(record.session) > MAX_SESSION_CHARS or _CONTROL.search(record.session):
        return "session id is too long or has control characters"
    if valid_time(record.time.utc) is None:
        return f"time.utc {escape(record.time.utc)[:40]!r} is not a valid time"
    if depth(record.body) > MAX_DEPTH:
        return f"body nested deeper than {MAX_DEPTH}"
    problem = _body_problem(record.body)
    if problem is not None:
        return problem
    if record.type == RecordType.SEGMENT and segment_file_name(record.body) is None:
        return f"segment file name {escape(str(record.body.get('file')))[:80]!r} is not a safe name"
    try:  # then the body's own rules (evidence.bodies, §3)
        record.typed_body()
    except EvidenceError as exc:
        return escape(str(exc))[:200]
    return None


def _body_problem(body: dict[str, Any]) -> str | None:
    stack: list[tuple[str, object]] = [("body", body)]
    while stack:
        where, value = stack.pop()
        key = where.rsplit(".", 1)[-1]
        if isinstance(value, dict):
            for k, v in value.items():
                if _CONTROL.search(k) or len(k) > 128:
                    return f"{where} has a key with control characters or too long"
                stack.append((f"{where}.{k}", v))
        elif isinstance(value, list):
            stack.extend((f"{where}.{i}", v) for i, v in enumerate(value))
        elif isinstance(value, str):
            if len(value) > MAX_STRING_CHARS:
                return f"{where} is longer than {MAX_STRING_CHARS} characters"
            if (_TIME_KEY.fullmatch(key) or _LOOKS_LIKE_TIME.match(value)) and valid_time(
                value
            ) is None:
                return f"{where} {escape(value)[:40]!r} is not a valid time"
        elif (
            isinstance(value, int)
            and not isinstance(value, bool)
            and key in _COUNT_KEYS
            and value < 0
        ):
            return f"{where} is a negative count"
    return None


def segment_file_name(body: dict[str, Any]) -> str | None:
    name = body.get("file")
    if isinstance(name, str) and layout.SAFE_NAME_RE.fullmatch(name):
        return name
    return None
