"""SQL of the custody log: its entries, the signed tree heads issued, and devices' chain heads.

The log table is append-only by contract (nothing here updates or deletes a row); the audit
(:mod:`receiver.custody.audit`) detects when someone edited it behind the receiver's back, from
the signed tree heads also kept as files. Failure posture: SQLite errors propagate; callers
decide. Appending inside a transaction the caller already holds joins that transaction, so an
event commits together with the change it describes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS custody_log (
    idx INTEGER PRIMARY KEY,
    entry TEXT NOT NULL,            -- the canonical JSON event (RFC 8785), the Merkle leaf data
    leaf_hash TEXT NOT NULL,        -- hex SHA-256(0x00 || entry)
    kind TEXT NOT NULL,
    utc TEXT NOT NULL,
    actor TEXT,
    case_number TEXT,
    session TEXT,
    device TEXT,
    record_hash TEXT
);
CREATE INDEX IF NOT EXISTS custody_case ON custody_log (case_number);
CREATE INDEX IF NOT EXISTS custody_session ON custody_log (session);
CREATE TABLE IF NOT EXISTS custody_heads (
    tree_size INTEGER NOT NULL,
    root TEXT NOT NULL,
    utc TEXT NOT NULL,
    head TEXT NOT NULL,             -- the signed tree head, canonical JSON
    PRIMARY KEY (tree_size, utc)
);
-- the newest signed chain head each device announced (anchors a chain's tail)
CREATE TABLE IF NOT EXISTS chain_heads (
    device TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    utc TEXT NOT NULL,
    head TEXT NOT NULL,
    received_utc TEXT NOT NULL
);
"""


class CustodySQL:
    """The custody tables of one open database."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def append(self, entry: str, leaf_hash: str, fields: dict[str, Any]) -> int:
        own = not self.conn.in_transaction
        if own:
            self.conn.execute("BEGIN IMMEDIATE")
        try:
            row = self.conn.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM custody_log")
            idx = int(row.fetchone()[0])
            self.conn.execute(
                "INSERT INTO custody_log (idx, entry, leaf_hash, kind, utc, actor, case_number, "
                "session, device, record_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    idx,
                    entry,
                    leaf_hash,
                    fields["kind"],
                    fields["utc"],
                    fields.get("actor"),
                    fields.get("case"),
                    fields.get("session"),
                    fields.get("device"),
                    fields.get("record"),
                ),
            )
            if own:
                self.conn.execute("COMMIT")
        except BaseException:
            if own:
                self.conn.execute("ROLLBACK")
            raise
        return idx

    def size(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM custody_log").fetchone()[0])

    def leaf_hashes(self, limit: int | None = None) -> list[str]:
        sql = "SELECT leaf_hash FROM custody_log ORDER BY idx"
        rows = self.conn.execute(
            sql + (" LIMIT ?" if limit is not None else ""), (limit,) if limit is not None else ()
        )
        return [r[0] for r in rows]

    def entries(self) -> Iterator[sqlite3.Row]:
        yield from self.conn.execute("SELECT * FROM custody_log ORDER BY idx")

    def entry(self, idx: int) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.conn.execute(
            "SELECT * FROM custody_log WHERE idx = ?", (idx,)
        ).fetchone()
        return row

    def for_case(self, case: str, sessions: list[str]) -> list[sqlite3.Row]:
        marks = ",".join("?" * len(sessions))
        where = "case_number = ?" + (f" OR session IN ({marks})" if sessions else "")
        return list(
            self.conn.execute(
                f"SELECT * FROM custody_log WHERE {where} ORDER BY idx", (case, *sessions)
            )
        )

    def add_head(self, tree_size: int, root: str, utc: str, head: str) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO custody_heads (tree_size, root, utc, head) VALUES (?, ?, ?, ?)",
            (tree_size, root, utc, head),
        )

    def heads(self) -> list[sqlite3.Row]:
        return list(self.conn.execute("SELECT * FROM custody_heads ORDER BY tree_size, utc"))

    def latest_head(self) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.conn.execute(
            "SELECT * FROM custody_heads ORDER BY tree_size DESC, utc DESC LIMIT 1"
        ).fetchone()
        return row

    # -- chain heads -------------------------------------------------------------------------
    def chain_head(self, device: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.conn.execute(
            "SELECT * FROM chain_heads WHERE device = ?", (device,)
        ).fetchone()
        return row

    def put_chain_head(
        self, device: str, seq: int, hash_: str, utc: str, head: str, received: str
    ) -> None:
        self.conn.execute(
            "INSERT INTO chain_heads (device, seq, hash, utc, head, received_utc) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device) DO UPDATE SET seq = excluded.seq, "
            "hash = excluded.hash, utc = excluded.utc, head = excluded.head, "
            "received_utc = excluded.received_utc WHERE excluded.seq > chain_heads.seq",
            (device, seq, hash_, utc, head, received),
        )

    def chain_heads(self) -> list[sqlite3.Row]:
        return list(self.conn.execute("SELECT * FROM chain_heads ORDER BY device"))


# -- the evidence of one case, as custody, access and export read it --------------------------
def case_sessions(conn: sqlite3.Connection, case: str) -> list[sqlite3.Row]:
    """The (session, device) pairs filed to ``case``."""
    return list(
        conn.execute(
            "SELECT session, device, how, filed_utc FROM filings WHERE case_number = ? "
            "ORDER BY filed_utc, session",
            (case,),
        )
    )


def case_segments(conn: sqlite3.Connection, case: str) -> list[sqlite3.Row]:
    """The stored segment records of the sessions filed to ``case``, in chain order."""
    return list(
        conn.execute(
            "SELECT r.* FROM records r JOIN filings f ON f.session = r.session "
            "AND f.device = r.device WHERE f.case_number = ? AND r.type = 'segment' "
            "ORDER BY r.device, r.seq",
            (case,),
        )
    )


def case_records(conn: sqlite3.Connection, case: str) -> list[sqlite3.Row]:
    """Every stored record of the sessions filed to ``case``."""
    return list(
        conn.execute(
            "SELECT r.* FROM records r JOIN filings f ON f.session = r.session "
            "AND f.device = r.device WHERE f.case_number = ? ORDER BY r.device, r.seq",
            (case,),
        )
    )


def device_records(conn: sqlite3.Connection, device: str) -> list[sqlite3.Row]:
    return list(conn.execute("SELECT * FROM records WHERE device = ? ORDER BY seq", (device,)))


def stored_range(
    conn: sqlite3.Connection, *, case: str | None = None, session: str | None = None
) -> str | None:
    """The newest ``stored_utc`` of the evidence of a case or a session (None: nothing)."""
    if session is not None:
        row = conn.execute("SELECT MAX(stored_utc) FROM records WHERE session = ?", (session,))
    else:
        row = conn.execute(
            "SELECT MAX(r.stored_utc) FROM records r JOIN filings f ON f.session = r.session "
            "WHERE f.case_number = ?",
            (case,),
        )
    value = row.fetchone()[0]
    return str(value) if value is not None else None


def case_concluded(conn: sqlite3.Connection, case: str) -> str | None:
    """The case's conclusion date (Art. 21), kept by the compliance work's ``case_compliance``
    table; None when not concluded or when that table does not exist in this build."""
    try:
        row = conn.execute(
            "SELECT concluded_date FROM case_compliance WHERE case_number = ?", (case,)
        ).fetchone()
    except sqlite3.OperationalError:
        return None
    return str(row[0]) if row and row[0] else None
