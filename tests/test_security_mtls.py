"""Mutual TLS is the default everywhere: no anonymous listener, no plain-TCP client default."""

from __future__ import annotations

import contextlib
import io
import time
import tomllib
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.uplink import UplinkConfig
from agent.uplink.errors import UplinkConfigError
from provisioning import broker as broker_config
from provisioning.dock import Dock as ProvisioningDock
from receiver.cli import main as receiver_main
from receiver.config import load_config
from receiver.errors import ReceiverConfigError
from tests.support.dock import Dock


def test_uplink_refuses_to_start_without_client_certificate() -> None:
    with pytest.raises(UplinkConfigError, match="mutual TLS"):
        UplinkConfig(receiver_key_file="r.pub").validate()
    with pytest.raises(UplinkConfigError, match="mutual TLS"):
        UplinkConfig(ca_file="ca.pem").validate()
    # only an explicit development switch allows plain TCP
    replace(UplinkConfig(), allow_insecure=True).validate()
    assert UplinkConfig().broker_port == 8883


def test_receiver_refuses_to_run_without_client_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert receiver_main(["--data-dir", str(tmp_path / "d"), "run"]) == 2
    err = capsys.readouterr().err
    assert "mutual TLS" in err
    assert "broker.ca_file" in err
    cfg = tmp_path / "dev.toml"
    cfg.write_text("[broker]\nallow_insecure = true\n")
    assert load_config(cfg).broker.allow_insecure is True
    load_config(cfg).broker.check_tls()
    cfg.write_text('[broker]\nallow_insecure = "yes"\n')
    with pytest.raises(ReceiverConfigError, match=r"broker\.allow_insecure: expected bool"):
        load_config(cfg)


def test_generated_configs_are_mutual_tls_and_the_acl_follows_the_wire_table(
    tmp_path: Path,
) -> None:
    dock = ProvisioningDock.init(tmp_path / "dock", broker_hosts=["dock.example"])
    files = broker_config.write_broker_config(
        dock, tmp_path / "out", broker_config.BrokerSettings(), receiver_data_dir=tmp_path / "rx"
    )
    conf = files.config.read_text().splitlines()
    assert "allow_anonymous false" in conf
    assert "require_certificate true" in conf
    assert [line for line in conf if line.startswith("listener ")] == ["listener 8883 0.0.0.0"]
    acl = files.acl.read_text().splitlines()
    assert "pattern write bodycam/v1/%u/up/#" in acl
    assert "pattern read bodycam/v1/%u/down/#" in acl
    assert "pattern read bodycam/v1/receiver/status" in acl
    assert not any(line.startswith("pattern readwrite bodycam/v1/%u/#") for line in acl)
    rx = load_config(files.receiver_config)
    rx.broker.check_tls()
    assert rx.broker.host == "127.0.0.1"
    assert rx.broker.port == 8883
    assert rx.data_dir == (tmp_path / "rx").resolve()
    assert rx.dock_registry == dock.paths.registry.resolve()
    assert rx.encryption_key == dock.paths.encryption_key.resolve()
    assert rx.receipt_key == dock.paths.receipt_key.resolve()
    assert set(tomllib.loads(files.receiver_config.read_text())) == {
        "data_dir",
        "receipt_key",
        "encryption_key",
        "dock_registry",
        "broker",
    }


def test_device_reads_receiver_status_but_cannot_fake_it_or_its_receipts(dock: Dock) -> None:
    """The retained receiver status reaches devices (the uplink waits on it); a device cannot
    publish it, nor anything into its own down/ topics."""
    ident = dock.enrol("cam-x")
    got: list[str] = []
    acks: dict[int, bool] = {}
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id="x", protocol=mqtt.MQTTv5
    )
    client.tls_set(ca_certs=str(ident.ca), certfile=str(ident.cert), keyfile=str(ident.key))
    client.on_message = lambda c, u, m: got.append(m.topic)
    client.on_publish = lambda c, u, mid, rc, p: acks.__setitem__(mid, rc.is_failure)
    client.connect(dock.broker.host, dock.broker.port)
    client.loop_start()
    try:
        client.subscribe("bodycam/v1/receiver/status", qos=1)
        mids = [
            client.publish("bodycam/v1/receiver/status", b"{}", qos=1).mid,
            client.publish("bodycam/v1/cam-x/down/receipt", b"{}", qos=1).mid,
            client.publish("bodycam/v1/cam-x/up/hello", b"{}", qos=1).mid,
        ]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (len(acks) < 3 or not got):
            time.sleep(0.02)
    finally:
        client.disconnect()
        client.loop_stop()
    assert got == ["bodycam/v1/receiver/status"]  # the receiver's retained "online"
    assert [acks[m] for m in mids] == [True, True, False]  # refused, refused, accepted
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert dock.rx.cli("devices", "--json") == 0
    assert '"cam-x"' in out.getvalue()
    assert '"source": "dock"' in out.getvalue()
