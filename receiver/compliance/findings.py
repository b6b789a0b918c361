"""The accountability findings (Art. 25), computed from typed facts with no I/O.

Each :class:`Finding` names its kind, article, case, officers, device, session, time and unit,
so a supervisor can act on it and the report can group it. Every failure is reported once: a
mandatory case with no recording at all is one ``no-recording`` finding, not also one per missed
window; a stage's missing markers are one finding per case and stage.

Failure posture: pure; facts it cannot judge (an open session with no end, a gap with no times)
are judged on what is there and never raise.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any

from evidence.markers import cause_explains
from evidence.records import format_utc
from receiver.compliance.calendar import WorkCalendar
from receiver.compliance.deadlines import (
    DEFAULT_TIMEZONE,
    Deadline,
    case_file_deadline,
    format_local,
    storage_deadline,
    zone,
)
from receiver.compliance.facts import (
    AssignmentFact,
    CaseFact,
    DeviceFact,
    Facts,
    SessionFact,
)
from receiver.compliance.rules import AV_MANDATORY, STAGE_RULES


class Kind(StrEnum):
    STORED_LATE = "stored-late"
    STILL_ON_DEVICE = "still-on-device"
    NO_RECORDING = "no-recording"
    MISSED_WINDOW = "missed-window"
    NO_PASSING_CHECK = "no-passing-check"
    NO_PREAMBLE = "no-preamble"
    UNEXPLAINED_GAP = "unexplained-gap"
    MISSING_MARKERS = "missing-markers"
    INSPECTION_TIMES = "inspection-times"
    CASE_FILE_OVERDUE = "case-file-overdue"
    VERIFICATION_FAILURE = "verification-failure"
    QUARANTINED = "quarantined"
    DEVICE_UNSEEN = "device-unseen"
    CLOCK_UNSYNCED = "clock-unsynced"
    CLOCK_OFFSET = "clock-offset"


TITLES: dict[Kind, str] = {
    Kind.STORED_LATE: "recording stored late",
    Kind.STILL_ON_DEVICE: "recording still on a device past its deadline",
    Kind.NO_RECORDING: "mandatory-AV case with no recording",
    Kind.MISSED_WINDOW: "scheduled window passed without a recording",
    Kind.NO_PASSING_CHECK: "session without a passing pre-capture check",
    Kind.NO_PREAMBLE: "session without a spoken preamble",
    Kind.UNEXPLAINED_GAP: "gap with neither a cause nor an explanation",
    Kind.MISSING_MARKERS: "stage without its required markers",
    Kind.INSPECTION_TIMES: "inspection document times outside the recording",
    Kind.CASE_FILE_OVERDUE: "case file overdue",
    Kind.VERIFICATION_FAILURE: "verification failure",
    Kind.QUARANTINED: "quarantined upload",
    Kind.DEVICE_UNSEEN: "device not seen",
    Kind.CLOCK_UNSYNCED: "device clock not synchronised",
    Kind.CLOCK_OFFSET: "device clock offset over the limit",
}


@dataclass(frozen=True)
class Options:
    """What the report covers and its thresholds. Dates are local dates, inclusive."""

    now: datetime
    tz: str = DEFAULT_TIMEZONE
    period_from: date | None = None
    period_to: date | None = None
    case: str | None = None
    officer: str | None = None
    device: str | None = None
    unit: str | None = None
    device_unseen_days: int = 7
    clock_offset_limit_s: float = 2.0
    inspection_tolerance_s: float = 300.0

    def period_utc(self) -> tuple[datetime | None, datetime | None]:
        z = zone(self.tz)
        lo = (
            datetime.combine(self.period_from, time(0), z).astimezone(UTC)
            if self.period_from
            else None
        )
        hi = (
            datetime.combine(self.period_to + timedelta(days=1), time(0), z).astimezone(UTC)
            if self.period_to
            else None
        )
        return lo, hi


@dataclass(frozen=True)
class Finding:
    kind: Kind
    article: str
    detail: str
    utc: datetime | None
    case: str | None = None
    officers: tuple[str, ...] = ()
    device: str | None = None
    session: str | None = None
    unit: str | None = None
    deadline: Deadline | None = None
    warnings: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        return TITLES[self.kind]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "title": self.title,
            "article": self.article,
            "case": self.case,
            "officers": list(self.officers),
            "device": self.device,
            "session": self.session,
            "unit": self.unit,
            "utc": format_utc(self.utc) if self.utc else None,
            "detail": self.detail,
            "deadline": self.deadline.to_dict() if self.deadline else None,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class StorageRow:
    """One recording's storage delay against its Art. 14 allowance (the report's chart)."""

    session: str
    device: str
    case: str | None
    ended_utc: datetime
    stored_utc: datetime
    deadline: Deadline

    @property
    def delay_h(self) -> float:
        return (self.stored_utc - self.ended_utc).total_seconds() / 3600

    @property
    def allowed_h(self) -> float:
        return (self.deadline.due_utc - self.ended_utc).total_seconds() / 3600

    @property
    def late(self) -> bool:
        return self.stored_utc >= self.deadline.due_utc

    def to_dict(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "device": self.device,
            "case": self.case,
            "ended_utc": format_utc(self.ended_utc),
            "stored_utc": format_utc(self.stored_utc),
            "delay_h": round(self.delay_h, 2),
            "allowed_h": round(self.allowed_h, 2),
            "late": self.late,
            "deadline": self.deadline.to_dict(),
        }


@dataclass
class Evaluation:
    findings: list[Finding] = field(default_factory=list)
    storage: list[StorageRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class _Scope:
    """Which facts the options select."""

    def __init__(self, facts: Facts, opts: Options) -> None:
        self.opts = opts
        self.lo, self.hi = opts.period_utc()
        self.cases = {c.number: c for c in facts.cases}
        self.sessions = [s for s in facts.sessions if self.session_in(s)]

    def in_period(self, at: datetime | None) -> bool:
        if at is None:
            return True
        return (self.lo is None or at >= self.lo) and (self.hi is None or at < self.hi)

    def unit_of(self, case: str | None) -> str | None:
        c = self.cases.get(case) if case else None
        return c.unit if c else None

    def case_ok(self, case: str | None, officers: Iterable[str], device: str | None) -> bool:
        o = self.opts
        if o.case is not None and case != o.case:
            return False
        if o.officer is not None and not any(o.officer in x for x in officers):
            return False
        if o.device is not None and device != o.device:
            return False
        return o.unit is None or self.unit_of(case) == o.unit

    def group_ok(self, case: str | None, officers: Iterable[str], devices: Iterable[str]) -> bool:
        """Like :meth:`case_ok` for something several officers and devices share."""
        o = self.opts
        if o.case is not None and case != o.case:
            return False
        if o.officer is not None and not any(o.officer in x for x in officers):
            return False
        if o.device is not None and o.device not in devices:
            return False
        return o.unit is None or self.unit_of(case) == o.unit

    def session_in(self, s: SessionFact) -> bool:
        return self.in_period(s.end_utc) and self.case_ok(s.case, s.officers, s.device)


def evaluate(facts: Facts, calendar: WorkCalendar, opts: Options) -> Evaluation:
    scope = _Scope(facts, opts)
    ev = Evaluation()
    assignments = list(facts.assignments)
    for s in scope.sessions:
        _session_findings(s, scope, calendar, assignments, ev)
    _case_findings(facts, scope, calendar, ev)
    _assignment_findings(facts, scope, ev)
    _problem_findings(facts, scope, ev)
    _device_findings(facts, scope, calendar, ev)
    warnings = {w for f in ev.findings for w in f.warnings}
    warnings |= {w for r in ev.storage for w in r.deadline.warnings}
    ev.warnings = sorted(warnings)
    ev.findings.sort(key=lambda f: (f.utc or opts.now, f.kind.value, f.case or "", f.device or ""))
    return ev


def return_date_for(s: SessionFact, assignments: list[AssignmentFact]) -> date | None:
    """The return date of the assignment this session was recorded under, if it has one."""
    candidates = [
        a
        for a in assignments
        if a.device == s.device and a.case == s.case and a.created_utc <= s.start_utc
    ]
    return max(candidates, key=lambda a: a.created_utc).return_date if candidates else None


def _session_findings(
    s: SessionFact,
    scope: _Scope,
    calendar: WorkCalendar,
    assignments: list[AssignmentFact],
    ev: Evaluation,
) -> None:
    opts = scope.opts
    tz = opts.tz
    base = {
        "case": s.case,
        "officers": s.officers,
        "device": s.device,
        "session": s.session,
        "unit": scope.unit_of(s.case),
    }
    deadline = storage_deadline(
        calendar, opts.tz, s.end_utc, return_date=return_date_for(s, assignments)
    )
    row = StorageRow(s.session, s.device, s.case, s.end_utc, s.stored_utc, deadline)
    ev.storage.append(row)
    if row.late:
        ev.findings.append(
            Finding(
                Kind.STORED_LATE,
                "Art. 14",
                f"ended {format_local(s.end_utc, tz)}, stored {format_local(s.stored_utc, tz)}, "
                f"due {deadline.local()}",
                s.end_utc,
                deadline=deadline,
                warnings=deadline.warnings,
                **base,  # type: ignore[arg-type]
            )
        )
    if s.check_result not in ("pass", "warn"):
        ev.findings.append(
            Finding(
                Kind.NO_PASSING_CHECK,
                "Art. 11",
                f"pre-capture check result: {s.check_result or 'none recorded'}",
                s.start_utc,
                **base,  # type: ignore[arg-type]
            )
        )
    if not s.preamble:
        ev.findings.append(
            Finding(Kind.NO_PREAMBLE, "Art. 12", "no spoken preamble recorded", s.start_utc, **base)  # type: ignore[arg-type]
        )
    for g in s.gaps:
        if cause_explains(g.cause) or g.spoken or g.explanation is not None:
            continue
        ev.findings.append(
            Finding(
                Kind.UNEXPLAINED_GAP,
                "Art. 13",
                f"gap seq {g.seq} ({g.cause or 'no cause'}) "
                f"{format_local(g.start_utc, tz)} .. {format_local(g.end_utc, tz)}: "
                "no spoken or written explanation",
                g.start_utc or s.start_utc,
                **base,  # type: ignore[arg-type]
            )
        )


def _case_sessions(scope: _Scope, number: str) -> list[SessionFact]:
    return [s for s in scope.sessions if s.case == number]


def _case_findings(facts: Facts, scope: _Scope, calendar: WorkCalendar, ev: Evaluation) -> None:
    opts = scope.opts
    missed = _missed_windows(facts, scope)
    for c in facts.cases:
        sessions = _case_sessions(scope, c.number)
        case_assign = [a for a in facts.assignments if a.case == c.number]
        officers = tuple(sorted({o for a in case_assign for o in a.officers}))
        devices = sorted({a.device for a in case_assign})
        device = devices[0] if len(devices) == 1 else (", ".join(devices) or None)
        if not scope.group_ok(c.number, officers, devices):
            continue
        base = {"case": c.number, "officers": officers, "device": device, "unit": c.unit}
        all_sessions = [s for s in facts.sessions if s.case == c.number]
        if (
            c.av_level == AV_MANDATORY
            and not all_sessions
            and not any(a.case == c.number for a in missed)
            and scope.in_period(c.created_utc)
        ):
            note = (
                f"; concluded on override by {c.override.supervisor}: {c.override.reason}"
                if c.override
                else ""
            )
            ev.findings.append(
                Finding(
                    Kind.NO_RECORDING,
                    c.av_article,
                    f"{c.enforcement_type} requires AV recording; none filed{note}",
                    c.created_utc,
                    **base,  # type: ignore[arg-type]
                )
            )
        _marker_findings(c, sessions, ev, scope)
        _inspection_findings(c, sessions, ev, opts)
        if c.concluded is not None:
            _case_file_finding(c, calendar, ev, scope, base)


def _marker_findings(
    c: CaseFact, sessions: list[SessionFact], ev: Evaluation, scope: _Scope
) -> None:
    by_stage: dict[str, list[SessionFact]] = {}
    for s in sessions:
        if s.stage is not None:
            by_stage.setdefault(s.stage, []).append(s)
    for stage, group in sorted(by_stage.items()):
        rule = STAGE_RULES.get(stage)
        if rule is None:
            continue
        have = {m for s in group for m in s.markers}
        missing = [m.value for m in rule.required if m.value not in have]
        if not missing:
            continue
        first = min(group, key=lambda s: s.start_utc)
        ev.findings.append(
            Finding(
                Kind.MISSING_MARKERS,
                rule.article,
                f"stage {stage}: missing {', '.join(missing)} (in {len(group)} session(s))",
                first.start_utc,
                case=c.number,
                officers=tuple(sorted({o for s in group for o in s.officers})),
                device=", ".join(sorted({s.device for s in group})),
                session=first.session,
                unit=c.unit,
            )
        )


def _inspection_findings(
    c: CaseFact, sessions: list[SessionFact], ev: Evaluation, opts: Options
) -> None:
    if not c.inspection_documents:
        return
    recorded = [s for s in sessions if s.stage == "inspection"] or sessions
    tz = opts.tz
    tol = timedelta(seconds=opts.inspection_tolerance_s)
    for doc in c.inspection_documents:
        if not recorded:
            detail = "inspection document times entered but no recording filed"
            rec_start = rec_end = None
        else:
            rec_start = min(s.start_utc for s in recorded)
            rec_end = max(s.end_utc for s in recorded)
            if rec_start - tol <= doc.start_utc and doc.end_utc <= rec_end + tol:
                continue
            detail = (
                f"document {format_local(doc.start_utc, tz)} .. {format_local(doc.end_utc, tz)} vs "
                f"recording {format_local(rec_start, tz)} .. {format_local(rec_end, tz)} "
                f"(tolerance {opts.inspection_tolerance_s:.0f} s; entered by {doc.entered_by})"
            )
        ev.findings.append(
            Finding(
                Kind.INSPECTION_TIMES,
                "Art. 18",
                detail,
                doc.start_utc,
                case=c.number,
                officers=tuple(sorted({o for s in recorded for o in s.officers})),
                device=", ".join(sorted({s.device for s in recorded})) or None,
                session=recorded[0].session if recorded else None,
                unit=c.unit,
            )
        )


def _case_file_finding(
    c: CaseFact, calendar: WorkCalendar, ev: Evaluation, scope: _Scope, base: dict[str, Any]
) -> None:
    assert c.concluded is not None
    deadline = case_file_deadline(calendar, scope.opts.tz, c.concluded)
    if c.file_formed is not None:
        if c.file_formed <= deadline.due_date:
            return
        detail = (
            f"concluded {c.concluded}, case file formed {c.file_formed}, due {deadline.local()}"
        )
    elif deadline.overdue(scope.opts.now):
        detail = f"concluded {c.concluded}, no case file yet, due {deadline.local()}"
    else:
        return
    if not scope.in_period(deadline.due_utc):
        return
    ev.findings.append(
        Finding(
            Kind.CASE_FILE_OVERDUE,
            "Art. 21",
            detail,
            deadline.due_utc,
            deadline=deadline,
            warnings=deadline.warnings,
            **base,
        )
    )


def _missed_windows(facts: Facts, scope: _Scope) -> list[AssignmentFact]:
    out = []
    for a in facts.assignments:
        if a.window_start_utc is None or a.window_end_utc is None:
            continue
        if a.window_end_utc > scope.opts.now:
            continue  # still open (the device reminds the officer)
        recorded = any(
            s.device == a.device
            and s.start_utc < a.window_end_utc
            and s.end_utc > a.window_start_utc
            for s in facts.sessions
        )
        if not recorded:
            out.append(a)
    return out


def _assignment_findings(facts: Facts, scope: _Scope, ev: Evaluation) -> None:
    cases = {c.number: c for c in facts.cases}
    tz = scope.opts.tz
    for a in _missed_windows(facts, scope):
        if not scope.in_period(a.window_start_utc) or not scope.case_ok(
            a.case, a.officers, a.device
        ):
            continue
        c = cases.get(a.case)
        article = c.av_article if c else "Art. 12"
        assert a.window_start_utc is not None
        assert a.window_end_utc is not None
        ev.findings.append(
            Finding(
                Kind.MISSED_WINDOW,
                article,
                f"assignment {a.id} ({a.stage}) scheduled "
                f"{format_local(a.window_start_utc, tz)} .. "
                f"{format_local(a.window_end_utc, tz)}: no recording by {a.device} in that window",
                a.window_start_utc,
                case=a.case,
                officers=a.officers,
                device=a.device,
                unit=c.unit if c else None,
            )
        )


def _problem_findings(facts: Facts, scope: _Scope, ev: Evaluation) -> None:
    sessions = {s.session: s for s in facts.sessions}
    for p in facts.problems:
        s = sessions.get(p.session) if p.session else None
        case, officers = (s.case, s.officers) if s else (p.case, p.officers)
        if not scope.in_period(p.utc) or not scope.case_ok(case, officers, p.device):
            continue
        kind = Kind.QUARANTINED if p.kind == "quarantine" else Kind.VERIFICATION_FAILURE
        ev.findings.append(
            Finding(
                kind,
                "Art. 23",
                (f"seq {p.seq}: " if p.seq is not None else "") + p.detail,
                p.utc,
                case=case,
                officers=officers,
                device=p.device,
                session=p.session,
                unit=scope.unit_of(case),
            )
        )


def _device_findings(facts: Facts, scope: _Scope, calendar: WorkCalendar, ev: Evaluation) -> None:
    opts = scope.opts
    users: dict[str, set[str]] = {}
    for a in facts.assignments:
        users.setdefault(a.device, set()).update(a.officers)
    for d in facts.devices:
        if d.revoked:
            continue
        officers = tuple(sorted(users.get(d.id, set())))
        if opts.case is not None or opts.unit is not None:
            continue  # device state is not a case's or a unit's
        if not scope.group_ok(None, officers, [d.id]):
            continue
        for f in _device_state(d, opts, calendar, officers):
            ev.findings.append(f)


def _device_state(
    d: DeviceFact, opts: Options, calendar: WorkCalendar, officers: tuple[str, ...]
) -> Iterator[Finding]:
    tz = opts.tz
    unseen = timedelta(days=opts.device_unseen_days)
    if d.last_seen_utc is None or opts.now - d.last_seen_utc > unseen:
        seen = format_local(d.last_seen_utc, tz) if d.last_seen_utc else "never"
        yield Finding(
            Kind.DEVICE_UNSEEN,
            "Art. 25",
            f"last seen {seen} (limit {opts.device_unseen_days} days): records may be at risk",
            d.last_seen_utc,
            officers=officers,
            device=d.id,
        )
    if d.oldest_pending_utc is not None and d.pending_segments:
        deadline = storage_deadline(calendar, opts.tz, d.oldest_pending_utc)
        if deadline.overdue(opts.now):
            yield Finding(
                Kind.STILL_ON_DEVICE,
                "Art. 14",
                f"{d.pending_segments} segment(s) not yet uploaded, oldest from "
                f"{format_local(d.oldest_pending_utc, tz)}, due {deadline.local()}",
                d.oldest_pending_utc,
                officers=officers,
                device=d.id,
                deadline=deadline,
                warnings=deadline.warnings,
            )
    if d.clock_synced is False:
        yield Finding(
            Kind.CLOCK_UNSYNCED,
            "Art. 11",
            "the device's newest record says its clock was not synchronised",
            d.last_seen_utc,
            officers=officers,
            device=d.id,
        )
    if d.clock_offset_s is not None and abs(d.clock_offset_s) > opts.clock_offset_limit_s:
        yield Finding(
            Kind.CLOCK_OFFSET,
            "Art. 11",
            f"clock offset {d.clock_offset_s:+.1f} s at the last docking "
            f"(limit {opts.clock_offset_limit_s:g} s)",
            d.last_seen_utc,
            officers=officers,
            device=d.id,
        )
