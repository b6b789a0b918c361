"""People and access (Art. 22): user accounts with roles, passwords, approvals, sensitivity.

Roles and what they may do (``PERMISSIONS``):

- ``clerk``: cases, sessions, filing, assignments; may *request* to view, play back or export a
  case's media, and file a party's request to see records about them (``party-view``).
- ``supervisor``: what a clerk may, and grants or refuses requests on ordinary cases.
- ``head`` (the unit head of Art. 22): grants or refuses requests on every case, and is the only
  approver for cases labelled ``state-secret``, ``trade-secret`` or ``personal-privacy``.
- ``auditor``: reads case metadata, the custody log and runs the audit; no media.
- ``technician``: devices only.
- ``administrator``: user accounts and roles; no media, no approvals.

Nobody approves their own request. Media (view, playback, export) always needs a granted,
unexpired approval for that case, kind and requester, whatever the role. Deletion of evidence
inside the retention period is refused for everyone (:func:`deletion_refusal`).

Passwords are hashed with argon2id (argon2-cffi, its default parameters). Failure posture:
:class:`AccessDenied` (not allowed, bad password, no approval) and :class:`AccessError`
subclasses of :class:`receiver.errors.ReceiverError`; the caller logs refusals to the custody
log (the operations layer does) and shows one line.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from evidence.records import format_utc
from receiver.errors import InvalidInputError, NotFoundError, ReceiverError
from receiver.store.access import AccessSQL

CLERK, SUPERVISOR, HEAD, AUDITOR, TECHNICIAN, ADMINISTRATOR = (
    "clerk",
    "supervisor",
    "head",
    "auditor",
    "technician",
    "administrator",
)
ROLES = (CLERK, SUPERVISOR, HEAD, AUDITOR, TECHNICIAN, ADMINISTRATOR)
#: sensitivity labels (receiver.cases.SENSITIVITY) whose requests only the head may grant
STRICT_LABELS = frozenset({"state-secret", "trade-secret", "personal-privacy"})
#: approval kinds: what a grant lets its requester do
VIEW, EXPORT, PARTY_VIEW = "view", "export", "party-view"
APPROVAL_KINDS = (VIEW, EXPORT, PARTY_VIEW)
#: a grant is good for this long
GRANT_VALIDITY = timedelta(days=7)
MIN_PASSWORD = 10
_NAME = re.compile(r"[a-z][a-z0-9._-]{0,31}")

PERMISSIONS: dict[str, frozenset[str]] = {
    CLERK: frozenset({"read-cases", "manage-cases", "request"}),
    SUPERVISOR: frozenset({"read-cases", "manage-cases", "request", "approve"}),
    HEAD: frozenset({"read-cases", "manage-cases", "request", "approve", "approve-strict"}),
    AUDITOR: frozenset({"read-cases", "read-custody", "audit"}),
    TECHNICIAN: frozenset({"manage-devices", "read-custody"}),
    ADMINISTRATOR: frozenset({"manage-users", "read-custody"}),
}

_hasher = PasswordHasher()


class AccessError(ReceiverError):
    """Base of access errors."""


class AccessDenied(AccessError):
    """Not allowed: ``who`` may not ``what``, because ``reason``."""

    def __init__(self, who: str, what: str, reason: str) -> None:
        super().__init__(f"refused: {who} may not {what}: {reason}")
        self.who = who
        self.what = what
        self.reason = reason


@dataclass(frozen=True)
class User:
    name: str
    role: str
    active: bool

    def can(self, permission: str) -> bool:
        return self.active and permission in PERMISSIONS.get(self.role, frozenset())


@dataclass(frozen=True)
class Approval:
    id: int
    case: str
    kind: str
    requester: str
    party: str | None
    reason: str
    status: str
    decided_by: str | None
    decision_note: str | None
    created_utc: str
    decided_utc: str | None
    expires_utc: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _approval(row: sqlite3.Row) -> Approval:
    return Approval(
        row["id"],
        row["case_number"],
        row["kind"],
        row["requester"],
        row["party"],
        row["reason"],
        row["status"],
        row["decided_by"],
        row["decision_note"],
        row["created_utc"],
        row["decided_utc"],
        row["expires_utc"],
    )


def now_utc() -> str:
    return format_utc(datetime.now(UTC))


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidInputError("user", f"{name!r}: 1-32 of a-z 0-9 . _ -, starting with a letter")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidInputError("password", f"at least {MIN_PASSWORD} characters")
    return password


class Accounts:
    """User accounts in one database."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.sql = AccessSQL(conn)

    def get(self, name: str) -> User | None:
        row = self.sql.user(name)
        return User(row["name"], row["role"], bool(row["active"])) if row else None

    def require(self, name: str) -> User:
        user = self.get(name)
        if user is None:
            raise NotFoundError("user", name)
        return user

    def all(self) -> list[User]:
        return [User(r["name"], r["role"], bool(r["active"])) for r in self.sql.users()]

    def count(self) -> int:
        return self.sql.count_users()

    def add(self, name: str, role: str, password: str) -> User:
        check_name(name)
        if role not in ROLES:
            raise InvalidInputError("role", f"{role!r}; known: {', '.join(ROLES)}")
        if self.get(name) is not None:
            raise InvalidInputError("user", f"{name} already exists")
        self.sql.add_user(name, role, _hasher.hash(check_password(password)), now_utc())
        return self.require(name)

    def set_role(self, name: str, role: str) -> User:
        self.require(name)
        if role not in ROLES:
            raise InvalidInputError("role", f"{role!r}; known: {', '.join(ROLES)}")
        self.sql.update_user(name, now_utc(), role=role)
        return self.require(name)

    def set_password(self, name: str, password: str) -> None:
        self.require(name)
        self.sql.update_user(name, now_utc(), password_hash=_hasher.hash(check_password(password)))

    def set_active(self, name: str, active: bool) -> User:
        self.require(name)
        self.sql.update_user(name, now_utc(), active=int(active))
        return self.require(name)

    def authenticate(self, name: str, password: str) -> User:
        """The user, when the password is right and the account active; else AccessDenied
        (the same message for an unknown name and a wrong password)."""
        row = self.sql.user(name)
        refused = AccessDenied(name, "log in", "unknown user or wrong password")
        if row is None:
            # spend the same time as a real check so names cannot be probed by timing
            _verify(_DUMMY_HASH, password)
            raise refused
        if not _verify(row["password_hash"], password):
            raise refused
        if not row["active"]:
            raise AccessDenied(name, "log in", "the account is disabled")
        return User(row["name"], row["role"], True)


