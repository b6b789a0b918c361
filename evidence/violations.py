"""What the verifier reports: violations by kind, and notes that are not violations."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class ViolationKind(StrEnum):
    UNREADABLE_RECORD = "unreadable-record"
    MISNAMED_RECORD = "misnamed-record"
    BAD_SIGNATURE = "bad-signature"
    UNKNOWN_KEY = "unknown-key"
    KEY_CHANGED = "key-changed"
    FOREIGN_DEVICE = "foreign-device"
    MISSING_SEQ = "missing-seq"
    DUPLICATE_SEQ = "duplicate-seq"
    REORDERED = "reordered"
    BROKEN_PREV = "broken-prev"
    RECORD_HASH_MISMATCH = "record-hash-mismatch"
    TIME_BACKWARDS = "time-backwards"
    SESSION_STRUCTURE = "session-structure"
    UNEXPLAINED_GAP = "unexplained-gap"
    MALFORMED_BODY = "malformed-body"
    MISSING_MEDIA = "missing-media"
    EXTRA_MEDIA = "extra-media"
    MEDIA_SIZE_MISMATCH = "media-size-mismatch"
    MEDIA_HASH_MISMATCH = "media-hash-mismatch"
    CHUNK_HASH_MISMATCH = "chunk-hash-mismatch"
    MEDIA_UNREADABLE = "media-unreadable"
    NO_EVIDENCE = "no-evidence"
    BAD_MANIFEST = "bad-manifest"
    INVALID_TIME = "invalid-time"
    NON_CANONICAL = "non-canonical-record"
    UNVERIFIED_RECEIPT = "unverified-receipt"
    UNSAFE_PATH = "unsafe-path"
    DUPLICATE_SESSION = "duplicate-session"
    SESSION_CLOSE_MISMATCH = "session-close-mismatch"
    MISSING_DEVICE = "missing-device"


@dataclass(frozen=True)
class Violation:
    kind: ViolationKind
    device: str | None
    seq: int | None
    file: str | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "device": self.device,
            "seq": self.seq,
            "file": self.file,
            "detail": self.detail,
        }

    def __str__(self) -> str:
        where = " ".join(
            f"{name}={value}"
            for name, value in (("device", self.device), ("seq", self.seq), ("file", self.file))
            if value is not None
        )
        return f"{self.kind}: {where}: {self.detail}" if where else f"{self.kind}: {self.detail}"
