"""Device registry: each device's Ed25519 public key, revoked flag and dock status.

A record is accepted only from a registered, non-revoked device and only when signed with the
key registered for it. Failure posture: unreadable key files and unknown devices raise
:class:`InvalidInputError`/:class:`NotFoundError`; nothing is half-registered.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from evidence.errors import KeyFileError
from evidence.keys import key_id, load_public_key, public_pem
from evidence.records import DEVICE_ID_RE, format_utc
from receiver.errors import InvalidInputError, NotFoundError


@dataclass(frozen=True)
class Device:
    id: str
    key_id: str
    public_key: Ed25519PublicKey
    revoked: bool
    added_utc: str
    last_seen_utc: str | None
    clock_offset_s: float | None
    pending_segments: int | None
    oldest_pending_utc: str | None


def _now() -> str:
    return format_utc(datetime.now(UTC))


def _row_to_device(row: sqlite3.Row) -> Device:
    key = serialization.load_pem_public_key(row["public_key_pem"].encode("ascii"))
    assert isinstance(key, Ed25519PublicKey)  # only Ed25519 keys are ever inserted
    return Device(
        id=row["id"],
        key_id=row["key_id"],
        public_key=key,
        revoked=bool(row["revoked"]),
        added_utc=row["added_utc"],
        last_seen_utc=row["last_seen_utc"],
        clock_offset_s=row["clock_offset_s"],
        pending_segments=row["pending_segments"],
        oldest_pending_utc=row["oldest_pending_utc"],
    )


class DeviceRegistry:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def add(self, device_id: str, key_file: Path, *, replace_key: bool = False) -> Device:
        if not DEVICE_ID_RE.match(device_id):
            raise InvalidInputError("device id", f"{device_id!r} is not a valid device id")
        try:
            public = load_public_key(key_file)
        except KeyFileError as exc:
            raise InvalidInputError("key", str(exc)) from exc
        return self.add_key(device_id, public, replace_key=replace_key)

    def add_key(
        self, device_id: str, public: Ed25519PublicKey, *, replace_key: bool = False
    ) -> Device:
        pem = public_pem(public).decode("ascii")
        existing = self.get(device_id)
        if existing is not None and existing.key_id != key_id(public) and not replace_key:
            raise InvalidInputError(
                "key",
                f"device {device_id} is registered with key {existing.key_id}; "
                "pass --replace-key to re-enrol it",
            )
        self.conn.execute(
            "INSERT INTO devices (id, public_key_pem, key_id, revoked, added_utc) "
            "VALUES (?, ?, ?, 0, ?) ON CONFLICT (id) DO UPDATE SET "
            "public_key_pem = excluded.public_key_pem, key_id = excluded.key_id",
            (device_id, pem, key_id(public), _now()),
        )
        device = self.get(device_id)
        assert device is not None
        return device

    def revoke(self, device_id: str) -> None:
        if self.conn.execute("UPDATE devices SET revoked = 1 WHERE id = ?", (device_id,)).rowcount:
            return
        raise NotFoundError("device", device_id)

    def get(self, device_id: str) -> Device | None:
        row = self.conn.execute("SELECT * FROM devices WHERE id = ?", (device_id,)).fetchone()
        return _row_to_device(row) if row else None

    def all(self) -> list[Device]:
        return [_row_to_device(r) for r in self.conn.execute("SELECT * FROM devices ORDER BY id")]

    def seen(
        self,
        device_id: str,
        *,
        clock_offset_s: float | None = None,
        pending_segments: int | None = None,
        oldest_pending_utc: str | None = None,
        report: bool = False,
    ) -> None:
        """Note that a device talked to us; ``report=True`` also stores its hello figures."""
        if report:
            self.conn.execute(
                "UPDATE devices SET last_seen_utc = ?, clock_offset_s = ?, pending_segments = ?, "
                "oldest_pending_utc = ? WHERE id = ?",
                (_now(), clock_offset_s, pending_segments, oldest_pending_utc, device_id),
            )
        else:
            self.conn.execute(
                "UPDATE devices SET last_seen_utc = ? WHERE id = ?", (_now(), device_id)
            )
