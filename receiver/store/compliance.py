"""SQL of the compliance subject: what clerks and supervisors add (gap explanations, case
conclusions and overrides, inspection document times, assignment windows and return dates, case
units and the major-inspection flag), and the reader that turns the store into typed
:class:`~receiver.compliance.facts.Facts`.

Failure posture: every write is one transaction (all or nothing); a write naming an unknown
case, assignment or gap raises :class:`NotFoundError`; a second explanation or conclusion raises
:class:`ConflictError` (facts are added, never overwritten). The reader never raises on a bad
stored body: an unreadable record becomes a verification problem in the facts.

Custody: a :class:`ComplianceStore` built with ``custody=receiver.custody.record_event`` logs
each write as a custody event inside the same transaction; each write also returns the event.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from evidence import layout
from evidence.errors import EvidenceError, RecordFormatError
from evidence.records import Record, format_utc, parse_utc
from receiver.compliance.facts import (
    AssignmentFact,
    CaseFact,
    DeviceFact,
    Explanation,
    Facts,
    GapFact,
    InspectionDocument,
    Override,
    ProblemFact,
    SessionFact,
)
from receiver.compliance.rules import ENFORCEMENT_TYPES, av_level
from receiver.errors import ConflictError, NotFoundError
from receiver.store.objects import EvidenceStore

log = logging.getLogger(__name__)

SCHEMA = """
-- per-case compliance facts: the enforcing unit, the Art. 18 major-inspection flag, the Art. 21
-- conclusion date (starts the 20-working-day clock) and the date the case file was formed
CREATE TABLE IF NOT EXISTS case_compliance (
    case_number TEXT PRIMARY KEY REFERENCES cases (number),
    unit TEXT,
    major_inspection INTEGER NOT NULL DEFAULT 0,
    concluded_date TEXT,
    concluded_by TEXT,
    concluded_utc TEXT,
    file_formed_date TEXT,
    file_formed_by TEXT
);
-- a supervisor concluded a mandatory-AV case with no recording
CREATE TABLE IF NOT EXISTS conclusion_overrides (
    case_number TEXT PRIMARY KEY REFERENCES cases (number),
    supervisor TEXT NOT NULL,
    reason TEXT NOT NULL,
    utc TEXT NOT NULL
);
-- the scheduled window and the return date (remote or continuous work, Art. 14) of assignments
CREATE TABLE IF NOT EXISTS assignment_schedule (
    assignment_id INTEGER PRIMARY KEY REFERENCES assignments (id),
    window_start_utc TEXT,
    window_end_utc TEXT,
    return_date TEXT
);
-- written explanations of gaps, added afterwards (Art. 13)
CREATE TABLE IF NOT EXISTS gap_explanations (
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    author TEXT NOT NULL,
    utc TEXT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (device, seq)
);
-- the times on the inspection record, entered by the clerk (Art. 18 cross-check)
CREATE TABLE IF NOT EXISTS inspection_documents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_number TEXT NOT NULL REFERENCES cases (number),
    start_utc TEXT NOT NULL,
    end_utc TEXT NOT NULL,
    entered_by TEXT NOT NULL,
    entered_utc TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Schedule:
    """An assignment's scheduled window (UTC) and the officer's return date (local date)."""

    window: tuple[datetime, datetime] | None
    return_date: date | None


def _now() -> str:
    return format_utc(datetime.now(UTC))


