"""Compliance commands: ``compliance report | deadline | calendar``, ``gap explain`` and the
case commands ``case conclude | file-formed | inspection-times | profile``.

Times typed by a clerk are local wall-clock times in the configured timezone
(``YYYY-MM-DD HH:MM[:SS]``) unless they carry an offset; dates are ``YYYY-MM-DD``.
Exit status of ``compliance report``: 0 clean, 1 findings, 2 bad input. Every fact added
here is a custody event, committed with it. Concluding a mandatory-AV case with no recording
needs a logged-in supervisor (``--user``, role with ``approve``) and ``--override --reason``.
Failure posture: bad input raises :class:`ComplianceInputError` (exit 2) before anything is
written; a report written with ``--out`` goes to a temporary file renamed into place, so a
failure never leaves a half-written report.
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from evidence.fsutil import atomic_write
from receiver.access import AccessDenied
from receiver.commands import Context, bind, bind_raw, json_flag
from receiver.commands import access as access_commands
from receiver.compliance import render
from receiver.compliance.calendar import MAX_YEAR, MIN_YEAR
from receiver.compliance.deadlines import (
    case_file_deadline,
    format_local,
    storage_deadline,
    zone,
)
from receiver.compliance.errors import ComplianceInputError
from receiver.compliance.report import ReportSettings, build_report
from receiver.compliance.rules import AV_MANDATORY, av_level
from receiver.config import ReceiverConfig
from receiver.custody import record_event
from receiver.store.compliance import ComplianceStore, Schedule

log = logging.getLogger(__name__)


def _cstore(ctx: Context) -> ComplianceStore:
    """The compliance store with the custody log hooked in (each fact is a custody event)."""
    return ComplianceStore(ctx.conn, custody=record_event)


def _supervisor(args: argparse.Namespace, ctx: Context, case: str, article: str) -> str:
    """The logged-in user allowed to override a missing mandatory recording (role with the
    ``approve`` permission: supervisor or head); a refusal is itself a custody event."""
    user = access_commands.operations(args, ctx).user
    what = f"conclude mandatory-AV case {case} ({article}) without a recording"
    if user is None or not user.can("approve"):
        who = user.name if user else "local-operator"
        reason = (
            "log in as a supervisor (--user NAME)"
            if user is None
            else (f"role {user.role} may not override")
        )
        record_event(ctx.conn, "access-refused", actor=who, action=what, case=case, detail=reason)
        raise AccessDenied(who, what, reason)
    return user.name


# -- parsing clerk input -----------------------------------------------------------------------


def parse_date(text: str, what: str) -> date:
    try:
        d = date.fromisoformat(text)
    except ValueError:
        raise ComplianceInputError(f"{what}: {text!r} is not a date (YYYY-MM-DD)") from None
    if not MIN_YEAR <= d.year <= MAX_YEAR:
        raise ComplianceInputError(f"{what}: {text} is outside {MIN_YEAR}..{MAX_YEAR}")
    return d


def parse_local(text: str, tz: str, what: str) -> datetime:
    """A clerk's time: local in ``tz`` unless it carries an offset; returned in UTC."""
    try:
        dt = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise ComplianceInputError(
            f"{what}: {text!r} is not a time (YYYY-MM-DD HH:MM[:SS], local {tz})"
        ) from None
    if not MIN_YEAR <= dt.year <= MAX_YEAR:
        raise ComplianceInputError(f"{what}: {text} is outside {MIN_YEAR}..{MAX_YEAR}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=zone(tz))
    return dt.astimezone(UTC)


def parse_schedule(args: argparse.Namespace, ctx: Context) -> Schedule | None:
    """``assign``'s optional window and return date, checked before anything is written."""
    tz = _settings(ctx).timezone
    start, end, ret = args.window_start, args.window_end, args.return_date
    if start is None and end is None and ret is None:
        return None
    if (start is None) != (end is None):
        raise ComplianceInputError("--window-start and --window-end go together")
    window = None
    if start is not None and end is not None:
        window = (parse_local(start, tz, "--window-start"), parse_local(end, tz, "--window-end"))
        if window[1] <= window[0]:
            raise ComplianceInputError("--window-end is not after --window-start")
    return Schedule(window, parse_date(ret, "--return-date") if ret else None)


def _settings(ctx: Context) -> ReportSettings:
    return ReportSettings.from_config(ctx.config)


# -- commands ----------------------------------------------------------------------------------


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    comp = sub.add_parser("compliance", help="deadlines and the accountability report (Art. 25)")
    actions = comp.add_subparsers(dest="action", required=True)
    rep = actions.add_parser("report", help="the accountability report")
    rep.add_argument("--from", dest="period_from", help="first local date (YYYY-MM-DD)")
    rep.add_argument("--to", dest="period_to", help="last local date (YYYY-MM-DD)")
    rep.add_argument("--case", help="only this case")
    rep.add_argument("--officer", help="only findings naming this officer (substring)")
    rep.add_argument("--device", help="only this device")
    rep.add_argument("--unit", help="only cases of this unit")
    rep.add_argument("--format", choices=("text", "json", "html"), default="text")
    rep.add_argument("--out", type=Path, help="write to this file (atomically) instead of stdout")
    rep.add_argument("--now", help="report as of this time (default: now)")
    bind(rep, _report, read_only=True)

    dl = json_flag(actions.add_parser("deadline", help="compute an Art. 14 or Art. 21 deadline"))
    dl.add_argument("--ended", help="recording end (local time): Art. 14")
    dl.add_argument("--return-date", help="officer's return date (remote work): Art. 14")
    dl.add_argument("--concluded", help="case conclusion date: Art. 21")
    bind_raw(dl, _deadline)

    cal = json_flag(actions.add_parser("calendar", help="a year's holidays and make-up workdays"))
    cal.add_argument("year", type=int)
    bind_raw(cal, _calendar)

    gap = sub.add_parser("gap", help="interruptions (Art. 13)").add_subparsers(
        dest="action", required=True
    )
    ex = gap.add_parser("explain", help="attach a written explanation to a gap")
    ex.add_argument("--device", required=True)
    ex.add_argument("--seq", type=int, required=True, help="the gap record's seq")
    ex.add_argument("--by", required=True, help="who explains")
    ex.add_argument("--text", required=True, help="the explanation")
    bind(ex, _explain)


def add_case_commands(case: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Sub-commands of ``case`` (called by :mod:`receiver.commands.cases`)."""
    con = case.add_parser("conclude", help="the matter is concluded: starts the Art. 21 clock")
    con.add_argument("number")
    con.add_argument("--date", required=True, help="conclusion date (YYYY-MM-DD)")
    con.add_argument("--by", required=True, help="who concludes it")
    con.add_argument(
        "--override",
        action="store_true",
        help="a supervisor (--user) overrides a missing mandatory recording; needs --reason",
    )
    con.add_argument("--reason", help="the supervisor's reason for the override")
    bind(con, _conclude)
    ff = case.add_parser("file-formed", help="the case file (案卷) was formed (Art. 21)")
    ff.add_argument("number")
    ff.add_argument("--date", required=True)
    ff.add_argument("--by", required=True)
    bind(ff, _file_formed)
    it = case.add_parser("inspection-times", help="times on the inspection record (Art. 18)")
    it.add_argument("number")
    it.add_argument("--start", required=True, help="arrival time on the document (local)")
    it.add_argument("--end", required=True, help="end/signing time on the document (local)")
    it.add_argument("--by", required=True, help="the clerk entering them")
    bind(it, _inspection_times)
    pr = case.add_parser("profile", help="a case's unit and major-inspection flag (Art. 18)")
    pr.add_argument("number")
    pr.add_argument("--unit", help="the enforcing unit")
    pr.add_argument("--major-inspection", action="store_true", help="AV mandatory (Art. 18)")
    bind(pr, _profile)


def _report(args: argparse.Namespace, ctx: Context) -> int:
    settings = _settings(ctx)
    tz = settings.timezone
    now = parse_local(args.now, tz, "--now") if args.now else datetime.now(UTC)
    options = settings.options(
        now,
        period_from=parse_date(args.period_from, "--from") if args.period_from else None,
        period_to=parse_date(args.period_to, "--to") if args.period_to else None,
        case=args.case,
        officer=args.officer,
        device=args.device,
        unit=args.unit,
    )
    if options.period_from and options.period_to and options.period_to < options.period_from:
        raise ComplianceInputError("--to is before --from")
    if (
        args.case is not None
        and ctx.conn.execute("SELECT 1 FROM cases WHERE number = ?", (args.case,)).fetchone()
        is None
    ):
        raise ComplianceInputError(f"--case: no case {args.case!r}")
    report = build_report(ctx.conn, ctx.store, settings, options)
    if args.format == "json":
        out = json.dumps(report.to_dict(), ensure_ascii=False, indent=2)
    elif args.format == "html":
        out = render.html(report)
    else:
        out = render.text(report)
    if args.out is not None:
        atomic_write(args.out, (out + "\n").encode("utf-8"))
        print(f"report written to {args.out} ({len(report.findings)} finding(s))")
    else:
        print(out)
    return 0 if report.clean else 1


def _deadline(args: argparse.Namespace, config: ReceiverConfig) -> int:
    settings = ReportSettings.from_config(config)
    calendar = settings.calendar()
    tz = settings.timezone
    if (args.ended is None) == (args.concluded is None):
        raise ComplianceInputError("give either --ended (Art. 14) or --concluded (Art. 21)")
    if args.concluded is not None:
        d = case_file_deadline(calendar, tz, parse_date(args.concluded, "--concluded"))
        event = f"concluded {args.concluded}"
    else:
        ended = parse_local(args.ended, tz, "--ended")
        ret = parse_date(args.return_date, "--return-date") if args.return_date else None
        d = storage_deadline(calendar, tz, ended, return_date=ret)
        event = f"ended {format_local(ended, tz)}" + (f", returned {ret}" if ret else "")
    if args.json:
        print(json.dumps(d.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(f"{d.article}: {event} -> due {d.local()}")
        for w in d.warnings:
            print(f"WARNING: {w}")
    return 0


def _calendar(args: argparse.Namespace, config: ReceiverConfig) -> int:
    sched = ReportSettings.from_config(config).calendar().year(args.year)
    data: dict[str, Any] = {
        "year": sched.year,
        "basis": sched.basis.value,
        "source": sched.source,
        "holidays": sorted(d.isoformat() for d in sched.holidays if d.weekday() < 5),
        "workdays": sorted(d.isoformat() for d in sched.workdays),
        "warning": sched.warning(),
    }
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        print(f"{sched.year}: {sched.basis.value} ({sched.source})")
        print(f"  holidays (weekdays off): {', '.join(data['holidays']) or '-'}")
        print(f"  make-up working days:    {', '.join(data['workdays']) or '-'}")
        if data["warning"]:
            print(f"WARNING: {data['warning']}")
    return 0


def _explain(args: argparse.Namespace, ctx: Context) -> int:
    if not args.text.strip() or not args.by.strip():
        raise ComplianceInputError("--text and --by must not be empty")
    _cstore(ctx).explain_gap(args.device, args.seq, args.by, args.text)
    print(f"gap {args.device} seq {args.seq} explained by {args.by}")
    return 0


def _conclude(args: argparse.Namespace, ctx: Context) -> int:
    concluded = parse_date(args.date, "--date")
    cstore = _cstore(ctx)
    row = ctx.conn.execute(
        "SELECT enforcement_type FROM cases WHERE number = ?", (args.number,)
    ).fetchone()
    if row is None:
        raise ComplianceInputError(f"no case {args.number!r}")
    profile = cstore.case_row(args.number)
    if profile is not None and profile["concluded_date"]:
        raise ComplianceInputError(
            f"case {args.number} was already concluded on {profile['concluded_date']}"
        )
    level, article = av_level(
        row["enforcement_type"], major_inspection=bool(profile and profile["major_inspection"])
    )
    override = None
    if level == AV_MANDATORY and cstore.recordings_of(args.number) == 0:
        if not args.override or not (args.reason or "").strip():
            raise ComplianceInputError(
                f"case {args.number}: AV recording is mandatory ({article}) and none is filed; "
                "concluding it needs a supervisor's override (--user SUPERVISOR --override "
                "--reason TEXT)"
            )
        override = (_supervisor(args, ctx, args.number, article), args.reason.strip())
    elif args.override:
        raise ComplianceInputError("--override is only for a mandatory case with no recording")
    cstore.conclude(args.number, concluded, args.by, override=override)
    settings = _settings(ctx)
    d = case_file_deadline(settings.calendar(), settings.timezone, concluded)
    print(f"case {args.number} concluded {concluded}; case file due {d.local()} ({d.article})")
    for w in d.warnings:
        print(f"WARNING: {w}")
    if override:
        print(f"override by {override[0]} recorded: {override[1]}")
    return 0


def _file_formed(args: argparse.Namespace, ctx: Context) -> int:
    _cstore(ctx).file_formed(args.number, parse_date(args.date, "--date"), args.by)
    print(f"case {args.number}: case file formed {args.date}")
    return 0


def _inspection_times(args: argparse.Namespace, ctx: Context) -> int:
    tz = _settings(ctx).timezone
    start = parse_local(args.start, tz, "--start")
    end = parse_local(args.end, tz, "--end")
    if end < start:
        raise ComplianceInputError("--end is before --start")
    _cstore(ctx).add_inspection_document(args.number, start, end, args.by)
    print(
        f"case {args.number}: inspection document {format_local(start, tz)} .. "
        f"{format_local(end, tz)} recorded"
    )
    return 0


def _profile(args: argparse.Namespace, ctx: Context) -> int:
    _cstore(ctx).set_case_profile(
        args.number, unit=args.unit, major_inspection=args.major_inspection
    )
    print(
        f"case {args.number}: unit {args.unit or '-'}"
        + (", major inspection: AV mandatory (Art. 18)" if args.major_inspection else "")
    )
    return 0
