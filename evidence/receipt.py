"""Receipts: the receiver's signed statement that it verified and durably stored a record.

A receipt is a JSON object signed like a record: ``sig`` is the base64 Ed25519 signature over the
RFC 8785 canonical bytes of every other field, made with the receiver's receipt key. The device
frees a segment's space only for a receipt whose signature verifies with the receiver key it was
provisioned with, whose ``record`` is the hash of the record it sent, and whose ``status`` is
``stored``. A ``quarantined`` receipt tells the device to stop resending but keep its copy.

Failure posture: :meth:`Receipt.from_dict`/:meth:`Receipt.parse` raise :class:`ReceiptError` for
anything malformed; :meth:`Receipt.verify` returns a reason string instead of raising, so a
caller can log why a receipt was not accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from evidence.canonical import parse_json
from evidence.errors import EvidenceError, RecordFormatError
from evidence.keys import key_id
from evidence.signing import CanonicallySigned, sign_canonical
from evidence.values import format_utc, is_device_id, is_hex64, is_safe_int, parse_utc

RECEIPT_VERSION = 1
STATUS_STORED = "stored"
STATUS_QUARANTINED = "quarantined"
STATUSES = frozenset({STATUS_STORED, STATUS_QUARANTINED})
MAX_RECEIPT_BYTES = 64 * 1024
MAX_REASON_CHARS = 4096


class ReceiptError(EvidenceError):
    """A receipt that is not well-formed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Receipt(CanonicallySigned):
    device: str
    record: str  # hash of the record this receipt is about
    seq: int
    record_type: str
    status: str
    reason: str | None
    media_sha256: str | None  # the stored bytes' hash for segments, else None
    media_size: int | None
    utc: str
    key: str  # receiver key id
    sig: str = ""
    v: int = RECEIPT_VERSION

    @classmethod
    def create(
        cls,
        *,
        device: str,
        record: str,
        seq: int,
        record_type: str,
        status: str,
        receiver_key: Ed25519PrivateKey,
        reason: str | None = None,
        media_sha256: str | None = None,
        media_size: int | None = None,
        when: datetime | None = None,
    ) -> Receipt:
        """A signed receipt. ``status`` is :data:`STATUS_STORED` or :data:`STATUS_QUARANTINED`."""
        if status not in STATUSES:
            raise ValueError(f"receipt status {status!r} is not one of {sorted(STATUSES)}")
        unsigned = cls(
            device=device,
            record=record,
            seq=seq,
            record_type=record_type,
            status=status,
            reason=reason,
            media_sha256=media_sha256,
            media_size=media_size,
            utc=format_utc(when or datetime.now(UTC)),
            key=key_id(receiver_key.public_key()),
        )
        return replace(unsigned, sig=sign_canonical(unsigned.unsigned_dict(), receiver_key))

    def unsigned_dict(self) -> dict[str, Any]:
        return {
            "v": self.v,
            "type": "receipt",
            "device": self.device,
            "record": self.record,
            "seq": self.seq,
            "record_type": self.record_type,
            "status": self.status,
            "reason": self.reason,
            "media_sha256": self.media_sha256,
            "media_size": self.media_size,
            "utc": self.utc,
            "key": self.key,
        }

    def verify(
        self,
        receiver_public_key: Ed25519PublicKey,
        *,
        record_hash: str | None = None,
        device: str | None = None,
    ) -> str | None:
        """``None`` when valid for the given record/device, else the reason it is not."""
        if self.key != key_id(receiver_public_key):
            return f"signed with key {self.key}, not the receiver key {key_id(receiver_public_key)}"
        if not self.signature_valid(receiver_public_key):
            return "receipt signature does not verify"
        if record_hash is not None and self.record != record_hash:
            return f"receipt is for record {self.record[:16]}…, not {record_hash[:16]}…"
        if device is not None and self.device != device:
            return f"receipt is for device {self.device!r}, not {device!r}"
        return None

    @classmethod
    def from_dict(cls, d: Any) -> Receipt:
        if not isinstance(d, dict):
            raise ReceiptError("receipt is not a JSON object")
        if d.get("v") != RECEIPT_VERSION or d.get("type") != "receipt":
            raise ReceiptError("not a version-1 receipt")
        try:
            device, record, seq = d["device"], d["record"], d["seq"]
            status, utc, key, sig = d["status"], d["utc"], d["key"], d["sig"]
            record_type, reason = d["record_type"], d["reason"]
            media_sha256, media_size = d["media_sha256"], d["media_size"]
        except KeyError as exc:
            raise ReceiptError(f"receipt lacks field {exc.args[0]!r}") from exc
        if not is_device_id(device):
            raise ReceiptError("receipt device id is not valid")
        if not is_hex64(record):
            raise ReceiptError("receipt record is not a SHA-256 hex digest")
        if not is_safe_int(seq, 0):
            raise ReceiptError("receipt seq is not a non-negative integer")
        if status not in STATUSES:
            raise ReceiptError(f"receipt status {status!r} is unknown")
        for name, value in (("utc", utc), ("key", key), ("sig", sig), ("record_type", record_type)):
            if not isinstance(value, str) or not value or len(value) > 256:
                raise ReceiptError(f"receipt {name} is not a non-empty string")
        try:
            parse_utc(utc)
        except RecordFormatError as exc:
            raise ReceiptError(f"receipt utc: {exc.reason}") from exc
        if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS):
            raise ReceiptError("receipt reason is not a string of at most 4096 characters")
        if media_sha256 is not None and not is_hex64(media_sha256):
            raise ReceiptError("receipt media_sha256 is not a SHA-256 hex digest")
        if media_size is not None and not is_safe_int(media_size, 0):
            raise ReceiptError("receipt media_size is not a non-negative integer")
        return cls(
            device=device,
            record=record,
            seq=seq,
            record_type=record_type,
            status=status,
            reason=reason,
            media_sha256=media_sha256,
            media_size=media_size,
            utc=utc,
            key=key,
            sig=sig,
        )

    @classmethod
    def parse(cls, data: bytes) -> Receipt:
        if len(data) > MAX_RECEIPT_BYTES:
            raise ReceiptError(f"receipt of {len(data)} bytes exceeds {MAX_RECEIPT_BYTES}")
        try:
            return cls.from_dict(parse_json(data))
        except RecordFormatError as exc:
            raise ReceiptError(exc.reason) from exc
