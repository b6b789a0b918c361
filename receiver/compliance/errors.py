"""Errors of the compliance package; each carries what a clerk or administrator must fix.

Failure posture: all derive from :class:`receiver.errors.ReceiverError`, which the CLI prints as
one line (exit 2) and the web console shows as a message; none is raised half-way through a write.
"""

from __future__ import annotations

from pathlib import Path

from receiver.errors import ReceiverError


class ComplianceInputError(ReceiverError):
    """Bad input to a compliance command or file."""


class HolidayFileError(ComplianceInputError):
    def __init__(self, path: Path, line: int | None, reason: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"holiday file {where}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


class DateRangeError(ComplianceInputError):
    """A date the calendar cannot count from (outside the supported years)."""
