"""The ingest's SQL: stored records, the quarantine list and its per-device quota summary, the
``waiting`` list of records refused for now.

Every query is scoped by device: no device's message ever reads or changes another device's
rows. Failure posture: SQLite errors propagate to the ingest, which answers "later" (a local
failure is never a verdict on the evidence); :meth:`RecordsTable.store` commits in one
transaction (record row, waiting row cleared, session filed) or not at all.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from evidence.records import Record, format_utc

#: Tables added by this module (created with the core schema, see receiver.store.schema).
SCHEMA = """
-- one line per device whose quarantine quota was exceeded: what was refused, not kept
CREATE TABLE IF NOT EXISTS quarantine_overflow (
    device TEXT PRIMARY KEY,
    refused INTEGER NOT NULL,
    refused_bytes INTEGER NOT NULL,
    first_utc TEXT NOT NULL,
    last_utc TEXT NOT NULL,
    last_reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS quarantine_device ON quarantine (device, record_hash);
"""


def now_utc() -> str:
    return format_utc(datetime.now(UTC))


@dataclass(frozen=True)
class StoredRow:
    device: str
    seq: int
    type: str
    media_sha256: str | None
    media_size: int | None


@dataclass(frozen=True)
class QuarantineRow:
    device: str
    seq: int | None
    record_type: str
    reason: str


@dataclass(frozen=True)
class MediaRef:
    file: str
    sha256: str
    size: int
    plain_sha256: str | None = None
    plain_size: int | None = None


class RecordsTable:
    """Records, quarantine and waiting rows of the metadata database."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    # -- records ---------------------------------------------------------------------------
    def stored(self, record_hash: str, device: str) -> StoredRow | None:
        row = self.conn.execute(
            "SELECT device, seq, type, media_sha256, media_size FROM records "
            "WHERE hash = ? AND device = ?",
            (record_hash, device),
        ).fetchone()
        if row is None:
            return None
        return StoredRow(
            row["device"], row["seq"], row["type"], row["media_sha256"], row["media_size"]
        )

    def hash_at(self, device: str, seq: int) -> str | None:
        """The hash of the device's chain at ``seq``: its stored record, or an authentic record
        kept in quarantine only for its media (a chain link), or None."""
        row = self.conn.execute(
            "SELECT hash FROM records WHERE device = ? AND seq = ? UNION ALL "
            "SELECT record_hash FROM quarantine WHERE device = ? AND seq = ? AND chain_link = 1 "
            "LIMIT 1",
            (device, seq, device, seq),
        ).fetchone()
        return str(row[0]) if row else None

    def store(
        self,
        record: Record,
        record_hash: str,
        media: MediaRef | None,
        *,
        in_transaction: Callable[[], None] | None = None,
    ) -> None:
        """Insert the record row and clear its waiting row in one transaction, running
        ``in_transaction`` (e.g. filing a session) inside it."""
        self.store_many([(record, record_hash, media, in_transaction)])

    def store_many(
        self,
        rows: list[tuple[Record, str, MediaRef | None, Callable[[], None] | None]],
    ) -> None:
        """:meth:`store` for several records in one transaction (one commit, one WAL sync:
        the ingest's group commit), in the order given, all or none."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for record, record_hash, media, in_transaction in rows:
                self._insert(record, record_hash, media)
                if in_transaction is not None:
                    in_transaction()
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def _insert(self, record: Record, record_hash: str, media: MediaRef | None) -> None:
        self.conn.execute(
            "INSERT INTO records (hash, device, seq, session, type, prev, utc, body, "
            "media_file, media_sha256, media_size, stored_utc, plain_sha256, plain_size) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record_hash,
                record.device,
                record.seq,
                record.session,
                record.type,
                record.prev,
                record.time.utc,
                json.dumps(record.body, ensure_ascii=False),
                media.file if media else None,
                media.sha256 if media else None,
                media.size if media else None,
                now_utc(),
                media.plain_sha256 if media else None,
                media.plain_size if media else None,
            ),
        )
        self.conn.execute(
            "DELETE FROM waiting WHERE record_hash = ? AND device = ?",
            (record_hash, record.device),
        )

    # -- quarantine ------------------------------------------------------------------------
    def quarantined(self, record_hash: str, device: str) -> QuarantineRow | None:
        row = self.conn.execute(
            "SELECT device, seq, record_type, reason FROM quarantine WHERE record_hash = ? "
            "AND device = ? ORDER BY id DESC LIMIT 1",
            (record_hash, device),
        ).fetchone()
        if row is None:
            return None
        return QuarantineRow(
            row["device"], row["seq"], row["record_type"] or "unknown", row["reason"]
        )

    def quarantined_for(self, record_hash: str, device: str, reason: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM quarantine WHERE record_hash = ? AND device = ? AND reason = ?",
            (record_hash, device, reason),
        ).fetchone()
        return row is not None

    def quarantine_usage(self, device: str) -> tuple[int, int]:
        """How many items and bytes of ``device`` are kept in quarantine."""
        row = self.conn.execute(
            "SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS b FROM quarantine WHERE device = ?",
            (device,),
        ).fetchone()
        return int(row["n"]), int(row["b"])

    def add_quarantine(
        self,
        record: Record,
        record_hash: str,
        reason: str,
        path: str,
        size: int,
        *,
        chain_link: bool = False,
    ) -> None:
        self.conn.execute(
            "INSERT INTO quarantine (device, record_hash, seq, session, record_type, reason, "
            "path, utc, size, chain_link) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.device,
                record_hash,
                record.seq,
                record.session,
                record.type,
                reason,
                path,
                now_utc(),
                size,
                int(chain_link),
            ),
        )
        self.conn.execute(
            "DELETE FROM waiting WHERE record_hash = ? AND device = ?",
            (record_hash, record.device),
        )

    def note_overflow(self, device: str, size: int, reason: str) -> None:
        """Count one refused quarantine of ``device`` in its single summary row."""
        now = now_utc()
        self.conn.execute(
            "INSERT INTO quarantine_overflow (device, refused, refused_bytes, first_utc, "
            "last_utc, last_reason) VALUES (?, 1, ?, ?, ?, ?) ON CONFLICT (device) DO UPDATE "
            "SET refused = refused + 1, refused_bytes = refused_bytes + excluded.refused_bytes, "
            "last_utc = excluded.last_utc, last_reason = excluded.last_reason",
            (device, size, now, now, reason),
        )

    # -- waiting ---------------------------------------------------------------------------
    def wait(self, record: Record, record_hash: str, reason: str) -> None:
        now = now_utc()
        self.conn.execute(
            "INSERT INTO waiting (record_hash, device, seq, session, record_type, reason, "
            "first_utc, last_utc) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (record_hash) DO UPDATE SET reason = excluded.reason, "
            "last_utc = excluded.last_utc, attempts = attempts + 1 "
            "WHERE waiting.device = excluded.device",
            (record_hash, record.device, record.seq, record.session, record.type, reason, now, now),
        )

    def waiting_count(self, device: str) -> int:
        row = self.conn.execute(
            "SELECT COUNT(*) AS n FROM waiting WHERE device = ?", (device,)
        ).fetchone()
        return int(row["n"])

    def waiting_reason(self, record_hash: str, device: str) -> str | None:
        row = self.conn.execute(
            "SELECT reason FROM waiting WHERE record_hash = ? AND device = ?",
            (record_hash, device),
        ).fetchone()
        return str(row["reason"]) if row else None
