"""The review console's TLS server certificate, issued by the dock CA.

``bodycam-provision web-cert --dock D [--host NAME ...]`` writes ``receiver/web.pem`` and
``receiver/web.key`` in the dock (the paths ``bodycam-receiver web`` uses by default when the
receiver follows this dock's registry). Browsers on the clerks' machines trust the dock's
``ca/ca.pem`` once, then every reissued console certificate is trusted too. The SAN always holds
localhost and 127.0.0.1 (the console listens on loopback unless configured otherwise).

Failure posture: an uninitialised dock or an unusable CA raises a :class:`ProvisioningError`
subclass before anything is written; key and certificate are each written atomically (a rerun
replaces both, the old pair stays valid until it expires).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from provisioning import pki
from provisioning.dock import LOOPBACK_HOSTS, Dock

WEB_CN = "bodycam-web"
WEB_CERT_NAME = "web.pem"
WEB_KEY_NAME = "web.key"


@dataclass(frozen=True)
class WebCertificate:
    cert: Path
    key: Path
    ca: Path
    hosts: tuple[str, ...]
    fingerprint: str


def web_paths(dock_root: Path) -> tuple[Path, Path]:
    """Where a dock keeps the console's certificate and key."""
    receiver = Path(dock_root) / "receiver"
    return receiver / WEB_CERT_NAME, receiver / WEB_KEY_NAME


def issue_web_certificate(
    dock: Dock, hosts: Sequence[str] = (), *, validity_days: int = pki.CERT_VALIDITY_DAYS
) -> WebCertificate:
    names = tuple(dict.fromkeys([*hosts, *LOOPBACK_HOSTS]))
    ca = dock.authority()
    key = pki.generate_tls_key()
    cert = pki.issue_certificate(
        ca, key.public_key(), WEB_CN, server_hosts=names, client=False,
        validity_days=validity_days,
    )  # fmt: skip
    cert_path, key_path = web_paths(dock.paths.root)
    pki.save_private_key(key_path, key)
    pki.save_certificate(cert_path, cert)
    return WebCertificate(cert_path, key_path, dock.paths.ca_cert, names, pki.fingerprint(cert))
