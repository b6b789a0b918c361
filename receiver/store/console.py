"""The SQL behind the review console's listings: filtered, paged case lists and one case's
sessions with their records, each in a bounded number of queries whatever the store's size.

Failure posture: read-only; SQLite errors propagate to the caller (the console answers 500 and
logs them). Filters are bound parameters, never formatted into the SQL.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

PAGE_SIZE = 100

#: indexes the console's lookups need on other subjects' tables (listed in EXTRA_SCHEMAS):
#: without them a case page scans every record of the store
SCHEMA = """
CREATE INDEX IF NOT EXISTS filings_case ON filings (case_number);
"""


@dataclass(frozen=True)
class CaseFilter:
    query: str = ""
    enforcement_type: str = ""
    #: "with_sessions" | "no_sessions" | "quarantine" | ""
    status: str = ""
    officer: str = ""
    #: restrict to these case numbers (e.g. the compliance module's deadline state); None: all
    numbers: frozenset[str] | None = None


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def case_rows(
    conn: sqlite3.Connection, f: CaseFilter, *, limit: int = PAGE_SIZE, offset: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """One page of cases matching ``f`` (newest number first) and the total that match."""
    where: list[str] = []
    args: list[Any] = []
    if f.query:
        where.append(
            "(c.number LIKE ? ESCAPE '\\' OR c.title LIKE ? ESCAPE '\\' "
            "OR c.parties LIKE ? ESCAPE '\\')"
        )
        args += [_like(f.query)] * 3
    if f.enforcement_type:
        where.append("c.enforcement_type = ?")
        args.append(f.enforcement_type)
    if f.officer:
        where.append(
            "(c.number IN (SELECT case_number FROM assignments WHERE officers LIKE ? ESCAPE '\\')"
            " OR c.number IN (SELECT fi.case_number FROM filings fi JOIN records r "
            "ON r.session = fi.session AND r.type = 'session-open' "
            "WHERE r.body LIKE ? ESCAPE '\\'))"
        )
        args += [_like(f.officer)] * 2
    if f.status == "with_sessions":
        where.append("EXISTS (SELECT 1 FROM filings fi WHERE fi.case_number = c.number)")
    elif f.status == "no_sessions":
        where.append("NOT EXISTS (SELECT 1 FROM filings fi WHERE fi.case_number = c.number)")
    elif f.status == "quarantine":
        where.append(
            "EXISTS (SELECT 1 FROM filings fi JOIN quarantine q ON q.session = fi.session "
            "WHERE fi.case_number = c.number)"
        )
    if f.numbers is not None:
        where.append("c.number IN (SELECT value FROM json_each(?))")
        args.append(_json_list(sorted(f.numbers)))
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    # the filter runs once: matching numbers (cases are few), then one page of rows
    matching = [
        r[0]
        for r in conn.execute(f"SELECT c.number FROM cases c {clause} ORDER BY c.number DESC", args)
    ]
    page = matching[offset : offset + limit]
    rows = conn.execute(
        "SELECT c.number, c.enforcement_type, c.av_level, c.title, c.parties, c.sensitivity, "
        "c.created_utc, (SELECT COUNT(*) FROM filings fi WHERE fi.case_number = c.number) "
        "AS sessions, cc.concluded_date, cc.file_formed_date FROM cases c "
        "LEFT JOIN case_compliance cc ON cc.case_number = c.number "
        "WHERE c.number IN (SELECT value FROM json_each(?)) ORDER BY c.number DESC",
        (_json_list(page),),
    ).fetchall()
    return [dict(r) for r in rows], len(matching)


def _json_list(values: list[Any]) -> str:
    return json.dumps(values, ensure_ascii=False)


def case_sessions(conn: sqlite3.Connection, number: str) -> list[dict[str, Any]]:
    """The sessions filed to a case with every one of their records, in seq order."""
    rows = conn.execute(
        "SELECT r.session, r.device, r.seq, r.type, r.utc, r.body, r.media_file, "
        "r.media_sha256, r.media_size, r.plain_sha256, r.stored_utc, f.how AS filed_by "
        "FROM filings f JOIN records r ON r.session = f.session AND r.device = f.device "
        "WHERE f.case_number = ? ORDER BY r.device, r.seq",
        (number,),
    ).fetchall()
    return _group(rows)


def session_records(conn: sqlite3.Connection, session: str) -> list[dict[str, Any]]:
    """One session (filed or not) with its records, or an empty list."""
    rows = conn.execute(
        "SELECT r.session, r.device, r.seq, r.type, r.utc, r.body, r.media_file, "
        "r.media_sha256, r.media_size, r.plain_sha256, r.stored_utc, f.how AS filed_by "
        "FROM records r LEFT JOIN filings f ON f.session = r.session "
        "WHERE r.session = ? ORDER BY r.device, r.seq",
        (session,),
    ).fetchall()
    return _group(rows)


def _group(rows: list[sqlite3.Row]) -> list[dict[str, Any]]:
    sessions: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        key = (r["session"], r["device"])
        s = sessions.setdefault(
            key,
            {
                "session": r["session"],
                "device": r["device"],
                "filed_by": r["filed_by"],
                "records": [],
            },
        )
        s["records"].append(dict(r))
    return sorted(sessions.values(), key=lambda s: min(x["utc"] for x in s["records"]))


def filing_case(conn: sqlite3.Connection, session: str) -> str | None:
    row = conn.execute("SELECT case_number FROM filings WHERE session = ?", (session,)).fetchone()
    return str(row[0]) if row else None


def quarantined_sessions(conn: sqlite3.Connection, sessions: list[str]) -> dict[str, list[str]]:
    """session -> the reasons its records were quarantined."""
    out: dict[str, list[str]] = {}
    if not sessions:
        return out
    for r in conn.execute(
        "SELECT session, seq, reason FROM quarantine WHERE session IN "
        "(SELECT value FROM json_each(?)) ORDER BY id",
        (_json_list(sessions),),
    ):
        out.setdefault(r["session"], []).append(f"seq {r['seq']}: {r['reason']}")
    return out


def officers_known(conn: sqlite3.Connection, limit: int = 200) -> list[str]:
    """Officer names from assignments, for the case list's officer filter."""
    names: set[str] = set()
    for (officers,) in conn.execute(
        "SELECT DISTINCT officers FROM assignments ORDER BY id DESC LIMIT ?", (limit,)
    ):
        try:
            names.update(o for o in json.loads(officers) if isinstance(o, str))
        except ValueError:
            continue
    return sorted(names)


