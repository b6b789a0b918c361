"""Evidence records: the signed, chained units of the format.

A record is a JSON object with the fields ``v``, ``type``, ``device``, ``session``, ``seq``,
``prev``, ``time``, ``key``, ``body`` and ``sig``. ``sig`` is the base64 Ed25519 signature over the
RFC 8785 canonical bytes of every other field; the record's hash is SHA-256 over the canonical
bytes of the whole record, signature included. ``prev`` is the hash of the device's previous
record (64 zeros for the first, ``seq`` 0).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from evidence import FORMAT_VERSION
from evidence.canonical import canonical_bytes, parse_json
from evidence.errors import RecordFormatError, UnsafePathError
from evidence.keys import key_id
from evidence.signing import CanonicallySigned, sign_canonical, signature_valid_bytes
from evidence.values import (
    DEVICE_ID_RE,
    MAX_ID_CHARS,
    SIG_RE,
    format_utc,
    has_control,
    is_device_id,
    is_hex64,
    is_safe_int,
    parse_utc,
)

if TYPE_CHECKING:
    from evidence.bodies import Body

__all__ = ["DEVICE_ID_RE", "GENESIS_PREV", "MAX_RECORD_BYTES", "Record", "RecordTime"]
__all__ += ["RecordType", "current_boot_id", "format_utc", "parse_utc"]

GENESIS_PREV = "0" * 64
MAX_RECORD_BYTES = 1 << 20
_TIME_MEMBERS = frozenset({"utc", "mono_ns", "boot_id", "synced"})


class RecordType(StrEnum):
    SESSION_OPEN = "session-open"
    SEGMENT = "segment"
    MARKER = "marker"
    GAP = "gap"
    SESSION_CLOSE = "session-close"
    CHECK = "check"
    CLOCK = "clock"


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
        if d.keys() != _TIME_MEMBERS:
            extra, missing = d.keys() - _TIME_MEMBERS, _TIME_MEMBERS - d.keys()
            raise RecordFormatError(
                "time must have exactly utc, mono_ns, boot_id, synced"
                + (f"; unknown: {', '.join(sorted(extra))[:200]}" if extra else "")
                + (f"; missing: {', '.join(sorted(missing))}" if missing else "")
            )
        utc, mono, boot, synced = (d[k] for k in ("utc", "mono_ns", "boot_id", "synced"))
        parse_utc(utc)
        if not is_safe_int(mono, 0):
            raise RecordFormatError("time.mono_ns is not a non-negative integer")
        if not isinstance(boot, str) or not boot or len(boot) > MAX_ID_CHARS or has_control(boot):
            raise RecordFormatError("time.boot_id is not a non-empty id of at most 128 characters")
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
    """One signed record. Build unsigned with :meth:`create`, then :meth:`sign`.

    A record parsed from bytes keeps its canonical encoding, computed once: its hash, its
    signed bytes and the "is the file canonical" check all reuse it.
    """

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
    _canonical: bytes | None = field(default=None, init=False, repr=False, compare=False)

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

    def canonical(self) -> bytes:
        cached = self._canonical
        if cached is None:
            cached = super().canonical()
            if self.sig:  # an unsigned record is still being built; only cache the final form
                object.__setattr__(self, "_canonical", cached)
        return cached

    def signed_bytes(self) -> bytes:
        """The canonical bytes without ``sig``, cut out of the cached canonical encoding.

        ``sig`` sorts between ``session`` and ``time``; ``time`` has exactly four members and
        none is called ``sig``, so the last ``,"sig":"…"`` is the top-level member (strings
        escape ``"``, so the pattern cannot occur inside one).
        """
        whole = self._canonical
        member = b',"sig":"' + self.sig.encode("ascii", "replace") + b'"'
        if whole is not None and self.sig and SIG_RE.fullmatch(self.sig):
            at = whole.rfind(member)
            if at > 0:
                return whole[:at] + whole[at + len(member) :]
        return super().signed_bytes()

    def signature_valid(self, public_key: Ed25519PublicKey) -> bool:
        return signature_valid_bytes(self.signed_bytes(), self.sig, public_key)

    def hash(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    def sign(self, key: Ed25519PrivateKey) -> Record:
        if key_id(key.public_key()) != self.key:
            raise ValueError("signing key does not match the record's key id")
        return replace(self, sig=sign_canonical(self.unsigned_dict(), key))

    def typed_body(self) -> Body:
        """The body as its typed dataclass (:mod:`evidence.bodies`); raises ``BodyError`` or
        ``InvalidTimeError`` when it breaks §3."""
        from evidence.bodies import parse_body

        return parse_body(self.type, self.body)

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
            raise RecordFormatError(f"unknown field(s): {', '.join(sorted(extra))[:200]}")
        if d["v"] != FORMAT_VERSION or isinstance(d["v"], bool):
            raise RecordFormatError(f"unsupported format version {str(d['v'])[:20]!r}")
        _require_str(d, "type", 64)
        if not is_device_id(d["device"]):
            raise RecordFormatError(f"device id {str(d['device'])[:80]!r} is not valid")
        _require_str(d, "session", MAX_ID_CHARS)
        seq = d["seq"]
        if not is_safe_int(seq, 0):
            raise RecordFormatError("seq is not a non-negative integer")
        if not is_hex64(d["prev"]):
            raise RecordFormatError("prev is not 64 lowercase hex digits")
        _require_str(d, "key", 64)
        if not isinstance(d["body"], dict):
            raise RecordFormatError("body is not an object")
        _require_str(d, "sig", 256)
        time = RecordTime.from_dict(d["time"])
        canonical = canonical_bytes(d)  # refuses floats, unsafe integers, lone surrogates
        record = cls(
            type=d["type"],
            device=d["device"],
            session=d["session"],
            seq=seq,
            prev=d["prev"],
            time=time,
            key=d["key"],
            body=d["body"],
            sig=d["sig"],
            v=d["v"],
        )
        object.__setattr__(record, "_canonical", canonical)
        return record

    @classmethod
    def parse(cls, data: bytes) -> Record:
        if len(data) > MAX_RECORD_BYTES:
            raise RecordFormatError(f"record of {len(data)} bytes exceeds {MAX_RECORD_BYTES}")
        if not data.strip():
            raise RecordFormatError("record file is empty")
        return cls.from_dict(parse_json(data))

    @classmethod
    def load(cls, path: Path) -> Record:
        """Read and parse a record file (at most :data:`MAX_RECORD_BYTES` are read; a link,
        FIFO or device is refused as unreadable, never followed or waited on)."""
        from evidence.safeio import open_regular

        try:
            with open_regular(Path(path)) as f:
                data = f.read(MAX_RECORD_BYTES + 1)
        except UnsafePathError as exc:
            raise RecordFormatError(exc.reason, path=path) from exc
        except OSError as exc:
            raise RecordFormatError(f"cannot read: {exc.strerror or exc}", path=path) from exc
        try:
            return cls.parse(data)
        except RecordFormatError as exc:
            raise type(exc)(exc.reason, path=path) from exc


def _require_str(d: dict[str, Any], name: str, max_chars: int) -> None:
    value = d[name]
    if not isinstance(value, str) or not value or len(value) > max_chars or has_control(value):
        raise RecordFormatError(
            f"{name} is not a non-empty string of at most {max_chars} characters"
        )
