"""Case commands: ``case create | list | show``, ``cases``, ``sessions``, ``assign``,
``unassign`` and ``file``.

Failure posture: an unknown case, device or session, or a refused move, raises ReceiverError
(exit 2) and changes nothing; ``case show`` exits 1 when the case has verification problems and
3 when it has no sessions yet.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from receiver import reports
from receiver.cases import ENFORCEMENT_TYPES, SENSITIVITY, STAGES, CaseBook
from receiver.commands import Context, bind, json_flag, show
from receiver.commands import compliance as compliance_commands
from receiver.compliance import views
from receiver.compliance.report import ReportSettings

SESSION_COLUMNS = (
    "session",
    "device",
    "start_local",
    "segments",
    "markers",
    "gaps",
    "closed",
    "quarantined",
    "case",
    "store_by",
    "on_time",
)
CASE_COLUMNS = (
    "number",
    "enforcement_type",
    "av_level",
    "title",
    "sensitivity",
    "sessions",
    "concluded",
    "case_file_due",
)
#: ``case show`` of a case without sessions: nothing to verify, which is not a failed check
EXIT_EMPTY_CASE = 3


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ses = json_flag(sub.add_parser("sessions", help="recording sessions and where they are filed"))
    ses.add_argument("--inbox", action="store_true", help="only unfiled sessions")
    bind(ses, _sessions, read_only=True)

    case = sub.add_parser("case", help="cases").add_subparsers(dest="action", required=True)
    cc = case.add_parser("create", help="create a case")
    cc.add_argument("--number", required=True, help="the case number")
    cc.add_argument(
        "--type",
        required=True,
        choices=sorted(ENFORCEMENT_TYPES),
        help="the enforcement type (sets the AV-recording level of Art. 8/9)",
    )
    cc.add_argument("--title", required=True, help="a short title")
    cc.add_argument("--party", action="append", default=[], help="repeat for each party")
    cc.add_argument(
        "--sensitivity",
        default="internal",
        choices=SENSITIVITY,
        help="sensitivity label (Art. 22; default internal)",
    )
    cc.add_argument("--unit", help="the enforcing unit (for the accountability report)")
    cc.add_argument("--major-inspection", action="store_true", help="AV mandatory (Art. 18)")
    bind(cc, _create)
    compliance_commands.add_case_commands(case)
    bind(json_flag(case.add_parser("list", help="list cases")), _list, read_only=True)
    cs = json_flag(
        case.add_parser(
            "show",
            help="a case with its sessions and verification state",
            epilog="exit status: 0 every session verified; 1 verification problems (tampered, "
            f"missing or quarantined records); {EXIT_EMPTY_CASE} the case has no sessions yet",
        )
    )
    cs.add_argument("number", help="the case number")
    bind(cs, _show, read_only=True)
    bind(json_flag(sub.add_parser("cases", help="same as `case list`")), _list, read_only=True)

    asg = sub.add_parser("assign", help="assign a device to a case (pushed to the device)")
    asg.add_argument("--device", required=True, help="the device id")
    asg.add_argument("--case", required=True, help="the case number")
    asg.add_argument("--officer", action="append", required=True, help="repeat for each officer")
    asg.add_argument("--place", required=True, help="where the enforcement takes place")
    asg.add_argument("--reason", required=True, help="why (spoken in the preamble)")
    asg.add_argument("--target", required=True, help="the party or premises concerned")
    asg.add_argument(
        "--stage", required=True, choices=STAGES, help="the enforcement stage (Art. 2)"
    )
    asg.add_argument("--window-start", help="scheduled start (local time): missed-recording check")
    asg.add_argument("--window-end", help="scheduled end (local time)")
    asg.add_argument("--return-date", help="officer's return from remote work (Art. 14)")
    bind(asg, _assign)

    una = sub.add_parser(
        "unassign", help="clear a device's assignment (it falls back to its configured defaults)"
    )
    una.add_argument("--device", required=True, help="the device id")
    bind(una, _unassign)

    fil = sub.add_parser("file", help="file an inbox session against a case")
    fil.add_argument("--session", required=True, help="the session id")
    fil.add_argument("--case", required=True, help="the case number")
    fil.add_argument(
        "--move", action="store_true", help="move a session already filed to another case"
    )
    bind(fil, _file)


def _sessions(args: argparse.Namespace, ctx: Context) -> int:
    rows = reports.sessions_view(ctx.conn, inbox_only=args.inbox)
    settings = ReportSettings.from_config(ctx.config)
    show(views.annotate_sessions(rows, ctx.conn, settings), args.json, SESSION_COLUMNS)
    return 0


def _create(args: argparse.Namespace, ctx: Context) -> int:
    c = CaseBook(ctx.conn).create(
        args.number,
        args.type,
        args.title,
        parties=args.party,
        sensitivity=args.sensitivity,
        unit=args.unit,
        major_inspection=args.major_inspection,
    )
    print(f"case {c.number} created ({c.enforcement_type}, AV {c.av_level})")
    return 0


def _list(args: argparse.Namespace, ctx: Context) -> int:
    settings = ReportSettings.from_config(ctx.config)
    show(
        views.annotate_cases(reports.cases_view(ctx.conn), ctx.conn, settings),
        args.json,
        CASE_COLUMNS,
    )
    return 0


def _show(args: argparse.Namespace, ctx: Context) -> int:
    from receiver.commands.access import operations  # role check + custody "view" event

    data = operations(args, ctx).show_case(args.number)
    settings = ReportSettings.from_config(ctx.config)
    views.annotate_sessions(data["sessions"], ctx.conn, settings)
    data.update(views.annotate_cases([dict(data)], ctx.conn, settings)[0])
    print(json.dumps(data, ensure_ascii=False, indent=2) if args.json else case_text(data))
    if data["verification"] == "verified":
        return 0
    return EXIT_EMPTY_CASE if not data["sessions"] else 1


def case_text(data: dict[str, Any]) -> str:
    lines = [
        f"Case {data['number']}: {data['title']}",
        f"  type {data['enforcement_type']} (AV {data['av_level']}), "
        f"sensitivity {data['sensitivity']}, parties: {', '.join(data['parties']) or '-'}",
        f"  verification: {data['verification']}",
        f"  concluded: {data.get('concluded') or '-'}; case file due (Art. 21): "
        f"{data.get('case_file_due', '-')}",
        "",
        reports.table(
            data["sessions"],
            [
                "session",
                "device",
                "start_local",
                "segments",
                "markers",
                "gaps",
                "store_by",
                "on_time",
                "verification",
            ],
        ),
    ]
    for s in data["sessions"]:
        for m in s["markers_list"]:
            lines.append(f"  marker  {s['session']} seq {m['seq']}: {m['kind']} at {m['utc']}")
        for g in s["gaps_list"]:
            lines.append(
                f"  gap     {s['session']} seq {g['seq']}: {g['cause']} "
                f"{g['start_utc']} .. {g['end_utc']}"
            )
        for problem in s["problems"]:
            lines.append(f"  PROBLEM {s['session']}: {problem}")
    return "\n".join(lines)


def _assign(args: argparse.Namespace, ctx: Context) -> int:
    a = CaseBook(ctx.conn).assign(
        args.device,
        args.case,
        officers=args.officer,
        place=args.place,
        reason=args.reason,
        target=args.target,
        stage=args.stage,
        schedule=compliance_commands.parse_schedule(args, ctx),
    )
    print(f"device {a.device} assigned to case {a.case} (pushed when the service runs)")
    return 0


def _unassign(args: argparse.Namespace, ctx: Context) -> int:
    was = CaseBook(ctx.conn).unassign(args.device)
    print(
        f"device {args.device} unassigned"
        + (f" from case {was.case}" if was else " (it had no active assignment)")
        + " (cleared on the device when the service runs)"
    )
    return 0


def _file(args: argparse.Namespace, ctx: Context) -> int:
    before = CaseBook(ctx.conn).file_session(args.session, args.case, move=args.move)
    if before is not None and before != args.case:
        print(f"session {args.session} moved from case {before} to case {args.case}")
    else:
        print(f"session {args.session} filed to case {args.case}")
    return 0