def case_conclusions(
    conn: sqlite3.Connection, numbers: list[str] | None = None
) -> dict[str, tuple[str | None, str | None]]:
    """case -> (concluded date, case file formed date), local ISO dates or None."""
    sql = (
        "SELECT c.number, cc.concluded_date, cc.file_formed_date FROM cases c "
        "LEFT JOIN case_compliance cc ON cc.case_number = c.number"
    )
    args: tuple[Any, ...] = ()
    if numbers is not None:
        sql += " WHERE c.number IN (SELECT value FROM json_each(?))"
        args = (_json_list(numbers),)
    return {r[0]: (r[1], r[2]) for r in conn.execute(sql, args)}


def gap_explanations(
    conn: sqlite3.Connection, device: str, seqs: list[int]
) -> dict[int, dict[str, Any]]:
    """seq -> the written explanation of that gap (Art. 13), for one device."""
    if not seqs:
        return {}
    rows = conn.execute(
        "SELECT seq, author, utc, text FROM gap_explanations WHERE device = ? AND seq IN "
        "(SELECT value FROM json_each(?))",
        (device, _json_list(seqs)),
    )
    return {int(r["seq"]): dict(r) for r in rows}


def device_head(conn: sqlite3.Connection, device: str) -> tuple[int, int]:
    """(record count, highest seq) of a device: changes whenever a record is stored."""
    row = conn.execute(
        "SELECT COUNT(*), COALESCE(MAX(seq), -1) FROM records WHERE device = ?", (device,)
    ).fetchone()
    return int(row[0]), int(row[1])
