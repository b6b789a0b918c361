"""Commissioning check: can this device reach the broker with its provisioned identity?

Reads the device's ``agent.toml`` (as written by ``device-install``), checks the local material
(certificate matches the TLS key, issued by the CA in ``ca.pem``, within its validity) and then
connects to the broker over MQTT 5 with mutual TLS, as the uplink will. The broker makes the
certificate CN the client id, so this connection replaces the agent's own while it lasts: the
uplink reconnects by itself, but run the check with the agent stopped where possible.

Failure posture: never raises for a failed check; every step becomes a :class:`Check` with a
verdict and a sentence a technician can act on. Only an ``agent.toml`` that is missing, that
the agent's loader refuses or that lacks the broker settings raises :class:`MaterialError`.
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography import x509
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.config import load_config
from agent.errors import AgentConfigError
from provisioning import pki
from provisioning.errors import MaterialError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class DeviceMaterial:
    device_id: str
    host: str
    port: int
    ca_file: Path
    cert_file: Path
    key_file: Path


def load_material(config_path: Path) -> DeviceMaterial:
    """The identity and broker of the device, read with the agent's own loader: a config the
    agent would refuse (a typo, a bad value) fails here too, naming the key."""
    try:
        cfg = load_config(Path(config_path))
    except AgentConfigError as exc:
        if not Path(config_path).exists():
            raise MaterialError(
                config_path, "agent.toml is missing; install the bundle first"
            ) from None
        key = "" if exc.key == "-" else f"{exc.key}: "
        raise MaterialError(config_path, f"agent.toml is unusable: {key}{exc.detail}") from None
    up = cfg.uplink
    missing = [f"uplink.{n}" for n in ("ca_file", "cert_file", "key_file") if not getattr(up, n)]
    if not cfg.device.id:
        missing.insert(0, "device.id")
    if missing or up.ca_file is None or up.cert_file is None or up.key_file is None:
        raise MaterialError(config_path, f"agent.toml lacks a broker setting ({missing[0]})")
    return DeviceMaterial(
        device_id=cfg.device.id,
        host=up.broker_host,
        port=up.broker_port,
        ca_file=Path(up.ca_file),
        cert_file=Path(up.cert_file),
        key_file=Path(up.key_file),
    )


def check_material(m: DeviceMaterial) -> list[Check]:
    checks: list[Check] = []
    try:
        cert = pki.load_certificate(m.cert_file)
        key = pki.load_private_key(m.key_file)
        pki.check_key_matches(key, cert, cert_path=m.cert_file)
        checks.append(Check("certificate matches key", True, f"CN {m.device_id}"))
    except MaterialError as exc:
        return [Check("certificate matches key", False, str(exc))]
    try:
        cas = x509.load_pem_x509_certificates(m.ca_file.read_bytes())
    except (OSError, ValueError) as exc:
        return [*checks, Check("CA certificate", False, f"{m.ca_file}: {exc}")]
    issued = False
    for ca in cas:
        try:
            pki.check_issued_by(cert, ca)
            issued = True
        except MaterialError:
            continue
    checks.append(
        Check(
            "issued by the dock CA",
            issued,
            "yes" if issued else f"not by any CA in {m.ca_file}",
        )
    )
    try:
        pki.check_valid_now(cert, cert_path=m.cert_file)
        checks.append(
            Check("certificate validity", True, f"until {cert.not_valid_after_utc:%Y-%m-%d}")
        )
    except MaterialError as exc:
        checks.append(Check("certificate validity", False, str(exc)))
    return checks


def check_broker(m: DeviceMaterial, *, timeout_s: float = 10.0) -> Check:
    """Connect with the device's identity; a CONNACK is the only proof of acceptance."""
    done = threading.Event()
    outcome: dict[str, str] = {}
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"selftest-{m.device_id}",
        protocol=MQTTProtocolVersion.MQTTv5,
        reconnect_on_failure=False,
    )

    def on_connect(c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        outcome["connack"] = str(rc)
        outcome["ok"] = "" if rc.is_failure else "yes"
        done.set()

    def on_disconnect(c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        outcome.setdefault("disconnect", str(rc))
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    where = f"{m.host}:{m.port}"
    try:
        client.tls_set(
            ca_certs=str(m.ca_file),
            certfile=str(m.cert_file),
            keyfile=str(m.key_file),
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        client.connect(m.host, m.port, keepalive=30)
    except ssl.SSLCertVerificationError as exc:
        return Check("broker", False, f"{where}: the broker's certificate is not trusted ({exc})")
    except (ConnectionRefusedError, TimeoutError) as exc:
        return Check("broker", False, f"no broker answering at {where} ({exc})")
    except (ssl.SSLError, OSError) as exc:
        return Check("broker", False, f"{where}: TLS connection failed ({exc})")
    client.loop_start()
    try:
        done.wait(timeout_s)
    finally:
        try:
            client.disconnect()
        finally:
            client.loop_stop()
    if outcome.get("ok"):
        return Check("broker", True, f"connected to {where} as {m.device_id}")
    if "connack" in outcome:
        return Check("broker", False, f"{where} refused the connection: {outcome['connack']}")
    if "disconnect" in outcome:
        return Check(
            "broker",
            False,
            f"{where} closed the connection during TLS: the broker refused this certificate"
            " (revoked, expired or from another CA)",
        )
    return Check("broker", False, f"no answer from {where} within {timeout_s:g} s")


def run(config_path: Path, *, timeout_s: float = 10.0) -> list[Check]:
    material = load_material(config_path)
    checks = check_material(material)
    if all(c.ok for c in checks):
        checks.append(check_broker(material, timeout_s=timeout_s))
    return checks
