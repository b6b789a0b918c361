"""A whole dock for integration tests, provisioned like a real one.

``bodycam-provision init`` (a provisioning dock: CA, receiver identity, keys), ``broker-config``
(a private Mosquitto with mutual TLS, the per-device ACL and the CRL, on a free loopback port),
the receiver service as a process with the generated ``receiver.toml`` (so it follows the
dock's device registry and decrypts with the dock's key), and devices enrolled through
``device-request`` / ``enrol`` / ``device-install``. Helpers register devices, create cases,
run the uplink with a device's certificate and read the receiver CLI's JSON.

PKI set-up is cheap (measured: ``Dock.init`` ~12 ms, one enrolment ~13 ms), so every test gets
its own dock and broker: no broker session state leaks from one test into the next.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.uplink import UplinkConfig, UploadResult, run_dock_upload
from evidence.keys import save_signing_key
from provisioning import device, pki
from provisioning.broker import BrokerSettings
from provisioning.dock import Dock as ProvisioningDock
from tests.support.broker import ProvisionedBroker, free_port
from tests.support.receiver import ReceiverProcess
from tests.support.spool import BuiltSpool

CASE = "JY-2026-0001"


@dataclass(frozen=True)
class DeviceIdentity:
    """A provisioned device directory (what ``device-install`` leaves on the device)."""

    device_id: str
    dir: Path

    @property
    def cert(self) -> Path:
        return self.dir / "device.pem"

    @property
    def key(self) -> Path:
        return self.dir / "tls.key"

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def signing_key(self) -> Path:
        return self.dir / "signing.key"

    @property
    def encryption_pub(self) -> Path:
        return self.dir / "receiver-encryption.pub"

    @property
    def agent_toml(self) -> Path:
        return self.dir / "agent.toml"


class Dock:
    def __init__(
        self,
        base: Path,
        settings: BrokerSettings | None = None,
        *,
        extra_acl: Sequence[str] = (),
    ) -> None:
        self.base = base
        port = free_port()
        self.pki = ProvisioningDock.init(base / "pki", broker_hosts=["127.0.0.1"], broker_port=port)
        self.broker = ProvisionedBroker(
            base / "broker", self.pki, settings, port=port, extra_acl=extra_acl
        )
        self.data_dir = base / "receiver-data"
        self.broker.receiver_data_dir = self.data_dir
        self.receiver: ReceiverProcess | None = None
        self.receiver_pub = self.pki.paths.receipt_pub
        self.identities: dict[str, DeviceIdentity] = {}

    @property
    def receiver_config(self) -> Path:
        return self.broker.receiver_config

    def start(self, *, receiver: bool = True) -> Dock:
        self.broker.start()
        self.receiver = ReceiverProcess(
            self.data_dir, self.broker.host, self.broker.port, config=self.receiver_config
        )
        if receiver:
            self.receiver.start()
        return self

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.stop()
        self.broker.stop()

    @property
    def rx(self) -> ReceiverProcess:
        assert self.receiver is not None
        return self.receiver

    def cli_text(self, *args: str) -> tuple[int, str]:
        assert self.receiver is not None
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = self.receiver.cli(*args)
        return code, out.getvalue()

    def cli_json(self, *args: str) -> Any:
        _code, text = self.cli_text(*args, "--json")
        return json.loads(text)

    # -- devices ---------------------------------------------------------------------------
    def enrol(self, device_id: str, key: Ed25519PrivateKey | None = None) -> DeviceIdentity:
        """device-request (with ``key`` as the device's signing key if given), enrol at the
        dock, device-install: the receiver learns the device from the dock's registry."""
        dev_dir = self.base / "devices" / device_id
        if key is not None and not (dev_dir / "signing.key").exists():
            dev_dir.mkdir(parents=True, exist_ok=True)
            save_signing_key(dev_dir / "signing.key", key)
        request = device.create_request(dev_dir, device_id, self.base / "requests")
        result = self.pki.enrol(request)
        device.install_bundle(result.bundle_path, dev_dir)
        ident = DeviceIdentity(device_id, dev_dir)
        self.identities[device_id] = ident
        return ident

    def register(self, spool: BuiltSpool) -> DeviceIdentity:
        return self.enrol(spool.device, spool.key)

    def revoke(self, device_id: str, reason: str = "lost on patrol") -> None:
        """``bodycam-provision revoke`` + the broker restart the technician's guide asks for."""
        self.pki.revoke(device_id, reason)
        self.broker.restart()

    def client_identity(self, name: str) -> tuple[Path, Path]:
        """A client certificate from the dock CA for a non-device test client (e.g. a monitor;
        give it rights with ``extra_acl``)."""
        key = pki.generate_tls_key()
        cert = pki.issue_certificate(self.pki.authority(), key.public_key(), name)
        d = self.base / "clients"
        pki.save_certificate(d / f"{name}.pem", cert)
        pki.save_private_key(d / f"{name}.key", key)
        return d / f"{name}.pem", d / f"{name}.key"

    def certificate_only(self, device_id: str) -> DeviceIdentity:
        """TLS material from the dock CA for ``device_id`` without enrolling it (not in the
        registry): the broker lets it in, the receiver does not know its signing key."""
        cert, key = self.client_identity(device_id)
        d = self.base / "unenrolled" / device_id
        d.mkdir(parents=True, exist_ok=True)
        cert.rename(d / "device.pem")
        key.rename(d / "tls.key")
        (d / "ca.pem").write_bytes(self.pki.paths.ca_cert.read_bytes())
        ident = DeviceIdentity(device_id, d)
        self.identities[device_id] = ident
        return ident

    def create_case(self, number: str = CASE, kind: str = "inspection") -> None:
        code, _ = self.cli_text(
            "case",
            "create",
            "--number",
            number,
            "--type",
            kind,
            "--title",
            "校外培训专项检查",
            "--party",
            "某培训学校",
        )
        assert code == 0

    # -- uplink ----------------------------------------------------------------------------
    def uplink_config(
        self, device: BuiltSpool | str, *, as_device: str | None = None, **overrides: Any
    ) -> UplinkConfig:
        """The uplink settings of ``device`` (its own certificate unless ``as_device`` names
        another enrolled device whose certificate to use)."""
        name = device.device if isinstance(device, BuiltSpool) else device
        ident = self.identities[as_device or name]
        cfg = UplinkConfig(
            broker_host=self.broker.host,
            broker_port=self.broker.port,
            ca_file=str(ident.ca),
            cert_file=str(ident.cert),
            key_file=str(ident.key),
            receiver_key_file=str(self.receiver_pub),
            receipt_timeout_s=2.0,
            rescan_interval_s=0.5,
        )
        for key, value in overrides.items():
            setattr(cfg, key, value)
        return cfg

    def uplink_args(self, device: str) -> list[str]:
        """``python -m agent.uplink`` flags for the broker and ``device``'s certificate."""
        ident = self.identities[device]
        return [
            "--broker",
            f"{self.broker.host}:{self.broker.port}",
            "--ca",
            str(ident.ca),
            "--cert",
            str(ident.cert),
            "--key",
            str(ident.key),
            "--receiver-key",
            str(self.receiver_pub),
        ]

    def upload(
        self,
        spool: BuiltSpool,
        *,
        timeout_s: float = 30.0,
        as_device: str | None = None,
        **overrides: Any,
    ) -> UploadResult:
        return run_dock_upload(
            spool.root,
            self.uplink_config(spool, as_device=as_device, **overrides),
            threading.Event(),
            device=spool.device,
            until_done=True,
            timeout_s=timeout_s,
        )

    def stored_records(self) -> int:
        import sqlite3

        conn = sqlite3.connect(self.data_dir / "receiver.db", timeout=10)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
        finally:
            conn.close()


@contextlib.contextmanager
def running_dock(
    base: Path,
    settings: BrokerSettings | None = None,
    *,
    extra_acl: Sequence[str] = (),
    receiver: bool = True,
) -> Iterator[Dock]:
    dock = Dock(base, settings, extra_acl=extra_acl)
    try:
        yield dock.start(receiver=receiver)
    finally:
        dock.stop()
