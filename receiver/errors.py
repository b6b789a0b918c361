"""Exceptions of the receiver. Each carries the data needed to report it to a clerk.

Failure posture: commands turn these into one-line messages (exit 2); the service never lets
one escape from the handling of a single message (see :mod:`receiver.ingest`).
"""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path


class ReceiverError(Exception):
    """Base class of every error the receiver raises on purpose."""


class ReceiverConfigError(ReceiverError):
    def __init__(self, path: Path | None, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


class NotFoundError(ReceiverError):
    """A device, case or session named by the user does not exist."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"no {kind} {name!r}")
        self.kind = kind
        self.name = name


class ConflictError(ReceiverError):
    """The request contradicts what is stored (e.g. a case number already taken)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidInputError(ReceiverError):
    """A user-supplied value is not acceptable (bad enforcement type, bad key file...)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class StoreError(ReceiverError):
    """The evidence store cannot be written (disk full, permissions); nothing is receipted."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


SQLITE_FULL = 13


def disk_full(exc: BaseException) -> bool:
    """``exc`` (or an error it came from) says the data directory's filesystem is full."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(seen, sqlite3.Error) and (
            getattr(seen, "sqlite_errorcode", None) == SQLITE_FULL or "disk is full" in str(seen)
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
