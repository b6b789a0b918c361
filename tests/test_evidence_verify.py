"""Tampering with a real chain over real media: each change is reported with its own kind."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from evidence import layout
from evidence.canonical import canonical_bytes
from evidence.chain import DeviceChain
from evidence.keys import KeyRing, generate_signing_key, save_public_key
from evidence.media import digest_file
from evidence.records import Record, RecordType, format_utc
from evidence.testing import SteppingClock, build_chain, default_assignment, write_session
from evidence.verify import verify_tree

DEVICE = "BWC-0001"
OTHER = "BWC-0002"


@pytest.fixture(scope="session")
def media_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three short real MPEG-TS files (H.264 + AAC), over 256 KiB so they span several chunks."""
    out = tmp_path_factory.mktemp("media")
    files = []
    for i in range(3):
        path = out / f"clip{i}.ts"
        subprocess.run(
            [
                "ffmpeg",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                f"testsrc2=size=320x240:rate=15:duration=2,noise=alls={20 + i}:allf=t",
                "-f",
                "lavfi",
                "-i",
                f"sine=frequency={440 + 100 * i}:duration=2",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-crf",
                "10",
                "-g",
                "15",
                "-c:a",
                "aac",
                "-shortest",
                "-f",
                "mpegts",
                str(path),
            ],
            check=True,
        )
        assert path.stat().st_size > 300_000
        files.append(path)
    return files


@pytest.fixture(scope="session")
def pristine(
    tmp_path_factory: pytest.TempPathFactory, media_files: list[Path]
) -> tuple[Path, Path]:
    """A tree with device A (3 sessions) and device B (1 session); returns (tree, keys dir)."""
    root = tmp_path_factory.mktemp("pristine") / "tree"
    keys = tmp_path_factory.mktemp("keys")
    for device, sessions in ((DEVICE, 3), (OTHER, 1)):
        key = generate_signing_key()
        save_public_key(keys / f"{device}.pub", key.public_key())
        build_chain(root, device, key, media_files, sessions=sessions)
    return root, keys


@pytest.fixture
def tree(tmp_path: Path, pristine: tuple[Path, Path]) -> Path:
    copy = tmp_path / "tree"
    shutil.copytree(pristine[0], copy)
    return copy


@pytest.fixture
def keyring(pristine: tuple[Path, Path]) -> KeyRing:
    return KeyRing.from_files(sorted(pristine[1].glob("*.pub")))


def records_dir(tree: Path, device: str = DEVICE) -> Path:
    return layout.records_dir(tree, device)


def media_of(tree: Path, seq: int, device: str = DEVICE) -> Path:
    record = Record.load(layout.record_path(tree, device, seq))
    assert record.type == RecordType.SEGMENT
    return layout.media_path(tree, device, record.body["file"])


def segment_seqs(tree: Path, device: str = DEVICE) -> list[int]:
    return [
        r.seq
        for r in map(Record.load, layout.iter_record_files(tree, device))
        if r.type == RecordType.SEGMENT
    ]


def kinds_at(report, seq=None) -> set[str]:  # type: ignore[no-untyped-def]
    return {str(v.kind) for v in report.violations if seq is None or v.seq == seq}


def test_untouched_chain_verifies_clean(tree: Path, keyring: KeyRing) -> None:
    report = verify_tree(tree, keyring)
    assert report.violations == []
    summary = report.devices[DEVICE]
    assert (summary.records, summary.sessions, summary.segments) == (3 * 6, 3, 9)
    assert report.devices[OTHER].records == 6


def test_flipped_media_byte_is_a_chunk_and_media_hash_mismatch(
    tree: Path, keyring: KeyRing
) -> None:
    seq = segment_seqs(tree)[4]
    path = media_of(tree, seq)
    data = bytearray(path.read_bytes())
    data[300_000] ^= 0x01  # inside chunk 1 (256 KiB chunks)
    path.write_bytes(bytes(data))
    report = verify_tree(tree, keyring)
    assert kinds_at(report) == {"chunk-hash-mismatch", "media-hash-mismatch"}
    chunk = next(v for v in report.violations if v.kind == "chunk-hash-mismatch")
    assert chunk.seq == seq
    assert chunk.file.endswith(path.name)
    assert ": 1" in chunk.detail


def test_truncated_media_is_a_size_mismatch(tree: Path, keyring: KeyRing) -> None:
    seq = segment_seqs(tree)[0]
    path = media_of(tree, seq)
    path.write_bytes(path.read_bytes()[:100_000])
    report = verify_tree(tree, keyring)
    assert "media-size-mismatch" in kinds_at(report, seq)
    assert kinds_at(report) <= {"media-size-mismatch", "media-hash-mismatch", "chunk-hash-mismatch"}


