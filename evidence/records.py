"""Evidence records: the signed, chained units of the format.

A record is a JSON object with the fields ``v``, ``type``, ``device``, ``session``, ``seq``,
``prev``, ``time``, ``key``, ``body`` and ``sig``. ``sig`` is the base64 Ed25519 signature over the
RFC 8785 canonical bytes of every other field; the record's hash is SHA-256 over the canonical
bytes of the whole record, signature included. ``prev`` is the hash of the device's previous
record (64 zeros for the first, ``seq`` 0).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from evidence import FORMAT_VERSION
from evidence.canonical import canonical_bytes, parse_json
from evidence.errors import RecordFormatError
from evidence.keys import key_id
from evidence.signing import CanonicallySigned, sign_canonical

GENESIS_PREV = "0" * 64
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_UTC_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
MAX_RECORD_BYTES = 1 << 20


class RecordType(StrEnum):
    SESSION_OPEN = "session-open"
    SEGMENT = "segment"
    MARKER = "marker"
    GAP = "gap"
    SESSION_CLOSE = "session-close"
    CHECK = "check"
    CLOCK = "clock"


def format_utc(dt: datetime) -> str:
    """The record time format: UTC, microseconds, trailing Z."""
    if dt.tzinfo is None:
        raise ValueError("naive datetime: record times must be timezone-aware")
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc(text: str) -> datetime:
    if not isinstance(text, str) or not _UTC_RE.match(text):
        raise RecordFormatError(f"time {text!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@dataclass(frozen=True)
class RecordTime:
    utc: str
    mono_ns: int
    boot_id: str
    synced: bool

    @classmethod
    def from_datetime(cls, dt: datetime, mono_ns: int, boot_id: str, synced: bool) -> RecordTime:
        return cls(format_utc(dt), mono_ns, boot_id, synced)

    @classmethod
    def now(cls, synced: bool, *, boot_id: str | None = None) -> RecordTime:
        import time

        return cls.from_datetime(
            datetime.now(UTC), time.monotonic_ns(), boot_id or current_boot_id(), synced
        )

    @property
    def datetime(self) -> datetime:
        return parse_utc(self.utc)

    def to_dict(self) -> dict[str, Any]:
        return {
            "utc": self.utc,
            "mono_ns": self.mono_ns,
            "boot_id": self.boot_id,
            "synced": self.synced,
        }

    @classmethod
    def from_dict(cls, d: Any) -> RecordTime:
        if not isinstance(d, dict):
            raise RecordFormatError("time is not an object")
        utc, mono, boot, synced = (d.get(k) for k in ("utc", "mono_ns", "boot_id", "synced"))
        if not isinstance(utc, str):
            raise RecordFormatError("time.utc is not a string")
        parse_utc(utc)
        if not isinstance(mono, int) or isinstance(mono, bool) or mono < 0:
            raise RecordFormatError("time.mono_ns is not a non-negative integer")
        if not isinstance(boot, str) or not boot:
            raise RecordFormatError("time.boot_id is not a non-empty string")
        if not isinstance(synced, bool):
            raise RecordFormatError("time.synced is not a boolean")
        return cls(utc, mono, boot, synced)


def current_boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown-boot"


@dataclass(frozen=True)
class Record(CanonicallySigned):
    """One signed record. Build unsigned with :meth:`create`, then :meth:`sign`."""

    type: str
    device: str
    session: str
    seq: int
    prev: str
    time: RecordTime
    key: str
    body: dict[str, Any] = field(default_factory=dict)
    sig: str = ""
    v: int = FORMAT_VERSION

    @classmethod
    def create(
        cls,
        *,
        type: str,
        device: str,
        session: str,
        seq: int,
        prev: str,
        time: RecordTime,
        public_key: Ed25519PublicKey,
        body: dict[str, Any],
    ) -> Record:
        return cls(str(type), device, session, seq, prev, time, key_id(public_key), dict(body))

    def unsigned_dict(self) -> dict[str, Any]:
        return {
            "v": self.v,
            "type": self.type,
            "device": self.device,
            "session": self.session,
            "seq": self.seq,
            "prev": self.prev,
            "time": self.time.to_dict(),
            "key": self.key,
            "body": self.body,
        }

    def hash(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    def sign(self, key: Ed25519PrivateKey) -> Record:
        if key_id(key.public_key()) != self.key:
            raise ValueError("signing key does not match the record's key id")
        return replace(self, sig=sign_canonical(self.unsigned_dict(), key))

    @classmethod
    def from_dict(cls, d: Any) -> Record:
        if not isinstance(d, dict):
            raise RecordFormatError("record is not a JSON object")
        expected = {"v", "type", "device", "session", "seq", "prev", "time", "key", "body", "sig"}
        missing = expected - d.keys()
        if missing:
            raise RecordFormatError(f"missing field(s): {', '.join(sorted(missing))}")
        extra = d.keys() - expected
        if extra:
            raise RecordFormatError(f"unknown field(s): {', '.join(sorted(extra))}")
        if d["v"] != FORMAT_VERSION:
            raise RecordFormatError(f"unsupported format version {d['v']!r}")
        _require_str(d, "type")
        if not isinstance(d["device"], str) or not DEVICE_ID_RE.match(d["device"]):
            raise RecordFormatError(f"device id {d['device']!r} is not valid")
        _require_str(d, "session")
        seq = d["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise RecordFormatError("seq is not a non-negative integer")
        if not isinstance(d["prev"], str) or not _HEX64_RE.match(d["prev"]):
            raise RecordFormatError("prev is not 64 lowercase hex digits")
        _require_str(d, "key")
        if not isinstance(d["body"], dict):
            raise RecordFormatError("body is not an object")
        _require_str(d, "sig")
        canonical_bytes(d)  # refuses floats, unsafe integers, lone surrogates anywhere
        return cls(
            type=d["type"],
            device=d["device"],
            session=d["session"],
            seq=seq,
            prev=d["prev"],
            time=RecordTime.from_dict(d["time"]),
            key=d["key"],
            body=d["body"],
            sig=d["sig"],
            v=d["v"],
        )

    @classmethod
    def parse(cls, data: bytes) -> Record:
        if len(data) > MAX_RECORD_BYTES:
            raise RecordFormatError(f"record of {len(data)} bytes exceeds {MAX_RECORD_BYTES}")
        if not data.strip():
            raise RecordFormatError("record file is empty")
        return cls.from_dict(parse_json(data))

    @classmethod
    def load(cls, path: Path) -> Record:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise RecordFormatError(f"cannot read: {exc.strerror or exc}", path=path) from exc
        try:
            return cls.parse(data)
        except RecordFormatError as exc:
            raise RecordFormatError(exc.reason, path=path) from exc


def _require_str(d: dict[str, Any], name: str) -> None:
    if not isinstance(d[name], str) or not d[name]:
        raise RecordFormatError(f"{name} is not a non-empty string")
