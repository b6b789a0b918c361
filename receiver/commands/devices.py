"""Device registry commands: ``device add | revoke | list`` and ``devices``.

Failure posture: registry errors (unknown device, bad key file) raise ReceiverError → exit 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from receiver import reports
from receiver.commands import Context, bind, json_flag, show
from receiver.compliance.report import ReportSettings
from receiver.compliance.views import annotate_devices
from receiver.custody import record_event
from receiver.errors import InvalidInputError
from receiver.registry import DeviceRegistry

DEVICE_COLUMNS = (
    "device",
    "revoked",
    "revoke_reason",
    "last_seen_local",
    "clock_offset_s",
    "pending_segments",
    "oldest_pending",
    "upload_by",
    "records",
)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = sub.add_parser("device", help="device registry").add_subparsers(
        dest="action", required=True
    )
    add = dev.add_parser("add", help="register a device's Ed25519 public key")
    add.add_argument("--id", required=True, help="the device id (its certificate's CN)")
    add.add_argument("--key", type=Path, required=True, help="PEM public key or certificate")
    add.add_argument("--replace-key", action="store_true", help="re-enrol with a new key")
    bind(add, _add)
    rev = dev.add_parser("revoke", help="refuse everything from a device from now on")
    rev.add_argument("--id", required=True, help="the device id")
    rev.add_argument("--reason", help="why (e.g. 'lost on patrol'); shown in the quarantine")
    bind(rev, _revoke)
    bind(
        json_flag(dev.add_parser("list", help="devices: last seen, clock offset, pending")),
        _list,
        read_only=True,
    )
    bind(json_flag(sub.add_parser("devices", help="same as `device list`")), _list, read_only=True)


def _add(args: argparse.Namespace, ctx: Context) -> int:
    _refuse_private_key(args.key)
    d = DeviceRegistry(ctx.conn).add(args.id, args.key, replace_key=args.replace_key)
    record_event(ctx.conn, "device-registration", actor=_actor(args), device=d.id, key=d.key_id)
    print(f"device {d.id} registered with key {d.key_id}")
    return 0


def _revoke(args: argparse.Namespace, ctx: Context) -> int:
    DeviceRegistry(ctx.conn).revoke(args.id, args.reason)
    record_event(
        ctx.conn, "device-revocation", actor=_actor(args), device=args.id, detail=args.reason
    )
    print(f"device {args.id} revoked: its uploads are quarantined from now on")
    return 0


def _actor(args: argparse.Namespace) -> str:
    return getattr(args, "user", None) or "local-operator"


def _list(args: argparse.Namespace, ctx: Context) -> int:
    settings = ReportSettings.from_config(ctx.config)
    show(annotate_devices(reports.devices_view(ctx.conn), settings), args.json, DEVICE_COLUMNS)
    return 0


def _refuse_private_key(path: Path) -> None:
    """A private key handed in by mistake is refused with a clear word (and not echoed): the
    device's signing key never leaves the device; only its public key is registered."""
    try:
        head = path.read_bytes()[: 1 << 16]
    except OSError:
        return  # the registry reports an unreadable file in its own words
    if b"PRIVATE KEY" in head:
        raise InvalidInputError(
            "--key",
            f"{path} holds a PRIVATE key: give the device's public key (signing.pub) or its "
            "certificate; the private key must never leave the device",
        )
