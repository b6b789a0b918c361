"""Working-day deadlines: Art. 14 (store a recording within 2 working days) and Art. 21 (form
the case file within 20 working days of the matter's conclusion).

Counting convention (Chinese administrative law, e.g. 行政处罚法 art. 85: 期间开始的日不计算在内):
the day of the event, in local time, is not counted; the period counts the following working
days; the deadline ends at 24:00 local time of the last counted working day (held here as 00:00
of the next day, exclusive). A recording that ends at 23:59 on a Friday before a normal weekend
is due by 24:00 the following Tuesday. With a return date (remote or continuous work, Art. 14),
the count starts from the later of the recording's end date and the return date.

Failure posture: pure functions; a deadline computed through a provisional or weekends-only year
carries the calendar's warning in ``warnings`` so every view can show it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from evidence.records import format_utc
from receiver.compliance.calendar import Basis, WorkCalendar
from receiver.compliance.errors import ComplianceInputError

STORAGE_WORKING_DAYS = 2
CASE_FILE_WORKING_DAYS = 20
DEFAULT_TIMEZONE = "Asia/Shanghai"


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ComplianceInputError(f"timezone {name!r} is not a known IANA zone") from exc


@dataclass(frozen=True)
class Deadline:
    article: str
    working_days: int
    start_date: date
    """The local date counting starts after (not itself counted)."""
    due_date: date
    """The last local day; the deadline is its 24:00."""
    due_utc: datetime
    tz: str
    basis: Basis
    """The weakest basis among the years counted through."""
    warnings: tuple[str, ...]

    @property
    def provisional(self) -> bool:
        return not self.basis.trusted

    def local(self) -> str:
        """The deadline as a clerk reads it: ``2026-10-09 24:00 CST``, flagged when unsure."""
        tzname = datetime.combine(self.due_date, time(12), ZoneInfo(self.tz)).strftime("%Z")
        flag = f" ({self.basis.value})" if self.provisional else ""
        return f"{self.due_date.isoformat()} 24:00 {tzname}{flag}"

    def overdue(self, at: datetime) -> bool:
        return at >= self.due_utc

    def to_dict(self) -> dict[str, Any]:
        return {
            "article": self.article,
            "working_days": self.working_days,
            "start_date": self.start_date.isoformat(),
            "due_date": self.due_date.isoformat(),
            "due_utc": format_utc(self.due_utc),
            "due_local": self.local(),
            "timezone": self.tz,
            "basis": self.basis.value,
            "warnings": list(self.warnings),
        }


_ORDER = [Basis.FALLBACK, Basis.PROVISIONAL, Basis.OFFICIAL, Basis.ADMIN]


def _deadline(calendar: WorkCalendar, tz: str, article: str, start: date, n: int) -> Deadline:
    due, schedules = calendar.add_working_days(start, n)
    end = datetime.combine(due + timedelta(days=1), time(0), zone(tz)).astimezone(UTC)
    basis = min((s.basis for s in schedules), key=_ORDER.index)
    return Deadline(article, n, start, due, end, tz, basis, tuple(calendar.warnings(schedules)))


def local_date(at: datetime, tz: str) -> date:
    if at.tzinfo is None:
        raise ValueError("naive datetime")
    return at.astimezone(zone(tz)).date()


def storage_deadline(
    calendar: WorkCalendar, tz: str, ended_utc: datetime, *, return_date: date | None = None
) -> Deadline:
    """Art. 14: within 2 working days of the recording's end (or of the officer's return)."""
    start = local_date(ended_utc, tz)
    if return_date is not None and return_date > start:
        start = return_date
    return _deadline(calendar, tz, "Art. 14", start, STORAGE_WORKING_DAYS)


def case_file_deadline(calendar: WorkCalendar, tz: str, concluded: date) -> Deadline:
    """Art. 21: the case file within 20 working days of the case's conclusion."""
    return _deadline(calendar, tz, "Art. 21", concluded, CASE_FILE_WORKING_DAYS)


def format_local(at: datetime | None, tz: str) -> str:
    """A UTC time as local wall-clock text, e.g. ``2026-10-01 09:30:00 CST``."""
    if at is None:
        return "-"
    return at.astimezone(zone(tz)).strftime("%Y-%m-%d %H:%M:%S %Z")
