"""Chinese working days: public holidays and make-up working days (调休), year by year.

Sources, in order of precedence for a given year:

1. the administrator's holiday file (TOML, ``[compliance] holiday_file``): a year it declares is
   taken from it entirely — it is how a newly published State Council schedule gets in before
   the libraries ship it, or how a library error is corrected;
2. ``chinese_calendar`` (official schedules; raises for years it has no data for);
3. the ``holidays`` package: official for years whose schedule it carries
   (``ChinaStaticHolidays.special_public_holidays``), otherwise *computed by rule* from statutory
   dates, without the make-up working days — such a year is **provisional** and says so;
4. weekends only, for a year known to nobody — **fallback**, and says so.

Failure posture: :func:`load_holiday_file` raises :class:`HolidayFileError` naming the file and
line for anything malformed (read and mapped by the project's one loader,
:mod:`evidence.tomlconfig`; nothing is half-loaded); looking up a day never raises for a year in
:data:`MIN_YEAR`..:data:`MAX_YEAR` and raises :class:`DateRangeError` outside it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path

from evidence import tomlconfig
from receiver.compliance.errors import DateRangeError, HolidayFileError

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 1 << 20
"""A holiday file is a few hundred lines; anything bigger is a mistake, refused unread."""
MIN_YEAR = 2000
MAX_YEAR = 2100
_DATE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:\.\.(\d{4}-\d{2}-\d{2}))?$")


class Basis(StrEnum):
    """How trustworthy a year's schedule is."""

    ADMIN = "admin"
    """From the administrator's holiday file."""
    OFFICIAL = "official"
    """A published State Council schedule shipped in a library."""
    PROVISIONAL = "provisional"
    """Computed by rule by the ``holidays`` package; the official schedule may differ."""
    FALLBACK = "weekends-only"
    """Known to nobody: counted on weekends only."""

    @property
    def trusted(self) -> bool:
        return self in (Basis.ADMIN, Basis.OFFICIAL)


@dataclass(frozen=True)
class YearSchedule:
    year: int
    basis: Basis
    source: str
    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()
    """Make-up working days (weekend days that are worked)."""

    def is_working_day(self, day: date) -> bool:
        if day in self.workdays:
            return True
        if day in self.holidays:
            return False
        return day.weekday() < 5

    def warning(self) -> str | None:
        if self.basis is Basis.PROVISIONAL:
            return (
                f"{self.year}: provisional calendar ({self.source}); the official schedule is "
                "not published to this receiver — add it to the holiday file"
            )
        if self.basis is Basis.FALLBACK:
            return (
                f"{self.year}: no holiday schedule known — counted on weekends only; add the "
                "year to the holiday file"
            )
        return None


# -- the administrator's holiday file ------------------------------------------------------------


def _line_of(text: str, needle: str) -> int | None:
    for number, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return number
    return None


@dataclass
class _YearTable:
    """One ``[years.YYYY]`` table as written (checked further by :func:`_year_section`)."""

    source: str = ""
    holidays: list[str] = field(default_factory=list)
    workdays: list[str] = field(default_factory=list)


@dataclass
class _HolidayFileTables:
    years: dict[str, _YearTable] = field(default_factory=dict)