def _verify(hashed: str, password: str) -> bool:
    try:
        return bool(_hasher.verify(hashed, password))
    except (VerificationError, InvalidHashError):
        return False


_DUMMY_HASH = _hasher.hash("not a password of anyone")


class Approvals:
    """Approval requests and decisions for one database (policy in :func:`may_approve`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.sql = AccessSQL(conn)

    def request(
        self, case: str, kind: str, requester: str, reason: str, party: str | None = None
    ) -> Approval:
        if kind not in APPROVAL_KINDS:
            raise InvalidInputError("kind", f"{kind!r}; known: {', '.join(APPROVAL_KINDS)}")
        if not reason.strip():
            raise InvalidInputError("reason", "a reason is required")
        if kind == PARTY_VIEW and not (party and party.strip()):
            raise InvalidInputError("party", "a party's request names the party")
        return self.require(self.sql.add_approval(case, kind, requester, party, reason, now_utc()))

    def get(self, approval_id: int) -> Approval | None:
        row = self.sql.approval(approval_id)
        return _approval(row) if row else None

    def require(self, approval_id: int) -> Approval:
        a = self.get(approval_id)
        if a is None:
            raise NotFoundError("approval", str(approval_id))
        return a

    def list(self, case: str | None = None, status: str | None = None) -> list[Approval]:
        return [_approval(r) for r in self.sql.approvals(case, status)]

    def decide(self, approval: Approval, by: User, grant: bool, note: str) -> Approval:
        expires = format_utc(datetime.now(UTC) + GRANT_VALIDITY) if grant else None
        self.sql.decide(
            approval.id, "granted" if grant else "refused", by.name, note, now_utc(), expires
        )
        return self.require(approval.id)

    def valid_grant(self, case: str, requester: str, kinds: tuple[str, ...]) -> Approval | None:
        rows = self.sql.granted(case, requester, kinds, now_utc())
        return _approval(rows[-1]) if rows else None


def may_approve(user: User, approval: Approval, sensitivity: str) -> str | None:
    """None when ``user`` may decide ``approval`` on a case of ``sensitivity``, else why not."""
    if not user.can("approve"):
        return f"role {user.role} does not approve requests"
    if user.name == approval.requester:
        return "nobody approves their own request"
    if sensitivity in STRICT_LABELS and not user.can("approve-strict"):
        return f"the case is labelled {sensitivity}: only the unit head ({HEAD}) approves"
    if approval.status != "pending":
        return f"request {approval.id} is already {approval.status}"
    return None
