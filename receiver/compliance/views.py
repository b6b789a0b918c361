"""Deadline columns for the clerk's listings (sessions, cases, devices).

Each function takes the rows a :mod:`receiver.reports` view returned and adds keys — never
changes or removes one — so JSON consumers keep working: ``*_local`` keys are local wall-clock
text for the terminal, the ``*_utc`` deadline keys and ``deadline`` objects keep UTC.
Failure posture: read-only; a row whose times cannot be read gets ``-`` rather than an error.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from evidence.errors import RecordFormatError
from evidence.records import parse_utc
from receiver.compliance.deadlines import case_file_deadline, format_local, storage_deadline
from receiver.compliance.findings import return_date_for
from receiver.compliance.report import ReportSettings
from receiver.store.compliance import ComplianceStore


def _utc(text: Any) -> datetime | None:
    try:
        return parse_utc(text) if isinstance(text, str) else None
    except RecordFormatError:
        return None


def annotate_sessions(
    rows: list[dict[str, Any]], conn: sqlite3.Connection, settings: ReportSettings
) -> list[dict[str, Any]]:
    """Adds ``start_local``, ``store_by`` (Art. 14 deadline, local), ``stored_local``,
    ``on_time`` and ``deadline`` (JSON, UTC)."""
    calendar, tz = settings.calendar(), settings.timezone
    facts = ComplianceStore(conn).facts(None)
    sessions = {(s.session, s.device): s for s in facts.sessions}
    assignments = list(facts.assignments)
    for row in rows:
        fact = sessions.get((str(row.get("session")), str(row.get("device"))))
        row["start_local"] = format_local(_utc(row.get("start")), tz)
        if fact is None:
            row.update(store_by="-", stored_local="-", on_time=None, deadline=None)
            continue
        d = storage_deadline(
            calendar, tz, fact.end_utc, return_date=return_date_for(fact, assignments)
        )
        row["store_by"] = d.local()
        row["stored_local"] = format_local(fact.stored_utc, tz)
        row["on_time"] = fact.stored_utc < d.due_utc
        row["deadline"] = d.to_dict()
    return rows


def annotate_cases(
    rows: list[dict[str, Any]], conn: sqlite3.Connection, settings: ReportSettings
) -> list[dict[str, Any]]:
    """Adds ``unit``, ``major_inspection``, ``concluded``, ``case_file_due`` (local) and
    ``case_file_deadline`` (JSON, UTC); ``av_level`` follows the current rules."""
    calendar, tz = settings.calendar(), settings.timezone
    cases = {c.number: c for c in ComplianceStore(conn).facts(None).cases}
    for row in rows:
        c = cases.get(row.get("number", ""))
        if c is None:
            continue
        row["av_level"] = c.av_level
        row["unit"] = c.unit
        row["major_inspection"] = c.major_inspection
        row["concluded"] = c.concluded.isoformat() if c.concluded else None
        row["file_formed"] = c.file_formed.isoformat() if c.file_formed else None
        if c.concluded is not None:
            d = case_file_deadline(calendar, tz, c.concluded)
            row["case_file_due"] = d.local()
            row["case_file_deadline"] = d.to_dict()
        else:
            row["case_file_due"] = "-"
            row["case_file_deadline"] = None
    return rows


def annotate_devices(rows: list[dict[str, Any]], settings: ReportSettings) -> list[dict[str, Any]]:
    """Adds ``last_seen_local`` and ``upload_by``: the Art. 14 deadline of the oldest segment
    still on the device (local), with ``upload_deadline`` (JSON, UTC)."""
    calendar, tz = settings.calendar(), settings.timezone
    for row in rows:
        row["last_seen_local"] = format_local(_utc(row.get("last_seen")), tz)
        oldest = _utc(row.get("oldest_pending"))
        if oldest is not None and row.get("pending_segments"):
            d = storage_deadline(calendar, tz, oldest)
            row["upload_by"] = d.local()
            row["upload_deadline"] = d.to_dict()
        else:
            row["upload_by"] = "-"
            row["upload_deadline"] = None
    return rows
