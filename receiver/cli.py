"""``bodycam-receiver``: the dock service and the clerk's commands.

Exit status: 0 success; 1 the store or a case has verification problems (``reverify``,
``case show``) or an ``import`` refused or could not complete some records; 2 bad input
(unknown case, bad key file, bad option). Failure posture: every error a user can cause is
printed as one line naming what was wrong, never a traceback, and nothing is changed by a
failed command.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sqlite3
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evidence.errors import EvidenceError
from evidence.keys import key_id, save_public_key
from receiver import reports
from receiver.cases import ENFORCEMENT_TYPES, SENSITIVITY, STAGES, CaseBook
from receiver.config import ReceiverConfig, load_config
from receiver.db import connect
from receiver.errors import ConfigError, ReceiverError
from receiver.identity import load_media_key, load_receipt_key, public_key_path
from receiver.registry import DeviceRegistry, DockRegistryFollower
from receiver.store import EvidenceStore

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bodycam-receiver", description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("--data-dir", type=Path, help="data directory (overrides the config)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the receiver service (systemd Type=notify)")
    run.add_argument("--broker", help="HOST:PORT (overrides the config)")

    dev = sub.add_parser("device", help="device registry").add_subparsers(
        dest="action", required=True
    )
    add = dev.add_parser("add", help="register a device's Ed25519 public key")
    add.add_argument("--id", required=True)
    add.add_argument("--key", type=Path, required=True, help="PEM public key or certificate")
    add.add_argument("--replace-key", action="store_true", help="re-enrol with a new key")
    rev = dev.add_parser("revoke", help="refuse everything from a device from now on")
    rev.add_argument("--id", required=True)
    rev.add_argument("--reason", help="why (e.g. 'lost on patrol'); shown in the quarantine")
    dl = dev.add_parser("list", help="devices: last seen, clock offset, pending segments")
    dl.add_argument("--json", action="store_true")
    sub.add_parser("devices", help="same as `device list`").add_argument(
        "--json", action="store_true"
    )

    ses = sub.add_parser("sessions", help="recording sessions and where they are filed")
    ses.add_argument("--inbox", action="store_true", help="only unfiled sessions")
    ses.add_argument("--json", action="store_true")

    case = sub.add_parser("case", help="cases").add_subparsers(dest="action", required=True)
    cc = case.add_parser("create", help="create a case")
    cc.add_argument("--number", required=True)
    cc.add_argument("--type", required=True, choices=sorted(ENFORCEMENT_TYPES))
    cc.add_argument("--title", required=True)
    cc.add_argument("--party", action="append", default=[], help="repeat for each party")
    cc.add_argument("--sensitivity", default="internal", choices=SENSITIVITY)
    case.add_parser("list", help="list cases").add_argument("--json", action="store_true")
    cs = case.add_parser("show", help="a case with its sessions and verification state")
    cs.add_argument("number")
    cs.add_argument("--json", action="store_true")
    sub.add_parser("cases", help="same as `case list`").add_argument("--json", action="store_true")

    asg = sub.add_parser("assign", help="assign a device to a case (pushed to the device)")
    asg.add_argument("--device", required=True)
    asg.add_argument("--case", required=True)
    asg.add_argument("--officer", action="append", required=True, help="repeat for each officer")
    asg.add_argument("--place", required=True)
    asg.add_argument("--reason", required=True)
    asg.add_argument("--target", required=True)
    asg.add_argument("--stage", required=True, choices=STAGES)

    una = sub.add_parser(
        "unassign", help="clear a device's assignment (it falls back to its configured defaults)"
    )
    una.add_argument("--device", required=True)

    fil = sub.add_parser("file", help="file an inbox session against a case")
    fil.add_argument("--session", required=True)
    fil.add_argument("--case", required=True)
    fil.add_argument(
        "--move", action="store_true", help="move a session already filed to another case"
    )

    sub.add_parser(
        "quarantine", help="what failed verification, and what waits for a fix (and why)"
    ).add_argument("--json", action="store_true")
    sub.add_parser("reverify", help="re-verify the whole store").add_argument(
        "--json", action="store_true"
    )
    imp = sub.add_parser(
        "import", help="file a spool copy (e.g. from a card) with the checks of a dock upload"
    )
    imp.add_argument("spool", type=Path, help="the spool directory (its devices/ tree)")
    imp.add_argument("--json", action="store_true")
    ident = sub.add_parser("identity", help="the receipt key id (and export its public key)")
    ident.add_argument("--export-pub", type=Path, help="write the receipt public key (PEM) here")
    return p


def _config(args: argparse.Namespace) -> ReceiverConfig:
    config = load_config(args.config)
    if args.data_dir is not None:
        config.data_dir = args.data_dir
    return config


def _print(rows: Any, as_json: bool, columns: Sequence[str] = ()) -> None:
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
    else:
        print(reports.table(rows, columns))


def _run(config: ReceiverConfig, broker: str | None) -> int:
    from receiver.service import ReceiverService

    if broker:
        host, _, port = broker.rpartition(":")
        config.broker.host, config.broker.port = host or "127.0.0.1", int(port)
    config.broker.check_tls()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    ReceiverService(config).run(stop)
    return 0


def _case_show(data: dict[str, Any]) -> str:
    lines = [
        f"Case {data['number']}: {data['title']}",
        f"  type {data['enforcement_type']} (AV {data['av_level']}), "
        f"sensitivity {data['sensitivity']}, parties: {', '.join(data['parties']) or '-'}",
        f"  verification: {data['verification']}",
        "",
        reports.table(
            data["sessions"],
            ["session", "device", "start", "end", "segments", "markers", "gaps", "verification"],
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


def _import(
    config: ReceiverConfig,
    store: EvidenceStore,
    conn: sqlite3.Connection,
    spool: Path,
    as_json: bool,
) -> int:
    from receiver.importer import DUPLICATE, STORED, import_spool
    from receiver.ingest import Ingest

    ingest = Ingest(
        store,
        conn,
        load_receipt_key(config.receipt_key_path),
        max_segment_bytes=config.limits.max_segment_bytes,
        dock_registry=config.dock_registry,
        encryption_key=load_media_key(config.encryption_key),
    )
    try:
        results = import_spool(ingest, spool)
    finally:
        ingest.close()
    if as_json:
        print(json.dumps([r.to_dict() for r in results], ensure_ascii=False, indent=2))
    else:
        for r in results:
            if r.outcome not in (STORED, DUPLICATE):
                print(f"  {r.outcome.upper()} {r.device} seq {r.seq} ({r.file}): {r.reason}")
        counts = {o: sum(r.outcome == o for r in results) for o in {r.outcome for r in results}}
        summary = ", ".join(f"{n} {o}" for o, n in sorted(counts.items())) or "no records"
        print(f"imported {spool}: {summary}")
    return 0 if all(r.outcome in (STORED, DUPLICATE) for r in results) else 1


#: commands that only read: they never create a data directory (a mistyped --data-dir is
#: reported, not silently turned into an empty store)
READ_ONLY = frozenset(
    {
        ("devices", None),
        ("device", "list"),
        ("sessions", None),
        ("cases", None),
        ("case", "list"),
        ("case", "show"),
        ("quarantine", None),
        ("reverify", None),
    }
)


def _check_data_dir(data_dir: Path, *, must_exist: bool) -> None:
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(data_dir, "is not a directory (--data-dir / data_dir names a file)")
    if must_exist and not (data_dir / "receiver.db").is_file():
        what = "does not exist" if not data_dir.exists() else "holds no receiver.db"
        raise ConfigError(
            data_dir, f"{what}: not a receiver data directory (check --data-dir / data_dir)"
        )


def dispatch(args: argparse.Namespace) -> int:
    config = _config(args)
    cmd, action = args.command, getattr(args, "action", None)
    _check_data_dir(config.data_dir, must_exist=(cmd, action) in READ_ONLY)
    if cmd == "run":
        return _run(config, args.broker)
    store = EvidenceStore(config.data_dir)
    conn = connect(store.db_path)
    try:
        if config.dock_registry is not None:
            # listings and revocations reflect the dock's enrolments without a service running
            DockRegistryFollower(DeviceRegistry(conn), config.dock_registry).sync()
        if cmd == "device" and action == "add":
            d = DeviceRegistry(conn).add(args.id, args.key, replace_key=args.replace_key)
            print(f"device {d.id} registered with key {d.key_id}")
        elif cmd == "device" and action == "revoke":
            DeviceRegistry(conn).revoke(args.id, args.reason)
            print(f"device {args.id} revoked: its uploads are quarantined from now on")
        elif (cmd == "device" and action == "list") or cmd == "devices":
            cols = [
                "device",
                "revoked",
                "revoke_reason",
                "last_seen",
                "clock_offset_s",
                "pending_segments",
                "oldest_pending",
                "records",
            ]
            _print(reports.devices_view(conn), args.json, cols)
        elif cmd == "sessions":
            cols = [
                "session",
                "device",
                "start",
                "segments",
                "markers",
                "gaps",
                "closed",
                "quarantined",
                "case",
            ]
            _print(reports.sessions_view(conn, inbox_only=args.inbox), args.json, cols)
        elif cmd == "case" and action == "create":
            c = CaseBook(conn).create(
                args.number,
                args.type,
                args.title,
                parties=args.party,
                sensitivity=args.sensitivity,
            )
            print(f"case {c.number} created ({c.enforcement_type}, AV {c.av_level})")
        elif (cmd == "case" and action == "list") or cmd == "cases":
            cols = ["number", "enforcement_type", "av_level", "title", "sensitivity", "sessions"]
            _print(reports.cases_view(conn), args.json, cols)
        elif cmd == "case" and action == "show":
            data = reports.case_view(store, conn, args.number)
            print(json.dumps(data, ensure_ascii=False, indent=2) if args.json else _case_show(data))
            return 0 if data["verification"] == "verified" else 1
        elif cmd == "assign":
            a = CaseBook(conn).assign(
                args.device,
                args.case,
                officers=args.officer,
                place=args.place,
                reason=args.reason,
                target=args.target,
                stage=args.stage,
            )
            print(f"device {a.device} assigned to case {a.case} (pushed when the service runs)")
        elif cmd == "unassign":
            was = CaseBook(conn).unassign(args.device)
            print(
                f"device {args.device} unassigned"
                + (f" from case {was.case}" if was else " (it had no active assignment)")
                + " (cleared on the device when the service runs)"
            )
        elif cmd == "file":
            before = CaseBook(conn).file_session(args.session, args.case, move=args.move)
            if before is not None and before != args.case:
                print(f"session {args.session} moved from case {before} to case {args.case}")
            else:
                print(f"session {args.session} filed to case {args.case}")
        elif cmd == "quarantine":
            rows = reports.quarantine_view(conn) + reports.waiting_view(conn)
            if not args.json:
                rows = [
                    {**r, "reason": f"waiting: {r['reason']}"} if r["status"] == "waiting" else r
                    for r in rows
                ]
            _print(rows, args.json, ["id", "device", "seq", "type", "reason", "when"])
        elif cmd == "import":
            return _import(config, store, conn, args.spool, args.json)
        elif cmd == "reverify":
            decryptor = None
            if config.encryption_key is not None:
                from evidence.decrypt import media_decryptor

                decryptor = media_decryptor(config.encryption_key)
            result = reports.reverify(store, conn, decryptor=decryptor)
            if args.json:
                print(json.dumps(result, ensure_ascii=False, indent=2))
            else:
                print(
                    f"{result['records']} records, {result['objects']} objects, "
                    f"{result['quarantined']} quarantined: "
                    + ("all verified" if result["ok"] else "PROBLEMS")
                )
                for v in result["violations"]:
                    print(f"  {v['kind']}: device {v['device']} seq {v['seq']}: {v['detail']}")
                for o in result["bad_objects"]:
                    print(f"  object {o['object']} now hashes to {o['actual_sha256']}")
            return 0 if result["ok"] else 1
        elif cmd == "identity":
            key = load_receipt_key(config.receipt_key_path)
            if args.export_pub:
                save_public_key(args.export_pub, key.public_key())
            print(f"{key_id(key.public_key())} {public_key_path(config.receipt_key_path)}")
        return 0
    finally:
        conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return dispatch(args)
    except (ReceiverError, EvidenceError) as exc:
        print(f"bodycam-receiver: {exc}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.DatabaseError) as exc:  # e.g. a data dir without permission
        print(f"bodycam-receiver: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
