"""Service commands: ``run`` (the dock service) and ``identity`` (the receipt key).

Failure posture: a bad broker address or TLS setting raises ReceiverConfigError before
anything starts.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from evidence.keys import key_id, save_public_key
from receiver.commands import Context, bind, bind_raw
from receiver.config import ReceiverConfig
from receiver.errors import ReceiverConfigError
from receiver.identity import load_receipt_key, public_key_path


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run the receiver service (systemd Type=notify)")
    run.add_argument("--broker", help="HOST:PORT (overrides the config)")
    bind_raw(run, _run)
    ident = sub.add_parser("identity", help="the receipt key id (and export its public key)")
    ident.add_argument("--export-pub", type=Path, help="write the receipt public key (PEM) here")
    bind(ident, _identity)


def _run(args: argparse.Namespace, config: ReceiverConfig) -> int:
    from receiver.service import ReceiverService

    if args.broker:
        host, _, port = args.broker.rpartition(":")
        if not port.isdigit():
            raise ReceiverConfigError(None, f"--broker {args.broker!r}: expected HOST:PORT")
        config.broker.host, config.broker.port = host or "127.0.0.1", int(port)
    config.broker.check_tls()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    ReceiverService(config).run(stop)
    return 0


def _identity(args: argparse.Namespace, ctx: Context) -> int:
    key = load_receipt_key(ctx.config.receipt_key_path)
    if args.export_pub:
        save_public_key(args.export_pub, key.public_key())
    print(f"{key_id(key.public_key())} {public_key_path(ctx.config.receipt_key_path)}")
    return 0
