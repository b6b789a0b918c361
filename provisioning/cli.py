"""``bodycam-provision``: the technician's tool to bring devices into and out of service.

Dock side: ``init``, ``enrol``, ``list``, ``revoke``, ``crl``, ``trust``, ``broker-config``,
``web-cert`` (the review console's TLS certificate).
Device side: ``device-request``, ``device-install``, ``device-check``.

Failure posture: every refusal is one line ``bodycam-provision: error: ...`` on stderr and exit
status 2 (``device-check``: status 1 when a check fails); nothing is half-written (the library
writes atomically and checks before writing).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from evidence.errors import EvidenceError
from provisioning import broker, device, pki, selftest
from provisioning.dock import DEFAULT_BROKER_PORT, Dock
from provisioning.errors import ProvisioningError

log = logging.getLogger(__name__)

EXIT_CHECK_FAILED = 1
EXIT_REFUSED = 2


def _cmd_init(args: argparse.Namespace) -> int:
    dock = Dock.init(
        args.dock,
        broker_hosts=args.host or [],
        broker_port=args.port,
        name=args.name,
        ca_validity_days=args.ca_validity_days,
        receiver_keys_from=args.receiver_keys_from,
    )
    ca = pki.load_certificate(dock.paths.ca_cert)
    print(f"dock initialised in {dock.paths.root}")
    print(f"CA fingerprint: {pki.fingerprint(ca)}")
    print(f"broker address for devices: {dock.broker_host}:{dock.broker_port}")
    print(f"back up {dock.paths.ca_key} and {dock.paths.encryption_key} offline now")
    return 0


def _cmd_device_request(args: argparse.Namespace) -> int:
    out = device.create_request(args.dir, args.device_id, args.out)
    print(f"request written to {out} (public material only; take it to the dock)")
    return 0


def _cmd_enrol(args: argparse.Namespace) -> int:
    dock = Dock(args.dock)
    result = dock.enrol(
        args.request, renew=args.renew, bundle_path=args.out, validity_days=args.validity_days
    )
    print(
        f"enrolled {result.entry.device_id}: certificate serial"
        f" {result.certificate.serial_number:x}, valid until"
        f" {result.certificate.not_valid_after_utc:%Y-%m-%d}"
    )
    print(f"signing key: {result.entry.signing_key_id}")
    print(f"bundle: {result.bundle_path}")
    return 0


def _cmd_device_install(args: argparse.Namespace) -> int:
    installed = device.install_bundle(args.bundle, args.dir, config_root=args.config_root)
    print(f"installed bundle for {installed.device_id} into {installed.directory}")
    print(f"certificate valid until {installed.certificate_not_after}")
    if installed.config_kept:
        print(f"kept the existing {installed.config.name}; new one saved as .provisioned")
    return 0


def _cmd_device_check(args: argparse.Namespace) -> int:
    config = args.config or (args.dir / "agent.toml")
    checks = selftest.run(config, timeout_s=args.timeout_s)
    for check in checks:
        print(f"{'OK  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    return 0 if all(c.ok for c in checks) else EXIT_CHECK_FAILED


def _cmd_web_cert(args: argparse.Namespace) -> int:
    from provisioning.webcert import issue_web_certificate

    issued = issue_web_certificate(Dock(args.dock), args.host or [])
    print(f"console certificate {issued.cert} (key {issued.key}) for {', '.join(issued.hosts)}")
    print(f"browsers trust it through the dock CA: {issued.ca}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    dock = Dock(args.dock)
    entries = dock.devices()
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2))
        return 0
    if not entries:
        print("no devices enrolled")
        return 0
    print(f"{'DEVICE':<24} {'STATUS':<8} {'ENROLLED':<21} {'CERT UNTIL':<21} SIGNING KEY")
    for e in entries:
        cert_until = e.certificates[-1].not_after_utc if e.certificates else "-"
        print(
            f"{e.device_id:<24} {e.status:<8} {e.enrolled_utc:<21} {cert_until:<21} "
            f"{e.signing_key_id}"
        )
        if e.revoked_utc:
            print(f"{'':<24} revoked {e.revoked_utc}: {e.revoke_reason}")
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    dock = Dock(args.dock)
    entry = dock.revoke(args.device_id, args.reason)
    print(f"revoked {entry.device_id} ({len(entry.certificates)} certificate(s) on the CRL)")
    print(f"CRL: {dock.paths.crl}")
    print(
        "restart the broker now (e.g. systemctl restart mosquitto): a reload refuses new"
        " connections but leaves an open session of the device running"
    )
    print(
        "a receiver following this dock's registry (dock_registry in receiver.toml) quarantines"
        " the device's uploads from now on; any other receiver: bodycam-receiver device revoke"
    )
    return 0


def _cmd_crl(args: argparse.Namespace) -> int:
    dock = Dock(args.dock)
    path = dock.write_crl()
    print(f"CRL re-issued: {path} ({len(dock.revoked_serials())} revoked serial(s))")
    return 0


def _cmd_trust(args: argparse.Namespace) -> int:
    dock = Dock(args.dock)
    if args.add:
        dock.add_trust(args.add)
        print(f"{dock.paths.root} now also trusts the CA of {args.add}")
    if args.remove:
        dock.remove_trust(args.remove)
        print(f"{dock.paths.root} no longer trusts the CA of {args.remove}")
    for other in dock.also_trusted:
        ca = pki.load_certificate(other.paths.ca_cert)
        print(f"also trusted: {other.paths.root} ({pki.fingerprint(ca)})")
    print("regenerate the broker config and restart the broker for it to take effect")
    return 0


def _cmd_broker_config(args: argparse.Namespace) -> int:
    dock = Dock(args.dock)
    settings = broker.BrokerSettings(
        listen_host=args.listen_host,
        port=args.port,
        message_size_limit_bytes=args.message_size_limit_bytes,
        max_queued_messages=args.max_queued_messages,
        max_queued_bytes=args.max_queued_bytes,
        run_as_user=args.user,
    )
    files = broker.write_broker_config(
        dock, args.out, settings, receiver_data_dir=args.receiver_data_dir
    )
    print(f"mosquitto config: {files.config}")
    print(f"ACL: {files.acl}")
    print(f"receiver config snippet: {files.receiver_config}")
    print(f"run: mosquitto -c {files.config}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bodycam-provision",
        description="Provision body-worn recorders and their dock (PKI, bundles, broker config).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="create the dock's CA and the receiver's identity")
    p.add_argument("--dock", type=Path, required=True, help="dock directory to create")
    p.add_argument("--host", action="append", help="broker name/address devices use (repeat)")
    p.add_argument("--port", type=int, default=DEFAULT_BROKER_PORT, help="broker TLS port")
    p.add_argument("--name", default="bodycam dock", help="organisation name in the CA")
    p.add_argument("--ca-validity-days", type=int, default=pki.CA_VALIDITY_DAYS)
    p.add_argument(
        "--receiver-keys-from",
        type=Path,
        help="old dock whose receipt and encryption keys to keep (CA rotation)",
    )
    p.set_defaults(func=_cmd_init)

    p = sub.add_parser("device-request", help="(on the device) make keys and an enrolment request")
    p.add_argument("--device-id", required=True)
    p.add_argument("--dir", type=Path, required=True, help="the device's key directory")
    p.add_argument("--out", type=Path, required=True, help="where to write the request")
    p.set_defaults(func=_cmd_device_request)

    p = sub.add_parser("enrol", help="sign a device's request, register it, write its bundle")
    p.add_argument("request", type=Path, help="request file or directory holding one")
    p.add_argument("--dock", type=Path, required=True)
    p.add_argument("--out", type=Path, help="bundle path (default DOCK/bundles/<id>.tar.gz)")
    p.add_argument("--renew", action="store_true", help="new certificate, same device and key")
    p.add_argument("--validity-days", type=int, default=pki.CERT_VALIDITY_DAYS)
    p.set_defaults(func=_cmd_enrol)

    p = sub.add_parser("device-install", help="(on the device) check and install a bundle")
    p.add_argument("bundle", type=Path)
    p.add_argument("--dir", type=Path, required=True, help="the device's key directory")
    p.add_argument(
        "--config-root",
        type=Path,
        help="path of --dir as the running device sees it (default: --dir), e.g. /etc/bodycam"
        " when the SD card is mounted elsewhere",
    )
    p.set_defaults(func=_cmd_device_install)

    p = sub.add_parser("device-check", help="(on the device) check its material and the broker")
    p.add_argument("--dir", type=Path, default=Path("/etc/bodycam"), help="the device's directory")
    p.add_argument("--config", type=Path, help="agent.toml (default: DIR/agent.toml)")
    p.add_argument("--timeout-s", type=float, default=10.0)
    p.set_defaults(func=_cmd_device_check)

    p = sub.add_parser("list", help="list enrolled devices")
    p.add_argument("--dock", type=Path, required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("revoke", help="revoke a lost or retired device")
    p.add_argument("--dock", type=Path, required=True)
    p.add_argument("--device-id", required=True)
    p.add_argument("--reason", required=True)
    p.set_defaults(func=_cmd_revoke)

    p = sub.add_parser("crl", help="re-issue the CRL from the registry")
    p.add_argument("--dock", type=Path, required=True)
    p.set_defaults(func=_cmd_crl)

    p = sub.add_parser("trust", help="also trust another dock's CA (CA rotation)")
    p.add_argument("--dock", type=Path, required=True)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--add", type=Path, help="the other dock directory")
    group.add_argument("--remove", type=Path, help="the other dock directory")
    p.set_defaults(func=_cmd_trust)

    p = sub.add_parser("broker-config", help="write mosquitto.conf, ACL and receiver.toml")
    p.add_argument("--dock", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--listen-host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=None, help="default: the dock's broker port")
    p.add_argument(
        "--message-size-limit-bytes", type=int, default=broker.DEFAULT_MESSAGE_SIZE_LIMIT_BYTES
    )
    p.add_argument("--max-queued-messages", type=int, default=broker.DEFAULT_MAX_QUEUED_MESSAGES)
    p.add_argument("--max-queued-bytes", type=int, default=broker.DEFAULT_MAX_QUEUED_BYTES)
    p.add_argument("--user", help="user Mosquitto runs as when started as root")
    p.add_argument(
        "--receiver-data-dir", type=Path, help="the receiver's data_dir, written to receiver.toml"
    )
    p.set_defaults(func=_cmd_broker_config)

    p = sub.add_parser("web-cert", help="issue the review console's TLS certificate")
    p.add_argument("--dock", type=Path, required=True, help="the dock directory")
    p.add_argument(
        "--host", action="append", help="a name or address browsers use (repeat; loopback always)"
    )
    p.set_defaults(func=_cmd_web_cert)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except (ProvisioningError, EvidenceError) as exc:
        print(f"bodycam-provision: error: {exc}", file=sys.stderr)
        return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
