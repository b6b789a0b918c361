"""Typed facts the findings are computed from, read once by :mod:`receiver.store.compliance`.

Failure posture: plain frozen values, no I/O; the reader parses and validates, so the core never
meets a malformed row (a record body it cannot read becomes a verification problem instead).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime


@dataclass(frozen=True)
class Explanation:
    """A written explanation of a gap, entered at the receiver afterwards (Art. 13)."""

    author: str
    utc: datetime
    text: str


@dataclass(frozen=True)
class GapFact:
    device: str
    session: str
    seq: int
    cause: str
    start_utc: datetime | None
    end_utc: datetime | None
    spoken: bool
    explanation: Explanation | None = None


@dataclass(frozen=True)
class SessionFact:
    session: str
    device: str
    case: str | None
    officers: tuple[str, ...]
    stage: str | None
    start_utc: datetime
    end_utc: datetime
    closed: bool
    stored_utc: datetime
    """When the last of its records reached the receiver's store."""
    check_result: str | None
    preamble: bool
    markers: tuple[str, ...]
    gaps: tuple[GapFact, ...] = ()


@dataclass(frozen=True)
class Override:
    """A supervisor concluded a mandatory-AV case that has no recording."""

    supervisor: str
    reason: str
    utc: datetime


@dataclass(frozen=True)
class InspectionDocument:
    """Times written on the inspection record (entered by the clerk), for Art. 18."""

    start_utc: datetime
    end_utc: datetime
    entered_by: str


@dataclass(frozen=True)
class CaseFact:
    number: str
    enforcement_type: str
    av_level: str
    av_article: str
    unit: str | None
    major_inspection: bool
    created_utc: datetime
    concluded: date | None = None
    file_formed: date | None = None
    override: Override | None = None
    inspection_documents: tuple[InspectionDocument, ...] = ()


@dataclass(frozen=True)
class AssignmentFact:
    id: int
    device: str
    case: str
    officers: tuple[str, ...]
    stage: str
    created_utc: datetime
    return_date: date | None = None
    window_start_utc: datetime | None = None
    window_end_utc: datetime | None = None


@dataclass(frozen=True)
class DeviceFact:
    id: str
    revoked: bool
    last_seen_utc: datetime | None
    clock_offset_s: float | None
    clock_synced: bool | None
    """Whether the device's newest record says its clock was synchronised."""
    pending_segments: int | None
    oldest_pending_utc: datetime | None


@dataclass(frozen=True)
class ProblemFact:
    """A verification failure or a quarantined upload (Art. 23)."""

    kind: str  # "verification" | "quarantine"
    device: str
    session: str | None
    seq: int | None
    detail: str
    utc: datetime | None
    case: str | None = None
    """For a quarantined session: the case its (unstored) session-open names."""
    officers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Facts:
    sessions: tuple[SessionFact, ...] = ()
    cases: tuple[CaseFact, ...] = ()
    assignments: tuple[AssignmentFact, ...] = ()
    devices: tuple[DeviceFact, ...] = ()
    problems: tuple[ProblemFact, ...] = field(default_factory=tuple)
