"""Build device spools (evidence trees) in tests with the real evidence.chain writer.

With ``encrypt_to`` (the receiver's X25519 public key) the media are encrypted at rest with
:func:`evidence.encryption.encrypt_for_spool`, as an encrypting device stores them: the record
signs the plaintext digest (``media``), the ciphertext digest (``stored``) and ``encryption``.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from evidence import layout
from evidence.chain import DeviceChain
from evidence.encryption import encrypt_for_spool
from evidence.keys import generate_signing_key, save_public_key
from evidence.media import CHUNK_SIZE, digest_file
from evidence.records import Record, RecordType, format_utc
from evidence.testing import SteppingClock


@dataclass
class BuiltSpool:
    root: Path
    device: str
    key: Ed25519PrivateKey
    pub_path: Path
    records: list[Record]

    def segments(self) -> list[Record]:
        return [r for r in self.records if r.type == RecordType.SEGMENT]

    def media_path(self, record: Record) -> Path:
        return layout.media_path(self.root, self.device, record.body["file"])


def new_device(root: Path, device: str) -> tuple[Ed25519PrivateKey, Path]:
    key = generate_signing_key()
    pub = root.parent / f"{device}.pub"
    save_public_key(pub, key.public_key())
    return key, pub


def add_session(
    chain: DeviceChain,
    media: Sequence[Path],
    clock: SteppingClock,
    *,
    case: str | None,
    chunk_size_bytes: int = CHUNK_SIZE,
    marker: bool = True,
    segment_s: int = 1,
    encrypt_to: X25519PublicKey | None = None,
) -> list[Record]:
    session = uuid.uuid4().hex
    assignment = {
        "case": case,
        "officers": ["王芳 (执法证 14001)", "李强 (执法证 14002)"],
        "place": "太原市某培训学校",
        "reason": "专项检查",
        "target": "某培训学校",
        "stage": "investigation",
    }
    out = [
        chain.append(
            RecordType.SESSION_OPEN,
            session,
            {
                "assignment": assignment,
                "checks": {"result": "pass", "items": []},
                "preamble": {"text": "现在开始录音录像", "lang": "zh", "voice": "cmn-latn-pinyin"},
                "pre_event_us": 0,
            },
            clock.tick(1),
        )
    ]
    for index, src in enumerate(media):
        name = f"{session[:12]}-{index:05d}.ts"
        dst = layout.media_path(chain.root, chain.device_id, name)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if encrypt_to is None:
            shutil.copyfile(src, dst)
            media_digest, stored, encryption = (
                digest_file(dst, chunk_size_bytes).to_dict(),
                None,
                None,
            )
        else:
            enc = encrypt_for_spool(src, dst, encrypt_to, digest_chunk_size_bytes=chunk_size_bytes)
            media_digest, stored, encryption = (
                enc.media.to_dict(),
                enc.stored.to_dict(),
                enc.encryption,
            )
        start = clock.now or clock.start
        end = clock.tick(segment_s)
        body = {
            "index": index,
            "file": name,
            "media": media_digest,
            "stored": stored,
            "encryption": encryption,
            "utc_start": format_utc(start),
            "utc_end": end.utc,
            "media_start_us": index * segment_s * 1_000_000,
            "media_end_us": (index + 1) * segment_s * 1_000_000,
            "frames": segment_s * 15,
            "dropped_frames": 0,
            "video": {"codec": "h264", "width": 320, "height": 240, "fps": 15},
            "audio": {"codec": "aac", "sample_rate": 16000, "channels": 1},
            "pre_event_us": 0,
            "recovered": False,
        }
        out.append(chain.append(RecordType.SEGMENT, session, body, end))
        if marker and index == 0:
            out.append(
                chain.append(
                    RecordType.MARKER,
                    session,
                    {"kind": "arrival", "utc": end.utc, "media_us": None, "note": ""},
                    clock.tick(0),
                )
            )
    out.append(
        chain.append(
            RecordType.SESSION_CLOSE,
            session,
            {
                "reason": "stopped",
                "duration_us": len(media) * segment_s * 1_000_000,
                "segments": len(media),
                "frames": len(media) * segment_s * 15,
                "dropped_frames": 0,
                "gaps": 0,
            },
            clock.tick(1),
        )
    )
    return out


def build_spool(
    root: Path,
    media: Sequence[Path],
    *,
    device: str = "BC-0001",
    sessions: int = 1,
    case: str | None = "JY-2026-0001",
    chunk_size_bytes: int = CHUNK_SIZE,
    key: Ed25519PrivateKey | None = None,
    encrypt_to: X25519PublicKey | None = None,
) -> BuiltSpool:
    root.mkdir(parents=True, exist_ok=True)
    if key is None:
        key, pub = new_device(root, device)
    else:
        pub = root.parent / f"{device}.pub"
        save_public_key(pub, key.public_key())
    chain = DeviceChain(root, device, key)
    clock = SteppingClock()
    records: list[Record] = []
    for _ in range(sessions):
        records += add_session(
            chain, media, clock, case=case, chunk_size_bytes=chunk_size_bytes, encrypt_to=encrypt_to
        )
    return BuiltSpool(root, device, key, pub, records)
