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
import shutil
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from evidence import merkle
from evidence.canonical import canonical_bytes
from evidence.errors import RecordFormatError
from evidence.records import parse_utc
from receiver import reports
from receiver.access import EXPORT, PARTY_VIEW, VIEW, AccessDenied, Accounts, Approvals, User
from receiver.cases import ENFORCEMENT_TYPES, STAGES, CaseBook
from receiver.compliance.calendar import WorkCalendar
from receiver.compliance.deadlines import case_file_deadline, format_local, storage_deadline
from receiver.compliance.report import ReportSettings, report_for
from receiver.compliance.views import annotate_devices
from receiver.config import ReceiverConfig
from receiver.custody import record_event
from receiver.errors import InvalidInputError, NotFoundError, ReceiverError
from receiver.identity import load_receipt_key
from receiver.operations import Operations
from receiver.reports import chain_violations
from receiver.store import EvidenceStore, connect
from receiver.store import console as q
from receiver.web import charts, media, timeline

log = logging.getLogger(__name__)

CALENDAR_TTL_S = 600.0
CHAIN_TTL_S = 60.0
REPORT_COLUMNS = ("kind", "article", "case", "officers", "device", "when", "detail")
#: the Art. 21 case-file states the case list filters by
DEADLINE_STATES = ("open", "file-due", "file-overdue", "file-formed")


