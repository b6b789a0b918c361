"""What the console does, in terms of the receiver's shared layers: the read views
(:mod:`receiver.reports`, :mod:`receiver.store.console`), the case book, playback, and the
operations layer for users, approvals, custody and export (:mod:`receiver.operations`).

The web handlers call only this module; it holds no SQL and no policy of its own beyond
mapping console pages to the roles that may open them.

Failure posture: errors a user can cause are :class:`receiver.errors.ReceiverError`
subclasses the handlers turn into a page with one line; a function whose module is not
installed raises :class:`Unavailable`. One SQLite connection per worker thread.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from receiver import reports
from receiver.cases import ENFORCEMENT_TYPES, STAGES, CaseBook
from receiver.config import ReceiverConfig
from receiver.errors import NotFoundError, ReceiverError
from receiver.reports import chain_violations
from receiver.store import EvidenceStore, connect
from receiver.store import console as q
from receiver.web import media, timeline

log = logging.getLogger(__name__)


class Unavailable(ReceiverError):
    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is not available in this installation")
        self.what = what


class Forbidden(ReceiverError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    display: str


class Backend:
    def __init__(self, config: ReceiverConfig, *, cache_dir: Path | None = None) -> None:
        self.config = config
        self.store = EvidenceStore(config.data_dir)
        self.cache_dir = cache_dir or config.data_dir / "web-cache"
        self._local = threading.local()

    # -- plumbing --------------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.store.db_path)
            self._local.conn = conn
        return conn

    # -- cases -----------------------------------------------------------------------------
    enforcement_types = tuple(sorted(ENFORCEMENT_TYPES))
    stages = STAGES

    def cases(self, f: q.CaseFilter, page: int = 0) -> tuple[list[dict[str, Any]], int]:
        return q.case_rows(self.conn, f, limit=q.PAGE_SIZE, offset=page * q.PAGE_SIZE)

    def officers(self) -> list[str]:
        return q.officers_known(self.conn)

    def case(self, number: str) -> dict[str, Any]:
        case = CaseBook(self.conn).get(number)
        if case is None:
            raise NotFoundError("case", number)
        return case.to_dict()

    def case_sessions(self, number: str) -> list[dict[str, Any]]:
        return self._views(q.case_sessions(self.conn, number))

    def session(self, session: str) -> tuple[dict[str, Any], str | None]:
        """A session's view and the case it is filed to (None: in the inbox)."""
        rows = q.session_records(self.conn, session)
        if not rows:
            raise NotFoundError("session", session)
        return self._views(rows)[0], q.filing_case(self.conn, session)

    def _views(self, sessions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        per_device: dict[str, dict[int, list[str]]] = {}
        for s in sessions:
            if s["device"] not in per_device:
                found: dict[int, list[str]] = {}
                for v in chain_violations(self.store, self.conn, s["device"]):
                    if v.seq is not None:
                        found.setdefault(v.seq, []).append(f"{v.kind}: {v.detail}")
                per_device[s["device"]] = found
        quarantined = q.quarantined_sessions(self.conn, [s["session"] for s in sessions])
        out = []
        for s in sessions:
            hashes = {h for r in s["records"] for h in (r["media_sha256"], r["plain_sha256"]) if h}
            present = {h for h in hashes if self.store.has_object(h)}
            out.append(
                timeline.session_view(
                    s, per_device[s["device"]], quarantined.get(s["session"], []), present
                )
            )
        return out

    # -- playback --------------------------------------------------------------------------
    def playback(self, view: dict[str, Any]) -> media.Remuxed:
        segments = [s for s in view["segments"] if s["sha256"] and s["state"] == "verified"]
        if not segments:
            raise NotFoundError("playable segment in session", view["session"])
        paths = [self.store.object_path(s["sha256"]) for s in segments]
        return media.session_mp4(paths, [s["sha256"] for s in segments], self.cache_dir)

    # -- inbox, filing, assignments --------------------------------------------------------
    def inbox(self) -> list[dict[str, Any]]:
        return reports.sessions_view(self.conn, inbox_only=True)

    def all_case_numbers(self) -> list[str]:
        return [c.number for c in CaseBook(self.conn).all()]

    def file_session(self, who: Principal, session: str, case: str) -> str | None:
        return CaseBook(self.conn).file_session(session, case)

    def assignments(self) -> list[dict[str, Any]]:
        book = CaseBook(self.conn)
        out = []
        for d in reports.devices_view(self.conn):
            a = book.active_assignment(d["device"])
            out.append({"device": d["device"], "revoked": d["revoked"],
                        "assignment": a.wire() if a else None,
                        "published": a.published_utc if a else None})  # fmt: skip
        return out

    def assign(self, who: Principal, device: str, case: str, **fields: Any) -> None:
        CaseBook(self.conn).assign(device, case, **fields)

    def unassign(self, who: Principal, device: str) -> None:
        CaseBook(self.conn).unassign(device)

    # -- devices, quarantine ---------------------------------------------------------------
    def devices(self) -> list[dict[str, Any]]:
        return reports.devices_view(self.conn)

    def quarantine(self) -> list[dict[str, Any]]:
        return reports.quarantine_view(self.conn) + reports.waiting_view(self.conn)

    # -- users, approvals, custody, export: the operations layer ---------------------------
    def authenticate(self, name: str, password: str, client: str) -> Principal | None:
        raise Unavailable("sign-in (receiver.operations)")

    def signed_out(self, who: Principal) -> None:
        log.info("%s signed out", who.name)

    def log_access(
        self, who: Principal, action: str, case: str | None, session: str | None
    ) -> None:
        raise Unavailable("the custody log (receiver.operations)")

    def media_allowed(self, who: Principal, case: str | None) -> bool:
        return False

    def export_allowed(self, who: Principal, case: str) -> bool:
        return False

    def approval_purposes(self) -> tuple[str, ...]:
        return ("view", "export")

    def approvals(self, who: Principal) -> list[dict[str, Any]]:
        raise Unavailable("approvals (receiver.operations)")

    def request_approval(self, who: Principal, case: str, purpose: str, reason: str) -> None:
        raise Unavailable("approvals (receiver.operations)")

    def decide_approval(self, who: Principal, approval: str, grant: bool, note: str) -> None:
        raise Unavailable("approvals (receiver.operations)")

    def export(self, who: Principal, case: str) -> Path:
        raise Unavailable("export (receiver.operations)")

    def custody_log(self, who: Principal, case: str) -> list[dict[str, Any]]:
        raise Unavailable("the custody log (receiver.operations)")

    def verify_custody(self, who: Principal, case: str) -> dict[str, Any]:
        raise Unavailable("the custody log (receiver.operations)")

    # -- deadlines and the report: the compliance module -----------------------------------
    def deadline_states(self) -> list[tuple[str, str]]:
        return []

    def cases_in_deadline_state(self, state: str) -> frozenset[str] | None:
        return None

    def case_deadlines(self, case: str) -> list[dict[str, Any]]:
        return []

    def report(self, who: Principal) -> dict[str, Any]:
        raise Unavailable("the accountability report (receiver.compliance)")

    def local_time(self, utc: Any) -> str:
        """How the console shows a stored UTC time."""
        return "-" if utc is None else str(utc)
