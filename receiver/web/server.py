"""Serving the console: uvicorn over TLS with the certificate provisioning issues.

Failure posture: a missing or unreadable certificate or key is a :class:`ReceiverConfigError` naming
the file before anything listens; a non-loopback address is served only when asked for
explicitly (``--listen``), and is logged as such. Plain HTTP is never offered (the session
cookie is ``Secure``).
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from receiver.config import ReceiverConfig
from receiver.errors import ReceiverConfigError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8443
#: on SIGTERM, how long requests in progress may still take before connections are closed
GRACEFUL_SHUTDOWN_S = 3


@dataclass(frozen=True)
class WebSettings:
    host: str
    port: int
    cert: Path
    key: Path


def default_tls_paths(config: ReceiverConfig) -> tuple[Path, Path] | None:
    """The dock's console certificate, when the receiver follows a provisioning dock."""
    if config.dock_registry is None:
        return None
    from provisioning.webcert import web_paths

    return web_paths(config.dock_registry.parent.parent)


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ReceiverConfigError(None, f"--listen {text!r}: expected HOST:PORT")
    return host.strip("[]") or DEFAULT_HOST, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_tls(cert: Path, key: Path) -> None:
    """Load the pair once now, so a bad file is one clear line instead of a server crash."""
    for path, what in ((cert, "certificate"), (key, "key")):
        if not path.is_file():
            raise ReceiverConfigError(
                path, f"console TLS {what} not found (bodycam-provision web-cert --dock DIR)"
            )
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ReceiverConfigError(cert, f"cannot use this certificate and key: {exc}") from exc


def serve(config: ReceiverConfig, settings: WebSettings) -> None:
    import uvicorn

    from receiver.web.app import create_app
    from receiver.web.backend import Backend

    check_tls(settings.cert, settings.key)
    if not is_loopback(settings.host):
        log.warning("console listening on %s, beyond this machine", settings.host)
    app = create_app(Backend(config))
    log.info("console on https://%s:%d/", settings.host, settings.port)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.cert),
        ssl_keyfile=str(settings.key),
        log_level="warning",
        server_header=False,
        proxy_headers=False,
        access_log=False,
        # An idle keep-alive TLS connection otherwise holds SIGTERM (systemctl stop) until the
        # client goes away; requests in progress get this long to finish.
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
