"""Dock upload end to end: spool → real Mosquitto (mutual TLS, provisioned ACL) → receiver
process → signed receipts. Devices are enrolled at the provisioning dock only: the receiver
learns them from the dock's registry."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from evidence.keys import load_public_key
from evidence.receipt import Receipt
from tests.support.dock import CASE, Dock
from tests.support.spool import build_spool


def test_session_arrives_verified_filed_and_space_freed_only_after_receipts(
    dock: Dock, mpegts_clips: list[Path], tmp_path: Path
) -> None:
    spool = build_spool(tmp_path / "spool", mpegts_clips, sessions=2)
    dock.register(spool)
    dock.create_case()

    result = dock.upload(spool)

    assert result.pending == 0
    assert result.quarantined == 0
    assert not result.errors
    assert result.receipted == len(spool.records)
    # every record has a receipt signed by the receiver; every segment's media is gone
    receiver_key = load_public_key(dock.receiver_pub)
    for record in spool.records:
        path = spool.root / "state" / "receipts" / f"{record.hash()}.json"
        receipt = Receipt.parse(path.read_bytes())
        assert receipt.verify(receiver_key, record_hash=record.hash(), device=spool.device) is None
    for seg in spool.segments():
        assert not spool.media_path(seg).exists()
    assert result.bytes_freed == sum(c.stat().st_size for c in mpegts_clips) * 2

    case = dock.cli_json("case", "show", CASE)
    assert case["verification"] == "verified"
    assert len(case["sessions"]) == 2
    assert all(s["segments"] == 3 and s["markers"] == 1 for s in case["sessions"])
    assert dock.cli_json("reverify")["ok"] is True
    # identical clips in both sessions are stored once (content-addressed)
    objects = list((dock.rx.data_dir / "objects").rglob("*"))
    assert len([p for p in objects if p.is_file()]) == len(mpegts_clips)
    # the device reported its clock at docking and wrote the receiver's offset
    clock = json.loads((spool.root / "state" / "clock.json").read_text())
    assert abs(clock["offset_s"]) < 1.0
    # ...in the form the agent's pre-capture clock check reads
    from agent.checks import read_clock_sync_state

    state = read_clock_sync_state(spool.root / "state", kernel_probe=lambda: None)
    assert state.dock_synced_utc is not None
    assert state.dock_offset_s == clock["offset_s"]
    devices = dock.cli_json("devices")
    assert devices[0]["pending_segments"] == 0
    assert devices[0]["records"] == len(spool.records)
    # the device announced its signed chain head: the receiver anchors the chain's tail there
    conn = sqlite3.connect(dock.data_dir / "receiver.db")
    try:
        anchored = conn.execute(
            "SELECT seq, hash FROM chain_heads WHERE device = ?", (spool.device,)
        ).fetchone()
    finally:
        conn.close()
    assert anchored == (spool.records[-1].seq, spool.records[-1].hash())


def test_keep_retention_and_unreceipted_media_are_never_freed(
    dock: Dock, mpegts_clips: list[Path], tmp_path: Path
) -> None:
    spool = build_spool(tmp_path / "spool", mpegts_clips)
    dock.register(spool)
    dock.cli_text("device", "revoke", "--id", spool.device)  # receiver will refuse everything

    result = dock.upload(spool, retention="delete-after-receipt")

    assert result.receipted == 0
    assert result.quarantined == len(spool.records)
    assert all(spool.media_path(s).exists() for s in spool.segments())
    assert not list((spool.root / "state" / "receipts").glob("*.json"))

    spool2 = build_spool(tmp_path / "spool2", mpegts_clips, device="BC-0002")
    dock.register(spool2)
    result2 = dock.upload(spool2, retention="keep")
    assert result2.receipted == len(spool2.records)
    assert result2.bytes_freed == 0
    assert all(spool2.media_path(s).exists() for s in spool2.segments())


def test_assignment_is_pushed_retained_to_the_device(
    dock: Dock, mpegts_clips: list[Path], tmp_path: Path
) -> None:
    spool = build_spool(tmp_path / "spool", mpegts_clips[:1])
    dock.register(spool)
    dock.create_case()
    code, _ = dock.cli_text(
        "assign",
        "--device",
        spool.device,
        "--case",
        CASE,
        "--officer",
        "王芳",
        "--officer",
        "李强",
        "--place",
        "太原",
        "--reason",
        "检查",
        "--target",
        "某校",
        "--stage",
        "investigation",
    )
    assert code == 0
    import time

    deadline = time.monotonic() + 10
    path = spool.root / "state" / "assignment.json"
    while time.monotonic() < deadline and not path.exists():
        dock.upload(spool, timeout_s=5)
    assignment = json.loads(path.read_text())
    assert assignment == {
        "case": CASE,
        "officers": ["王芳", "李强"],
        "place": "太原",
        "reason": "检查",
        "target": "某校",
        "stage": "investigation",
    }


def test_standalone_upload_command_reads_the_agent_config(
    dock: Dock, mpegts_clips: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.uplink.__main__ import main as upload_main

    spool = build_spool(tmp_path / "spool", mpegts_clips[:1])
    ident = dock.register(spool)
    # the agent.toml device-install wrote, pointed at this spool, with one setting tuned
    text = ident.agent_toml.read_text()
    assert '# spool_dir = "/var/lib/bodycam/spool"' in text
    config = tmp_path / "agent.toml"
    config.write_text(
        text.replace('# spool_dir = "/var/lib/bodycam/spool"', f'spool_dir = "{spool.root}"')
        + 'retention = "keep"\n'
    )
    code = upload_main(["--config", str(config), "--until-done", "--timeout-s", "30", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["pending"] == 0
    assert result["receipted"] == len(spool.records)
    assert result["bytes_freed"] == 0  # retention = "keep" from the config file
    assert upload_main(["--config", str(config), "--broker", "nohost"]) == 2
    assert upload_main(["--until-done"]) == 2
    assert "give --spool or --config" in capsys.readouterr().err


def test_dock_mode_uploads_new_records_until_stopped(
    dock: Dock, mpegts_clips: list[Path], tmp_path: Path
) -> None:
    import threading
    import time

    from agent.uplink import run_dock_upload
    from evidence.chain import DeviceChain
    from evidence.testing import SteppingClock
    from tests.support.spool import add_session

    spool = build_spool(tmp_path / "spool", mpegts_clips[:1])
    dock.register(spool)
    receipts = spool.root / "state" / "receipts"
    stop = threading.Event()
    results = []
    thread = threading.Thread(
        target=lambda: results.append(
            run_dock_upload(spool.root, dock.uplink_config(spool), stop, device=spool.device)
        )
    )
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while len(list(receipts.glob("*.json"))) < len(spool.records):
            assert time.monotonic() < deadline, "first session not receipted"
            time.sleep(0.05)
        # the officer's next recording is sealed while the device sits in the dock
        clock = SteppingClock(start=spool.records[-1].time.datetime)
        more = add_session(
            DeviceChain(spool.root, spool.device, spool.key), mpegts_clips[1:], clock, case=None
        )
        while len(list(receipts.glob("*.json"))) < len(spool.records) + len(more):
            assert time.monotonic() < deadline + 20, "records sealed while docked not receipted"
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(15)
    assert not thread.is_alive()
    assert results[0].pending == 0
    assert len(dock.cli_json("sessions")) == 2


def test_unreadable_media_is_reported_and_the_rest_still_uploads(
    dock: Dock, mpegts_clips: list[Path], tmp_path: Path
) -> None:
    spool = build_spool(tmp_path / "spool", mpegts_clips)
    dock.register(spool)
    lost = spool.segments()[0]
    spool.media_path(lost).unlink()  # e.g. an SD card error
    # the receiver stores a record only when it continues the stored chain: what follows the
    # lost segment waits at the receiver (the device keeps it all and keeps asking)
    result = dock.upload(spool, timeout_s=8)
    assert result.receipted == lost.seq
    assert result.pending == len(spool.records) - lost.seq
    assert any("unreadable" in e for e in result.errors)
    assert not (spool.root / "state" / "receipts" / f"{lost.hash()}.json").exists()


def test_unassign_clears_the_assignment_on_the_device_and_is_recorded(
    dock: Dock, mpegts_clips: list[Path], tmp_path: Path
) -> None:
    import sqlite3
    import time

    spool = build_spool(tmp_path / "spool", mpegts_clips[:1])
    dock.register(spool)
    dock.create_case()
    assign = ["assign", "--device", spool.device, "--case", CASE, "--officer", "王芳"]
    assign += ["--place", "太原", "--reason", "检查", "--target", "某校", "--stage", "start"]
    assert dock.cli_text(*assign)[0] == 0
    path = spool.root / "state" / "assignment.json"
    deadline = time.monotonic() + 15
    while not path.exists():
        assert time.monotonic() < deadline, "assignment never reached the device"
        dock.upload(spool, timeout_s=5)

    code, text = dock.cli_text("unassign", "--device", spool.device)

    assert code == 0
    assert f"unassigned from case {CASE}" in text
    deadline = time.monotonic() + 15
    while path.exists():
        assert time.monotonic() < deadline, "the cleared assignment stayed on the device"
        dock.upload(spool, timeout_s=5)
    # the preamble now falls back to the configured defaults
    from agent.config import AssignmentConfig
    from agent.preamble import Assignment, load_assignment

    defaults = AssignmentConfig()
    assert load_assignment(path.parent, defaults) == Assignment.from_config(defaults)
    # docking with a new MQTT session: the broker holds no stale retained assignment either
    dock.upload(spool, timeout_s=5, client_id="bodycam-fresh-session")
    assert not path.exists()
    conn = sqlite3.connect(dock.data_dir / "receiver.db")
    try:
        rows = conn.execute("SELECT device, published_utc FROM unassignments").fetchall()
        active = conn.execute("SELECT COUNT(*) FROM assignments WHERE active = 1").fetchone()[0]
    finally:
        conn.close()
    assert len(rows) == 1
    assert rows[0][0] == spool.device
    assert rows[0][1] is not None
    assert active == 0
    assert dock.cli_text("unassign", "--device", "BC-404")[0] == 2