def test_deleted_media_is_missing_media(tree: Path, keyring: KeyRing) -> None:
    seq = segment_seqs(tree)[2]
    media_of(tree, seq).unlink()
    report = verify_tree(tree, keyring)
    assert kinds_at(report) == {"missing-media"}
    assert report.violations[0].seq == seq


def test_extra_media_file_is_reported(tree: Path, keyring: KeyRing) -> None:
    (layout.media_dir(tree, DEVICE) / "smuggled.ts").write_bytes(b"\x47" * 188)
    report = verify_tree(tree, keyring)
    assert kinds_at(report) == {"extra-media"}


def test_altered_record_field_breaks_signature_and_hash_link(tree: Path, keyring: KeyRing) -> None:
    path = layout.record_path(tree, DEVICE, 1)
    data = json.loads(path.read_bytes())
    data["body"]["place"] = "elsewhere"
    data["body"]["frames"] = 1
    path.write_bytes(canonical_bytes(data))
    report = verify_tree(tree, keyring)
    assert kinds_at(report, 1) == {"bad-signature", "record-hash-mismatch"}
    # the altered frame count no longer adds up to what the session-close says
    assert kinds_at(report) == {"bad-signature", "record-hash-mismatch", "session-close-mismatch"}


def test_deleted_middle_record_is_missing_seq(tree: Path, keyring: KeyRing) -> None:
    layout.record_path(tree, DEVICE, 8).unlink()
    report = verify_tree(tree, keyring)
    missing = [v for v in report.violations if v.kind == "missing-seq"]
    assert len(missing) == 1
    assert missing[0].seq == 8
    # the media of the deleted segment record is now unaccounted for
    assert kinds_at(report) <= {
        "missing-seq",
        "extra-media",
        "unexplained-gap",
        "session-close-mismatch",
    }


def test_deleted_whole_middle_session_is_a_missing_range(tree: Path, keyring: KeyRing) -> None:
    middle = [
        r for r in map(Record.load, layout.iter_record_files(tree, DEVICE)) if 6 <= r.seq < 12
    ]
    assert middle[0].type == RecordType.SESSION_OPEN
    assert middle[-1].type == RecordType.SESSION_CLOSE
    for record in middle:
        layout.record_path(tree, DEVICE, record.seq).unlink()
        if record.type == RecordType.SEGMENT:
            layout.media_path(tree, DEVICE, record.body["file"]).unlink()
    report = verify_tree(tree, keyring)
    assert kinds_at(report) == {"missing-seq"}
    assert "seqs 6..11 (6)" in report.violations[0].detail


def test_swapped_records_are_reordered(tree: Path, keyring: KeyRing) -> None:
    a, b = layout.record_path(tree, DEVICE, 2), layout.record_path(tree, DEVICE, 3)
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    report = verify_tree(tree, keyring)
    assert kinds_at(report) == {"reordered"}
    assert {v.file for v in report.violations} == {
        str(a.relative_to(tree)),
        str(b.relative_to(tree)),
    }


def test_record_replayed_from_another_device_is_foreign(tree: Path, keyring: KeyRing) -> None:
    replay = layout.record_path(tree, OTHER, 3).read_bytes()
    target = layout.record_path(tree, DEVICE, 3)
    target.write_bytes(replay)
    report = verify_tree(tree, keyring)
    assert "foreign-device" in kinds_at(report, 3)
    assert "broken-prev" in kinds_at(report)


def test_record_resigned_with_another_key_is_unknown_key(tree: Path, keyring: KeyRing) -> None:
    path = layout.record_path(tree, DEVICE, 4)
    record = Record.load(path)
    forger = generate_signing_key()
    from dataclasses import replace

    from evidence.keys import key_id

    forged = replace(record, key=key_id(forger.public_key()), body={**record.body, "frames": 0})
    path.write_bytes(forged.sign(forger).canonical())
    report = verify_tree(tree, keyring)
    assert "unknown-key" in kinds_at(report, 4)
    assert "bad-signature" not in kinds_at(report)


def test_time_going_backwards_is_reported(tmp_path: Path, media_files: list[Path]) -> None:
    key = generate_signing_key()
    chain = DeviceChain(tmp_path, DEVICE, key)
    clock = SteppingClock()
    write_session(chain, media_files[:1], clock=clock)
    clock.now = clock.start  # the wall clock jumps back an hour's worth of records
    clock.mono_ns -= 10_000_000_000
    write_session(chain, media_files[:1], clock=clock)
    report = verify_tree(tmp_path, KeyRing([key.public_key()]))
    assert kinds_at(report) == {"time-backwards"}
    assert report.violations[0].seq == 4


