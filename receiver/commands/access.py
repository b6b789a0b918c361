"""People and access commands: ``user ...``, ``approval ...``, ``media ...``, ``delete``.

Acting as a user: the global ``--user NAME`` option; the password comes from the environment
variable ``BODYCAM_PASSWORD`` when set (scripts, tests), else from a prompt that does not echo.
Without ``--user`` only case metadata can be read and the very first account created.

Failure posture: a refusal (role, missing approval, wrong password) is logged to the custody log
and printed as one line, exit 2 (via :class:`receiver.access.AccessDenied`); nothing else changes.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import sys
from pathlib import Path

from receiver.access import APPROVAL_KINDS, ROLES
from receiver.commands import Context, bind, json_flag, show
from receiver.errors import InvalidInputError
from receiver.operations import Operations

PASSWORD_ENV = "BODYCAM_PASSWORD"


def operations(args: argparse.Namespace, ctx: Context) -> Operations:
    """The operations of the user named by ``--user`` (authenticated), or of the local operator."""
    cached = getattr(args, "operations", None)
    if isinstance(cached, Operations):
        return cached
    name = getattr(args, "user", None)
    if not name:
        return Operations(ctx.config, ctx.store, ctx.conn, None)
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        if not sys.stdin.isatty():
            raise InvalidInputError("password", f"set {PASSWORD_ENV} or run on a terminal")
        password = getpass.getpass(f"password for {name}: ")
    args.operations = Operations.login(ctx.config, ctx.store, ctx.conn, name, password)
    return args.operations


def _new_password(args: argparse.Namespace) -> str:
    value = os.environ.get("BODYCAM_NEW_PASSWORD")
    if value is not None:
        return value
    if not sys.stdin.isatty():
        raise InvalidInputError("password", "set BODYCAM_NEW_PASSWORD or run on a terminal")
    first = getpass.getpass(f"new password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise InvalidInputError("password", "the two entries differ")
    return first


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    user = sub.add_parser(
        "user", help="user accounts (new passwords from BODYCAM_NEW_PASSWORD or a prompt)"
    ).add_subparsers(dest="action", required=True)
    ua = user.add_parser("add", help="add a user (the first one needs no --user)")
    ua.add_argument("name")
    ua.add_argument("--role", required=True, choices=ROLES)
    bind(ua, _user_add)
    ur = user.add_parser("role", help="change a user's role")
    ur.add_argument("name")
    ur.add_argument("role", choices=ROLES)
    bind(ur, _user_role)
    up = user.add_parser("password", help="set a user's password")
    up.add_argument("name")
    bind(up, _user_password)
    for action, active in (("disable", False), ("enable", True)):
        ud = user.add_parser(action, help=f"{action} a user")
        ud.add_argument("name")
        ud.set_defaults(active=active)
        bind(ud, _user_active)
    bind(json_flag(user.add_parser("list", help="list users")), _user_list)

    appr = sub.add_parser("approval", help="approvals to view or export media").add_subparsers(
        dest="action", required=True
    )
    ar = json_flag(appr.add_parser("request", help="request to view, export, or a party's view"))
    ar.add_argument("--case", required=True)
    ar.add_argument("--kind", required=True, choices=APPROVAL_KINDS)
    ar.add_argument("--reason", required=True)
    ar.add_argument("--party", help="for party-view: the party who asked")
    bind(ar, _approval_request)
    for action in ("grant", "refuse"):
        ad = json_flag(appr.add_parser(action, help=f"{action} a pending request"))
        ad.add_argument("id", type=int)
        ad.add_argument("--note", default="", help="why")
        ad.set_defaults(grant=action == "grant")
        bind(ad, _approval_decide)
    al = json_flag(appr.add_parser("list", help="requests (approvers and auditors see all)"))
    al.add_argument("--case")
    al.add_argument("--status", choices=("pending", "granted", "refused"))
    bind(al, _approval_list)

    media = sub.add_parser("media", help="a case's media").add_subparsers(
        dest="action", required=True
    )
    ml = json_flag(media.add_parser("list", help="a case's segments"))
    ml.add_argument("case")
    bind(ml, _media_list)
    mp = media.add_parser("play", help="copy one segment's playable media out (needs approval)")
    mp.add_argument("case")
    mp.add_argument("--session", required=True)
    mp.add_argument("--seq", required=True, type=int)
    mp.add_argument("--out", required=True, type=Path, help="file to write (must not exist)")
    bind(mp, _media_play)

    de = sub.add_parser("delete", help="delete evidence (always refused inside retention)")
    de.add_argument("--case")
    de.add_argument("--session")
    bind(de, _delete)


def _user_add(args: argparse.Namespace, ctx: Context) -> int:
    u = operations(args, ctx).add_user(args.name, args.role, _new_password(args))
    print(f"user {u['name']} added ({u['role']})")
    return 0


def _user_role(args: argparse.Namespace, ctx: Context) -> int:
    u = operations(args, ctx).set_role(args.name, args.role)
    print(f"user {u['name']} is now {u['role']}")
    return 0


def _user_password(args: argparse.Namespace, ctx: Context) -> int:
    operations(args, ctx).set_password(args.name, _new_password(args))
    print(f"password of {args.name} changed")
    return 0


def _user_active(args: argparse.Namespace, ctx: Context) -> int:
    u = operations(args, ctx).set_active(args.name, args.active)
    print(f"user {u['name']} {'enabled' if u['active'] else 'disabled'}")
    return 0


def _user_list(args: argparse.Namespace, ctx: Context) -> int:
    show(operations(args, ctx).list_users(), args.json, ["name", "role", "active"])
    return 0


def _approval_request(args: argparse.Namespace, ctx: Context) -> int:
    a = operations(args, ctx).request_approval(args.case, args.kind, args.reason, args.party)
    show([a], args.json, ["id", "case", "kind", "requester", "party", "status"])
    return 0


def _approval_decide(args: argparse.Namespace, ctx: Context) -> int:
    a = operations(args, ctx).decide_approval(args.id, args.grant, args.note)
    show([a], args.json, ["id", "case", "kind", "requester", "status", "decided_by", "expires_utc"])
    return 0


def _approval_list(args: argparse.Namespace, ctx: Context) -> int:
    rows = operations(args, ctx).approvals(args.case, args.status)
    show(rows, args.json, ["id", "case", "kind", "requester", "party", "status", "decided_by"])
    return 0


def _media_list(args: argparse.Namespace, ctx: Context) -> int:
    rows = operations(args, ctx).list_media(args.case)
    show(rows, args.json, ["session", "device", "seq", "file", "size", "encrypted", "utc"])
    return 0


def _media_play(args: argparse.Namespace, ctx: Context) -> int:
    if args.out.exists() or args.out.is_symlink():
        raise InvalidInputError("--out", f"{args.out} exists; name a new file")
    path = operations(args, ctx).media_for_playback(args.case, args.session, args.seq)
    shutil.copyfile(path, args.out)
    print(f"segment {args.session} seq {args.seq} written to {args.out}")
    return 0


def _delete(args: argparse.Namespace, ctx: Context) -> int:
    if not (args.case or args.session):
        raise InvalidInputError("delete", "name --case or --session")
    operations(args, ctx).delete_evidence(case=args.case, session=args.session)
    return 0  # not reached: deletion is always refused
