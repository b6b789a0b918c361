"""What fails verification is quarantined or flagged with its reason, never filed as valid."""

from __future__ import annotations

import json
from pathlib import Path

from evidence import layout
from evidence.canonical import canonical_bytes
from tests.support.dock import CASE, Dock
from tests.support.spool import build_spool


def _reasons(dock: Dock) -> list[str]:
    return [q["reason"] for q in dock.cli_json("quarantine")]


def test_tampered_chunk_is_quarantined_and_device_keeps_its_copy(
    dock: Dock, mpegts_clips: list[Path], tmp_path: Path
) -> None:
    spool = build_spool(tmp_path / "spool", mpegts_clips)
    dock.register(spool)
    dock.create_case()
    victim = spool.segments()[1]
    media = spool.media_path(victim)
    data = bytearray(media.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one bit pattern changed on the SD card after sealing
    media.write_bytes(bytes(data))

    result = dock.upload(spool)

    assert result.quarantined == 1
    assert result.pending == 0
    assert media.exists(), "a quarantined segment must not be freed on the device"
    assert (spool.root / "state" / "rejected" / f"{victim.hash()}.json").exists()
    assert any("tampered" in r for r in _reasons(dock))
    case = dock.cli_json("case", "show", CASE)
    assert case["verification"] == "PROBLEMS"
    (session,) = case["sessions"]
    assert session["segments"] == 2
    assert any(f"quarantined seq {victim.seq}" in p for p in session["problems"])
    code, text = dock.cli_text("case", "show", CASE)
    assert code == 1
    assert "PROBLEM" in text
    assert dock.cli_json("sessions")[0]["quarantined"] == 1


def test_forged_record_is_quarantined_and_its_session_not_filed(
    dock: Dock, mpegts_clips: list[Path], tmp_path: Path
) -> None:
    spool = build_spool(tmp_path / "spool", mpegts_clips)
    dock.register(spool)
    dock.create_case()
    opening = spool.records[0]
    path = layout.record_path(spool.root, spool.device, opening.seq)
    forged = json.loads(path.read_bytes())
    forged["body"]["assignment"]["place"] = "somewhere else"  # signature no longer matches
    path.write_bytes(canonical_bytes(forged))

    result = dock.upload(spool, timeout_s=8)

    assert result.quarantined == 1
    assert any("signature" in r for r in _reasons(dock))
    # the rest continues a chain whose first record is not the genuine one: nothing of it is
    # stored, the device keeps it all
    assert result.pending == len(spool.records) - 1
    assert dock.stored_records() == 0
    assert dock.cli_json("case", "show", CASE)["sessions"] == []
    assert dock.cli_json("sessions", "--inbox") == []


def test_device_docked_before_registration_keeps_everything_and_completes_once_registered(
    dock: Dock, mpegts_clips: list[Path], tmp_path: Path
) -> None:
    import threading
    import time

    from agent.uplink import run_dock_upload

    spool = build_spool(tmp_path / "spool", mpegts_clips, device="BC-7777")
    dock.certificate_only(spool.device)  # the broker lets it in; the clerk has not enrolled it
    dock.create_case()

    result = dock.upload(spool, timeout_s=20)

    # not a verdict on the evidence: nothing quarantined, nothing freed, everything still pending
    assert result.quarantined == 0
    assert result.receipted == 0
    assert result.deferred >= len(spool.records)
    assert result.pending == len(spool.records)
    assert any("not registered" in e for e in result.errors)
    assert all(spool.media_path(s).exists() for s in spool.segments())
    assert not list((spool.root / "state" / "rejected").glob("*.json"))
    listed = dock.cli_json("quarantine")
    assert len(listed) == len(spool.records)
    assert {(q["device"], q["status"]) for q in listed} == {("BC-7777", "waiting")}
    assert all("not registered" in q["reason"] for q in listed)
    code, text = dock.cli_text("quarantine")
    assert code == 0
    assert "waiting: device BC-7777 is not registered" in text
    assert not list((dock.data_dir / "quarantine").rglob("REASON"))

    # the same (dock-mode) uplink run keeps retrying; the clerk enrols the device meanwhile
    receipts = spool.root / "state" / "receipts"
    stop = threading.Event()
    cfg = dock.uplink_config(spool, retry_backoff_s=0.5)
    results = []
    thread = threading.Thread(
        target=lambda: results.append(run_dock_upload(spool.root, cfg, stop, device=spool.device))
    )
    thread.start()
    try:
        time.sleep(1.5)  # at least one more refusal before the enrolment
        dock.register(spool)
        deadline = time.monotonic() + 30
        while len(list(receipts.glob("*.json"))) < len(spool.records):
            assert time.monotonic() < deadline, "records not receipted after registration"
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(15)
    assert not thread.is_alive()
    assert results[0].pending == 0
    assert results[0].quarantined == 0
    assert not any(spool.media_path(s).exists() for s in spool.segments())
    assert dock.cli_json("quarantine") == []
    assert dock.cli_json("case", "show", CASE)["verification"] == "verified"


def test_chain_with_missing_segment_stops_at_the_hole(
    dock: Dock, mpegts_clips: list[Path], tmp_path: Path
) -> None:
    """A record is stored only when it continues the stored chain: after a hole, the device's
    later records wait (it keeps them) and the case shows the session incomplete."""
    spool = build_spool(tmp_path / "spool", mpegts_clips)
    dock.register(spool)
    dock.create_case()
    gone = spool.segments()[1]
    layout.record_path(spool.root, spool.device, gone.seq).unlink()
    spool.media_path(gone).unlink()

    result = dock.upload(spool, timeout_s=8)

    after = [r for r in spool.records if r.seq > gone.seq]
    assert result.receipted == gone.seq
    assert result.pending == len(after)
    assert dock.stored_records() == gone.seq
    case = dock.cli_json("case", "show", CASE)
    assert case["verification"] == "PROBLEMS"
    problems = " ".join(case["sessions"][0]["problems"])
    assert "no session-close" in problems
    assert all(spool.media_path(s).exists() for s in spool.segments() if s.seq > gone.seq)
