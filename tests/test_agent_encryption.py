"""Encryption at rest on the device, end to end: the agent's spool never holds plaintext media
when a receiver key is configured, the verifier checks it with and without that key, and a
segment cut by SIGKILL is recovered without the device ever being able to decrypt it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.clock import SimulatedClock
from agent.media.base import SegmentStats
from agent.recovery import probe_ts
from agent.spool import PROGRESS_SUFFIX, RecordingSpool, _TsProgress
from evidence import layout
from evidence.encryption import (
    HEADER_SIZE_BYTES,
    DecryptionError,
    EncryptingWriter,
    decrypt_blocks,
    decrypt_file,
    generate_encryption_key,
    is_encrypted_file,
    load_encryption_key,
    load_encryption_public_key,
    readable_prefix_bytes,
    recipient_id,
    save_encryption_key,
    save_encryption_public_key,
)
from evidence.keys import generate_signing_key
from evidence.media import digest_file
from evidence.records import Record, RecordType, parse_utc
from evidence.testing import session_open_body
from evidence.verify import verify_tree
from tests.support.agent import kill_mid_segment, restart

TS_PACKET = 188

CONFIG = """
[device]
encryption_key_file = {pub}
[hardware]
backend = "simulated"
[hardware.controls]
hold_time_s = 0.3
[capture]
backend = "simulated"
width = 320
height = 240
fps = 15
pre_event_s = 2.0
segment_duration_s = {segment_s}
[speech]
enabled = false
"""


# --- helpers ------------------------------------------------------------------------------------


def _keys(where: Path) -> tuple[Path, Path, X25519PrivateKey]:
    key = generate_encryption_key()
    private, public = where / "receiver-encryption.key", where / "receiver-encryption.pub"
    save_encryption_key(private, key)
    save_encryption_public_key(public, key.public_key())
    return private, public, key


def _config(where: Path, public: Path, segment_s: float) -> Path:
    path = where / "agent.toml"
    path.write_text(CONFIG.format(pub=f'"{public}"', segment_s=segment_s), encoding="utf-8")
    return path


def _agent(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def _verify(spool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evidence.cli", str(spool), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _ffprobe(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name:format=format_name,duration",
            "-of",
            "default=noprint_wrappers=1",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _plays_as_ts(path: Path) -> bool:
    proc = _ffprobe(path)
    out = proc.stdout
    return (
        proc.returncode == 0
        and "format_name=mpegts" in out
        and "codec_name=h264" in out
        and "codec_name=aac" in out
    )


def _probes_as_media(path: Path) -> bool:
    """ffprobe finds MPEG-TS, H.264 or AAC in it (it may "succeed" on noise by guessing a format
    such as H.263, which is not our media)."""
    proc = _ffprobe(path)
    found = ("format_name=mpegts", "codec_name=h264", "codec_name=aac")
    return proc.returncode == 0 and any(f in proc.stdout for f in found)


def _has_ts_sync(data: bytes, packets: int = 8) -> bool:
    """True if some offset has 0x47 at every 188-byte step for ``packets`` packets in a row."""
    limit = len(data) - TS_PACKET * packets
    return any(
        all(data[start + i * TS_PACKET] == 0x47 for i in range(packets))
        for start in range(max(limit, 0))
    )


def _segments(spool: Path) -> list[Record]:
    [device] = list(layout.iter_devices(spool))
    records = [Record.load(p) for p in layout.iter_record_files(spool, device)]
    return [r for r in records if r.type == RecordType.SEGMENT]


def _media(spool: Path, record: Record) -> Path:
    return layout.media_path(spool, record.device, record.body["file"])


# --- the simulated device with a receiver key ---------------------------------------------------


@pytest.fixture(scope="module")
def encrypted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("encrypted")
    private, public, _ = _keys(where)
    config = _config(where, public, 4.0)
    spool = where / "spool"
    proc = _agent("simulate", "--spool", str(spool), "--seconds", "9", "--config", str(config))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NOT encrypted" not in proc.stderr
    return {"spool": spool, "private": private, "public": public, "config": config}


def test_no_media_file_in_the_spool_is_readable_without_the_key(
    encrypted: dict[str, Path],
) -> None:
    spool = encrypted["spool"]
    segments = _segments(spool)
    assert len(segments) >= 3
    media_dir = layout.media_dir(spool, segments[0].device)
    files = sorted(media_dir.iterdir())
    assert [p.name for p in files] == sorted(r.body["file"] for r in segments)
    for path in files:
        assert not _probes_as_media(path), f"{path.name} is readable media"
        assert not _has_ts_sync(path.read_bytes()), f"{path.name} shows MPEG-TS packets"
    # ... nor anything left over in the agent's private state
    for path in (spool / layout.STATE).rglob("*"):
        if path.is_file() and path.stat().st_size > 4 * TS_PACKET:
            assert not _has_ts_sync(path.read_bytes()), f"plaintext media in {path}"
    want = recipient_id(load_encryption_public_key(encrypted["public"]))
    for record in segments:
        body = record.body
        assert body["encryption"]["recipient"] == want
        assert not body["recovered"]
        assert body["stored"] == digest_file(_media(spool, record)).to_dict()
        assert body["media"]["size"] < body["stored"]["size"]


def test_the_verifier_checks_the_encrypted_spool_with_and_without_the_key(
    encrypted: dict[str, Path],
) -> None:
    spool = encrypted["spool"]
    without = _verify(spool)
    assert without.returncode == 0, without.stdout
    with_key = _verify(spool, "--media-key", str(encrypted["private"]))
    assert with_key.returncode == 0, with_key.stdout
    assert "OK:" in with_key.stdout


def test_a_decrypted_segment_is_the_signed_plaintext_and_plays(
    encrypted: dict[str, Path], tmp_path: Path
) -> None:
    spool = encrypted["spool"]
    key = load_encryption_key(encrypted["private"])
    for record in _segments(spool)[:2]:
        out = tmp_path / record.body["file"]
        info = decrypt_file(_media(spool, record), out, key)
        assert info["truncated_by_crash"] is False
        assert digest_file(out).to_dict() == record.body["media"]
        assert _plays_as_ts(out), _ffprobe(out).stdout
        assert probe_ts(out).frames == record.body["frames"]


def test_a_flipped_ciphertext_byte_is_reported(encrypted: dict[str, Path], tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    shutil.copytree(encrypted["spool"], spool)
    target = _media(spool, _segments(spool)[1])
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    without = _verify(spool)
    assert without.returncode == 1
    assert "media-hash-mismatch" in without.stdout
    assert target.name in without.stdout
    with_key = _verify(spool, "--media-key", str(encrypted["private"]))
    assert with_key.returncode == 1
    assert "authentication failed" in with_key.stdout


def test_status_and_check_say_whether_media_are_encrypted(
    encrypted: dict[str, Path], tmp_path: Path
) -> None:
    spool, config = encrypted["spool"], encrypted["config"]
    on = _agent("status", "--spool", str(spool), "--config", str(config))
    assert on.returncode == 0
    assert "encryption at rest: on" in on.stdout
    off = _agent("status", "--spool", str(spool))
    assert "encryption at rest: OFF (WARNING)" in off.stdout
    # check with a broken key path: the item fails, naming the file
    text = (
        config.read_text(encoding="utf-8")
        .replace(str(encrypted["public"]), str(tmp_path / "missing.pub"))
        .replace("[device]\n", f'[device]\nspool_dir = "{tmp_path / "check-spool"}"\n')
    )
    bad = tmp_path / "bad.toml"
    bad.write_text(text, encoding="utf-8")
    broken = _agent("check", "--config", str(bad), "--json")
    item = _check_item(broken.stdout, "encryption")
    assert item["outcome"] == "fail"
    assert "missing.pub" in str(item)
    plain = tmp_path / "plain.toml"
    plain.write_text(
        "\n".join(line for line in text.splitlines() if "encryption_key_file" not in line),
        encoding="utf-8",
    )
    warned = _agent("check", "--config", str(plain), "--json")
    item = _check_item(warned.stdout, "encryption")
    assert item["outcome"] == "warn"
    assert "NOT encrypted" in item["reason"]


def _check_item(stdout: str, name: str) -> dict[str, Any]:
    import json

    report = json.loads(stdout)
    [item] = [c for c in report["checks"] if c["name"] == name]
    return dict(item)


def test_without_a_key_the_agent_warns_loudly_and_stays_plaintext(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    proc = _agent("simulate", "--spool", str(spool), "--seconds", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [ln for ln in proc.stderr.splitlines() if " WARNING " in ln]
    assert any("NOT encrypted" in ln for ln in warnings), proc.stderr[-2000:]
    for record in _segments(spool):
        assert record.body["encryption"] is None
        assert record.body["stored"] is None
        assert _plays_as_ts(_media(spool, record))
    # the signed session-open carries the warning in its Art. 11 check report
    [device] = list(layout.iter_devices(spool))
    opened = Record.load(next(layout.iter_record_files(spool, device)))
    assert opened.type == RecordType.SESSION_OPEN
    [item] = [c for c in opened.body["checks"]["checks"] if c["name"] == "encryption"]
    assert item["outcome"] == "warn"


# --- the pieces underneath ----------------------------------------------------------------------


def test_flush_puts_everything_written_on_disk_as_whole_chunks(tmp_path: Path) -> None:
    key = generate_encryption_key()
    path = tmp_path / "live.enc"
    written = bytearray()
    with path.open("wb") as fh:
        writer = EncryptingWriter(fh, key.public_key(), chunk_size_bytes=4096)
        for size in (10, 5000, 3, 9000):
            block = os.urandom(size)
            writer.write(block)
            written += block
            writer.flush()
            os.fsync(writer.fileno())
            # What a crash right now would leave: every byte written so far, authenticated.
            snapshot = tmp_path / "snapshot.enc"
            shutil.copyfile(path, snapshot)
            assert readable_prefix_bytes(snapshot) == snapshot.stat().st_size
            with pytest.raises(DecryptionError, match="truncated"):
                decrypt_file(snapshot, tmp_path / "strict.out", key)
            assert not (tmp_path / "strict.out").exists()
            info = decrypt_file(snapshot, tmp_path / "prefix.out", key, recovered_prefix=True)
            assert info["truncated_by_crash"] is True
            assert (tmp_path / "prefix.out").read_bytes() == bytes(written)
        writer.write(b"tail")
        writer.close()
    written += b"tail"
    info = decrypt_file(path, tmp_path / "whole.out", key, recovered_prefix=True)
    assert info["truncated_by_crash"] is False
    assert (tmp_path / "whole.out").read_bytes() == bytes(written)


def test_recovered_prefix_mode_still_refuses_tampering(tmp_path: Path) -> None:
    key = generate_encryption_key()
    path = tmp_path / "cut.enc"
    with path.open("wb") as fh:
        writer = EncryptingWriter(fh, key.public_key(), chunk_size_bytes=1024)
        for _ in range(6):
            writer.write(os.urandom(700))
            writer.flush()
    data = path.read_bytes()
    # a frame cut in the middle (the crash tore it): the device keeps only the whole frames
    torn = tmp_path / "torn.enc"
    torn.write_bytes(data + b"\x00\x00\x04\x10" + os.urandom(300))
    assert readable_prefix_bytes(torn) == len(data)
    frame = (len(data) - HEADER_SIZE_BYTES) // 6
    frames = [
        data[HEADER_SIZE_BYTES + i * frame : HEADER_SIZE_BYTES + (i + 1) * frame] for i in range(6)
    ]
    header = data[:HEADER_SIZE_BYTES]
    cases = {
        "swapped": header + b"".join([frames[0], frames[2], frames[1], *frames[3:]]),
        "dropped": header + b"".join([frames[0], *frames[2:]]),
        "altered": data[:-5] + bytes([data[-5] ^ 1]) + data[-4:],
    }
    for name, bad in cases.items():
        path = tmp_path / f"{name}.enc"
        path.write_bytes(bad)
        with pytest.raises(DecryptionError, match="authentication failed"):
            list(decrypt_blocks(path, key, recovered_prefix=True))
    # dropping whole frames from the end is exactly what a crash does: accepted, and reported
    cut = tmp_path / "short.enc"
    cut.write_bytes(header + b"".join(frames[:3]))
    assert decrypt_file(cut, tmp_path / "short.out", key, recovered_prefix=True)[
        "truncated_by_crash"
    ]


def test_the_spool_counts_frames_of_the_ts_it_encrypts(mpegts_clips: list[Path]) -> None:
    data = mpegts_clips[0].read_bytes()
    progress = _TsProgress()
    step = 1000
    for off in range(0, len(data), step):
        progress.feed(data[off : off + step])
    probe = probe_ts(mpegts_clips[0])
    assert progress.frames == probe.frames
    assert abs(progress.duration_us() - probe.duration_us) <= 70_000


def test_a_plaintext_part_is_encrypted_when_sealed_on_an_encrypting_spool(
    tmp_path: Path, mpegts_clips: list[Path]
) -> None:
    key = generate_encryption_key()
    clock = SimulatedClock(datetime(2026, 5, 4, 9, 0, tzinfo=UTC), boot_id="boot-A")
    spool = RecordingSpool(
        tmp_path, "BC-7", generate_signing_key(), clock, recipient=key.public_key()
    )
    spool.append(RecordType.SESSION_OPEN, "S1", session_open_body())
    part = spool.part_path("S1", 0)
    shutil.copyfile(mpegts_clips[0], part)
    plain = digest_file(part)
    t0 = clock.utc_now()
    stats = SegmentStats(0, 0, 1_000_000, t0, t0, 15, 0, 0, {"codec": "h264"}, None)
    record = spool.seal(part, "S1", 0, stats, recovered=True)
    stored = layout.media_path(tmp_path, "BC-7", "S1-0000.ts")
    assert is_encrypted_file(stored)
    assert not part.exists()
    assert record.body["media"] == plain.to_dict()
    assert record.body["stored"] == digest_file(stored).to_dict()
    assert not [p for p in spool.parts_dir.iterdir()], "plaintext left behind"


# --- SIGKILL mid-segment with encryption on -----------------------------------------------------


@pytest.mark.slow
def test_sigkill_mid_segment_with_encryption_then_restart_recovers(tmp_path: Path) -> None:
    private, public, _ = _keys(tmp_path)
    config = _config(tmp_path, public, 4.0)
    spool = tmp_path / "spool"
    # segment 0 = 2 s pre-event + 4 s; kill 2.5 s into segment 1
    killed_at = kill_mid_segment(spool, config, tmp_path)
    [part] = list((spool / "state" / "parts").glob("*.part"))
    assert is_encrypted_file(part)
    assert not _probes_as_media(part)
    assert not _has_ts_sync(part.read_bytes())
    assert part.with_name(part.name + PROGRESS_SUFFIX).exists()

    out = restart(spool, config, tmp_path)
    assert "1 segment(s) sealed as recovered" in out
    assert not list((spool / "state" / "parts").iterdir())

    segments = _segments(spool)
    first_session = segments[0].session
    [recovered] = [r for r in segments if r.body["recovered"]]
    assert recovered.session == first_session
    assert recovered.body["index"] == 1
    assert recovered.body["media"] is None
    assert recovered.body["encryption"] is not None
    stored = _media(spool, recovered)
    assert recovered.body["stored"] == digest_file(stored).to_dict()
    assert recovered.body["frames"] > 20

    assert _verify(spool).returncode == 0
    with_key = _verify(spool, "--media-key", str(private))
    assert with_key.returncode == 0, with_key.stdout
    assert "truncated by the crash" in with_key.stdout

    key = load_encryption_key(private)
    with pytest.raises(DecryptionError, match="truncated"):
        decrypt_file(stored, tmp_path / "strict.ts", key)
    prefix = tmp_path / "recovered.ts"
    info = decrypt_file(stored, prefix, key, recovered_prefix=True)
    assert info["truncated_by_crash"] is True
    assert _plays_as_ts(prefix), _ffprobe(prefix).stdout
    probe = probe_ts(prefix)
    assert probe.frames >= recovered.body["frames"]
    # Media lost = wall time from the segment's start to the kill, minus the media we have.
    started = parse_utc(recovered.body["utc_start"])
    lost_s = (killed_at - started).total_seconds() - probe.duration_us / 1e6
    recorded_lost_s = (killed_at - parse_utc(recovered.body["utc_end"])).total_seconds()
    print(f"encrypted: media lost at SIGKILL {lost_s:.2f} s (record says {recorded_lost_s:.2f} s)")
    assert lost_s <= 1.5, f"{lost_s:.2f} s of media lost"
    assert recorded_lost_s <= 1.5 + 0.5
    report = verify_tree(spool)
    assert report.ok, [str(v) for v in report.violations]


def test_the_provisioned_agent_config_encrypts_to_the_bundled_receiver_key(tmp_path: Path) -> None:
    import tomllib

    from agent.checks import load_recipient
    from agent.config import config_from_dict
    from provisioning.configs import render_agent_config

    _, public, key = _keys(tmp_path)
    text = render_agent_config("DEV-0007", "dock.local", 8883, root=tmp_path)
    cfg = config_from_dict(tomllib.loads(text), source="provisioned agent.toml")
    assert cfg.encryption_key_path == public
    recipient = load_recipient(cfg)
    assert recipient is not None
    assert recipient_id(recipient) == recipient_id(key.public_key())


def test_power_loss_in_the_first_segment_keeps_exactly_what_was_flushed(
    tmp_path: Path, mpegts_clips: list[Path]
) -> None:
    """In-process: what the device flushed before the cut is recovered, bit for bit, and only
    the receiver's key reads it; the verifier never reads it as a normal segment."""
    from agent.recovery import recover
    from agent.spool import SessionState
    from evidence.decrypt import media_decryptor
    from evidence.records import format_utc
    from evidence.violations import ViolationKind

    private, _, key = _keys(tmp_path)
    signing = generate_signing_key()
    t0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
    root = tmp_path / "spool"
    spool = RecordingSpool(
        root, "BC-7", signing, SimulatedClock(t0, boot_id="boot-A"), recipient=key.public_key()
    )
    state = SessionState(session="S1", boot_id="boot-A", opened_utc=format_utc(t0))
    spool.save_session(state)
    spool.append(RecordType.SESSION_OPEN, "S1", session_open_body())
    clip = mpegts_clips[0].read_bytes()
    flushed = len(clip) // 2 // TS_PACKET * TS_PACKET
    fh = spool.open_part("S1", 0)
    fh.write(clip[:flushed])
    fh.flush()
    os.fsync(fh.fileno())
    fh.write(clip[flushed:])  # never flushed: lost with the power
    part = spool.part_path("S1", 0)
    on_disk = part.read_bytes()
    del fh  # the process is gone; nothing more reaches the file

    part.write_bytes(on_disk)
    result = recover(
        RecordingSpool(
            root, "BC-7", signing, SimulatedClock(t0, boot_id="boot-B"), recipient=key.public_key()
        )
    )
    [recovered] = result.recovered_segments
    assert recovered.body["media"] is None
    assert recovered.body["recovered"]
    [gap] = result.gaps
    assert gap.body["cause"] == "power-loss"
    progress = _TsProgress()
    progress.feed(clip[:flushed])
    assert recovered.body["frames"] == progress.frames > 0
    stored = _media(root, recovered)
    out = tmp_path / "prefix.ts"
    assert decrypt_file(stored, out, key, recovered_prefix=True)["truncated_by_crash"]
    assert out.read_bytes() == clip[:flushed]

    assert verify_tree(root).ok
    report = verify_tree(root, decryptor=media_decryptor(private))
    assert report.ok, [str(v) for v in report.violations]
    assert any("truncated by the crash" in n for n in report.notes)
    wrong = tmp_path / "wrong.key"
    save_encryption_key(wrong, generate_encryption_key())
    kinds = {v.kind for v in verify_tree(root, decryptor=media_decryptor(wrong)).violations}
    assert kinds == {ViolationKind.MEDIA_UNREADABLE}
    # A segment without a plaintext digest that does not say it was recovered is malformed.
    later = RecordingSpool(
        root, "BC-7", signing, SimulatedClock(t0, boot_id="boot-B"), recipient=key.public_key()
    )
    body = dict(recovered.body, recovered=False, index=1, file="S2-0000.ts")
    later.append(RecordType.SEGMENT, "S2", body)
    kinds = {v.kind for v in verify_tree(root).violations}
    assert ViolationKind.MALFORMED_BODY in kinds


def test_an_unreadable_receiver_key_stops_the_agent_instead_of_recording_plaintext(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, tmp_path / "missing.pub", 4.0)
    spool = tmp_path / "spool"
    proc = _agent("simulate", "--spool", str(spool), "--seconds", "1", "--config", str(config))
    assert proc.returncode == 2
    assert "encryption_key_file" in proc.stderr
    assert "missing.pub" in proc.stderr
    assert not list(spool.rglob("*.ts"))
    assert not list(spool.rglob("*.part"))
