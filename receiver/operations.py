"""The operations layer: what a person can do with the receiver, for the CLI and the web console.

One :class:`Operations` object stands for one authenticated user (or ``None``: the local operator
at the dock's shell, who may only read case metadata and bootstrap the first account) acting on
one open data directory. Every method checks the role and the approvals (:mod:`receiver.access`)
and writes the custody event (:mod:`receiver.custody`) for what it did *or refused*; callers never
check permissions themselves and never write SQL.

API (all return plain JSON-able values unless stated; all raise
:class:`receiver.access.AccessDenied` when refused, after logging the refusal,
:class:`receiver.errors.NotFoundError` / :class:`~receiver.errors.InvalidInputError` for bad
input):

- ``Operations.login(config, store, conn, name, password)`` → Operations (raises AccessDenied);
  ``Operations.for_session(config, store, conn, name)`` for a web session logged in earlier
- ``user`` (:class:`receiver.access.User`: name, role, active, ``can(permission)``) or None
- ``list_cases()``, ``list_sessions(inbox_only=False)``, ``show_case(number)`` (logs ``view``),
  ``viewed_case(number)`` (only the check and the ``view`` event, for a caller building its
  own page of the case)
- ``list_media(case)`` → segments of the case: session, seq, file, size, encrypted
- ``media_for_playback(case, session, seq)`` → :class:`pathlib.Path` of the playable plaintext
  (MPEG-TS) object; needs a granted ``view`` or ``party-view`` approval; logs ``playback``
- ``export_case(case, dest, *, as_zip=False)`` → dict (path, files, tree head); needs a granted
  ``export`` approval; issues a signed tree head; logs ``export``
- ``request_approval(case, kind, reason, party=None)`` → dict; ``kind`` is view | export |
  party-view; logs ``approval-request``
- ``decide_approval(approval_id, grant, note)`` → dict; logs ``approval-grant`` /
  ``approval-refusal``; ``approvals(case=None, status=None)`` → list
- ``delete_evidence(case=None, session=None)`` → never returns: always refused inside retention,
  the refusal logged (``deletion-refused``)
- custody: ``tree_head()``, ``prove_inclusion(index)``, ``prove_consistency(old_head_dict)``,
  ``custody_entries(case=None)``, ``audit()``
- users (administrator; the very first account may be added by the local operator):
  ``add_user(name, role, password)``, ``set_role``, ``set_password``, ``set_active``,
  ``list_users()``; each logs ``user-change``

Failure posture: nothing is changed by a refused or failed operation except the custody event
recording the refusal.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evidence.merkle import MerkleError, TreeHead
from evidence.records import format_utc, parse_utc
from receiver import reports
from receiver.access import (
    EXPORT,
    PARTY_VIEW,
    VIEW,
    AccessDenied,
    Accounts,
    Approvals,
    User,
    may_approve,
)
from receiver.cases import CaseBook
from receiver.config import ReceiverConfig
from receiver.custody import CustodyLog, record_event
from receiver.errors import InvalidInputError, NotFoundError
from receiver.identity import load_receipt_key
from receiver.store import EvidenceStore
from receiver.store import custody as evq

#: evidence may not be deleted for this many years after it was stored (Art. 23)
RETENTION_YEARS = 30
LOCAL = "local-operator"


class Operations:
    """One user's operations on one data directory (see the module docstring for the API)."""

    def __init__(
        self,
        config: ReceiverConfig,
        store: EvidenceStore,
        conn: sqlite3.Connection,
        user: User | None,
    ) -> None:
        self.config = config
        self.store = store
        self.conn = conn
        self.user = user
        self.cases = CaseBook(conn)
        self.accounts = Accounts(conn)
        self.approvals_ = Approvals(conn)

    @classmethod
    def login(
        cls,
        config: ReceiverConfig,
        store: EvidenceStore,
        conn: sqlite3.Connection,
        name: str,
        password: str,
    ) -> Operations:
        try:
            user = Accounts(conn).authenticate(name, password)
        except AccessDenied as exc:
            record_event(conn, "access-refused", actor=name, action="log in", detail=exc.reason)
            raise
        return cls(config, store, conn, user)

    @classmethod
    def for_session(
        cls,
        config: ReceiverConfig,
        store: EvidenceStore,
        conn: sqlite3.Connection,
        name: str,
    ) -> Operations:
        """For a web session that :meth:`login` authenticated earlier: the account as it is now
        (a role change or a disabled account counts from the next request)."""
        user = Accounts(conn).get(name)
        if user is None or not user.active:
            record_event(
                conn,
                "access-refused",
                actor=name,
                action="continue a session",
                detail="unknown or disabled account",
            )
            raise AccessDenied(name, "continue a session", "unknown or disabled account")
        return cls(config, store, conn, user)

    # -- helpers ---------------------------------------------------------------------------
    @property
    def actor(self) -> str:
        return self.user.name if self.user else LOCAL

    def _refuse(self, what: str, reason: str, **fields: Any) -> AccessDenied:
        record_event(
            self.conn, "access-refused", actor=self.actor, action=what, detail=reason, **fields
        )
        return AccessDenied(self.actor, what, reason)

    def _require(self, permission: str, what: str, **fields: Any) -> User:
        if self.user is None:
            raise self._refuse(what, "log in first (--user NAME)", **fields)
        if not self.user.can(permission):
            raise self._refuse(what, f"role {self.user.role} lacks {permission}", **fields)
        return self.user

    def _read_cases(self, what: str, **fields: Any) -> None:
        # the local operator at the dock's shell may read metadata (no media)
        if self.user is not None and not self.user.can("read-cases"):
            raise self._refuse(what, f"role {self.user.role} does not read cases", **fields)

    def _grant_for(self, case: str, kinds: tuple[str, ...], what: str) -> int:
        user = self._require("request", what, case=case)
        grant = self.approvals_.valid_grant(case, user.name, kinds)
        if grant is None:
            raise self._refuse(
                what,
                f"no granted {' or '.join(kinds)} approval for case {case} "
                "(request one: approval request)",
                case=case,
            )
        return grant.id

    def custody(self) -> CustodyLog:
        key = load_receipt_key(self.config.receipt_key_path)
        return CustodyLog(self.conn, self.store.data_dir, key)

    # -- cases (metadata) --------------------------------------------------------------------
    def list_cases(self) -> list[dict[str, Any]]:
        self._read_cases("list cases")
        return reports.cases_view(self.conn)

    def list_sessions(self, inbox_only: bool = False) -> list[dict[str, Any]]:
        self._read_cases("list sessions")
        return reports.sessions_view(self.conn, inbox_only=inbox_only)

    def show_case(self, number: str) -> dict[str, Any]:
        """The case with its sessions and verification state (``reports.case_view``)."""
        self.viewed_case(number)
        return reports.case_view(self.store, self.conn, number)

    def viewed_case(self, number: str) -> None:
        """Check the role and log the ``view`` of a case's metadata, for a caller that builds
        its own view of the case (the CLI's ``case show``, a web page)."""
        self._read_cases("view case", case=number)
        self.cases.require(number)
        record_event(self.conn, "view", actor=self.actor, case=number, what="case metadata")

    def list_media(self, case: str) -> list[dict[str, Any]]:
        self._read_cases("list media", case=case)
        self.cases.require(case)
        return [
            {
                "session": r["session"],
                "device": r["device"],
                "seq": r["seq"],
                "file": r["media_file"],
                "size": r["plain_size"] or r["media_size"],
                "encrypted": r["plain_sha256"] is not None,
                "utc": r["utc"],
            }
            for r in evq.case_segments(self.conn, case)
        ]

    # -- media -------------------------------------------------------------------------------
    def media_for_playback(self, case: str, session: str, seq: int) -> Path:
        """The stored plaintext of one segment of the case, after the approval check."""
        self.cases.require(case)
        approval = self._grant_for(case, (VIEW, PARTY_VIEW), "play back media")
        row = next(
            (
                r
                for r in evq.case_segments(self.conn, case)
                if r["session"] == session and r["seq"] == seq
            ),
            None,
        )
        if row is None:
            raise NotFoundError("segment", f"{session} seq {seq} in case {case}")
        sha = row["plain_sha256"] or row["media_sha256"]
        path = self.store.object_path(sha)
        record_event(
            self.conn,
            "playback",
            actor=self.actor,
            case=case,
            session=session,
            device=row["device"],
            seq=seq,
            record=row["hash"],
            approval=approval,
        )
        return path

    def export_case(self, case: str, dest: Path, *, as_zip: bool = False) -> dict[str, Any]:
        """Write the case file (see :mod:`receiver.export`) after the approval check."""
        self.cases.require(case)
        approval = self._grant_for(case, (EXPORT,), "export case")
        from receiver.export import export_case

        return export_case(
            self.config,
            self.store,
            self.conn,
            case,
            dest,
            actor=self.actor,
            approval=approval,
            as_zip=as_zip,
        )

    # -- approvals ---------------------------------------------------------------------------
    def request_approval(
        self, case: str, kind: str, reason: str, party: str | None = None
    ) -> dict[str, Any]:
        user = self._require("request", f"request {kind}", case=case)
        c = self.cases.require(case)
        if kind == PARTY_VIEW and party not in c.parties:
            raise InvalidInputError("party", f"{party!r} is not a party of case {case}")
        a = self.approvals_.request(case, kind, user.name, reason, party)
        record_event(
            self.conn,
            "approval-request",
            actor=user.name,
            case=case,
            approval=a.id,
            request=kind,
            party=party,
            detail=reason,
        )
        return a.to_dict()

    def decide_approval(self, approval_id: int, grant: bool, note: str) -> dict[str, Any]:
        what = "grant approvals" if grant else "refuse approvals"
        user = self._require("approve", what)
        a = self.approvals_.require(approval_id)
        why_not = may_approve(user, a, self.cases.require(a.case).sensitivity)
        if why_not is not None:
            raise self._refuse(what, why_not, case=a.case, approval=a.id)
        decided = self.approvals_.decide(a, user, grant, note)
        record_event(
            self.conn,
            "approval-grant" if grant else "approval-refusal",
            actor=user.name,
            case=a.case,
            approval=a.id,
            request=a.kind,
            requester=a.requester,
            party=a.party,
            detail=note,
        )
        return decided.to_dict()

    def approvals(self, case: str | None = None, status: str | None = None) -> list[dict]:
        if self.user is None:
            raise self._refuse("list approvals", "log in first (--user NAME)")
        rows = self.approvals_.list(case, status)
        if not (self.user.can("approve") or self.user.can("audit")):
            rows = [a for a in rows if a.requester == self.user.name]
        return [a.to_dict() for a in rows]

    # -- deletion (always refused inside retention) --------------------------------------------
    def delete_evidence(self, case: str | None = None, session: str | None = None) -> None:
        """Art. 23: no destruction within the retention period, for anyone. Logs the refusal."""
        stored = evq.stored_range(self.conn, case=case, session=session)
        if stored is None:
            raise NotFoundError("evidence", case or session or "-")
        newest = parse_utc(stored)
        until = newest.replace(year=newest.year + RETENTION_YEARS)
        reason = (
            f"evidence is inside its retention period until {format_utc(until)} "
            f"({RETENTION_YEARS} years after it was stored); deletion is refused for everyone"
        )
        if datetime.now(UTC) >= until:
            reason = "deletion after retention is an archive procedure outside this receiver"
        record_event(
            self.conn,
            "deletion-refused",
            actor=self.actor,
            case=case,
            session=session,
            detail=reason,
        )
        raise AccessDenied(self.actor, "delete evidence", reason)

    # -- custody -----------------------------------------------------------------------------
    def _custody_reader(self, what: str) -> None:
        if self.user is not None and not (
            self.user.can("read-custody") or self.user.can("read-cases")
        ):
            raise self._refuse(what, f"role {self.user.role} does not read the custody log")

    def tree_head(self, *, fresh: bool = False) -> dict[str, Any]:
        self._custody_reader("read the tree head")
        log = self.custody()
        head = log.issue_head() if fresh else log.current_head()
        return head.to_dict()

    def prove_inclusion(self, index: int) -> dict[str, Any]:
        self._custody_reader("prove inclusion")
        log = self.custody()
        head = log.current_head()
        return {**log.inclusion(index, head.tree_size).to_dict(), "tree_head": head.to_dict()}

    def prove_consistency(self, old_head: Any) -> dict[str, Any]:
        self._custody_reader("prove consistency")
        try:
            old = TreeHead.from_dict(old_head)
        except MerkleError as exc:
            raise InvalidInputError("tree head", exc.reason) from exc
        log = self.custody()
        ok, why = log.check_older_head(old)
        out: dict[str, Any] = {"ok": ok, "explanation": why, "old": old.to_dict()}
        if ok:
            head, proof = log.consistency(old.tree_size)
            out.update({"tree_head": head.to_dict(), "proof": proof})
        return out

    def custody_entries(self, case: str | None = None) -> list[dict[str, Any]]:
        self._custody_reader("read the custody log")
        from receiver.store.custody import CustodySQL

        sql = CustodySQL(self.conn)
        if case is None:
            rows = list(sql.entries())
        else:
            rows = sql.for_case(case, [s["session"] for s in evq.case_sessions(self.conn, case)])
        return [{"index": r["idx"], **json.loads(r["entry"])} for r in rows]

    def audit(self) -> dict[str, Any]:
        if self.user is not None and not self.user.can("audit"):
            raise self._refuse("run the audit", f"role {self.user.role} does not audit")
        from receiver.custody.audit import audit

        result = audit(self.config, self.store, self.conn)
        record_event(
            self.conn,
            "audit",
            actor=self.actor,
            ok=result["ok"],
            findings=len(result["findings"]),
        )
        return result

    # -- users ---------------------------------------------------------------------------------
    def _user_admin(self, what: str) -> None:
        if self.user is None and self.accounts.count() == 0:
            return  # bootstrap: the first account, created at the dock's shell
        self._require("manage-users", what)

    def add_user(self, name: str, role: str, password: str) -> dict[str, Any]:
        self._user_admin("add users")
        u = self.accounts.add(name, role, password)
        record_event(
            self.conn, "user-change", actor=self.actor, user=name, change="added", role=role
        )
        return {"name": u.name, "role": u.role, "active": u.active}

    def set_role(self, name: str, role: str) -> dict[str, Any]:
        self._user_admin("change roles")
        before = self.accounts.require(name).role
        u = self.accounts.set_role(name, role)
        record_event(
            self.conn,
            "user-change",
            actor=self.actor,
            user=name,
            change="role",
            role=role,
            before=before,
        )
        return {"name": u.name, "role": u.role, "active": u.active}

    def set_password(self, name: str, password: str) -> None:
        if self.user is None or self.user.name != name:
            self._user_admin("set passwords")
        self.accounts.set_password(name, password)
        record_event(self.conn, "user-change", actor=self.actor, user=name, change="password")

    def set_active(self, name: str, active: bool) -> dict[str, Any]:
        self._user_admin("enable or disable users")
        u = self.accounts.set_active(name, active)
        record_event(
            self.conn,
            "user-change",
            actor=self.actor,
            user=name,
            change="enabled" if active else "disabled",
        )
        return {"name": u.name, "role": u.role, "active": u.active}

    def list_users(self) -> list[dict[str, Any]]:
        if self.accounts.count():
            self._require("manage-users", "list users")
        return [{"name": u.name, "role": u.role, "active": u.active} for u in self.accounts.all()]
