"""Rebuild the published test vectors of the evidence format, deterministically.

    python -m tests.vectors.generate [OUT_DIR]      (default: tests/vectors)

Writes ``clean/`` (a small evidence tree: one device, two sessions, tiny media), one tree per
tampered variant, ``keys/`` (the public keys the vectors are checked with) and ``expected.json``
(for each vector: the ``bodycam-verify`` arguments, the expected exit status and the exact set
of violation kinds). Keys come from fixed seeds (test-only, never use them for anything else)
and every time is fixed, so the output is byte-for-byte the same on every run (Ed25519
signatures are deterministic). Encrypted media is not among the vectors: encryption at rest
draws a fresh ephemeral key per file by design.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from evidence import layout
from evidence.canonical import canonical_bytes
from evidence.chain import DeviceChain
from evidence.keys import save_public_key
from evidence.media import digest_file
from evidence.receipt import Receipt
from evidence.records import Record, RecordType, format_utc
from evidence.testing import SteppingClock, session_open_body

DEVICE = "BWC-VEC-1"
SESSIONS = ("session-a", "session-b")
CHUNK = 512
PACKETS = 6  # 1,128 bytes of media per segment: three 512-byte chunks
SEGMENT_S = 10
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def seeded_key(label: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(label.encode()).digest())


DEVICE_KEY = seeded_key("bodycam test vector device key: test only")
RECEIVER_KEY = seeded_key("bodycam test vector receiver key: test only")
ROGUE_KEY = seeded_key("bodycam test vector rogue key: test only")


def media_bytes(name: str) -> bytes:
    """Deterministic MPEG-TS-sized packets (sync byte 0x47 + 187 bytes)."""
    out = bytearray()
    for k in range(PACKETS):
        seed = hashlib.sha256(f"{name}:{k}".encode()).digest()
        out += b"\x47" + (seed * 6)[:187]
    return bytes(out)


@dataclass
class Plan:
    """How to build one tree; hooks change bodies or times before signing."""

    sessions: tuple[str, ...] = SESSIONS
    body_hook: Callable[[int, str, dict[str, Any]], dict[str, Any]] | None = None
    gap_s: float = 30.0  # the hole in session b, covered by its gap record
    notes: dict[str, Any] = field(default_factory=dict)


def build(root: Path, plan: Plan | None = None) -> list[Record]:
    """One device, two sessions: a (2 segments, a marker) and b (2 segments around a gap)."""
    plan = plan or Plan()
    chain = DeviceChain(root, DEVICE, DEVICE_KEY)
    clock = SteppingClock(start=T0, boot_id="boot-vectors-0001")
    records: list[Record] = []

    def append(kind: str, session: str, body: dict[str, Any], seconds: float) -> None:
        seq = chain.head_seq + 1
        if plan.body_hook is not None:
            body = plan.body_hook(seq, kind, body)
        records.append(chain.append(kind, session, body, clock.tick(seconds)))

    for n, session in enumerate(plan.sessions):
        append(RecordType.SESSION_OPEN, session, session_open_body(), 1)
        media_us = 0
        for index in range(2):
            if n == 1 and index == 1:
                gap_start = clock.now or T0
                gap_end = gap_start + timedelta(seconds=plan.gap_s)
                gap = {
                    "cause": "camera-fault",
                    "start_utc": format_utc(gap_start),
                    "end_utc": format_utc(gap_end),
                    "spoken_reason": True,
                    "detail": "camera delivered no frames; the officer stated the reason",
                }
                append(RecordType.GAP, session, gap, plan.gap_s)
            name = f"{n}-{session}-{index:05d}.ts"
            path = layout.media_path(root, DEVICE, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(media_bytes(name))
            start = clock.now or T0
            body = {
                "index": index,
                "file": name,
                "media": digest_file(path, CHUNK).to_dict(),
                "stored": None,
                "encryption": None,
                "utc_start": format_utc(start),
                "utc_end": format_utc(start + timedelta(seconds=SEGMENT_S)),
                "media_start_us": media_us,
                "media_end_us": media_us + SEGMENT_S * 1_000_000,
                "frames": SEGMENT_S * 15,
                "dropped_frames": 0,
                "video": {"codec": "h264", "width": 320, "height": 240, "fps": 15},
                "audio": {"codec": "aac", "sample_rate": 16000, "channels": 1},
                "pre_event_us": 0,
                "recovered": False,
            }
            if n == 1 and index == 1:
                body["media_start_us"] = media_us = 0  # capture restarted after the fault
                body["media_end_us"] = SEGMENT_S * 1_000_000
            media_us = body["media_end_us"]
            append(RecordType.SEGMENT, session, body, SEGMENT_S)
        if n == 0:
            marker = {"kind": "important", "utc": format_utc(clock.now or T0), "media_us": 5}
            append(RecordType.MARKER, session, {**marker, "note": "documents shown"}, 0.5)
        close = {
            "reason": "stopped",
            "duration_us": 2 * SEGMENT_S * 1_000_000,
            "segments": 2,
            "frames": 2 * SEGMENT_S * 15,
            "dropped_frames": 0,
            "gaps": 1 if n == 1 else 0,
        }
        append(RecordType.SESSION_CLOSE, session, close, 1)
    return records


# -- tampering helpers -------------------------------------------------------------------------
def rec(root: Path, seq: int) -> Path:
    return layout.record_path(root, DEVICE, seq)


def med(root: Path, name: str) -> Path:
    return layout.media_path(root, DEVICE, name)


def edit_json(root: Path, seq: int, change: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(rec(root, seq).read_bytes())
    change(data)
    rec(root, seq).write_bytes(canonical_bytes(data))


def receipt_for(root: Path, seq: int, key: Ed25519PrivateKey) -> None:
    record = Record.load(rec(root, seq))
    digest = record.body["media"]
    receipt = Receipt.create(
        device=DEVICE,
        record=record.hash(),
        seq=seq,
        record_type="segment",
        status="stored",
        receiver_key=key,
        media_sha256=digest["sha256"],
        media_size=digest["size"],
        when=T0 + timedelta(hours=1),
    )
    path = root / layout.STATE / "receipts" / f"{record.hash()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(receipt.canonical())


@dataclass(frozen=True)
class Vector:
    name: str
    description: str
    make: Callable[[Path], None]  # changes a copy of the clean tree (or builds its own)
    kinds: tuple[str, ...] = ()
    args: tuple[str, ...] = ("--key", "keys/device.pub")
    rebuild: Plan | None = None  # build from this plan instead of copying the clean tree


def _nothing(root: Path) -> None:
    return None


def _excerpt(root: Path) -> None:
    for seq in range(0, 5):
        rec(root, seq).unlink()
    for index in range(2):
        med(root, f"0-session-a-{index:05d}.ts").unlink()
    (root / "manifest.json").write_bytes(
        canonical_bytes({"devices": {DEVICE: {"ranges": [[5, 9]]}}})
    )


def _excerpt_tail_cut(root: Path) -> None:
    _excerpt(root)
    rec(root, 9).unlink()


def _pretty(root: Path) -> None:
    rec(root, 4).write_text(json.dumps(json.loads(rec(root, 4).read_bytes()), indent=2))


def _drop_first_session(root: Path) -> None:
    for seq in range(0, 5):
        rec(root, seq).unlink()
    for index in range(2):
        med(root, f"0-session-a-{index:05d}.ts").unlink()


def _flip_media(root: Path) -> None:
    path = med(root, "0-session-a-00001.ts")
    data = bytearray(path.read_bytes())
    data[700] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate_media(root: Path) -> None:
    path = med(root, "0-session-a-00000.ts")
    path.write_bytes(path.read_bytes()[:-188])


def _swap(root: Path) -> None:
    a, b = rec(root, 2).read_bytes(), rec(root, 3).read_bytes()
    rec(root, 2).write_bytes(b)
    rec(root, 3).write_bytes(a)


def _freed_with_receipt(key: Ed25519PrivateKey) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        receipt_for(root, 1, key)
        med(root, "0-session-a-00000.ts").unlink()

    return make


def _resign_with(change: Callable[[int, str, dict[str, Any]], dict[str, Any]]) -> Plan:
    return Plan(body_hook=change)


def _impossible_marker_time(seq: int, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "utc": "2026-13-45T09:00:21.000000Z"} if kind == RecordType.MARKER else body


def _close_lies(seq: int, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "segments": 3} if kind == RecordType.SESSION_CLOSE and seq == 4 else body


def _segment_lacks_video(seq: int, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    if kind != RecordType.SEGMENT or seq != 1:
        return body
    return {k: v for k, v in body.items() if k != "video"}


VECTORS: tuple[Vector, ...] = (
    Vector("clean", "the untouched tree", _nothing),
    Vector("clean-without-key", "the untouched tree, keys from the tree itself", _nothing, args=()),
    Vector("excerpt", "a case file: session b only, declared by the manifest", _excerpt),
    Vector(
        "excerpt-tail-cut",
        "the excerpt with its last record (the session-close) deleted",
        _excerpt_tail_cut,
        ("missing-seq",),
    ),
    Vector(
        "manifest-missing-device",
        "the manifest declares a device the tree does not hold",
        lambda root: (root / "manifest.json").write_bytes(
            canonical_bytes(
                {"devices": {DEVICE: {"ranges": [[0, 9]]}, "BWC-VEC-2": {"ranges": [[0, 3]]}}}
            )
        ),
        ("missing-device",),
    ),
    Vector(
        "no-manifest-starts-late",
        "session a deleted entirely: a tree without a manifest starts at seq 0",
        _drop_first_session,
        ("missing-seq",),
    ),
    Vector(
        "unknown-key",
        "verified against a key that did not sign it",
        _nothing,
        ("unknown-key",),
        ("--key", "keys/rogue.pub"),
    ),
    Vector(
        "altered-body",
        "the marker's note changed after signing (file kept canonical)",
        lambda root: edit_json(root, 3, lambda d: d["body"].update(note="nothing shown")),
        ("bad-signature", "record-hash-mismatch"),
    ),
    Vector(
        "pretty-printed",
        "a record file re-indented (same content, not canonical)",
        _pretty,
        ("non-canonical-record",),
    ),
    Vector(
        "deleted-marker",
        "the marker record deleted",
        lambda root: rec(root, 3).unlink(),
        ("missing-seq",),
    ),
    Vector("swapped-records", "two record files swapped", _swap, ("reordered",)),
    Vector(
        "media-flipped-bit",
        "one bit of a media file flipped",
        _flip_media,
        ("chunk-hash-mismatch", "media-hash-mismatch"),
    ),
    Vector(
        "media-truncated",
        "the last TS packet of a media file cut off",
        _truncate_media,
        ("chunk-hash-mismatch", "media-hash-mismatch", "media-size-mismatch"),
    ),
    Vector(
        "media-deleted",
        "a media file deleted, no receipt",
        lambda root: med(root, "0-session-a-00000.ts").unlink(),
        ("missing-media",),
    ),
    Vector(
        "media-freed-receipt-unchecked",
        "media freed against a genuine receipt, but no trusted receiver key given",
        _freed_with_receipt(RECEIVER_KEY),
        ("unverified-receipt",),
    ),
    Vector(
        "media-freed-receipt-verified",
        "media freed against a genuine receipt, verified with the receiver key",
        _freed_with_receipt(RECEIVER_KEY),
        (),
        ("--key", "keys/device.pub", "--receiver-key", "keys/receiver.pub"),
    ),
    Vector(
        "media-freed-receipt-forged",
        "media deleted and 'excused' by a receipt signed with a key nobody trusts",
        _freed_with_receipt(ROGUE_KEY),
        ("missing-media",),
        ("--key", "keys/device.pub", "--receiver-key", "keys/receiver.pub"),
    ),
    Vector(
        "extra-media",
        "a media file no record names",
        lambda root: med(root, "smuggled.ts").write_bytes(media_bytes("smuggled")),
        ("extra-media",),
    ),
    Vector(
        "not-utf8",
        "a record file replaced by bytes that are not UTF-8",
        lambda root: rec(root, 3).write_bytes(b"\xff\xfe{}"),
        ("missing-seq", "unreadable-record"),
    ),
    Vector(
        "deep-nesting",
        "a record file of JSON nested 5,000 deep",
        lambda root: rec(root, 3).write_bytes(b"[" * 5_000 + b"]" * 5_000),
        ("missing-seq", "unreadable-record"),
    ),
    Vector(
        "huge-integer",
        "a record's seq replaced by a 5,000-digit integer",
        lambda root: rec(root, 3).write_bytes(
            rec(root, 3).read_bytes().replace(b'"seq":3', b'"seq":' + b"9" * 5000)
        ),
        ("missing-seq", "unreadable-record"),
    ),
    Vector(
        "unknown-time-member",
        "a signed record whose time object has an extra member",
        lambda root: edit_json(root, 3, lambda d: d["time"].update(tz="+08:00")),
        ("missing-seq", "unreadable-record"),
    ),
    Vector(
        "impossible-date",
        "a signed marker whose utc is 2026-13-45 (signed by the device key)",
        _nothing,
        ("invalid-time",),
        rebuild=_resign_with(_impossible_marker_time),
    ),
    Vector(
        "gap-does-not-cover",
        "a signed gap record of 1 s excusing a 30 s hole",
        _nothing,
        ("unexplained-gap",),
        rebuild=Plan(gap_s=30.0, body_hook=lambda s, k, b: _short_gap(k, b)),
    ),
    Vector(
        "close-count-wrong",
        "a signed session-close that claims 3 segments for 2",
        _nothing,
        ("session-close-mismatch",),
        rebuild=_resign_with(_close_lies),
    ),
    Vector(
        "duplicate-session-id",
        "two sessions with the same session id",
        _nothing,
        ("duplicate-session",),
        rebuild=Plan(sessions=("session-a", "session-a"), body_hook=lambda s, k, b: _rename(b)),
    ),
    Vector(
        "segment-lacks-video",
        "a signed segment body without its required 'video' member",
        _nothing,
        ("malformed-body",),
        rebuild=_resign_with(_segment_lacks_video),
    ),
)


def _short_gap(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    if kind != RecordType.GAP:
        return body
    start = body["start_utc"]
    end = datetime.strptime(start, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return {**body, "end_utc": format_utc(end + timedelta(seconds=1))}


def _rename(body: dict[str, Any]) -> dict[str, Any]:
    return body  # the session ids themselves repeat (Plan.sessions)


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    keys = out / "keys"
    keys.mkdir(exist_ok=True)
    for name, key in (("device", DEVICE_KEY), ("receiver", RECEIVER_KEY), ("rogue", ROGUE_KEY)):
        save_public_key(keys / f"{name}.pub", key.public_key())
    clean = out / "clean"
    _fresh(clean)
    build(clean)
    expected = []
    for vector in VECTORS:
        target = out / vector.name
        if vector.name != "clean":
            _fresh(target)
            if vector.rebuild is not None:
                build(target, vector.rebuild)
            else:
                shutil.copytree(clean, target, dirs_exist_ok=True)
            vector.make(target)
        expected.append(
            {
                "name": vector.name,
                "description": vector.description,
                "args": list(vector.args),
                "exit": 1 if vector.kinds else 0,
                "kinds": sorted(vector.kinds),
            }
        )
    doc = {
        "format": "bodycam evidence format v1 test vectors",
        "run": "bodycam-verify <name> <args...> from this directory; exit and the set of "
        "violation kinds (--json) must match",
        "vectors": expected,
    }
    (out / "expected.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def _fresh(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
