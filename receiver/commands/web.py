"""``bodycam-receiver web``: the review console (HTTPS, loopback unless ``--listen`` says so).

Failure posture: a missing certificate or a bad ``--listen`` is one line and exit 2 before
anything listens (see :mod:`receiver.web.server`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from receiver.commands import bind_raw
from receiver.config import ReceiverConfig
from receiver.errors import ReceiverConfigError


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from receiver.web.server import DEFAULT_HOST, DEFAULT_PORT

    web = sub.add_parser("web", help="serve the review console over HTTPS")
    web.add_argument(
        "--listen",
        default=f"{DEFAULT_HOST}:{DEFAULT_PORT}",
        help=f"HOST:PORT to listen on (default {DEFAULT_HOST}:{DEFAULT_PORT}, loopback only)",
    )
    web.add_argument(
        "--cert", type=Path, help="TLS certificate (default: the dock's receiver/web.pem)"
    )
    web.add_argument("--key", type=Path, help="TLS key (default: the dock's receiver/web.key)")
    bind_raw(web, _web)


def _web(args: argparse.Namespace, config: ReceiverConfig) -> int:
    from receiver.web.server import WebSettings, default_tls_paths, parse_listen, serve

    host, port = parse_listen(args.listen)
    defaults = default_tls_paths(config)
    cert = args.cert or (defaults[0] if defaults else None)
    key = args.key or (defaults[1] if defaults else None)
    if cert is None or key is None:
        raise ReceiverConfigError(
            None,
            "no console certificate: give --cert and --key, or set dock_registry in the "
            "configuration and run bodycam-provision web-cert --dock DIR",
        )
    if args.data_dir is not None and not (config.data_dir / "receiver.db").is_file():
        # a mistyped --data-dir is reported; a configured, provisioned one may still be empty
        raise ReceiverConfigError(
            config.data_dir, "holds no receiver.db: not a receiver data directory"
        )
    serve(config, WebSettings(host, port, cert, key))
    return 0
