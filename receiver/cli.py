"""``bodycam-receiver``: the dock service and the clerk's commands.

The commands live in :mod:`receiver.commands`, one module per subject; this module parses the
global options, opens the data directory and calls the chosen command's handler.

Exit status: 0 success; 1 the store or a case has verification problems (``reverify``,
``case show``) or an ``import`` refused or could not complete some records; 2 bad input
(unknown case, bad key file, bad option); 3 ``case show`` of a case with no sessions yet.
Failure posture: every error a user can cause is printed as one line naming what was wrong,
never a traceback, and nothing is changed by a failed command.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from evidence.errors import EvidenceError
from receiver.commands import Context, cases, compliance, devices, evidence, service, web
from receiver.commands import access as access_commands
from receiver.commands import custody as custody_commands
from receiver.commands import export as export_commands
from receiver.config import ReceiverConfig, load_config
from receiver.errors import ReceiverConfigError, ReceiverError
from receiver.registry import DeviceRegistry, DockRegistryFollower
from receiver.store import EvidenceStore, connect
from receiver.text import SafeStream

log = logging.getLogger(__name__)

#: the command modules, in the order their commands appear in ``--help``
COMMAND_MODULES = (
    service,
    devices,
    cases,
    evidence,
    access_commands,
    custody_commands,
    export_commands,
    compliance,
    web,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bodycam-receiver",
        description=__doc__.split("\n")[0].replace("``", ""),  # no reST markup in --help
        epilog="exit status: 0 success; 1 verification problems or records not imported; "
        "2 bad input; 3 case show of a case with no sessions",
    )
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("--data-dir", type=Path, help="data directory (overrides the config)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--user", help="act as this user (password from BODYCAM_PASSWORD or a prompt)")
    sub = p.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_commands(sub)
    return p


def _config(args: argparse.Namespace) -> ReceiverConfig:
    config = load_config(args.config)
    if args.data_dir is not None:
        config.data_dir = args.data_dir
    return config


def _check_data_dir(data_dir: Path, *, must_exist: bool) -> None:
    if data_dir.exists() and not data_dir.is_dir():
        raise ReceiverConfigError(
            data_dir, "is not a directory (--data-dir / data_dir names a file)"
        )
    if must_exist and not (data_dir / "receiver.db").is_file():
        what = "does not exist" if not data_dir.exists() else "holds no receiver.db"
        raise ReceiverConfigError(
            data_dir, f"{what}: not a receiver data directory (check --data-dir / data_dir)"
        )


def dispatch(args: argparse.Namespace) -> int:
    config = _config(args)
    # read-only commands never create a data directory named on the command line: a mistyped
    # --data-dir is reported, not silently turned into an empty store; the one a provisioned
    # configuration names is this dock's store, still empty until the first upload
    from_file = args.config is not None and args.data_dir is None
    _check_data_dir(config.data_dir, must_exist=args.read_only and not from_file)
    if args.raw:
        return int(args.handler(args, config))
    store = EvidenceStore(config.data_dir)
    conn = connect(store.db_path)
    try:
        if config.dock_registry is not None:
            # listings and revocations reflect the dock's enrolments without a service running
            DockRegistryFollower(DeviceRegistry(conn), config.dock_registry).sync()
        ctx = Context(config, store, conn)
        if args.user:  # log in once, for every command (a wrong password is refused and logged)
            access_commands.operations(args, ctx)
        return int(args.handler(args, ctx))
    finally:
        conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stdout = sys.stdout
    sys.stdout = SafeStream(stdout)  # device text on a terminal
    try:
        return _main(args)
    finally:
        sys.stdout = stdout


def _main(args: argparse.Namespace) -> int:
    # listings print tables on stdout; their log lines (stderr) only with -v
    quiet = args.read_only and not args.raw
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else (logging.WARNING if quiet else logging.INFO),
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
