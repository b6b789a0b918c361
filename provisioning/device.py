"""Device-side provisioning: make the device's keys and request, install its bundle.

Run on the device itself (or on its SD card mounted in a trusted machine). The device directory
holds::

    device.json          the device id this directory belongs to
    signing.key|.pub     Ed25519 evidence-signing key (0600); never leaves the device
    tls.key  tls.csr     TLS key (0600) and its certificate request
    device.pem ca.pem receiver-receipt.pub receiver-encryption.pub agent.toml   from the bundle

Failure posture: :func:`create_request` reuses keys that already exist (so re-running it, or a
renewal, keeps the device's identity) and refuses a directory that belongs to another id.
:func:`install_bundle` checks everything (integrity, device id, certificate issued by the CA,
certificate matches this device's TLS key, validity, key types) and raises :class:`BundleError`
listing every problem before writing anything.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from evidence.errors import EvidenceError
from evidence.fsutil import atomic_write
from evidence.keys import (
    generate_signing_key,
    key_id,
    load_signing_key,
    save_public_key,
    save_signing_key,
)
from provisioning import bundle, configs, pki
from provisioning.errors import BundleError, DockError, MaterialError
from provisioning.ids import validate_device_id
from provisioning.request import REQUEST_SUFFIX, EnrolmentRequest

log = logging.getLogger(__name__)

DEVICE_FILE = "device.json"
SIGNING_KEY = "signing.key"
SIGNING_PUB = "signing.pub"
TLS_KEY = "tls.key"
TLS_CSR = "tls.csr"


@dataclass(frozen=True)
class Installed:
    device_id: str
    directory: Path
    config: Path
    certificate_not_after: str
    config_kept: bool


def _device_id_of(device_dir: Path) -> str | None:
    path = device_dir / DEVICE_FILE
    if not path.exists():
        return None
    try:
        return str(json.loads(path.read_text("utf-8"))["device_id"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DockError(device_dir, f"{DEVICE_FILE} is unreadable: {exc}") from exc


def create_request(device_dir: Path, device_id: str, out_dir: Path) -> Path:
    """Generate (or reuse) the device's keys in ``device_dir``; write the request to ``out_dir``.

    Returns the request file's path. Only public material is written to ``out_dir``.
    """
    validate_device_id(device_id)
    device_dir, out_dir = Path(device_dir), Path(out_dir)
    current = _device_id_of(device_dir)
    if current is not None and current != device_id:
        raise DockError(
            device_dir, f"this device directory belongs to {current!r}, not {device_id!r}"
        )
    device_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(device_dir, 0o700)
    signing_path = device_dir / SIGNING_KEY
    if signing_path.exists():
        signing_key = load_signing_key(signing_path)
    else:
        signing_key = generate_signing_key()
        save_signing_key(signing_path, signing_key)
    save_public_key(device_dir / SIGNING_PUB, signing_key.public_key())
    tls_path = device_dir / TLS_KEY
    if tls_path.exists():
        tls_key = pki.load_private_key(tls_path)
    else:
        tls_key = pki.generate_tls_key()
        pki.save_private_key(tls_path, tls_key)
    csr = pki.create_csr(tls_key, device_id)
    pki.save_csr(device_dir / TLS_CSR, csr)
    atomic_write(
        device_dir / DEVICE_FILE, (json.dumps({"device_id": device_id}) + "\n").encode("utf-8")
    )
    request = EnrolmentRequest(device_id, csr, signing_key.public_key())
    out = out_dir / f"{device_id}{REQUEST_SUFFIX}"
    atomic_write(out, request.to_json(signing_key))
    log.info("wrote enrolment request %s (signing key %s)", out, request.signing_key_id)
    return out


def _check_material(
    b: bundle.Bundle, device_dir: Path, device_id: str
) -> tuple[list[str], x509.Certificate | None]:
    problems: list[str] = []
    cert: x509.Certificate | None = None
    cas: list[x509.Certificate] = []
    try:
        cert = x509.load_pem_x509_certificate(b.files[bundle.DEVICE_CERT])
    except ValueError as exc:
        problems.append(f"{bundle.DEVICE_CERT} is not a PEM certificate ({exc})")
    try:
        # Several CAs while the dock's CA is being rotated.
        cas = x509.load_pem_x509_certificates(b.files[bundle.CA_CERT])
        for ca in cas:
            constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
            if not constraints.ca:
                problems.append(f"{bundle.CA_CERT} holds a certificate that is not a CA")
    except ValueError as exc:
        problems.append(f"{bundle.CA_CERT} is not a PEM certificate ({exc})")
    except x509.ExtensionNotFound:
        problems.append(f"{bundle.CA_CERT} is not a CA certificate (no basic constraints)")
    for name, kind in (
        (bundle.RECEIPT_PUB, Ed25519PublicKey),
        (bundle.ENCRYPTION_PUB, X25519PublicKey),
    ):
        try:
            key = serialization.load_pem_public_key(b.files[name])
            if not isinstance(key, kind):
                problems.append(f"{name} holds a {type(key).__name__}, not {kind.__name__}")
        except ValueError as exc:
            problems.append(f"{name} is not a PEM public key ({exc})")
    if cert is not None:
        cn = pki.certificate_common_name(cert)
        if cn != device_id:
            problems.append(f"{bundle.DEVICE_CERT} is for {cn!r}, this device is {device_id!r}")
        if cas:
            reasons = []
            for ca in cas:
                try:
                    pki.check_issued_by(cert, ca)
                    break
                except MaterialError as exc:
                    reasons.append(exc.reason)
            else:
                problems.append(f"{bundle.DEVICE_CERT}: {reasons[0]}")
        try:
            pki.check_valid_now(cert)
        except MaterialError as exc:
            problems.append(f"{bundle.DEVICE_CERT}: {exc.reason}")
        try:
            tls_key = pki.load_private_key(device_dir / TLS_KEY)
            pki.check_key_matches(tls_key, cert)
        except MaterialError as exc:
            problems.append(
                f"{bundle.DEVICE_CERT} does not fit this device's TLS key {TLS_KEY}: {exc.reason}"
            )
    try:
        signing = load_signing_key(device_dir / SIGNING_KEY)
        expected = b.manifest.get("signing_key_id")
        if expected != key_id(signing.public_key()):
            problems.append(
                f"the bundle was made for signing key {expected}, this device has"
                f" {key_id(signing.public_key())}"
            )
    except EvidenceError as exc:
        problems.append(f"this device's signing key cannot be read: {exc}")
    return problems, cert


def install_bundle(
    bundle_path: Path, device_dir: Path, *, config_root: Path | None = None
) -> Installed:
    """Check a bundle against this device's keys and install its files into ``device_dir``.

    The installed ``agent.toml`` points at the files under ``config_root``: the directory's path
    as the running device will see it (default: ``device_dir`` itself; differs when the SD card
    is mounted on another machine).
    """
    bundle_path, device_dir = Path(bundle_path), Path(device_dir)
    root = Path(config_root) if config_root is not None else device_dir.resolve()
    b = bundle.read_bundle(bundle_path)
    device_id = _device_id_of(device_dir)
    if device_id is None:
        raise BundleError(
            bundle_path,
            [
                f"{device_dir} has no device keys;"
                " run `bodycam-provision device-request` there first"
            ],
        )
    problems: list[str] = []
    if b.device_id != device_id:
        problems.append(f"the bundle is for device {b.device_id!r}, this device is {device_id!r}")
    more, cert = _check_material(b, device_dir, device_id)
    problems.extend(more)
    broker = b.manifest.get("broker")
    if not (
        isinstance(broker, dict)
        and isinstance(broker.get("host"), str)
        and isinstance(broker.get("port"), int)
    ):
        problems.append(f"{bundle.MANIFEST} has no broker host and port")
    if problems or cert is None or not isinstance(broker, dict):
        raise BundleError(bundle_path, problems)
    agent_toml = configs.render_agent_config(
        device_id, broker["host"], broker["port"], root=root
    ).encode("utf-8")
    for name in (bundle.DEVICE_CERT, bundle.CA_CERT, bundle.RECEIPT_PUB, bundle.ENCRYPTION_PUB):
        atomic_write(device_dir / name, b.files[name])
    # A technician may have tuned the config; never overwrite a different one silently.
    config = device_dir / bundle.AGENT_CONFIG
    kept = config.exists() and config.read_bytes() != agent_toml
    if kept:
        atomic_write(device_dir / (bundle.AGENT_CONFIG + ".provisioned"), agent_toml)
        log.warning("kept existing %s; the bundle's version is beside it (.provisioned)", config)
    else:
        atomic_write(config, agent_toml)
    log.info("installed bundle for %s into %s", device_id, device_dir)
    return Installed(
        device_id=device_id,
        directory=device_dir,
        config=config,
        certificate_not_after=cert.not_valid_after_utc.strftime("%Y-%m-%d"),
        config_kept=kept,
    )