def _expand(items: list[str], year: int, key: str, path: Path, text: str) -> list[date]:
    def fail(reason: str, needle: str) -> HolidayFileError:
        return HolidayFileError(path, _line_of(text, needle) or _line_of(text, key), reason)

    out: list[date] = []
    for item in items:
        m = _DATE_RE.match(item)
        if not m:
            raise fail(
                f"years.{year}.{key}: {item!r} is not YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD", item
            )
        try:
            first = date.fromisoformat(m.group(1))
            last = date.fromisoformat(m.group(2)) if m.group(2) else first
        except ValueError as exc:
            raise fail(f"years.{year}.{key}: {item!r}: {exc}", item) from None
        if last < first:
            raise fail(f"years.{year}.{key}: range {item!r} ends before it starts", item)
        if first.year != year or last.year != year:
            raise fail(f"years.{year}.{key}: {item!r} is not in {year}", item)
        out += [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return out


def load_holiday_file(path: Path) -> dict[int, YearSchedule]:
    """Parse the administrator's holiday file::

    [years.2027]
    source = "国务院办公厅通知 2026-11"      # required: where the schedule comes from
    holidays = ["2027-01-01", "2027-02-06..2027-02-12"]
    workdays = ["2027-02-14"]                # make-up working days, may be empty
    """
    try:
        text = tomlconfig.read_text(Path(path), max_bytes=MAX_FILE_BYTES)
    except tomlconfig.ConfigFileError as exc:
        raise HolidayFileError(path, None, exc.detail) from None
    try:
        tables = tomlconfig.from_table(
            _HolidayFileTables, tomlconfig.parse(text, str(path)), source=str(path)
        )
    except tomlconfig.ConfigFileError as exc:
        raise HolidayFileError(path, _error_line(exc, text), _reason(exc)) from None
    out: dict[int, YearSchedule] = {}
    for name, section in tables.years.items():
        out.update([_year_section(name, section, path, text)])
    return out


def _reason(exc: tomlconfig.ConfigFileError) -> str:
    return f"{exc.key}: {exc.detail}" if exc.key else exc.detail


def _error_line(exc: tomlconfig.ConfigFileError, text: str) -> int:
    """The line a loader error points at: TOML's own, else the first naming the refused key."""
    if not exc.key:
        m = re.search(r"line (\d+)", exc.detail)
        # "at end of document": the error is on the last line
        return int(m.group(1)) if m else max(1, len(text.splitlines()))
    parts = exc.key.split(".")
    needle = re.sub(r"\[\d+\]$", "", parts[-1])
    return _line_of(text, needle) or _line_of(text, ".".join(parts[:2])) or 1


def _year_section(
    name: str, section: _YearTable, path: Path, text: str
) -> tuple[int, YearSchedule]:
    header = f"years.{name}"
    line = _line_of(text, header)
    if not re.fullmatch(r"\d{4}", name) or not MIN_YEAR <= int(name) <= MAX_YEAR:
        raise HolidayFileError(path, line, f"[{header}]: not a year in {MIN_YEAR}..{MAX_YEAR}")
    year = int(name)
    source = section.source
    if not source.strip():
        raise HolidayFileError(
            path, line, f"{header}: source (where the schedule is from) is required"
        )
    hols = _expand(section.holidays, year, "holidays", path, text)
    works = _expand(section.workdays, year, "workdays", path, text)
    both = sorted(set(hols) & set(works))
    if both:
        raise HolidayFileError(
            path,
            _line_of(text, both[0].isoformat()) or line,
            f"{header}: {both[0]} is both a holiday and a workday",
        )
    return year, YearSchedule(
        year, Basis.ADMIN, f"holiday file: {source.strip()}", frozenset(hols), frozenset(works)
    )


# -- library sources -------------------------------------------------------------------------


def _from_chinese_calendar(year: int) -> YearSchedule | None:
    try:
        import chinese_calendar
    except ImportError:
        return None
    days = [date(year, 1, 1) + timedelta(days=i) for i in range(366)]
    days = [d for d in days if d.year == year]
    try:
        hols = frozenset(d for d in days if d.weekday() < 5 and not chinese_calendar.is_workday(d))
        works = frozenset(d for d in days if d.weekday() >= 5 and chinese_calendar.is_workday(d))
    except NotImplementedError:  # "no available data for year ..."
        return None
    return YearSchedule(
        year, Basis.OFFICIAL, f"chinese_calendar {chinese_calendar.__version__}", hols, works
    )


def _from_holidays(year: int) -> YearSchedule | None:
    try:
        import holidays
        from holidays.countries.china import ChinaStaticHolidays
    except ImportError:
        return None
    cn = holidays.China(years=[year])
    hols = frozenset(d for d in cn if d.year == year)
    works = frozenset(d for d in cn.weekend_workdays if d.year == year)
    published = getattr(ChinaStaticHolidays, "special_public_holidays", {})
    official = year in published and bool(works)
    basis = Basis.OFFICIAL if official else Basis.PROVISIONAL
    what = "published schedule" if official else "computed by rule, no make-up workdays"
    return YearSchedule(year, basis, f"holidays {holidays.__version__} ({what})", hols, works)


@dataclass
class WorkCalendar:
    """Working days with a per-year source. ``rule_based`` allows the provisional source."""

    admin: dict[int, YearSchedule] = field(default_factory=dict)
    rule_based: bool = True
    _cache: dict[int, YearSchedule] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, holiday_file: Path | None, *, rule_based: bool = True) -> WorkCalendar:
        admin = load_holiday_file(holiday_file) if holiday_file is not None else {}
        return cls(admin, rule_based)

    def year(self, year: int) -> YearSchedule:
        if not MIN_YEAR <= year <= MAX_YEAR:
            raise DateRangeError(f"year {year} is outside the calendar's {MIN_YEAR}..{MAX_YEAR}")
        if year not in self._cache:
            self._cache[year] = self._resolve(year)
        return self._cache[year]

    def _resolve(self, year: int) -> YearSchedule:
        if year in self.admin:
            return self.admin[year]
        found = _from_chinese_calendar(year)
        if found is not None:
            return found
        if self.rule_based:
            found = _from_holidays(year)
            if found is not None:
                return found
        return YearSchedule(year, Basis.FALLBACK, "weekends only")

    def is_working_day(self, day: date) -> bool:
        return self.year(day.year).is_working_day(day)

    def add_working_days(self, start: date, n: int) -> tuple[date, list[YearSchedule]]:
        """The ``n``-th working day after ``start`` (``start`` itself is not counted), and the
        schedules of every year the count went through."""
        if n < 1:
            raise ValueError("n must be at least 1")
        years = {start.year: self.year(start.year)}
        day, counted = start, 0
        while counted < n:
            day += timedelta(days=1)
            schedule = years.setdefault(day.year, self.year(day.year))
            if schedule.is_working_day(day):
                counted += 1
        return day, [years[y] for y in sorted(years)]

    def warnings(self, schedules: Iterable[YearSchedule]) -> list[str]:
        return [w for s in schedules if (w := s.warning()) is not None]
