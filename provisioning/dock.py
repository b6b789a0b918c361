"""The dock's provisioning state: CA, receiver identity, device registry, CRL and bundles.

Layout of a dock directory (created by :meth:`Dock.init`)::

    dock.json                    broker address and names
    ca/ca.pem  ca/crl.pem        public: Mosquitto and the receiver read these
    ca/private/ca.key            the CA key (0600, directory 0700): back it up offline
    receiver/broker.pem|.key     the broker's TLS server certificate (SAN: loopback + hosts)
    receiver/client.pem|.key     the receiver's MQTT client certificate (CN "receiver")
    receiver/receipt.key|.pub    Ed25519 key that signs receipts
    receiver/encryption.key|.pub X25519 key that spool media is encrypted to
    devices/registry.json        device registry (see :mod:`provisioning.registry`)
    devices/<id>/                the device's enrolment request and issued certificates
    bundles/<id>.tar.gz          device bundles

Failure posture: every operation checks its input first and raises a :class:`ProvisioningError`
subclass with a clear message before changing anything; files are written atomically, so an
interrupted command leaves the old state or the new one. The dock never sees a device's private
keys.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from evidence import encryption
from evidence.fsutil import atomic_write
from evidence.keys import (
    generate_signing_key,
    load_public_key,
    load_signing_key,
    public_pem,
    save_public_key,
    save_signing_key,
)
from provisioning import bundle, configs, pki
from provisioning.errors import DockError, MaterialError, RegistryError
from provisioning.ids import BROKER_CN, RECEIVER_CN, validate_device_id
from provisioning.registry import ACTIVE, REVOKED, CertificateEntry, DeviceEntry, Registry
from provisioning.request import EnrolmentRequest, load_request

log = logging.getLogger(__name__)

DOCK_FORMAT = "bodycam-dock/1"
DEFAULT_BROKER_PORT = 8883
LOOPBACK_HOSTS = ("localhost", "127.0.0.1")


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class DockPaths:
    root: Path

    @property
    def settings(self) -> Path:
        return self.root / "dock.json"

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def ca_cert(self) -> Path:
        return self.ca_dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.ca_dir / "private" / "ca.key"

    @property
    def crl(self) -> Path:
        return self.ca_dir / "crl.pem"

    @property
    def receiver_dir(self) -> Path:
        return self.root / "receiver"

    @property
    def broker_cert(self) -> Path:
        return self.receiver_dir / "broker.pem"

    @property
    def broker_key(self) -> Path:
        return self.receiver_dir / "broker.key"

    @property
    def client_cert(self) -> Path:
        return self.receiver_dir / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.receiver_dir / "client.key"

    @property
    def receipt_key(self) -> Path:
        return self.receiver_dir / "receipt.key"

    @property
    def receipt_pub(self) -> Path:
        return self.receiver_dir / "receipt.pub"

    @property
    def encryption_key(self) -> Path:
        return self.receiver_dir / "encryption.key"

    @property
    def encryption_pub(self) -> Path:
        return self.receiver_dir / "encryption.pub"

    @property
    def registry(self) -> Path:
        return self.root / "devices" / "registry.json"

    def device_dir(self, device_id: str) -> Path:
        return self.root / "devices" / validate_device_id(device_id)

    def bundle(self, device_id: str) -> Path:
        return self.root / "bundles" / f"{validate_device_id(device_id)}.tar.gz"


@dataclass(frozen=True)
class Enrolment:
    entry: DeviceEntry
    certificate: x509.Certificate
    bundle_path: Path


class Dock:
    """An initialised dock directory. Construct with ``Dock(path)`` or create with ``Dock.init``."""

    def __init__(self, root: Path) -> None:
        self.paths = DockPaths(Path(root))
        try:
            self.settings: dict[str, Any] = json.loads(self.paths.settings.read_text("utf-8"))
        except FileNotFoundError:
            raise DockError(
                self.paths.root, "not initialised (run `bodycam-provision init` first)"
            ) from None
        except (OSError, ValueError) as exc:
            raise DockError(self.paths.root, f"dock.json is unreadable: {exc}") from exc
        if self.settings.get("format") != DOCK_FORMAT:
            raise DockError(self.paths.root, f"dock.json is not a {DOCK_FORMAT} file")
        self.registry = Registry(self.paths.registry)

    # ------------------------------------------------------------------------------ init

    @classmethod
    def init(
        cls,
        root: Path,
        *,
        broker_hosts: list[str] | tuple[str, ...] = (),
        broker_port: int = DEFAULT_BROKER_PORT,
        name: str = "bodycam dock",
        ca_validity_days: int = pki.CA_VALIDITY_DAYS,
        receiver_keys_from: Path | None = None,
    ) -> Dock:
        """Create the CA, the receiver's identity and an empty CRL in a new dock directory.

        ``broker_hosts``: names/addresses devices use to reach the broker; the first one goes into
        device configs (default ``localhost``). localhost and 127.0.0.1 are always in the SAN.
        ``receiver_keys_from``: another dock whose receipt and encryption keys this one keeps
        (CA rotation: recordings already encrypted to the old key stay readable).
        """
        paths = DockPaths(Path(root))
        if paths.settings.exists():
            raise DockError(paths.root, "already initialised; refusing to overwrite its CA")
        if not 0 < broker_port < 65536:
            raise DockError(paths.root, f"broker port {broker_port} is not a TCP port")
        hosts = list(dict.fromkeys([*broker_hosts, *LOOPBACK_HOSTS]))
        source = Dock(receiver_keys_from) if receiver_keys_from is not None else None
        paths.root.mkdir(parents=True, exist_ok=True)
        paths.ca_key.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(paths.ca_key.parent, 0o700)

        # A distinct subject per CA: during a rotation OpenSSL finds issuers and CRLs by name.
        ca_cn = f"{name} CA {pki.utcnow():%Y-%m-%d} {os.urandom(4).hex()}"
        ca = pki.create_ca(ca_cn, organisation=name, validity_days=ca_validity_days)
        pki.save_private_key(paths.ca_key, ca.key)
        pki.save_certificate(paths.ca_cert, ca.cert)
        pki.save_crl(paths.crl, pki.build_crl(ca, []))

        broker_key = pki.generate_tls_key()
        broker_cert = pki.issue_certificate(
            ca, broker_key.public_key(), BROKER_CN, server_hosts=hosts, client=False
        )
        pki.save_private_key(paths.broker_key, broker_key)
        pki.save_certificate(paths.broker_cert, broker_cert)

        client_key = pki.generate_tls_key()
        client_cert = pki.issue_certificate(ca, client_key.public_key(), RECEIVER_CN)
        pki.save_private_key(paths.client_key, client_key)
        pki.save_certificate(paths.client_cert, client_cert)

        if source is not None:
            receipt_key = load_signing_key(source.paths.receipt_key)
            enc_key = encryption.load_encryption_key(source.paths.encryption_key)
        else:
            receipt_key = generate_signing_key()
            enc_key = encryption.generate_encryption_key()
        save_signing_key(paths.receipt_key, receipt_key)
        save_public_key(paths.receipt_pub, receipt_key.public_key())

        encryption.save_encryption_key(paths.encryption_key, enc_key)
        encryption.save_encryption_public_key(paths.encryption_pub, enc_key.public_key())

        settings = {
            "format": DOCK_FORMAT,
            "name": name,
            "created_utc": _iso(pki.utcnow()),
            "broker_hosts": hosts,
            "broker_port": broker_port,
        }
        atomic_write(paths.settings, (json.dumps(settings, indent=2) + "\n").encode("utf-8"))
        log.info("initialised dock %s (CA %s)", paths.root, pki.fingerprint(ca.cert))
        return cls(paths.root)

    # ---------------------------------------------------------------------------- accessors

    @property
    def broker_host(self) -> str:
        return str(self.settings["broker_hosts"][0])

    @property
    def broker_port(self) -> int:
        return int(self.settings["broker_port"])

    def authority(self) -> pki.Authority:
        key = pki.load_private_key(self.paths.ca_key)
        cert = pki.load_certificate(self.paths.ca_cert)
        pki.check_key_matches(key, cert, cert_path=self.paths.ca_cert)
        return pki.Authority(key, cert)

    def devices(self) -> list[DeviceEntry]:
        return self.registry.entries()

    def device(self, device_id: str) -> DeviceEntry:
        entry = self.registry.get(validate_device_id(device_id))
        if entry is None:
            raise RegistryError(device_id, "not enrolled at this dock")
        return entry

    # --------------------------------------------------------------------------- enrolment

    def enrol(
        self,
        request_path: Path,
        *,
        renew: bool = False,
        bundle_path: Path | None = None,
        validity_days: int = pki.CERT_VALIDITY_DAYS,
    ) -> Enrolment:
        """Sign a device's CSR, register it and write its bundle.

        A device id is enrolled once; ``renew`` issues a new certificate to an active device that
        presents the *same* signing key (its evidence chain continues). A revoked id is never
        reused: a replacement device gets a new id.
        """
        request = load_request(request_path)
        device_id = request.device_id
        ca = self.authority()
        public_key = request.csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise MaterialError(
                Path(request_path),
                f"the CSR's key is {type(public_key).__name__}; device TLS keys are EC P-256",
            )
        now = pki.utcnow()
        with self.registry.update() as entries:
            existing = entries.get(device_id)
            if existing is not None:
                if existing.status == REVOKED:
                    raise RegistryError(
                        device_id,
                        "was revoked; a revoked id is never reused, enrol the replacement under"
                        " a new id",
                    )
                if not renew:
                    raise RegistryError(
                        device_id,
                        "is already enrolled; use --renew to issue a new certificate to the same"
                        " device",
                    )
                if existing.signing_key_id != request.signing_key_id:
                    raise RegistryError(
                        device_id,
                        f"renewal presents signing key {request.signing_key_id}, but the device"
                        f" is registered with {existing.signing_key_id}",
                    )
            elif renew:
                raise RegistryError(device_id, "cannot be renewed: it is not enrolled")
            cert = pki.issue_certificate(ca, public_key, device_id, validity_days=validity_days)
            cert_entry = CertificateEntry(
                serial=cert.serial_number,
                fingerprint=pki.fingerprint(cert),
                issued_utc=_iso(now),
                not_after_utc=_iso(cert.not_valid_after_utc),
            )
            if existing is None:
                entry = DeviceEntry(
                    device_id=device_id,
                    status=ACTIVE,
                    enrolled_utc=_iso(now),
                    signing_key_id=request.signing_key_id,
                    signing_public_pem=public_pem(request.signing_public).decode("ascii"),
                    certificates=[cert_entry],
                )
            else:
                entry = existing
                entry.certificates.append(cert_entry)
            entries[device_id] = entry
            dev_dir = self.paths.device_dir(device_id)
            pki.save_certificate(dev_dir / f"cert-{cert.serial_number:x}.pem", cert)
            pki.save_certificate(dev_dir / "device.pem", cert)
            pki.save_csr(dev_dir / f"csr-{cert.serial_number:x}.pem", request.csr)
            save_public_key(dev_dir / "signing.pub", request.signing_public)
            out = Path(bundle_path) if bundle_path else self.paths.bundle(device_id)
            # Inside the update: if the bundle cannot be written the registry stays unchanged.
            self.write_bundle(request, cert, out)
        log.info("enrolled %s (certificate serial %x)", device_id, cert.serial_number)
        return Enrolment(entry, cert, out)

    def write_bundle(self, request: EnrolmentRequest, cert: x509.Certificate, out: Path) -> None:
        files = {
            bundle.AGENT_CONFIG: self.agent_config(request.device_id).encode("utf-8"),
            bundle.DEVICE_CERT: cert.public_bytes(serialization.Encoding.PEM),
            bundle.CA_CERT: self.trusted_ca_pem(),
            bundle.RECEIPT_PUB: public_pem(load_public_key(self.paths.receipt_pub)),
            bundle.ENCRYPTION_PUB: self.paths.encryption_pub.read_bytes(),
        }
        manifest = {
            "device_id": request.device_id,
            "created_utc": _iso(pki.utcnow()),
            "dock": self.settings.get("name"),
            "broker": {"host": self.broker_host, "port": self.broker_port},
            "certificate_serial": f"{cert.serial_number:x}",
            "signing_key_id": request.signing_key_id,
            "receiver_encryption_key_id": encryption.recipient_id(
                encryption.load_encryption_public_key(self.paths.encryption_pub)
            ),
        }
        bundle.write_bundle(out, manifest, files)

    def agent_config(self, device_id: str) -> str:
        """The agent config for the bundle, for a device keeping its files in /etc/bodycam."""
        return configs.render_agent_config(device_id, self.broker_host, self.broker_port)

    # ------------------------------------------------------------------------ CA rotation

    @property
    def also_trusted(self) -> list[Dock]:
        """Other docks whose CA this dock's broker and bundles also trust (CA rotation)."""
        return [Dock(Path(p)) for p in self.settings.get("also_trust", [])]

    def add_trust(self, other_root: Path) -> None:
        """Trust ``other_root``'s CA as well: in bundles' ca.pem and the broker's cafile/crlfile.

        Used while moving devices from one CA to another; undo with :meth:`remove_trust`.
        """
        other = Dock(other_root)
        mine = pki.load_certificate(self.paths.ca_cert)
        theirs = pki.load_certificate(other.paths.ca_cert)
        if pki.fingerprint(mine) == pki.fingerprint(theirs):
            raise DockError(self.paths.root, f"{other_root} has this dock's own CA")
        current = [str(Path(p)) for p in self.settings.get("also_trust", [])]
        target = str(other.paths.root.resolve())
        if target in current:
            raise DockError(self.paths.root, f"already trusts the CA of {other_root}")
        self._save_settings({**self.settings, "also_trust": [*current, target]})
        log.info("dock %s now also trusts the CA of %s", self.paths.root, target)

    def remove_trust(self, other_root: Path) -> None:
        target = str(Path(other_root).resolve())
        current = [str(Path(p)) for p in self.settings.get("also_trust", [])]
        if target not in current:
            raise DockError(self.paths.root, f"does not trust the CA of {other_root}")
        self._save_settings({**self.settings, "also_trust": [p for p in current if p != target]})

    def _save_settings(self, settings: dict[str, Any]) -> None:
        atomic_write(self.paths.settings, (json.dumps(settings, indent=2) + "\n").encode("utf-8"))
        self.settings = settings

    def trusted_ca_pem(self) -> bytes:
        """This dock's CA certificate followed by those of the docks it also trusts."""
        parts = [self.paths.ca_cert.read_bytes()]
        parts += [d.paths.ca_cert.read_bytes() for d in self.also_trusted]
        return b"".join(p if p.endswith(b"\n") else p + b"\n" for p in parts)

    def trusted_crl_pem(self) -> bytes:
        """CRLs of every trusted CA: with CRL checking on, a CA without one is refused."""
        parts = [self.paths.crl.read_bytes()]
        parts += [d.paths.crl.read_bytes() for d in self.also_trusted]
        return b"".join(p if p.endswith(b"\n") else p + b"\n" for p in parts)

    # --------------------------------------------------------------------------- revocation

    def revoke(self, device_id: str, reason: str) -> DeviceEntry:
        """Mark a device revoked and put all its certificates on the CRL.

        Restart the broker afterwards: a SIGHUP makes Mosquitto 2.0 refuse new connections of
        the device but does not end a session it already has open.
        """
        validate_device_id(device_id)
        if not reason.strip():
            raise RegistryError(device_id, "a revocation needs a reason (e.g. 'lost on patrol')")
        ca = self.authority()
        with self.registry.update() as entries:
            entry = entries.get(device_id)
            if entry is None:
                raise RegistryError(device_id, "not enrolled at this dock; nothing to revoke")
            if entry.status == REVOKED:
                raise RegistryError(device_id, f"already revoked on {entry.revoked_utc}")
            entry.status = REVOKED
            entry.revoked_utc = _iso(pki.utcnow())
            entry.revoke_reason = reason.strip()
            self._write_crl(ca, entries.values())
        log.warning("revoked %s: %s", device_id, reason)
        return entry

    def write_crl(self) -> Path:
        """Re-issue the CRL from the registry (e.g. to refresh it; revoke does this itself)."""
        ca = self.authority()
        self._write_crl(ca, self.registry.entries())
        return self.paths.crl

    def _write_crl(self, ca: pki.Authority, entries: Any) -> None:
        revoked: list[tuple[int, dt.datetime]] = []
        for entry in entries:
            if entry.status != REVOKED:
                continue
            when = dt.datetime.strptime(str(entry.revoked_utc), "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=dt.UTC
            )
            revoked.extend((c.serial, when) for c in entry.certificates)
        pki.save_crl(self.paths.crl, pki.build_crl(ca, revoked))

    def revoked_serials(self) -> set[int]:
        crl = pki.load_crl(self.paths.crl)
        return {r.serial_number for r in crl}
