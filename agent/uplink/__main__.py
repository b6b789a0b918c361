"""``python -m agent.uplink``: upload a spool at the dock, independent of ``bodycam-agent``.

Example::

    python -m agent.uplink --config /etc/bodycam/agent.toml --until-done --timeout-s 120

(the config written by ``bodycam-provision device-install`` has the broker, the mutual-TLS files
and the receiver's receipt key; flags override it).

Exit status: 0 when nothing is left pending (with ``--until-done``) or on a clean stop;
1 when records stay pending or were quarantined or refused; 2 on bad arguments or config.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

from agent.errors import AgentError
from agent.uplink.config import RETENTIONS, UplinkConfig
from agent.uplink.errors import UplinkConfigError, UplinkError
from agent.uplink.uploader import UploadResult, run_dock_upload
from evidence.errors import EvidenceError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bodycam-agent upload",
        description="Dock upload: send the spool to the receiver over MQTT (mutual TLS) and free "
        "space only against the receiver's signed receipts.",
    )
    p.add_argument(
        "--config",
        type=Path,
        help="the agent's TOML config: [uplink] settings and device.spool_dir (flags override)",
    )
    p.add_argument("--spool", type=Path, help="the spool (default: device.spool_dir of --config)")
    p.add_argument("--broker", help="HOST:PORT (default: the config's, else 127.0.0.1:8883)")
    p.add_argument("--device", help="device id (default: the only device in the spool)")
    p.add_argument("--receiver-key", help="receiver receipt public key (PEM)")
    p.add_argument("--ca", help="CA certificate: enables TLS")
    p.add_argument("--cert", help="client certificate (mutual TLS)")
    p.add_argument("--key", help="client certificate key (mutual TLS)")
    p.add_argument(
        "--allow-insecure",
        action="store_true",
        help="plain TCP without certificates (development brokers only)",
    )
    p.add_argument("--client-id")
    p.add_argument("--window-bytes", type=int)
    p.add_argument("--receipt-timeout-s", type=float)
    p.add_argument("--retention", choices=RETENTIONS)
    p.add_argument("--retention-min-age-s", type=float)
    p.add_argument("--until-done", action="store_true", help="exit when nothing is pending")
    p.add_argument("--timeout-s", type=float, help="give up after this long")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _progress(result: UploadResult, pending: int) -> None:
    print(
        f"[upload] sent {result.records_sent} records ({result.bytes_sent / 2**20:.1f} MiB), "
        f"receipted {result.receipted}, quarantined {result.quarantined}, pending {pending}, "
        f"freed {result.bytes_freed / 2**20:.1f} MiB",
        file=sys.stderr,
        flush=True,
    )


def _settings(args: argparse.Namespace) -> tuple[UplinkConfig, Path]:
    """The config file's [uplink] table (or defaults), with command-line flags on top.

    The device id also comes from the config ([device] id) unless ``--device`` names it."""
    spool: Path | None = args.spool
    if args.config is not None:
        from agent.config import load_config

        agent_config = load_config(args.config)
        config = replace(agent_config.uplink)
        spool = spool or agent_config.spool_path
        # a freshly provisioned device docks before its first recording: its spool is empty
        args.device = args.device or agent_config.device.id or None
    else:
        config = UplinkConfig()
    if spool is None:
        raise UplinkConfigError("spool", "give --spool or --config")
    if args.broker:
        host, _, port = args.broker.rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise UplinkConfigError("broker", f"{args.broker!r} is not HOST:PORT")
        config.broker_host, config.broker_port = host or "127.0.0.1", int(port)
    overrides = {
        "client_id": args.client_id,
        "ca_file": args.ca,
        "cert_file": args.cert,
        "key_file": args.key,
        "receiver_key_file": args.receiver_key,
        "window_bytes": args.window_bytes,
        "receipt_timeout_s": args.receipt_timeout_s,
        "retention": args.retention,
        "retention_min_age_s": args.retention_min_age_s,
    }
    for name, value in overrides.items():
        if value is not None:
            setattr(config, name, value)
    if args.allow_insecure:
        config.allow_insecure = True
    return config, spool


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config, spool = _settings(args)
    except AgentError as exc:  # UplinkError is a branch of this tree
        print(f"upload: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        result = run_dock_upload(
            spool,
            config,
            stop,
            device=args.device,
            until_done=args.until_done,
            timeout_s=args.timeout_s,
            progress=None if args.quiet else _progress,
        )
    except (UplinkError, EvidenceError) as exc:
        print(f"upload: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    failed = result.pending or result.quarantined or result.refused_publishes
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
