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

    assert result.quarantined == 1 and result.pending == 0
    assert media.exists(), "a quarantined segment must not be freed on the device"
    assert (spool.root / "state" / "rejected" / f"{victim.hash()}.json").exists()
    assert any("tampered" in r for r in _reasons(dock))
    case = dock.cli_json("case", "show", CASE)
    assert case["verification"] == "PROBLEMS"
    (session,) = case["sessions"]
    assert session["segments"] == 2
    assert any(f"quarantined seq {victim.seq}" in p for p in session["problems"])
    code, text = dock.cli_text("case", "show", CASE)
    assert code == 1 and "PROBLEM" in text
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

    result = dock.upload(spool)

    assert result.quarantined == 1
    assert any("signature" in r for r in _reasons(dock))
    assert dock.cli_json("case", "show", CASE)["sessions"] == []
    sessions = dock.cli_json("sessions", "--inbox")
    assert [s["session"] for s in sessions] == [opening.session]


def test_record_from_unregistered_device_is_quarantined(
    dock: Dock, mpegts_clips: list[Path], tmp_path: Path
) -> None:
    spool = build_spool(tmp_path / "spool", mpegts_clips, device="BC-7777")
    dock.certificate_only(spool.device)  # the broker lets it in; nobody enrolled its key
    dock.create_case()

    result = dock.upload(spool)

    assert result.quarantined == len(spool.records) and result.receipted == 0
    reasons = _reasons(dock)
    assert len(reasons) == len(spool.records)
    assert all("not registered" in r for r in reasons)
    assert dock.cli_json("sessions") == []
    listed = dock.cli_json("quarantine")
    assert {q["device"] for q in listed} == {"BC-7777"}


def test_chain_with_missing_segment_is_flagged(
    dock: Dock, mpegts_clips: list[Path], tmp_path: Path
) -> None:
    spool = build_spool(tmp_path / "spool", mpegts_clips)
    dock.register(spool)
    dock.create_case()
    gone = spool.segments()[1]
    layout.record_path(spool.root, spool.device, gone.seq).unlink()
    spool.media_path(gone).unlink()

    result = dock.upload(spool)

    assert result.pending == 0 and result.receipted == len(spool.records) - 1
    case = dock.cli_json("case", "show", CASE)
    assert case["verification"] == "PROBLEMS"
    problems = " ".join(case["sessions"][0]["problems"])
    assert "missing" in problems and f"seq {gone.seq}" in problems
    report = dock.cli_json("reverify")
    assert report["ok"] is False
    assert {v["kind"] for v in report["violations"]} >= {"missing-seq"}
    code, _ = dock.cli_text("reverify")
    assert code == 1