def _dt(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return parse_utc(text)
    except RecordFormatError:
        return None


def _date(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


#: the custody hook: ``receiver.custody.record_event(conn, kind, **fields)``
CustodyHook = Callable[..., Any]


class ComplianceStore:
    """``custody``: called with (conn, kind, **fields) inside each write's transaction, so the
    custody event commits with the fact it records (or neither does)."""

    def __init__(self, conn: sqlite3.Connection, custody: CustodyHook | None = None) -> None:
        self.conn = conn
        self.custody = custody

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        if self.custody is not None:
            self.custody(self.conn, kind, **fields)
        return {"event": kind, **fields}

    # -- writes --------------------------------------------------------------------------
    def _require_case(self, number: str) -> None:
        if self.conn.execute("SELECT 1 FROM cases WHERE number = ?", (number,)).fetchone() is None:
            raise NotFoundError("case", number)

    def _ensure_case_row(self, number: str) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO case_compliance (case_number) VALUES (?)", (number,)
        )

    def set_case_profile(
        self,
        number: str,
        *,
        unit: str | None,
        major_inspection: bool,
        actor: str | None = None,
        in_transaction: bool = False,
    ) -> dict[str, Any]:
        self._require_case(number)
        with contextlib.nullcontext() if in_transaction else _transaction(self.conn):
            self._ensure_case_row(number)
            self.conn.execute(
                "UPDATE case_compliance SET unit = ?, major_inspection = ? WHERE case_number = ?",
                (unit, int(major_inspection), number),
            )
            return self._event(
                "case-profile", actor=actor, case=number, unit=unit, major=major_inspection
            )

    def conclude(
        self,
        number: str,
        concluded: date,
        by: str,
        *,
        override: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        """Record the conclusion date; ``override`` = (supervisor, reason) when required."""
        self._require_case(number)
        row = self.case_row(number)
        if row is not None and row["concluded_date"]:
            raise ConflictError(f"case {number} was already concluded on {row['concluded_date']}")
        now = _now()
        with _transaction(self.conn):
            self._ensure_case_row(number)
            self.conn.execute(
                "UPDATE case_compliance SET concluded_date = ?, concluded_by = ?, "
                "concluded_utc = ? WHERE case_number = ?",
                (concluded.isoformat(), by, now, number),
            )
            if override is not None:
                self.conn.execute(
                    "INSERT INTO conclusion_overrides (case_number, supervisor, reason, utc) "
                    "VALUES (?, ?, ?, ?)",
                    (number, override[0], override[1], now),
                )
            return self._event(
                "case-concluded",
                actor=by,
                case=number,
                date=concluded.isoformat(),
                override_by=override[0] if override else None,
                override_reason=override[1] if override else None,
                utc=now,
            )

    def file_formed(self, number: str, formed: date, by: str) -> dict[str, Any]:
        self._require_case(number)
        with _transaction(self.conn):
            self._ensure_case_row(number)
            self.conn.execute(
                "UPDATE case_compliance SET file_formed_date = ?, file_formed_by = ? "
                "WHERE case_number = ?",
                (formed.isoformat(), by, number),
            )
            return self._event("case-file-formed", actor=by, case=number, date=formed.isoformat())

    def case_row(self, number: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.conn.execute(
            "SELECT * FROM case_compliance WHERE case_number = ?", (number,)
        ).fetchone()
        return row

    def recordings_of(self, number: str) -> int:
        row = self.conn.execute(
            "SELECT COUNT(*) FROM filings WHERE case_number = ?", (number,)
        ).fetchone()
        return int(row[0])

    def schedule(
        self, assignment_id: int, schedule: Schedule, *, device: str, case: str
    ) -> dict[str, Any]:
        """Store an assignment's schedule, inside the caller's transaction."""
        window, return_date = schedule.window, schedule.return_date
        self.conn.execute(
            "INSERT INTO assignment_schedule (assignment_id, window_start_utc, "
            "window_end_utc, return_date) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (assignment_id) DO UPDATE SET "
            "window_start_utc = excluded.window_start_utc, "
            "window_end_utc = excluded.window_end_utc, return_date = excluded.return_date",
            (
                assignment_id,
                format_utc(window[0]) if window else None,
                format_utc(window[1]) if window else None,
                return_date.isoformat() if return_date else None,
            ),
        )
        return self._event(
            "assignment-schedule",
            device=device,
            case=case,
            assignment=assignment_id,
            window_start_utc=format_utc(window[0]) if window else None,
            window_end_utc=format_utc(window[1]) if window else None,
            return_date=return_date.isoformat() if return_date else None,
        )

    def explain_gap(self, device: str, seq: int, author: str, text: str) -> dict[str, Any]:
        row = self.conn.execute(
            "SELECT session FROM records WHERE device = ? AND seq = ? AND type = 'gap'",
            (device, seq),
        ).fetchone()
        if row is None:
            raise NotFoundError("gap", f"{device} seq {seq}")
        if self.conn.execute(
            "SELECT 1 FROM gap_explanations WHERE device = ? AND seq = ?", (device, seq)
        ).fetchone():
            raise ConflictError(f"gap {device} seq {seq} already has an explanation")
        now = _now()
        with _transaction(self.conn):
            self.conn.execute(
                "INSERT INTO gap_explanations (device, seq, author, utc, text) "
                "VALUES (?, ?, ?, ?, ?)",
                (device, seq, author, now, text),
            )
            return self._event(
                "gap-annotation",
                actor=author,
                device=device,
                seq=seq,
                session=row["session"],
                detail=text,
                utc=now,
            )

    def add_inspection_document(
        self, number: str, start: datetime, end: datetime, by: str
    ) -> dict[str, Any]:
        self._require_case(number)
        with _transaction(self.conn):
            self.conn.execute(
                "INSERT INTO inspection_documents (case_number, start_utc, end_utc, entered_by, "
                "entered_utc) VALUES (?, ?, ?, ?, ?)",
                (number, format_utc(start), format_utc(end), by, _now()),
            )
            return self._event(
                "inspection-times",
                actor=by,
                case=number,
                start_utc=format_utc(start),
                end_utc=format_utc(end),
            )

    # -- the facts reader ----------------------------------------------------------------
    def facts(self, store: EvidenceStore | None = None) -> Facts:
        """Everything the findings need, read once. ``store``: also check the device chains
        (verification failures) and read each device's newest record (clock synchronised?)."""
        problems = self._quarantine_problems(store.data_dir if store is not None else None)
        devices = self._devices(store)
        if store is not None:
            problems += self._verification_problems(store, [d.id for d in devices])
        return Facts(
            sessions=tuple(self._sessions()),
            cases=tuple(self._cases()),
            assignments=tuple(self._assignments()),
            devices=tuple(devices),
            problems=tuple(problems),
        )

    def _sessions(self) -> Iterator[SessionFact]:
        filings = dict(self.conn.execute("SELECT session, case_number FROM filings").fetchall())
        explanations = {
            (r["device"], r["seq"]): Explanation(r["author"], parse_utc(r["utc"]), r["text"])
            for r in self.conn.execute("SELECT * FROM gap_explanations")
        }
        rows = self.conn.execute(
            "SELECT session, device, seq, type, utc, body, stored_utc FROM records "
            "WHERE type NOT IN ('check', 'clock') ORDER BY device, seq"
        ).fetchall()
        grouped: dict[tuple[str, str], list[sqlite3.Row]] = {}
        for r in rows:
            grouped.setdefault((r["session"], r["device"]), []).append(r)
        for (session, device), recs in grouped.items():
            yield _session_fact(session, device, recs, filings.get(session), explanations)

    def _cases(self) -> Iterator[CaseFact]:
        docs: dict[str, list[InspectionDocument]] = {}
        for r in self.conn.execute("SELECT * FROM inspection_documents ORDER BY id"):
            docs.setdefault(r["case_number"], []).append(
                InspectionDocument(
                    parse_utc(r["start_utc"]), parse_utc(r["end_utc"]), r["entered_by"]
                )
            )
        overrides = {
            r["case_number"]: Override(r["supervisor"], r["reason"], parse_utc(r["utc"]))
            for r in self.conn.execute("SELECT * FROM conclusion_overrides")
        }
        for r in self.conn.execute(
            "SELECT c.*, cc.unit, cc.major_inspection, cc.concluded_date, cc.file_formed_date "
            "FROM cases c LEFT JOIN case_compliance cc ON cc.case_number = c.number "
            "ORDER BY c.number"
        ):
            major = bool(r["major_inspection"])
            if r["enforcement_type"] in ENFORCEMENT_TYPES:
                level, article = av_level(r["enforcement_type"], major_inspection=major)
            else:  # a type from an older version: keep what was stored
                level, article = r["av_level"], "Art. 9"
            yield CaseFact(
                number=r["number"],
                enforcement_type=r["enforcement_type"],
                av_level=level,
                av_article=article,
                unit=r["unit"],
                major_inspection=major,
                created_utc=parse_utc(r["created_utc"]),
                concluded=_date(r["concluded_date"]),
                file_formed=_date(r["file_formed_date"]),
                override=overrides.get(r["number"]),
                inspection_documents=tuple(docs.get(r["number"], ())),
            )

    def _assignments(self) -> Iterator[AssignmentFact]:
        for r in self.conn.execute(
            "SELECT a.*, s.window_start_utc, s.window_end_utc, s.return_date FROM assignments a "
            "LEFT JOIN assignment_schedule s ON s.assignment_id = a.id ORDER BY a.id"
        ):
            yield AssignmentFact(
                id=r["id"],
                device=r["device"],
                case=r["case_number"],
                officers=tuple(json.loads(r["officers"])),
                stage=r["stage"],
                created_utc=parse_utc(r["created_utc"]),
                return_date=_date(r["return_date"]),
                window_start_utc=_dt(r["window_start_utc"]),
                window_end_utc=_dt(r["window_end_utc"]),
            )

    def assignment_schedule(self, assignment_id: int) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.conn.execute(
            "SELECT * FROM assignment_schedule WHERE assignment_id = ?", (assignment_id,)
        ).fetchone()
        return row

    def _devices(self, store: EvidenceStore | None) -> list[DeviceFact]:
        out = []
        for r in self.conn.execute("SELECT * FROM devices ORDER BY id"):
            synced = None
            if store is not None:
                last = self.conn.execute(
                    "SELECT MAX(seq) FROM records WHERE device = ?", (r["id"],)
                ).fetchone()[0]
                synced = _synced(store, r["id"], last) if last is not None else None
            out.append(
                DeviceFact(
                    id=r["id"],
                    revoked=bool(r["revoked"]),
                    last_seen_utc=_dt(r["last_seen_utc"]),
                    clock_offset_s=r["clock_offset_s"],
                    clock_synced=synced,
                    pending_segments=r["pending_segments"],
                    oldest_pending_utc=_dt(r["oldest_pending_utc"]),
                )
            )
        return out

    def _quarantine_problems(self, data_dir: Path | None) -> list[ProblemFact]:
        """One problem per quarantined session (or per record outside a session), attributed
        to the case and officers its quarantined session-open names, when there is one."""
        groups: dict[tuple[str, str], list[sqlite3.Row]] = {}
        for r in self.conn.execute("SELECT * FROM quarantine ORDER BY id"):
            key = (r["device"], r["session"] or f"#{r['id']}")
            groups.setdefault(key, []).append(r)
        out = []
        for (device, _), rows in groups.items():
            case, officers = _quarantined_assignment(rows, data_dir)
            reasons = sorted({r["reason"] for r in rows})
            seqs = [r["seq"] for r in rows if r["seq"] is not None]
            out.append(
                ProblemFact(
                    "quarantine",
                    device,
                    rows[0]["session"],
                    min(seqs) if seqs else None,
                    f"{len(rows)} record(s) quarantined: {'; '.join(reasons)}",
                    _dt(rows[0]["utc"]),
                    case=case,
                    officers=officers,
                )
            )
        return out

    def _verification_problems(self, store: EvidenceStore, devices: list[str]) -> list[ProblemFact]:
        from receiver.reports import chain_violations  # the one chain check the listings use

        out = []
        for device in devices:
            for v in chain_violations(store, self.conn, device):
                row = (
                    self.conn.execute(
                        "SELECT session, utc FROM records WHERE device = ? AND seq = ?",
                        (device, v.seq),
                    ).fetchone()
                    if v.seq is not None
                    else None
                )
                out.append(
                    ProblemFact(
                        "verification",
                        device,
                        row["session"] if row else None,
                        v.seq,
                        f"{v.kind.value}: {v.detail}",
                        _dt(row["utc"]) if row else None,
                    )
                )
        return out


def _quarantined_assignment(
    rows: list[sqlite3.Row], data_dir: Path | None
) -> tuple[str | None, tuple[str, ...]]:
    """The case and officers a quarantined session-open names (read from the quarantine copy,
    which is untrusted: used only to route the finding, never as evidence)."""
    for r in rows:
        if data_dir is None or r["record_type"] != "session-open" or not r["path"]:
            continue
        try:
            record = Record.load(data_dir / r["path"] / "record.json")
        except (EvidenceError, OSError):
            continue
        a = _dict(record.body.get("assignment"))
        officers = a.get("officers")
        case = a.get("case")
        return (
            case if isinstance(case, str) else None,
            tuple(str(o) for o in officers) if isinstance(officers, list) else (),
        )
    return None, ()


def _synced(store: EvidenceStore, device: str, seq: int) -> bool | None:
    try:
        return Record.load(layout.record_path(store.evidence_root, device, seq)).time.synced
    except (EvidenceError, OSError) as exc:
        log.warning("cannot read newest record of %s: %s", device, exc)
        return None


def _body(row: sqlite3.Row) -> dict[str, Any]:
    try:
        body = json.loads(row["body"])
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _session_fact(
    session: str,
    device: str,
    recs: list[sqlite3.Row],
    case: str | None,
    explanations: dict[tuple[str, int], Explanation],
) -> SessionFact:
    opened = next((_body(r) for r in recs if r["type"] == "session-open"), {})
    assignment = _dict(opened.get("assignment"))
    checks = _dict(opened.get("checks"))
    preamble = _dict(opened.get("preamble"))
    officers = assignment.get("officers")
    officers = officers if isinstance(officers, list) else []
    stage = assignment.get("stage")
    times = [t for r in recs if (t := _dt(r["utc"])) is not None]
    segment_ends = [
        t
        for r in recs
        if r["type"] == "segment" and (t := _dt(_body(r).get("utc_end"))) is not None
    ]
    start = min(times) if times else datetime.min.replace(tzinfo=UTC)
    end = max(times + segment_ends) if times else start
    gaps = []
    for r in recs:
        if r["type"] != "gap":
            continue
        b = _body(r)
        gaps.append(
            GapFact(
                device=device,
                session=session,
                seq=r["seq"],
                cause=str(b.get("cause") or ""),
                start_utc=_dt(b.get("start_utc")),
                end_utc=_dt(b.get("end_utc")),
                spoken=b.get("spoken_reason") is True,
                explanation=explanations.get((device, r["seq"])),
            )
        )
    return SessionFact(
        session=session,
        device=device,
        case=case,
        officers=tuple(str(o) for o in officers),
        stage=stage if isinstance(stage, str) else None,
        start_utc=start,
        end_utc=end,
        closed=any(r["type"] == "session-close" for r in recs),
        stored_utc=max(parse_utc(r["stored_utc"]) for r in recs),
        # the agent's check report (docs/evidence-format.md §3): its overall ``outcome``
        check_result=checks.get("outcome") if isinstance(checks.get("outcome"), str) else None,
        preamble=bool(isinstance(preamble.get("text"), str) and preamble["text"].strip()),
        markers=tuple(str(_body(r).get("kind")) for r in recs if r["type"] == "marker"),
        gaps=tuple(gaps),
    )
