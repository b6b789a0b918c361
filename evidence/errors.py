"""Exceptions of the evidence package. Every class carries the data a caller needs to report it."""

from __future__ import annotations

from pathlib import Path


class EvidenceError(Exception):
    """Base class of every error raised by :mod:`evidence`."""


class RecordFormatError(EvidenceError):
    """A record is not valid JSON or does not have the fields and types the format requires."""

    def __init__(self, reason: str, *, path: Path | None = None) -> None:
        self.reason = reason
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(f"{where}{reason}")


class InvalidTimeError(RecordFormatError):
    """A time that is not ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` or names an impossible date/time."""


class BodyError(RecordFormatError):
    """A record body that lacks a required member or has one of the wrong type or range."""


class UnsafePathError(EvidenceError):
    """A path inside an evidence tree that is not a regular file or directory inside the tree
    (a symbolic link, FIFO, device, ``..``, or a name with a separator)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class KeyFileError(EvidenceError):
    """A key file is missing, unreadable or does not hold the expected kind of key."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ChainError(EvidenceError):
    """The local chain cannot be extended (e.g. its newest record is unreadable)."""

    def __init__(self, device: str, reason: str) -> None:
        self.device = device
        self.reason = reason
        super().__init__(f"chain of device {device}: {reason}")
