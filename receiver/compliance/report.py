"""The accountability report (Art. 25): the API the CLI and the web console call.

``build_report(conn, store, settings, options)`` reads the facts once
(:mod:`receiver.store.compliance`), evaluates them (:mod:`receiver.compliance.findings`) and
returns a :class:`Report`; :mod:`receiver.compliance.render` turns it into text or HTML, and
:meth:`Report.to_dict` is the JSON (times in UTC, deadlines also in local time).

Stable API for other parts (e.g. the web console)::

    from receiver.compliance.report import ReportSettings, build_report
    from receiver.compliance.findings import Options
    from receiver.compliance import render
    report = build_report(conn, evidence_store, ReportSettings.from_config(config), options)
    report.to_dict(); render.text(report); render.html(report)
    # or, in one call with the configured settings:
    report = report_for(config, evidence_store, conn, case="JY-1")

Failure posture: read-only; a malformed holiday file or unknown timezone raises
:class:`~receiver.compliance.errors.ComplianceInputError` before anything is read.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evidence.records import format_utc
from receiver.compliance.calendar import WorkCalendar
from receiver.compliance.deadlines import DEFAULT_TIMEZONE, zone
from receiver.compliance.facts import Facts
from receiver.compliance.findings import Evaluation, Finding, Options, StorageRow, evaluate
from receiver.store.compliance import ComplianceStore
from receiver.store.objects import EvidenceStore

REPORT_VERSION = 1


@dataclass(frozen=True)
class ReportSettings:
    """The administrator's settings (``[compliance]`` in the receiver config)."""

    timezone: str = DEFAULT_TIMEZONE
    holiday_file: Path | None = None
    rule_based_holidays: bool = True
    device_unseen_days: int = 7
    clock_offset_limit_s: float = 2.0
    inspection_tolerance_s: float = 300.0

    @classmethod
    def from_config(cls, config: Any) -> ReportSettings:
        c = getattr(config, "compliance", None)
        if c is None:
            return cls()
        return cls(
            timezone=c.timezone,
            holiday_file=c.holiday_file,
            rule_based_holidays=c.rule_based_holidays,
            device_unseen_days=c.device_unseen_days,
            clock_offset_limit_s=c.clock_offset_limit_s,
            inspection_tolerance_s=c.inspection_tolerance_s,
        )

    def calendar(self) -> WorkCalendar:
        zone(self.timezone)  # fail early on a bad zone
        return WorkCalendar.load(self.holiday_file, rule_based=self.rule_based_holidays)

    def options(self, now: datetime, **filters: Any) -> Options:
        return Options(
            now=now,
            tz=self.timezone,
            device_unseen_days=self.device_unseen_days,
            clock_offset_limit_s=self.clock_offset_limit_s,
            inspection_tolerance_s=self.inspection_tolerance_s,
            **filters,
        )


@dataclass
class Report:
    options: Options
    findings: list[Finding]
    storage: list[StorageRow]
    warnings: list[str]
    cases_in_scope: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings

    def by_officer(self) -> dict[str, Counter[str]]:
        out: dict[str, Counter[str]] = {}
        for f in self.findings:
            for o in f.officers or ("(no officer)",):
                out.setdefault(o, Counter())[f.kind.value] += 1
        return dict(sorted(out.items()))

    def by_unit(self) -> dict[str, Counter[str]]:
        out: dict[str, Counter[str]] = {}
        for f in self.findings:
            out.setdefault(f.unit or "(no unit)", Counter())[f.kind.value] += 1
        return dict(sorted(out.items()))

    def scope_dict(self) -> dict[str, Any]:
        o = self.options
        return {
            "now_utc": format_utc(o.now),
            "timezone": o.tz,
            "from": o.period_from.isoformat() if o.period_from else None,
            "to": o.period_to.isoformat() if o.period_to else None,
            "case": o.case,
            "officer": o.officer,
            "device": o.device,
            "unit": o.unit,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "report": "accountability",
            "version": REPORT_VERSION,
            "scope": self.scope_dict(),
            "clean": self.clean,
            "warnings": self.warnings,
            "counts": dict(Counter(f.kind.value for f in self.findings)),
            "by_officer": {k: dict(v) for k, v in self.by_officer().items()},
            "by_unit": {k: dict(v) for k, v in self.by_unit().items()},
            "findings": [f.to_dict() for f in self.findings],
            "storage": [r.to_dict() for r in self.storage],
            "cases_in_scope": self.cases_in_scope,
        }


def evaluate_facts(facts: Facts, calendar: WorkCalendar, options: Options) -> Report:
    """The I/O-free core behind :func:`build_report`."""
    ev: Evaluation = evaluate(facts, calendar, options)
    cases = sorted(
        {s.case for s in facts.sessions if s.case and (options.case in (None, s.case))}
        | {c.number for c in facts.cases if options.case in (None, c.number)}
    )
    return Report(options, ev.findings, ev.storage, ev.warnings, cases)


def build_report(
    conn: sqlite3.Connection,
    store: EvidenceStore | None,
    settings: ReportSettings,
    options: Options,
) -> Report:
    calendar = settings.calendar()
    facts = ComplianceStore(conn).facts(store)
    return evaluate_facts(facts, calendar, options)


def report_for(
    config: Any,
    store: EvidenceStore | None,
    conn: sqlite3.Connection,
    *,
    now: datetime | None = None,
    **filters: Any,
) -> Report:
    """The report with the configured settings; ``filters``: period_from, period_to (local
    dates), case, officer, device, unit."""
    settings = ReportSettings.from_config(config)
    options = settings.options(now or datetime.now(UTC), **filters)
    return build_report(conn, store, settings, options)
