"""Dock upload over mutual TLS with per-device ACLs, TLS settings taken from configuration."""

from __future__ import annotations

import threading
from pathlib import Path

from agent.uplink import UplinkConfig, run_dock_upload
from provisioning import pki
from provisioning.broker import render_acl
from tests.support.broker import BrokerSettings, BrokerTLS, MosquittoBroker
from tests.support.receiver import ReceiverProcess
from tests.support.spool import build_spool


def _identity(ca: pki.Authority, d: Path, cn: str, *, server: bool = False) -> tuple[Path, Path]:
    key = pki.generate_tls_key()
    cert = pki.issue_certificate(
        ca, key.public_key(), cn, server_hosts=("127.0.0.1",) if server else (), client=not server
    )
    cert_path, key_path = d / f"{cn}.pem", d / f"{cn}.key"
    pki.save_certificate(cert_path, cert)
    pki.save_private_key(key_path, key)
    return cert_path, key_path


def test_upload_over_mutual_tls(tmp_path: Path, mpegts_clips: list[Path]) -> None:
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir()
    ca = pki.create_ca("Test Dock CA")
    ca_path = pki_dir / "ca.pem"
    pki.save_certificate(ca_path, ca.cert)
    broker_cert, broker_key = _identity(ca, pki_dir, "broker", server=True)
    rx_cert, rx_key = _identity(ca, pki_dir, "receiver")
    dev_cert, dev_key = _identity(ca, pki_dir, "BC-0001")
    acl = tmp_path / "acl"
    acl.write_text(render_acl())
    settings = BrokerSettings(
        tls=BrokerTLS(ca_path, broker_cert, broker_key), acl_file=acl, allow_anonymous=False
    )
    spool = build_spool(tmp_path / "spool", mpegts_clips)
    config = tmp_path / "receiver.toml"
    config.write_text(
        f'[broker]\nca_file = "{ca_path}"\ncert_file = "{rx_cert}"\nkey_file = "{rx_key}"\n'
    )
    with MosquittoBroker(tmp_path / "broker", settings) as broker:
        rx = ReceiverProcess(tmp_path / "rdata", broker.host, broker.port, config=config)
        rx.cli("identity", "--export-pub", str(tmp_path / "receiver.pub"))
        rx.cli("device", "add", "--id", spool.device, "--key", str(spool.pub_path))
        rx.start()
        try:
            cfg = UplinkConfig(
                broker_host=broker.host,
                broker_port=broker.port,
                ca_file=str(ca_path),
                cert_file=str(dev_cert),
                key_file=str(dev_key),
                receiver_key_file=str(tmp_path / "receiver.pub"),
                receipt_timeout_s=2.0,
            )
            result = run_dock_upload(
                spool.root, cfg, threading.Event(), until_done=True, timeout_s=30
            )
        finally:
            rx.stop()
    assert result.pending == 0, result
    assert result.receipted == len(spool.records), result
    assert result.refused_publishes == 0