def _session_with_hole(root: Path, key, media: list[Path], *, gap_record: bool) -> None:  # type: ignore[no-untyped-def]
    """One session of two segments with 30 s of nothing between them."""
    chain = DeviceChain(root, DEVICE, key)
    clock = SteppingClock()
    open_body = {
        "assignment": default_assignment(),
        "checks": {"outcome": "pass", "checks": []},
        "preamble": {"text": "", "lang": "zh", "voice": "cmn-latn-pinyin"},
        "pre_event_us": 0,
    }
    chain.append(RecordType.SESSION_OPEN, "sess-hole", open_body, clock.tick(1))
    for i, src in enumerate(media[:2]):
        offset_us = 0
        if i == 1:
            gap_start = format_utc(clock.now or clock.start)
            t = clock.tick(30)
            offset_us = 30_000_000
            if gap_record:
                chain.append(
                    RecordType.GAP,
                    "sess-hole",
                    {
                        "cause": "camera-fault",
                        "start_utc": gap_start,
                        "end_utc": t.utc,
                        "spoken_reason": True,
                        "detail": "camera delivered no frames",
                    },
                    t,
                )
        name = f"hole-{i:05d}.ts"
        dst = layout.media_path(root, DEVICE, name)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        start = format_utc(clock.now or clock.start)
        t = clock.tick(10)
        body = {
            "index": i,
            "file": name,
            "media": digest_file(dst).to_dict(),
            "stored": None,
            "encryption": None,
            "utc_start": start,
            "utc_end": t.utc,
            "media_start_us": i * 10_000_000 + offset_us,
            "media_end_us": (i + 1) * 10_000_000 + offset_us,
            "frames": 150,
            "dropped_frames": 0,
            "video": {"codec": "h264", "width": 320, "height": 240, "fps": 15},
            "audio": None,
            "pre_event_us": 0,
            "recovered": False,
        }
        chain.append(RecordType.SEGMENT, "sess-hole", body, t)
    close = {
        "reason": "stopped",
        "duration_us": 20_000_000,
        "segments": 2,
        "frames": 300,
        "dropped_frames": 0,
        "gaps": 1 if gap_record else 0,
    }
    chain.append(RecordType.SESSION_CLOSE, "sess-hole", close, clock.tick(1))


def test_segment_hole_without_gap_record_is_unexplained(
    tmp_path: Path, media_files: list[Path]
) -> None:
    key = generate_signing_key()
    _session_with_hole(tmp_path / "a", key, media_files, gap_record=False)
    report = verify_tree(tmp_path / "a", KeyRing([key.public_key()]))
    assert kinds_at(report) == {"unexplained-gap"}
    assert "after 30.000 s wall clock" in report.violations[0].detail
    # The same hole with a signed gap record between the segments is explained.
    _session_with_hole(tmp_path / "b", key, media_files, gap_record=True)
    assert verify_tree(tmp_path / "b", KeyRing([key.public_key()])).violations == []


def test_many_tamperings_at_once_are_all_reported(tree: Path, keyring: KeyRing) -> None:
    """The verifier never stops at the first problem."""
    media_of(tree, segment_seqs(tree)[0]).unlink()
    layout.record_path(tree, DEVICE, 14).unlink()
    (records_dir(tree) / "0000000016.json").write_bytes(b"{not json")
    report = verify_tree(tree, keyring)
    assert {"missing-media", "missing-seq", "unreadable-record"} <= kinds_at(report)


def test_without_trusted_keys_tree_keys_are_used_and_said_so(tree: Path) -> None:
    report = verify_tree(tree)
    assert report.ok
    assert any("proves the evidence is intact" in n for n in report.notes)


def test_case_file_excerpt_with_manifest_verifies(tree: Path, keyring: KeyRing) -> None:
    """A case file holds only some sessions; the manifest declares which seq ranges."""
    for seq in list(range(0, 6)) + list(range(12, 18)):
        record = Record.load(layout.record_path(tree, DEVICE, seq))
        layout.record_path(tree, DEVICE, seq).unlink()
        if record.type == RecordType.SEGMENT:
            layout.media_path(tree, DEVICE, record.body["file"]).unlink()
    shutil.rmtree(layout.device_dir(tree, OTHER))
    (tree / "manifest.json").write_text(json.dumps({"devices": {DEVICE: {"ranges": [[6, 11]]}}}))
    assert verify_tree(tree, keyring).violations == []
    # Without the manifest the same excerpt is reported as incomplete.
    (tree / "manifest.json").unlink()
    assert kinds_at(verify_tree(tree, keyring)) == {"missing-seq"}