def _utc(text: Any) -> datetime | None:
    try:
        return parse_utc(text) if isinstance(text, str) else None
    except (ValueError, RecordFormatError):
        return None


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
        self._settings = ReportSettings.from_config(config)
        self._calendar: tuple[float, WorkCalendar] | None = None
        self._calendar_lock = threading.Lock()
        self._chains: dict[str, tuple[tuple[int, int], float, dict[int, list[str]]]] = {}
        self._chain_lock = threading.Lock()

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
        rows, total = q.case_rows(self.conn, f, limit=q.PAGE_SIZE, offset=page * q.PAGE_SIZE)
        for r in rows:
            r["file_state"], r["file_due"] = self.case_file_state(
                r["concluded_date"], r["file_formed_date"]
            )
        return rows, total

    def officers(self) -> list[str]:
        return q.officers_known(self.conn)

    def case(self, number: str) -> dict[str, Any]:
        case = CaseBook(self.conn).get(number)
        if case is None:
            raise NotFoundError("case", number)
        return case.to_dict()

    def case_sessions(self, number: str) -> list[dict[str, Any]]:
        return self._views(q.case_sessions(self.conn, number))

    def session(self, session: str, *, verify: bool = True) -> tuple[dict[str, Any], str | None]:
        """A session's view and the case it is filed to (None: in the inbox). ``verify=False``
        skips re-reading the devices' record files (media requests: the page showed them)."""
        rows = q.session_records(self.conn, session)
        if not rows:
            raise NotFoundError("session", session)
        return self._views(rows, verify=verify)[0], q.filing_case(self.conn, session)

    def _views(
        self, sessions: list[dict[str, Any]], *, verify: bool = True
    ) -> list[dict[str, Any]]:
        per_device: dict[str, dict[int, list[str]]] = {}
        for s in sessions:
            if not verify:
                per_device[s["device"]] = {}
            elif s["device"] not in per_device:
                per_device[s["device"]] = self._chain_problems(s["device"])
        quarantined = q.quarantined_sessions(self.conn, [s["session"] for s in sessions])
        out = []
        for s in sessions:
            hashes = {h for r in s["records"] for h in (r["media_sha256"], r["plain_sha256"]) if h}
            present = {h for h in hashes if self.store.has_object(h)}
            gaps = [r["seq"] for r in s["records"] if r["type"] == "gap"]
            explained = q.gap_explanations(self.conn, s["device"], gaps)
            out.append(
                timeline.session_view(
                    s,
                    per_device[s["device"]],
                    quarantined.get(s["session"], []),
                    present,
                    explained,
                )
            )
        return out

    def _chain_problems(self, device: str) -> dict[int, list[str]]:
        """seq -> chain problems of the device's stored records, re-read from the evidence
        files at most every :data:`CHAIN_TTL_S` per device (and at once when it grew), so a
        busy case page does not re-verify thousands of signatures per view."""
        head = q.device_head(self.conn, device)
        now = time.monotonic()
        with self._chain_lock:
            cached = self._chains.get(device)
            if cached is not None and cached[0] == head and now - cached[1] < CHAIN_TTL_S:
                return cached[2]
        found: dict[int, list[str]] = {}
        for v in chain_violations(self.store, self.conn, device):
            if v.seq is not None:
                found.setdefault(v.seq, []).append(f"{v.kind}: {v.detail}")
        with self._chain_lock:
            self._chains[device] = (head, now, found)
        return found

    # -- playback --------------------------------------------------------------------------
    def playback(self, view: dict[str, Any]) -> media.Remuxed:
        """Every stored segment of the session, in order (a segment with a chain problem still
        plays; the case page names the problem next to it)."""
        segments = [s for s in view["segments"] if s["sha256"] and s["present"]]
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
            out.append(
                {
                    "device": d["device"],
                    "revoked": d["revoked"],
                    "assignment": a.wire() if a else None,
                    "published": a.published_utc if a else None,
                }
            )
        return out

    def assign(self, who: Principal, device: str, case: str, **fields: Any) -> None:
        CaseBook(self.conn).assign(device, case, **fields)

    def unassign(self, who: Principal, device: str) -> None:
        CaseBook(self.conn).unassign(device)

    # -- devices, quarantine ---------------------------------------------------------------
    def devices(self) -> list[dict[str, Any]]:
        """Devices with the Art. 14 deadline of the oldest segment still on each."""
        return annotate_devices(reports.devices_view(self.conn), self.settings)

    def quarantine(self) -> list[dict[str, Any]]:
        return reports.quarantine_view(self.conn) + reports.waiting_view(self.conn)

    # -- users, approvals, custody, export: the operations layer ---------------------------
    def authenticate(self, name: str, password: str, client: str) -> Principal | None:
        """The user, or None for a wrong name or password (the refusal is in the custody log
        through the operations layer)."""
        try:
            ops = Operations.login(self.config, self.store, self.conn, name, password)
        except AccessDenied:
            log.warning("sign-in refused for %r from %s", name, client)
            return None
        assert ops.user is not None
        log.info("%s signed in from %s", ops.user.name, client)
        return Principal(ops.user.name, ops.user.role, ops.user.name)

    def current(self, name: str) -> Principal | None:
        """The account as it is now (a disabled account or a changed role applies at once)."""
        user = Accounts(self.conn).get(name)
        if user is None or not user.active:
            return None
        return Principal(user.name, user.role, user.name)

    def _ops(self, who: Principal) -> Operations:
        return Operations(self.config, self.store, self.conn, User(who.name, who.role, True))

    def signed_out(self, who: Principal) -> None:
        log.info("%s signed out", who.name)

    def log_access(self, who: Principal, what: str, case: str | None) -> None:
        record_event(self.conn, "view", actor=who.name, case=case, what=what)

    def _grant(self, who: Principal, case: str | None, kinds: tuple[str, ...]) -> bool:
        user = User(who.name, who.role, True)
        if case is None or not user.can("request"):
            return False
        return Approvals(self.conn).valid_grant(case, who.name, kinds) is not None

    def media_allowed(self, who: Principal, case: str | None) -> bool:
        """Checked on every media request: a granted, unexpired view approval for this case."""
        return self._grant(who, case, (VIEW, PARTY_VIEW))

    def export_allowed(self, who: Principal, case: str) -> bool:
        return self._grant(who, case, (EXPORT,))

    def log_playback(self, who: Principal, case: str, view: dict[str, Any]) -> None:
        """Each segment played goes through the operations layer (approval check + custody
        event with the approval it used)."""
        ops = self._ops(who)
        for seg in view["segments"]:
            if seg["sha256"] and seg["present"]:
                ops.media_for_playback(case, view["session"], seg["seq"])

    def approval_purposes(self) -> tuple[str, ...]:
        return (VIEW, EXPORT)

    def approvals(self, who: Principal) -> list[dict[str, Any]]:
        rows = self._ops(who).approvals()
        for a in rows:
            a["state"] = a.get("status")
        return sorted(rows, key=lambda a: -int(a["id"]))

    def request_approval(self, who: Principal, case: str, purpose: str, reason: str) -> None:
        if purpose not in self.approval_purposes():
            raise InvalidInputError("purpose", f"one of {', '.join(self.approval_purposes())}")
        if not reason:
            raise InvalidInputError("reason", "say why the media is needed")
        self._ops(who).request_approval(case, purpose, reason)

    def decide_approval(self, who: Principal, approval: str, grant: bool, note: str) -> None:
        if not approval.isdigit() or len(approval) > 12:
            raise NotFoundError("approval", approval)
        self._ops(who).decide_approval(int(approval), grant, note)

    def export(self, who: Principal, case: str) -> Path:
        """A zip of the case file in a fresh directory of the cache (the operations layer checks
        the approval and logs the export)."""
        work = Path(tempfile.mkdtemp(prefix="export-", dir=self._exports_dir()))
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in case)
        result = self._ops(who).export_case(case, work / f"{safe}.zip", as_zip=True)
        return Path(result["path"])

    def _exports_dir(self) -> Path:
        d = self.cache_dir / "exports"
        d.mkdir(parents=True, exist_ok=True)
        for old in d.iterdir():  # downloads older than a day are not kept
            if old.stat().st_mtime < time.time() - 86400:
                shutil.rmtree(old, ignore_errors=True)
        return d

    def custody_log(self, who: Principal, case: str) -> list[dict[str, Any]]:
        out = []
        for e in self._ops(who).custody_entries(case):
            fixed = {"index", "v", "kind", "utc", "actor", "case"}
            detail = ", ".join(f"{k}={v}" for k, v in e.items() if k not in fixed)
            out.append(
                {
                    "index": e["index"],
                    "when": e.get("utc"),
                    "who": e.get("actor", ""),
                    "action": e.get("kind"),
                    "detail": detail,
                }
            )
        return out

    def verify_custody(self, who: Principal, case: str) -> dict[str, Any]:
        """Every custody entry of the case: its bytes hash to its leaf, and its inclusion proof
        leads to the root of a tree head signed by this receiver."""
        ops = self._ops(who)
        entries = ops.custody_entries(case)  # checks the role and the case
        custody = ops.custody()
        head = custody.current_head()
        leaves = custody.leaves(head.tree_size)
        key = load_receipt_key(self.config.receipt_key_path).public_key()
        bad = [] if head.verify(key) else ["the tree head's signature does not verify"]
        for e in entries:
            i = e["index"]
            entry = {k: v for k, v in e.items() if k != "index"}
            leaf = merkle.leaf_hash(canonical_bytes(entry))
            if i >= len(leaves) or leaf != leaves[i]:
                bad.append(f"entry {i} does not match its leaf")
                continue
            proof = merkle.inclusion_proof(leaves, i)
            if not merkle.verify_inclusion(leaf, i, head.tree_size, proof, head.root_bytes()):
                bad.append(f"entry {i} is not included in the signed tree head")
        detail = (
            f"{len(entries)} entries, tree head {head.tree_size} {head.root[:16]}… {head.utc}"
            if not bad
            else "; ".join(bad[:10])
        )
        return {"ok": not bad, "detail": detail, "entries": len(entries)}

    # -- deadlines and the report: the compliance module -----------------------------------
    @property
    def settings(self) -> ReportSettings:
        return self._settings

    def calendar(self) -> WorkCalendar:
        """The working-day calendar, built once and rebuilt every :data:`CALENDAR_TTL_S`
        (building one resolves a year of holidays; an extended holiday file is picked up)."""
        now = time.monotonic()
        with self._calendar_lock:
            if self._calendar is None or now - self._calendar[0] > CALENDAR_TTL_S:
                self._calendar = (now, self._settings.calendar())
            return self._calendar[1]

    def deadline_states(self) -> list[tuple[str, str]]:
        return [(k, k) for k in DEADLINE_STATES]

    def case_file_state(self, concluded: str | None, formed: str | None) -> tuple[str, str]:
        """(state, due date as local text) of a case's Art. 21 case-file deadline."""
        if formed:
            return "file-formed", "-"
        if not concluded:
            return "open", "-"
        s = self.settings
        d = case_file_deadline(self.calendar(), s.timezone, date.fromisoformat(concluded))
        state = "file-overdue" if d.overdue(datetime.now(UTC)) else "file-due"
        return state, d.local()

    def cases_in_deadline_state(self, state: str) -> frozenset[str] | None:
        if state not in DEADLINE_STATES:
            return None
        rows = q.case_conclusions(self.conn)
        return frozenset(n for n, (c, f) in rows.items() if self.case_file_state(c, f)[0] == state)

    def case_deadlines(self, case: str, sessions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The case-file deadline (Art. 21) and each session's storage deadline (Art. 14)."""
        s = self.settings
        concluded, formed = q.case_conclusions(self.conn, [case]).get(case, (None, None))
        state, due = self.case_file_state(concluded, formed)
        out = [
            {
                "kind": "file",
                "article": "Art. 21",
                "subject": case,
                "due": due,
                "state": state,
                "when": concluded or "-",
            }
        ]
        for v in sessions:
            ended, stored = _utc(v["end"]), _utc(v.get("stored"))
            if ended is None:
                continue
            d = storage_deadline(self.calendar(), s.timezone, ended)
            late = stored is not None and stored >= d.due_utc
            out.append(
                {
                    "kind": "store",
                    "article": "Art. 14",
                    "subject": v["session"],
                    "due": d.local(),
                    "state": "late" if late else "ok",
                    "when": format_local(stored, s.timezone),
                }
            )
        return out

    def report(self, who: Principal, **scope: Any) -> dict[str, Any]:
        """The accountability report (Art. 25) as the page shows it: counts by kind, storage
        delays against their deadline, and every finding with its place and local time."""
        s = self.settings
        report = report_for(self.config, self.store, self.conn, **scope).to_dict()
        counts = sorted(report["counts"].items(), key=lambda kv: (-kv[1], kv[0]))
        titles = {f["kind"]: f["title"] for f in report["findings"]}
        findings = [
            {
                "kind": f["title"],
                "article": f["article"],
                "case": f["case"] or "",
                "officers": "、".join(f["officers"]),
                "device": f["device"] or "",
                "when": self.local_time(f["utc"]),
                "detail": f["detail"],
            }
            for f in report["findings"]
        ]
        return {
            "counts": {
                "findings": len(findings),
                "cases": len(report["cases_in_scope"]),
                "tz": s.timezone,
            },
            "warnings": report["warnings"],
            "chart": charts.bars([(k, v) for k, v in counts]),
            "titles": titles,
            "delays": charts.delays(report["storage"]),
            "columns": REPORT_COLUMNS,
            "findings": findings,
            "by_officer": report["by_officer"],
        }

    def local_time(self, utc: Any) -> str:
        """A stored UTC time as local wall-clock text (the compliance module's formatter)."""
        at = _utc(utc)
        return "-" if at is None else format_local(at, self.settings.timezone)
