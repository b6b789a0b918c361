"""Cases, device assignments and the filing of sessions against cases (Art. 2, 8, 9, 22).

Enforcement types carry the AV-recording level of Art. 8 and 20 (mandatory) and Art. 9
(recommended); a major inspection is mandatory (Art. 18). A case may name its enforcing unit; an
assignment may carry a scheduled window and the officer's return date (Art. 14), stored with it
in one transaction by :mod:`receiver.store.compliance`.
A session is filed automatically to the case named in its signed ``session-open`` assignment when
that case exists here; otherwise it waits in the "unfiled" inbox until a clerk files it.
Failure posture: unknown types, stages and labels raise :class:`InvalidInputError`; filing into a
missing case raises :class:`NotFoundError`; moving an already filed session to another case
without ``move`` raises :class:`ConflictError` naming the current case; nothing is changed by a
failed command.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from evidence.records import format_utc
from evidence.values import has_control
from receiver.compliance.rules import ENFORCEMENT_TYPES as RULE_TYPES
from receiver.compliance.rules import STAGES, av_level
from receiver.custody import record_event
from receiver.errors import ConflictError, InvalidInputError, NotFoundError
from receiver.store.compliance import ComplianceStore, Schedule

log = logging.getLogger(__name__)

#: enforcement type → AV level (Art. 8: mandatory; Art. 9: as the situation requires; Art. 20:
#: penalty interviews and hearings in full); the full rules are in receiver.compliance.rules
ENFORCEMENT_TYPES: dict[str, str] = {n: t.av_level for n, t in RULE_TYPES.items()}
SENSITIVITY = ("public", "internal", "personal-privacy", "trade-secret", "state-secret")

FILED_BY_ASSIGNMENT = "assignment"
FILED_BY_CLERK = "clerk"


def _now() -> str:
    return format_utc(datetime.now(UTC))


#: the longest case number accepted (department numbers such as 教执〔2026〕第017号 are ~15)
MAX_CASE_NUMBER_CHARS = 64
#: what the console serves under a case's address; a number ending so would be ambiguous
_CASE_PAGES = ("export", "custody", "custody/verify")


def check_case_number(number: str) -> str:
    """A new case's number, stripped; :class:`InvalidInputError` with the reason otherwise.

    "/" is allowed (2026/017 is common) but not as an empty, "." or ".." part, which browsers
    rewrite in addresses; nor may a number end like a page under a case (".../export").
    """
    number = number.strip()
    if not number:
        raise InvalidInputError("number", "a case number is required")
    if len(number) > MAX_CASE_NUMBER_CHARS:
        raise InvalidInputError("number", f"longer than {MAX_CASE_NUMBER_CHARS} characters")
    if has_control(number) or "\n" in number or "\t" in number:
        raise InvalidInputError("number", "control characters are not allowed")
    if any(part.strip() in ("", ".", "..") for part in number.split("/")):
        raise InvalidInputError("number", f"{number!r}: no empty, '.' or '..' part between '/'")
    if any(number.endswith("/" + page) for page in _CASE_PAGES):
        raise InvalidInputError("number", f"{number!r} ends like a console page")
    return number


@dataclass(frozen=True)
class Case:
    number: str
    enforcement_type: str
    av_level: str
    title: str
    parties: list[str]
    sensitivity: str
    created_utc: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "enforcement_type": self.enforcement_type,
            "av_level": self.av_level,
            "title": self.title,
            "parties": self.parties,
            "sensitivity": self.sensitivity,
            "created_utc": self.created_utc,
        }


@dataclass(frozen=True)
class Assignment:
    id: int
    device: str
    case: str
    officers: list[str]
    place: str
    reason: str
    target: str
    stage: str
    created_utc: str
    active: bool
    published_utc: str | None
    window_start_utc: str | None = None
    window_end_utc: str | None = None
    return_date: str | None = None

    def wire(self) -> dict[str, Any]:
        """The retained message the device stores as state/assignment.json; ``window`` (UTC) only
        when scheduled, for the device's reminders (devices that do not know it ignore it)."""
        out: dict[str, Any] = {
            "case": self.case,
            "officers": self.officers,
            "place": self.place,
            "reason": self.reason,
            "target": self.target,
            "stage": self.stage,
        }
        if self.window_start_utc and self.window_end_utc:
            out["window"] = {"start_utc": self.window_start_utc, "end_utc": self.window_end_utc}
        return out


#: an assignment with its schedule (receiver.store.compliance's assignment_schedule)
_ASSIGNMENT_SELECT = (
    "SELECT a.*, s.window_start_utc, s.window_end_utc, s.return_date FROM assignments a "
    "LEFT JOIN assignment_schedule s ON s.assignment_id = a.id "
)


def _case(row: sqlite3.Row) -> Case:
    return Case(
        number=row["number"],
        enforcement_type=row["enforcement_type"],
        av_level=row["av_level"],
        title=row["title"],
        parties=json.loads(row["parties"]),
        sensitivity=row["sensitivity"],
        created_utc=row["created_utc"],
    )


