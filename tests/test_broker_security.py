"""The generated Mosquitto configuration, run by a real mosquitto with real certificates.

Clients are paho-mqtt 2 over MQTT 5 with mutual TLS, on a free 127.0.0.1 port.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from provisioning import broker as broker_config
from provisioning import device, pki
from provisioning.dock import Dock
from tests.support.broker import ProvisionedBroker

WAIT_S = 5.0
NOT_AUTHORIZED = 135


@dataclass
class Identity:
    name: str
    cert: Path | None
    key: Path | None
    ca: Path


@dataclass
class Session:
    """A paho client with its events collected for assertions."""

    client: mqtt.Client
    connected: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    connack: ReasonCode | None = None
    connack_props: Any = None
    failure: str = ""
    pubacks: dict[int, ReasonCode] = field(default_factory=dict)
    subacks: dict[int, list[ReasonCode]] = field(default_factory=dict)
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    acked: threading.Condition = field(default_factory=threading.Condition)

    def wait_puback(self, mid: int) -> ReasonCode:
        with self.acked:
            assert self.acked.wait_for(lambda: mid in self.pubacks, timeout=WAIT_S)
            return self.pubacks[mid]

    def wait_suback(self, mid: int | None) -> list[ReasonCode]:
        assert mid is not None, "subscribe was not sent"
        with self.acked:
            assert self.acked.wait_for(lambda: mid in self.subacks, timeout=WAIT_S)
            return self.subacks[mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def open_session(
    port: int,
    ident: Identity,
    client_id: str | None = None,
    *,
    session_expiry_s: int | None = None,
) -> Session:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or f"{ident.name}-{time.monotonic_ns()}",
        protocol=MQTTProtocolVersion.MQTTv5,
        reconnect_on_failure=False,
    )
    client.tls_set(
        ca_certs=str(ident.ca),
        certfile=str(ident.cert) if ident.cert else None,
        keyfile=str(ident.key) if ident.key else None,
        cert_reqs=ssl.CERT_REQUIRED,
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )
    s = Session(client)

    def on_connect(c: Any, u: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        s.connack = rc
        s.connack_props = props
        if not rc.is_failure:
            s.connected.set()
        else:
            s.failure = f"CONNACK {rc}"
            s.ended.set()

    def on_disconnect(c: Any, u: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        s.failure = s.failure or f"disconnected: {rc}"
        s.ended.set()

    def on_publish(c: Any, u: Any, mid: int, rc: ReasonCode, props: Any) -> None:
        with s.acked:
            s.pubacks[mid] = rc
            s.acked.notify_all()

    def on_subscribe(c: Any, u: Any, mid: int, rcs: list[ReasonCode], props: Any) -> None:
        with s.acked:
            s.subacks[mid] = rcs
            s.acked.notify_all()

    def on_message(c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        s.messages.append((msg.topic, bytes(msg.payload)))

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_publish = on_publish
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    props = None
    if session_expiry_s is not None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry_s
    try:
        client.connect(
            "127.0.0.1", port, keepalive=30, clean_start=session_expiry_s is None, properties=props
        )
    except (ssl.SSLError, OSError) as exc:
        s.failure = f"{type(exc).__name__}: {exc}"
        s.ended.set()
        return s
    client.loop_start()
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and not (s.connected.is_set() or s.ended.is_set()):
        time.sleep(0.01)
    return s


def can_connect(port: int, ident: Identity) -> tuple[bool, str]:
    s = open_session(port, ident)
    try:
        if s.connected.is_set():
            # TLS 1.3 reports a refused client certificate only after the handshake; a CONNACK
            # proves the broker accepted it.
            return True, "connected"
        return False, s.failure or "no CONNACK"
    finally:
        with contextlib.suppress(Exception):
            s.client.disconnect()
        s.client.loop_stop()


def enrol(dock: Dock, tmp: Path, device_id: str) -> Identity:
    dev_dir = tmp / "devices" / device_id
    req = device.create_request(dev_dir, device_id, tmp / "requests" / device_id)
    result = dock.enrol(req)
    device.install_bundle(result.bundle_path, dev_dir)
    return Identity(device_id, dev_dir / "device.pem", dev_dir / "tls.key", dev_dir / "ca.pem")


@dataclass
class World:
    dock: Dock
    broker: ProvisionedBroker
    a: Identity
    b: Identity
    receiver: Identity
    tmp: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("brokersec")
    dock = Dock.init(tmp / "dock", broker_hosts=["dock.example"])
    a = enrol(dock, tmp, "cam-a")
    b = enrol(dock, tmp, "cam-b")
    p = dock.paths
    receiver = Identity("receiver", p.client_cert, p.client_key, p.ca_cert)
    settings = broker_config.BrokerSettings(message_size_limit_bytes=64 * 1024)
    broker = ProvisionedBroker(tmp / "broker", dock, settings)
    broker.start()
    try:
        yield World(dock, broker, a, b, receiver, tmp)
    finally:
        broker.stop()


def test_generated_config_has_no_anonymous_access_and_requires_certificates(world: World) -> None:
    conf = world.broker.config_path.read_text("utf-8")
    lines = {line.strip() for line in conf.splitlines()}
    assert "allow_anonymous false" in lines
    assert "require_certificate true" in lines
    assert "use_identity_as_username true" in lines
    assert sum(1 for line in lines if line.startswith("listener ")) == 1
    assert any(line.startswith("crlfile ") for line in lines)


def test_device_publishes_to_own_topic_but_not_authorized_on_another_device(world: World) -> None:
    recv = open_session(world.broker.port, world.receiver)
    a = open_session(world.broker.port, world.a)
    try:
        assert recv.connected.is_set(), recv.failure
        assert a.connected.is_set(), a.failure
        (granted,) = recv.wait_suback(recv.client.subscribe("bodycam/v1/#", qos=1)[1])
        assert not granted.is_failure
        own = a.client.publish("bodycam/v1/cam-a/status", b"own", qos=1)
        assert not a.wait_puback(own.mid).is_failure
        forged = a.client.publish("bodycam/v1/cam-b/up/init", b"forged", qos=1)
        rc = a.wait_puback(forged.mid)
        assert rc.value == NOT_AUTHORIZED, f"expected 'Not authorized', got {rc}"
        assert str(rc) == "Not authorized"
        outside = a.client.publish("elsewhere/topic", b"x", qos=1)
        assert a.wait_puback(outside.mid).value == NOT_AUTHORIZED
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and not recv.messages:
            time.sleep(0.01)
        time.sleep(0.2)
        topics = [t for t, _ in recv.messages]
        assert topics == ["bodycam/v1/cam-a/status"]
    finally:
        a.close()
        recv.close()


def test_device_cannot_read_another_devices_topics(world: World) -> None:
    a = open_session(world.broker.port, world.a)
    b = open_session(world.broker.port, world.b)
    recv = open_session(world.broker.port, world.receiver)
    try:
        assert a.connected.is_set()
        assert b.connected.is_set()
        assert recv.connected.is_set()
        retained = b.client.publish("bodycam/v1/cam-b/status", b"retained", qos=1, retain=True)
        assert not b.wait_puback(retained.mid).is_failure
        # Mosquitto 2.0's ACL file has no subscribe right: the SUBACK grants any filter and the
        # read check happens per message on delivery. What matters is that nothing arrives.
        filters = ["bodycam/v1/cam-b/#", "bodycam/v1/+/status", "bodycam/v1/#", "#"]
        a.wait_suback(a.client.subscribe([(f, 1) for f in filters])[1])
        assert not recv.wait_suback(recv.client.subscribe("bodycam/v1/cam-b/#", qos=1)[1])[
            0
        ].is_failure
        live = b.client.publish("bodycam/v1/cam-b/up/init", b"secret", qos=1)
        assert not b.wait_puback(live.mid).is_failure
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and len(recv.messages) < 2:
            time.sleep(0.01)
        assert sorted(recv.messages) == [
            ("bodycam/v1/cam-b/status", b"retained"),
            ("bodycam/v1/cam-b/up/init", b"secret"),
        ]
        time.sleep(0.3)
        assert a.messages == [], "device A read device B's messages"
    finally:
        b.client.publish("bodycam/v1/cam-b/status", b"", qos=1, retain=True)
        for s in (a, b, recv):
            s.close()


def test_oversized_message_is_refused_and_not_delivered(world: World) -> None:
    recv = open_session(world.broker.port, world.receiver)
    a = open_session(world.broker.port, world.a)
    try:
        assert a.connected.is_set()
        assert recv.connected.is_set()
        assert not recv.wait_suback(recv.client.subscribe("bodycam/v1/cam-a/#", qos=1)[1])[
            0
        ].is_failure
        fits = a.client.publish("bodycam/v1/cam-a/up/chunk", b"f" * (64 * 1024), qos=1)
        assert not a.wait_puback(fits.mid).is_failure
        # Mosquitto 2.0.11 answers PUBACK 149 "Packet too large" (not a valid PUBACK code in
        # MQTT 5); paho 2 treats that as a protocol error and drops the connection.
        a.client.publish("bodycam/v1/cam-a/up/chunk", b"x" * (64 * 1024 + 1), qos=1)
        assert a.ended.wait(WAIT_S), "oversized publish was accepted silently"
        time.sleep(0.3)
        assert [len(p) for _, p in recv.messages] == [64 * 1024]
    finally:
        a.close()
        recv.close()


def test_client_without_certificate_cannot_connect(world: World) -> None:
    ok, detail = can_connect(
        world.broker.port, Identity("anon", None, None, world.dock.paths.ca_cert)
    )
    assert not ok, detail
    assert world.broker.running


def test_client_with_foreign_ca_certificate_cannot_connect(world: World) -> None:
    foreign = Dock.init(world.tmp / "foreign-dock")
    ident = enrol(foreign, world.tmp / "foreign", "cam-a")
    # Trust the real broker so only the client certificate can be the reason for refusal.
    ident.ca = world.dock.paths.ca_cert
    ok, detail = can_connect(world.broker.port, ident)
    assert not ok, detail


def test_expired_certificate_cannot_connect(world: World) -> None:
    ca = world.dock.authority()
    key = pki.generate_tls_key()
    now = pki.utcnow()
    cert = pki.issue_certificate(
        ca,
        key.public_key(),
        "cam-a",
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    d = world.tmp / "expired"
    pki.save_private_key(d / "tls.key", key)
    pki.save_certificate(d / "device.pem", cert)
    ok, detail = can_connect(
        world.broker.port, Identity("expired", d / "device.pem", d / "tls.key", world.a.ca)
    )
    assert not ok, detail
    # Same CA, same CN, valid dates: accepted, so the dates were the reason.
    fresh = pki.issue_certificate(ca, key.public_key(), "cam-a")
    pki.save_certificate(d / "fresh.pem", fresh)
    ok, detail = can_connect(
        world.broker.port, Identity("fresh", d / "fresh.pem", d / "tls.key", world.a.ca)
    )
    assert ok, detail


def test_revoked_device_is_shut_out_by_reload_and_restart(tmp_path: Path) -> None:
    dock = Dock.init(tmp_path / "dock")
    lost = enrol(dock, tmp_path, "cam-lost")
    kept = enrol(dock, tmp_path, "cam-kept")
    broker = ProvisionedBroker(tmp_path / "broker", dock, broker_config.BrokerSettings())
    broker.start()
    held: Session | None = None
    try:
        assert can_connect(broker.port, lost)[0]
        held = open_session(broker.port, lost)
        assert held.connected.is_set(), held.failure
        dock.revoke("cam-lost", "lost on patrol")
        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGHUP)
        time.sleep(0.3)
        # Mosquitto 2.0.11 re-reads the CRL on SIGHUP: new connections are refused at once.
        ok, detail = can_connect(broker.port, lost)
        assert not ok, detail
        assert can_connect(broker.port, kept)[0]
        # ...but a session that was already open survives the reload (measured); only a
        # restart ends it, which is why the technician's procedure is a restart.
        survived_reload = held.connected.is_set() and not held.ended.is_set()
        broker.restart()
        assert held.ended.wait(WAIT_S), "the revoked device's session outlived the restart"
        ok, detail = can_connect(broker.port, lost)
        assert not ok, detail
        assert can_connect(broker.port, kept)[0]
        print(f"open session of the revoked device survived SIGHUP: {survived_reload}")
    finally:
        if held is not None:
            held.client.loop_stop()
        broker.stop()


def test_ca_rotation_trusts_both_cas_until_finished(tmp_path: Path) -> None:
    old = Dock.init(tmp_path / "old")
    new = Dock.init(tmp_path / "new")
    veteran = enrol(old, tmp_path / "o", "cam-old")
    old.add_trust(new.paths.root)
    new.add_trust(old.paths.root)
    moved = enrol(new, tmp_path / "n", "cam-moved")
    lost = enrol(new, tmp_path / "n", "cam-lost")
    # During the changeover the broker keeps the old dock's certificate (devices not yet moved
    # trust only the old CA) and accepts client certificates of both CAs.
    broker = ProvisionedBroker(tmp_path / "broker", old, broker_config.BrokerSettings())
    broker.start()
    try:
        for ident in (veteran, moved, lost):
            ok, detail = can_connect(broker.port, ident)
            assert ok, f"{ident.name}: {detail}"
        new.revoke("cam-lost", "stolen during the changeover")
        broker.restart()  # regenerates the combined CRL
        assert not can_connect(broker.port, lost)[0]
        assert can_connect(broker.port, moved)[0]
        assert can_connect(broker.port, veteran)[0]
    finally:
        broker.stop()
    # Finished: the broker runs from the new dock alone.
    new.remove_trust(old.paths.root)
    final = ProvisionedBroker(tmp_path / "final", new, broker_config.BrokerSettings())
    final.start()
    try:
        assert can_connect(final.port, moved)[0]
        veteran.ca = new.paths.ca_cert  # even trusting the new broker, its old cert is refused
        assert not can_connect(final.port, veteran)[0]
    finally:
        final.stop()


def test_device_cannot_take_over_another_devices_session(world: World) -> None:
    b = open_session(world.broker.port, world.b, client_id="bodycam-cam-b")
    recv = open_session(world.broker.port, world.receiver)
    a = open_session(world.broker.port, world.a, client_id="bodycam-cam-b")
    try:
        assert b.connected.is_set()
        assert a.connected.is_set()
        assert recv.connected.is_set()
        time.sleep(0.3)
        assert not b.ended.is_set(), f"device A's connection kicked device B off: {b.failure}"
        assert not recv.wait_suback(recv.client.subscribe("bodycam/v1/cam-b/#", qos=1)[1])[
            0
        ].is_failure
        info = b.client.publish("bodycam/v1/cam-b/status", b"still here", qos=1)
        assert not b.wait_puback(info.mid).is_failure
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and not recv.messages:
            time.sleep(0.01)
        assert recv.messages == [("bodycam/v1/cam-b/status", b"still here")]
    finally:
        for s in (a, b, recv):
            s.close()


def test_persistent_session_survives_reconnect_with_client_id_from_certificate(
    world: World,
) -> None:
    # The uplink relies on a persistent MQTT 5 session; the broker now keys it by the CN.
    first = open_session(world.broker.port, world.a, client_id="any-id-1", session_expiry_s=600)
    assert first.connected.is_set(), first.failure
    first.wait_suback(first.client.subscribe("bodycam/v1/cam-a/down/receipt", qos=1)[1])
    first.close()
    recv = open_session(world.broker.port, world.receiver)
    try:
        info = recv.client.publish("bodycam/v1/cam-a/down/receipt", b"receipt-1", qos=1)
        assert not recv.wait_puback(info.mid).is_failure
    finally:
        recv.close()
    again = open_session(world.broker.port, world.a, client_id="any-id-2", session_expiry_s=600)
    try:
        assert again.connected.is_set(), again.failure
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and not again.messages:
            time.sleep(0.01)
        assert again.messages == [("bodycam/v1/cam-a/down/receipt", b"receipt-1")]
    finally:
        again.client.unsubscribe("bodycam/v1/cam-a/down/receipt")
        again.close()


def test_device_check_reports_connection_and_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from provisioning.cli import main

    dock = Dock.init(tmp_path / "dock")
    ok_dev = enrol(dock, tmp_path, "cam-ok")
    bad_dev = enrol(dock, tmp_path, "cam-bad")
    broker = ProvisionedBroker(tmp_path / "broker", dock, broker_config.BrokerSettings())
    broker.start()
    try:
        dock.revoke("cam-bad", "test")
        broker.restart()
        assert ok_dev.cert is not None
        assert bad_dev.cert is not None
        ok_dir, bad_dir = ok_dev.cert.parent, bad_dev.cert.parent
        for dev_dir in (ok_dir, bad_dir):
            # Point the installed config at the test broker's loopback port.
            cfg = dev_dir / "agent.toml"
            text = cfg.read_text().replace('"localhost"', '"127.0.0.1"')
            port_line = f"broker_port = {dock.broker_port}"
            cfg.write_text(text.replace(port_line, f"broker_port = {broker.port}"))
        assert main(["device-check", "--dir", str(ok_dir), "--timeout-s", "5"]) == 0
        out = capsys.readouterr().out
        assert "OK   broker: connected to 127.0.0.1" in out
        assert main(["device-check", "--dir", str(bad_dir), "--timeout-s", "5"]) == 1
        out = capsys.readouterr().out
        assert "FAIL broker" in out
        assert "refused this certificate" in out
    finally:
        broker.stop()
    assert main(["device-check", "--dir", str(ok_dir), "--timeout-s", "2"]) == 1
    assert "no broker answering" in capsys.readouterr().out
