"""Enrolment and revocation at the dock reach the receiver; a revoked device's evidence is
refused by the receiver whatever route it takes (MQTT while the broker still lets the device in,
or a spool copy imported from a card)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from evidence import transfer as wire
from evidence.chain import DeviceChain
from evidence.keys import generate_signing_key, save_signing_key
from evidence.receipt import Receipt
from evidence.testing import SteppingClock
from provisioning import device
from provisioning.cli import main as provision_main
from provisioning.dock import Dock as ProvisioningDock
from receiver.identity import load_receipt_key
from receiver.ingest import Ingest
from receiver.registry import DeviceRegistry, DockRegistryFollower
from receiver.store import EvidenceStore, connect
from receiver.store.custody import CustodySQL
from tests.support.dock import Dock
from tests.support.spool import add_session, build_spool


def _provision(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = provision_main(list(args))
    return code, out.getvalue()


def test_enrol_and_revoke_at_the_dock_reach_the_receiver(
    dock: Dock, mpegts_clips: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = build_spool(tmp_path / "spool", mpegts_clips[:2])
    dock.register(spool)  # device-request + `bodycam-provision enrol` + device-install only
    first = dock.upload(spool)
    assert first.pending == 0
    assert first.receipted == len(spool.records)
    (dev,) = dock.cli_json("devices")
    assert dev["source"] == "dock"
    assert dev["revoked"] is False

    # Stolen. The technician revokes at the dock; the broker is NOT restarted yet, so the
    # device's certificate still gets in (Mosquitto reads the CRL only on reload/restart).
    code, text = _provision(
        "revoke", "--dock", str(dock.pki.paths.root), "--device-id", spool.device,
        "--reason", "stolen 2026-11-29",
    )  # fmt: skip
    assert code == 0
    assert "restart the broker" in text
    clock = SteppingClock(start=spool.records[-1].time.datetime)
    chain = DeviceChain(spool.root, spool.device, spool.key)
    later = add_session(chain, mpegts_clips[:2], clock, case=None)

    second = dock.upload(spool)

    # ...but the receiver follows the dock registry: everything new is refused
    assert second.receipted == 0
    assert second.quarantined == len(later)
    assert all(spool.media_path(r).exists() for r in later if r.type == "segment")
    listed = dock.cli_json("quarantine")
    assert len(listed) == len(later)
    assert all(q["reason"].startswith("device revoked") for q in listed)
    assert all("stolen 2026-11-29" in q["reason"] for q in listed)
    assert "quarantined" in dock.rx.log_text()
    assert "device revoked" in dock.rx.log_text()
    (dev,) = dock.cli_json("devices")
    assert dev["revoked"] is True
    assert dev["revoke_reason"] == "stolen 2026-11-29"
    # what was stored before the revocation stays stored and verified
    assert dock.stored_records() == len(spool.records)
    assert dock.cli_json("reverify")["ok"] is True

    # The broker restart of the procedure shuts the certificate out entirely.
    dock.broker.restart()
    third = dock.upload(spool, timeout_s=3)
    assert third.records_sent == 0
    assert third.receipted == 0
    assert any("refused this device's certificate" in e for e in third.errors), third.errors


def test_revoked_device_spool_imported_from_a_card_is_quarantined(
    dock: Dock, mpegts_clips: list[Path], tmp_path: Path
) -> None:
    ok = build_spool(tmp_path / "ok", mpegts_clips, device="cam-ok")
    lost = build_spool(tmp_path / "lost", mpegts_clips, device="cam-lost")
    dock.register(ok)
    dock.register(lost)
    dock.revoke(lost.device, "lost on patrol")  # registry + CRL, then the broker restart
    card = tmp_path / "card"
    shutil.copytree(lost.root, card)
    shutil.copytree(ok.root, card, dirs_exist_ok=True)  # one card holding both devices

    code, text = dock.cli_text("import", str(card), "--json")

    assert code == 1  # something was refused
    results = json.loads(text)
    by_device: dict[str, set[str]] = {}
    for r in results:
        by_device.setdefault(r["device"], set()).add(r["outcome"])
    assert by_device == {"cam-ok": {"stored"}, "cam-lost": {"quarantined"}}
    refused = [r for r in results if r["device"] == "cam-lost"]
    assert len(refused) == len(lost.records)
    assert all(r["reason"].startswith("device revoked: cam-lost") for r in refused)
    listed = [q for q in dock.cli_json("quarantine") if q["device"] == "cam-lost"]
    assert len(listed) == len(lost.records)
    assert {q["type"] for q in listed} >= {"segment", "session-open"}
    assert dock.stored_records() == len(ok.records)
    # importing again changes nothing and says so
    code, text = dock.cli_text("import", str(card))
    assert code == 1
    assert f"{len(ok.records)} already-stored" in text
    assert dock.stored_records() == len(ok.records)
    assert len(dock.cli_json("quarantine")) == len(lost.records)


def test_dock_registry_follower_never_loses_a_revocation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:

    pdock = ProvisioningDock.init(tmp_path / "dock")
    pdock.enrol(device.create_request(tmp_path / "dev", "cam-1", tmp_path / "req"))
    conn = connect(tmp_path / "rx.db")
    try:
        registry = DeviceRegistry(conn)
        follower = DockRegistryFollower(registry, pdock.paths.registry)
        first = follower.refresh()
        assert first is not None
        assert first.added == ["cam-1"]
        assert follower.refresh() is None  # unchanged file: nothing re-read
        pdock.revoke("cam-1", "stolen")
        revoked = follower.refresh()
        assert revoked is not None
        assert revoked.revoked == ["cam-1"]
        dev = registry.get("cam-1")
        assert dev is not None
        assert dev.revoked
        assert dev.revoke_reason == "stolen"
        # both are in the custody log, so the audit can hold the database's key to it
        events = [json.loads(row["entry"]) for row in CustodySQL(conn).entries()]
        kinds = [(e["kind"], e["actor"], e["device"]) for e in events]
        assert kinds == [
            ("device-registration", "dock-registry", "cam-1"),
            ("device-revocation", "dock-registry", "cam-1"),
        ]
        assert events[0]["key"] == dev.key_id
        assert events[1]["detail"] == "stolen"
        # a broken registry file (e.g. a bad restore) is logged and changes nothing
        pdock.paths.registry.write_text("{ not json")
        assert follower.refresh() is None
        assert "dock registry not applied" in caplog.text
        dev = registry.get("cam-1")
        assert dev is not None
        assert dev.revoked
        # neither a manual re-registration nor the registry can lift a revocation
        registry.add_key("cam-1", generate_signing_key().public_key(), replace_key=True)
        pdock.paths.registry.unlink()
        follower.refresh()
        dev = registry.get("cam-1")
        assert dev is not None
        assert dev.revoked
    finally:
        conn.close()


def test_revocation_while_a_segment_is_in_flight_refuses_it_at_fin(
    tmp_path: Path, mpegts_clips: list[Path]
) -> None:

    pdock = ProvisioningDock.init(tmp_path / "dock")
    spool = build_spool(tmp_path / "spool", mpegts_clips[:1], device="cam-1")
    keys = tmp_path / "keys"
    keys.mkdir()
    save_signing_key(keys / "signing.key", spool.key)
    pdock.enrol(device.create_request(keys, "cam-1", tmp_path / "req"))
    store = EvidenceStore(tmp_path / "rx")
    conn = connect(store.db_path)
    ingest = Ingest(
        store, conn, load_receipt_key(tmp_path / "rx" / "receipt.key"),
        dock_registry=pdock.paths.registry,
    )  # fmt: skip
    try:
        opening, seg = spool.records[0], spool.segments()[0]
        for record in (opening, seg):
            msg = {"v": wire.PROTOCOL_VERSION, "record": record.to_dict()}
            ingest.handle(wire.up_topic("cam-1", wire.UP_INIT), wire.encode_json(msg))
        assert seg.hash() in ingest.transfers  # the session-open was stored, media flowing
        data = spool.media_path(seg).read_bytes()
        size = seg.body["media"]["chunk_size"]
        for i, off in enumerate(range(0, len(data), size)):
            frame = wire.pack_chunk(seg.hash(), i, off, data[off : off + size])
            ingest.handle(wire.up_topic("cam-1", wire.UP_CHUNK), frame)
        pdock.revoke("cam-1", "stolen mid-upload")
        fin = {
            "v": wire.PROTOCOL_VERSION,
            "record": seg.hash(),
            "size": len(data),
            "sha256": seg.body["media"]["sha256"],
            "chunks": len(seg.body["media"]["chunks"]),
        }
        (out,) = ingest.handle(wire.up_topic("cam-1", wire.UP_FIN), wire.encode_json(fin))
        receipt = Receipt.parse(out.payload)
        assert receipt.status == "quarantined"
        assert receipt.reason is not None
        assert receipt.reason.startswith("device revoked: cam-1")
        assert "stolen mid-upload" in receipt.reason
        stored = conn.execute("SELECT seq FROM records").fetchall()
        assert [r["seq"] for r in stored] == [opening.seq]
        assert not any(store.objects.rglob("?" * 64)), "no media object was committed"
    finally:
        ingest.close()
        conn.close()
