"""The devices table: registered keys, revocation and each device's dock state (last seen,
clock offset, pending figures from its last hello).

Failure posture: SQLite errors propagate to the caller; every statement is scoped to one device.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from evidence.records import format_utc


def _now() -> str:
    return format_utc(datetime.now(UTC))


class DevicesTable:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def upsert_key(self, device_id: str, pem: str, key_id: str, source: str) -> None:
        self.conn.execute(
            "INSERT INTO devices (id, public_key_pem, key_id, revoked, added_utc, source) "
            "VALUES (?, ?, ?, 0, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "public_key_pem = excluded.public_key_pem, key_id = excluded.key_id, "
            "source = excluded.source",
            (device_id, pem, key_id, _now(), source),
        )

    def revoke(self, device_id: str, reason: str | None, revoked_utc: str | None) -> bool:
        """Mark revoked (first time and reason kept); False when there is no such device."""
        cur = self.conn.execute(
            "UPDATE devices SET revoked = 1, revoked_utc = COALESCE(revoked_utc, ?), "
            "revoke_reason = COALESCE(revoke_reason, ?) WHERE id = ?",
            (revoked_utc or _now(), reason, device_id),
        )
        return bool(cur.rowcount)

    def row(self, device_id: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.conn.execute(
            "SELECT * FROM devices WHERE id = ?", (device_id,)
        ).fetchone()
        return row

    def rows(self) -> list[sqlite3.Row]:
        return list(self.conn.execute("SELECT * FROM devices ORDER BY id"))

    def seen(
        self,
        device_id: str,
        *,
        report: bool,
        clock_offset_s: float | None,
        pending_segments: int | None,
        oldest_pending_utc: str | None,
    ) -> None:
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