def test_media_freed_against_a_receipt_is_accepted_only_with_a_valid_one(
    tree: Path, keyring: KeyRing
) -> None:
    """A device frees space only after the receiver's signed receipt; the spool still verifies."""
    from evidence.receipt import Receipt

    receiver = generate_signing_key()
    receivers = KeyRing([receiver.public_key()])
    seq = segment_seqs(tree)[1]
    record = Record.load(layout.record_path(tree, DEVICE, seq))
    media_of(tree, seq).unlink()
    receipts = tree / "state" / "receipts"
    receipts.mkdir(parents=True)
    receipt = Receipt.create(
        device=DEVICE,
        record=record.hash(),
        seq=seq,
        record_type="segment",
        status="stored",
        receiver_key=receiver,
        media_sha256=record.body["media"]["sha256"],
        media_size=record.body["media"]["size"],
    )
    (receipts / f"{record.hash()}.json").write_bytes(receipt.canonical())
    report = verify_tree(tree, keyring, receiver_keys=receivers)
    assert report.violations == []
    assert report.devices[DEVICE].released == 1
    # A receipt signed by anyone else does not excuse the missing media.
    forged = Receipt.create(
        device=DEVICE,
        record=record.hash(),
        seq=seq,
        record_type="segment",
        status="stored",
        receiver_key=generate_signing_key(),
        media_sha256=record.body["media"]["sha256"],
        media_size=record.body["media"]["size"],
    )
    (receipts / f"{record.hash()}.json").write_bytes(forged.canonical())
    report = verify_tree(tree, keyring, receiver_keys=receivers)
    assert kinds_at(report) == {"missing-media"}
    assert "untrusted key" in report.violations[0].detail


def test_one_trusted_key_cannot_vouch_for_another_devices_chain(
    tree: Path, keyring: KeyRing, pristine: tuple[Path, Path]
) -> None:
    """With both devices' keys trusted, device A's record re-signed with B's key is caught."""
    from dataclasses import replace

    from evidence.keys import key_id

    other_key = generate_signing_key()  # stands in for B's key, trusted too
    ring = KeyRing([*(keyring.get(k) for k in keyring.ids()), other_key.public_key()])  # type: ignore[misc]
    path = layout.record_path(tree, DEVICE, 7)
    record = Record.load(path)
    forged = replace(record, key=key_id(other_key.public_key()))
    path.write_bytes(forged.sign(other_key).canonical())
    report = verify_tree(tree, ring)
    assert "key-changed" in kinds_at(report, 7)


def test_key_dropped_into_the_tree_does_not_excuse_a_resigned_tail(tree: Path) -> None:
    """Without --key the device's own device.pub is its key; keys/ cannot widen it."""
    from dataclasses import replace

    from evidence.keys import key_id

    intruder = generate_signing_key()
    (tree / "keys").mkdir()
    save_public_key(tree / "keys" / "extra.pub", intruder.public_key())
    path = layout.record_path(tree, DEVICE, 17)
    record = Record.load(path)
    path.write_bytes(replace(record, key=key_id(intruder.public_key())).sign(intruder).canonical())
    assert "unknown-key" in kinds_at(verify_tree(tree), 17)


@pytest.mark.parametrize(
    ("field", "value"),
    [("session", "\ud800"), ("mono_ns", 2**60)],
    ids=["lone-surrogate", "unsafe-integer"],
)
def test_uncanonicalizable_record_is_reported_and_verification_goes_on(
    tree: Path, keyring: KeyRing, field: str, value: object
) -> None:
    media = media_of(tree, segment_seqs(tree)[7])
    path = layout.record_path(tree, DEVICE, 5)
    data = json.loads(path.read_bytes())
    if field == "mono_ns":
        data["time"]["mono_ns"] = value
    else:
        data[field] = value
    path.write_text(json.dumps(data))  # json escapes the surrogate as \ud800
    media.write_bytes(b"changed")
    report = verify_tree(tree, keyring)
    assert "unreadable-record" in kinds_at(report, 5)
    assert "media-size-mismatch" in kinds_at(report)  # the rest of the tree was still checked


def test_chain_never_overwrites_an_existing_record(tmp_path: Path) -> None:
    """A second writer on the same chain fails loudly instead of replacing records."""
    from evidence.errors import ChainError

    clock = SteppingClock()
    first = DeviceChain(tmp_path, DEVICE, generate_signing_key())
    second = DeviceChain(tmp_path, DEVICE, generate_signing_key())
    original = first.append(RecordType.MARKER, "s", {"kind": "arrival"}, clock.tick(1))
    with pytest.raises(ChainError, match="already exists"):
        second.append(RecordType.MARKER, "s", {"kind": "other"}, clock.tick(1))
    assert Record.load(layout.record_path(tmp_path, DEVICE, 0)) == original