def _assignment(row: sqlite3.Row) -> Assignment:
    return Assignment(
        id=row["id"],
        device=row["device"],
        case=row["case_number"],
        officers=json.loads(row["officers"]),
        place=row["place"],
        reason=row["reason"],
        target=row["target"],
        stage=row["stage"],
        created_utc=row["created_utc"],
        active=bool(row["active"]),
        published_utc=row["published_utc"],
        window_start_utc=row["window_start_utc"],
        window_end_utc=row["window_end_utc"],
        return_date=row["return_date"],
    )


class CaseBook:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    # -- cases ---------------------------------------------------------------------------
    def create(
        self,
        number: str,
        enforcement_type: str,
        title: str,
        *,
        parties: list[str] | None = None,
        sensitivity: str = "internal",
        unit: str | None = None,
        major_inspection: bool = False,
    ) -> Case:
        number, title = check_case_number(number), title.strip()
        if not title:
            raise InvalidInputError("title", "a case title is required")
        if enforcement_type not in ENFORCEMENT_TYPES:
            raise InvalidInputError(
                "type", f"{enforcement_type!r}; known: {', '.join(sorted(ENFORCEMENT_TYPES))}"
            )
        if sensitivity not in SENSITIVITY:
            raise InvalidInputError(
                "sensitivity", f"{sensitivity!r}; known: {', '.join(SENSITIVITY)}"
            )
        if major_inspection and enforcement_type != "inspection":
            raise InvalidInputError("major-inspection", "only an inspection can be major (Art. 18)")
        if self.get(number) is not None:
            raise ConflictError(f"case {number} already exists")
        level, _article = av_level(enforcement_type, major_inspection=major_inspection)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute(
                "INSERT INTO cases (number, enforcement_type, av_level, title, parties, "
                "sensitivity, created_utc) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    number,
                    enforcement_type,
                    level,
                    title,
                    json.dumps(parties or [], ensure_ascii=False),
                    sensitivity,
                    _now(),
                ),
            )
            if unit is not None or major_inspection:
                ComplianceStore(self.conn, custody=record_event).set_case_profile(
                    number, unit=unit, major_inspection=major_inspection, in_transaction=True
                )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        case = self.get(number)
        assert case is not None
        # sessions that arrived before the case existed but name it are filed now
        for row in self.conn.execute(
            "SELECT r.session, r.device, r.body FROM records r LEFT JOIN filings f "
            "ON f.session = r.session AND f.device = r.device "
            "WHERE r.type = 'session-open' AND f.session IS NULL"
        ).fetchall():
            if _case_of_open_body(row["body"]) == number:
                self._file(row["session"], row["device"], number, FILED_BY_ASSIGNMENT)
        return case

    def get(self, number: str) -> Case | None:
        row = self.conn.execute("SELECT * FROM cases WHERE number = ?", (number,)).fetchone()
        return _case(row) if row else None

    def require(self, number: str) -> Case:
        case = self.get(number)
        if case is None:
            raise NotFoundError("case", number)
        return case

    def all(self) -> list[Case]:
        return [_case(r) for r in self.conn.execute("SELECT * FROM cases ORDER BY number")]

    # -- assignments ---------------------------------------------------------------------
    def assign(
        self,
        device: str,
        case: str,
        *,
        officers: list[str],
        place: str,
        reason: str,
        target: str,
        stage: str,
        schedule: Schedule | None = None,
    ) -> Assignment:
        self.require(case)
        if self.conn.execute("SELECT 1 FROM devices WHERE id = ?", (device,)).fetchone() is None:
            raise NotFoundError("device", device)
        if stage not in STAGES:
            raise InvalidInputError("stage", f"{stage!r}; known: {', '.join(STAGES)}")
        officers = [o.strip() for o in officers]
        if not officers or not all(officers):
            raise InvalidInputError("officer", "at least one officer, and no empty name")
        place, reason, target = place.strip(), reason.strip(), target.strip()
        # spoken in the preamble and signed in every session-open (Art. 12): never blank
        for name, value in (("place", place), ("reason", reason), ("target", target)):
            if not value:
                raise InvalidInputError(name, "must not be empty (it is spoken in the preamble)")
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute("UPDATE assignments SET active = 0 WHERE device = ?", (device,))
            cur = self.conn.execute(
                "INSERT INTO assignments (device, case_number, officers, place, reason, target, "
                "stage, created_utc, active) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                (
                    device,
                    case,
                    json.dumps(officers, ensure_ascii=False),
                    place,
                    reason,
                    target,
                    stage,
                    _now(),
                ),
            )
            record_event(
                self.conn,
                "assignment",
                device=device,
                case=case,
                officers=officers,
                place=place,
                reason=reason,
                target=target,
                stage=stage,
            )
            if schedule is not None and cur.lastrowid is not None:
                ComplianceStore(self.conn, custody=record_event).schedule(
                    cur.lastrowid, schedule, device=device, case=case
                )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        row = self.conn.execute(_ASSIGNMENT_SELECT + "WHERE a.id = ?", (cur.lastrowid,))
        return _assignment(row.fetchone())

    def unassign(self, device: str) -> Assignment | None:
        """Clear the device's assignment: the service publishes an empty retained message on
        its assignment topic, so the device falls back to its configured defaults. Recorded in
        ``unassignments``; returns the assignment that was active, if any."""
        if self.conn.execute("SELECT 1 FROM devices WHERE id = ?", (device,)).fetchone() is None:
            raise NotFoundError("device", device)
        active = self.active_assignment(device)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute("UPDATE assignments SET active = 0 WHERE device = ?", (device,))
            self.conn.execute(
                "INSERT INTO unassignments (device, created_utc) VALUES (?, ?)", (device, _now())
            )
            record_event(self.conn, "unassignment", device=device)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return active

    def unpublished_unassignments(self) -> list[tuple[int, str]]:
        """(id, device) of clears not yet published. The service publishes these before any
        unpublished assignment, so the newest of the two wins (a clear deactivates older ones)."""
        rows = self.conn.execute(
            "SELECT id, device FROM unassignments WHERE published_utc IS NULL ORDER BY id"
        )
        return [(r["id"], r["device"]) for r in rows]

    def mark_unassignment_published(self, unassignment_id: int) -> None:
        self.conn.execute(
            "UPDATE unassignments SET published_utc = ? WHERE id = ?", (_now(), unassignment_id)
        )

    def active_assignment(self, device: str) -> Assignment | None:
        row = self.conn.execute(
            _ASSIGNMENT_SELECT + "WHERE a.device = ? AND a.active = 1", (device,)
        ).fetchone()
        return _assignment(row) if row else None

    def unpublished_assignments(self) -> list[Assignment]:
        rows = self.conn.execute(
            _ASSIGNMENT_SELECT + "WHERE a.active = 1 AND a.published_utc IS NULL ORDER BY a.id"
        )
        return [_assignment(r) for r in rows]

    def mark_published(self, assignment_id: int) -> None:
        self.conn.execute(
            "UPDATE assignments SET published_utc = ? WHERE id = ?", (_now(), assignment_id)
        )

    # -- filing --------------------------------------------------------------------------
    def file_on_open(self, session: str, device: str, open_body: dict[str, Any]) -> str | None:
        """Auto-file a just-stored session-open; returns the case or None (inbox)."""
        number = _case_of_open_body(json.dumps(open_body))
        if number is None or self.get(number) is None:
            return None
        self._file(session, device, number, FILED_BY_ASSIGNMENT)
        return number

    def file_session(
        self, session: str, case: str, *, move: bool = False, device: str | None = None
    ) -> str | None:
        """A clerk files an inbox session against a case. A session already filed elsewhere is
        moved only with ``move`` (the move is logged and kept in ``filing_moves``); returns the
        case it was in before, if any."""
        self.require(case)
        # a session is (device, id): ids are chosen by devices, so two may share one
        owners = [
            r["device"]
            for r in self.conn.execute(
                "SELECT DISTINCT device FROM records WHERE session = ?", (session,)
            )
            if device is None or r["device"] == device
        ]
        if not owners:
            raise NotFoundError("session", session)
        if len(owners) > 1:
            raise ConflictError(f"session id {session} is used by devices {', '.join(owners)}")
        row = {"device": owners[0]}
        current = self.filing(session, owners[0])
        if current is not None and current[0] == case:
            return case
        if current is not None and not move:
            raise ConflictError(
                f"session {session} is already filed to case {current[0]} (by {current[1]}); "
                f"give --move to move it to case {case}"
            )
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute(
                "DELETE FROM filings WHERE session = ? AND device = ?", (session, row["device"])
            )
            self._file(session, row["device"], case, FILED_BY_CLERK)
            if current is not None:
                record_event(
                    self.conn,
                    "move",
                    session=session,
                    device=row["device"],
                    case=case,
                    from_case=current[0],
                )
                self.conn.execute(
                    "INSERT INTO filing_moves (session, from_case, to_case, moved_utc) "
                    "VALUES (?, ?, ?, ?)",
                    (session, current[0], case, _now()),
                )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        if current is not None:
            log.warning("session %s moved from case %s to case %s", session, current[0], case)
        return current[0] if current else None

    def _file(self, session: str, device: str, case: str, how: str) -> None:
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO filings (session, device, case_number, how, filed_utc) "
            "VALUES (?, ?, ?, ?, ?)",
            (session, device, case, how, _now()),
        )
        if cur.rowcount == 1:  # custody hook: the audit replays filings from the log
            record_event(self.conn, "filing", session=session, device=device, case=case, how=how)

    def filing(self, session: str, device: str | None = None) -> tuple[str, str] | None:
        if device is None:
            row = self.conn.execute(
                "SELECT case_number, how FROM filings WHERE session = ?", (session,)
            ).fetchone()
        else:
            row = self.conn.execute(
                "SELECT case_number, how FROM filings WHERE session = ? AND device = ?",
                (session, device),
            ).fetchone()
        return (row["case_number"], row["how"]) if row else None


def _case_of_open_body(body_json: str) -> str | None:
    try:
        body = json.loads(body_json)
        case = body["assignment"]["case"]
    except (ValueError, KeyError, TypeError):
        return None
    return case if isinstance(case, str) and case else None
