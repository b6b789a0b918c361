"""The receiver's metadata database: SQLite in WAL mode with ``synchronous=FULL``.

Media and record bytes live in the content-addressed store (:mod:`receiver.store`); this database
indexes them and holds devices, cases, assignments, filings and the quarantine list. A commit
returns only once SQLite has fsynced it, so a receipt is never sent for metadata a crash could
lose. Failure posture: schema creation is idempotent; SQLite errors propagate to the caller,
which decides whether the message that caused them is retried or dropped.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from receiver.store import access, compliance, console, custody, records

SCHEMA_VERSION = 4

# Columns added after version 1: (table, column, type). Added to older databases on open.
ADDED_COLUMNS = (
    ("devices", "revoked_utc", "TEXT"),
    ("devices", "revoke_reason", "TEXT"),
    # "dock" when the device comes from the provisioning registry, else "manual"
    ("devices", "source", "TEXT NOT NULL DEFAULT 'manual'"),
    # the decrypted plaintext of an encrypted segment, stored as its own object
    ("records", "plain_sha256", "TEXT"),
    ("records", "plain_size", "INTEGER"),
    # bytes kept in quarantine for the item (record + media): the per-device quota counts them
    ("quarantine", "size", "INTEGER NOT NULL DEFAULT 0"),
    # 1: the record itself is authentic and continues the chain, only its media were refused
    # (tampered, undecryptable, a name clash): the device's later records continue from it
    ("quarantine", "chain_link", "INTEGER NOT NULL DEFAULT 0"),
)

_FILINGS_V4 = """
-- a session is named by its device and its id: another device's session of the same id is
-- another session (version 4; older databases are migrated on open)
CREATE TABLE IF NOT EXISTS filings (
    session TEXT NOT NULL,
    device TEXT NOT NULL,
    case_number TEXT NOT NULL REFERENCES cases (number),
    how TEXT NOT NULL,
    filed_utc TEXT NOT NULL,
    PRIMARY KEY (device, session)
);
"""

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    public_key_pem TEXT NOT NULL,
    key_id TEXT NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    added_utc TEXT NOT NULL,
    last_seen_utc TEXT,
    clock_offset_s REAL,
    pending_segments INTEGER,
    oldest_pending_utc TEXT
);
CREATE TABLE IF NOT EXISTS records (
    hash TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    session TEXT NOT NULL,
    type TEXT NOT NULL,
    prev TEXT NOT NULL,
    utc TEXT NOT NULL,
    body TEXT NOT NULL,
    media_file TEXT,
    media_sha256 TEXT,
    media_size INTEGER,
    stored_utc TEXT NOT NULL,
    UNIQUE (device, seq)
);
CREATE INDEX IF NOT EXISTS records_session ON records (session);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    record_hash TEXT,
    seq INTEGER,
    session TEXT,
    record_type TEXT,
    reason TEXT NOT NULL,
    path TEXT,
    utc TEXT NOT NULL
);
-- records refused for a reason that goes away (device not yet registered, local storage or I/O
-- failure, no decryption key configured): the device keeps them and resends; cleared on storage
CREATE TABLE IF NOT EXISTS waiting (
    record_hash TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    seq INTEGER,
    session TEXT,
    record_type TEXT,
    reason TEXT NOT NULL,
    first_utc TEXT NOT NULL,
    last_utc TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1
);
-- the clerk cleared a device's assignment; published_utc once the empty retained message went
CREATE TABLE IF NOT EXISTS unassignments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    created_utc TEXT NOT NULL,
    published_utc TEXT
);
CREATE TABLE IF NOT EXISTS cases (
    number TEXT PRIMARY KEY,
    enforcement_type TEXT NOT NULL,
    av_level TEXT NOT NULL,
    title TEXT NOT NULL,
    parties TEXT NOT NULL,
    sensitivity TEXT NOT NULL,
    created_utc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS assignments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    case_number TEXT NOT NULL REFERENCES cases (number),
    officers TEXT NOT NULL,
    place TEXT NOT NULL,
    reason TEXT NOT NULL,
    target TEXT NOT NULL,
    stage TEXT NOT NULL,
    created_utc TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1,
    published_utc TEXT
);
"""
    + _FILINGS_V4
    + """
-- a clerk moved a filed session to another case (--move): who was where, and when
CREATE TABLE IF NOT EXISTS filing_moves (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL,
    from_case TEXT NOT NULL,
    to_case TEXT NOT NULL,
    moved_utc TEXT NOT NULL
);
"""
)


#: Further tables, one string per subject module of this package (custody, access, compliance):
#: each module defines its own ``SCHEMA`` of ``CREATE ... IF NOT EXISTS`` statements and is
#: listed here, so that opening a database creates everything in one place.
EXTRA_SCHEMAS: tuple[str, ...] = (
    records.SCHEMA,
    custody.SCHEMA,
    access.SCHEMA,
    compliance.SCHEMA,
    console.SCHEMA,
)


def _key_filings_by_device(conn: sqlite3.Connection) -> None:
    """Version 3 keyed filings by session id alone; rebuild the table keyed by (device, id)."""
    pk = [r["name"] for r in conn.execute("PRAGMA table_info(filings)") if r["pk"]]
    if pk != ["session"]:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("ALTER TABLE filings RENAME TO filings_v3")
        conn.execute(_FILINGS_V4)
        conn.execute(
            "INSERT INTO filings (session, device, case_number, how, filed_utc) "
            "SELECT session, device, case_number, how, filed_utc FROM filings_v3"
        )
        conn.execute("DROP TABLE filings_v3")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the database with the durability settings the store relies on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # autocommit off via isolation_level=None + explicit BEGIN in transactions
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript(SCHEMA)
    _key_filings_by_device(conn)
    for extra in EXTRA_SCHEMAS:
        conn.executescript(extra)
    for table, column, kind in ADDED_COLUMNS:
        have = {r["name"] for r in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            try:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            except sqlite3.OperationalError as exc:
                # another process opening the same database upgraded it first
                if "duplicate column" not in str(exc):
                    raise
    conn.execute(
        "INSERT INTO meta (name, value) VALUES ('schema_version', ?) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (str(SCHEMA_VERSION),),
    )
    return conn
