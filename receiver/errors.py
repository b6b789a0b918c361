"""Exceptions of the receiver. Each carries the data needed to report it to a clerk.

Failure posture: commands turn these into one-line messages (exit 2); the service never lets
one escape from the handling of a single message (see :mod:`receiver.ingest`).
"""

from __future__ import annotations

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
