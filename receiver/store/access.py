"""SQL of people and access: user accounts and approval requests.

Failure posture: SQLite errors propagate; a unique-name violation surfaces as
``sqlite3.IntegrityError`` for the caller to turn into a clear message.
"""

from __future__ import annotations

import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,   -- argon2id, in the PHC string format
    active INTEGER NOT NULL DEFAULT 1,
    created_utc TEXT NOT NULL,
    changed_utc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_number TEXT NOT NULL,
    kind TEXT NOT NULL,            -- view | export | party-view
    requester TEXT NOT NULL,
    party TEXT,                    -- for party-view: whose request
    reason TEXT NOT NULL,
    status TEXT NOT NULL,          -- pending | granted | refused
    decided_by TEXT,
    decision_note TEXT,
    created_utc TEXT NOT NULL,
    decided_utc TEXT,
    expires_utc TEXT
);
CREATE INDEX IF NOT EXISTS approvals_case ON approvals (case_number, requester);
"""


class AccessSQL:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    # -- users -------------------------------------------------------------------------------
    def user(self, name: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.conn.execute(
            "SELECT * FROM users WHERE name = ?", (name,)
        ).fetchone()
        return row

    def users(self) -> list[sqlite3.Row]:
        return list(self.conn.execute("SELECT * FROM users ORDER BY name"))

    def count_users(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM users").fetchone()[0])

    def add_user(self, name: str, role: str, password_hash: str, utc: str) -> None:
        self.conn.execute(
            "INSERT INTO users (name, role, password_hash, active, created_utc, changed_utc) "
            "VALUES (?, ?, ?, 1, ?, ?)",
            (name, role, password_hash, utc, utc),
        )

    def update_user(self, name: str, utc: str, **columns: object) -> None:
        allowed = {"role", "password_hash", "active"}
        assert set(columns) <= allowed, columns
        sets = ", ".join(f"{c} = ?" for c in columns)
        self.conn.execute(
            f"UPDATE users SET {sets}, changed_utc = ? WHERE name = ?",
            (*columns.values(), utc, name),
        )

    # -- approvals ---------------------------------------------------------------------------
    def add_approval(
        self, case: str, kind: str, requester: str, party: str | None, reason: str, utc: str
    ) -> int:
        cur = self.conn.execute(
            "INSERT INTO approvals (case_number, kind, requester, party, reason, status, "
            "created_utc) VALUES (?, ?, ?, ?, ?, 'pending', ?)",
            (case, kind, requester, party, reason, utc),
        )
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def approval(self, approval_id: int) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.conn.execute(
            "SELECT * FROM approvals WHERE id = ?", (approval_id,)
        ).fetchone()
        return row

    def approvals(self, case: str | None = None, status: str | None = None) -> list[sqlite3.Row]:
        where, args = [], []
        if case is not None:
            where.append("case_number = ?")
            args.append(case)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        sql = "SELECT * FROM approvals" + (" WHERE " + " AND ".join(where) if where else "")
        return list(self.conn.execute(sql + " ORDER BY id", args))

    def decide(
        self, approval_id: int, status: str, by: str, note: str, utc: str, expires: str | None
    ) -> None:
        self.conn.execute(
            "UPDATE approvals SET status = ?, decided_by = ?, decision_note = ?, "
            "decided_utc = ?, expires_utc = ? WHERE id = ? AND status = 'pending'",
            (status, by, note, utc, expires, approval_id),
        )

    def granted(
        self, case: str, requester: str, kinds: tuple[str, ...], now: str
    ) -> list[sqlite3.Row]:
        marks = ",".join("?" * len(kinds))
        return list(
            self.conn.execute(
                "SELECT * FROM approvals WHERE case_number = ? AND requester = ? AND "
                f"status = 'granted' AND kind IN ({marks}) AND expires_utc > ? ORDER BY id",
                (case, requester, *kinds, now),
            )
        )
