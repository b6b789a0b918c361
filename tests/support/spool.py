"""Build device spools (evidence trees) in tests with :mod:`evidence.testing`'s session builder.

With ``encrypt_to`` (the receiver's X25519 public key) the media are encrypted at rest with
:func:`evidence.encryption.encrypt_for_spool`, as an encrypting device stores them: the record
signs the plaintext digest (``media``), the ciphertext digest (``stored``) and ``encryption``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from evidence import layout
from evidence.chain import DeviceChain
from evidence.keys import generate_signing_key, save_public_key
from evidence.media import CHUNK_SIZE
from evidence.records import Record, RecordType
from evidence.testing import (
    SessionMarker,
    SessionPlan,
    SteppingClock,
    build_chain,
    default_assignment,
    write_session,
)


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


def _plan(
    *,
    case: str | None,
    chunk_size_bytes: int,
    marker: bool,
    segment_s: int,
    encrypt_to: X25519PublicKey | None,
) -> SessionPlan:
    assignment = {
        **default_assignment(),
        "case": case,
        "reason": "专项检查",
        "stage": "investigation",
    }
    return SessionPlan(
        assignment=assignment,
        segment_s=segment_s,
        chunk_size_bytes=chunk_size_bytes,
        encrypt_to=encrypt_to,
        marker=SessionMarker("arrival", after_segment=0, advance_s=0) if marker else None,
    )


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
    """One closed session; with ``marker`` an "arrival" marker follows its first segment."""
    plan = _plan(
        case=case,
        chunk_size_bytes=chunk_size_bytes,
        marker=marker,
        segment_s=segment_s,
        encrypt_to=encrypt_to,
    )
    return write_session(chain, media, clock=clock, plan=plan)


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
    plan = _plan(
        case=case,
        chunk_size_bytes=chunk_size_bytes,
        marker=True,
        segment_s=1,
        encrypt_to=encrypt_to,
    )
    records = build_chain(root, device, key, media, sessions=sessions, plan=plan)
    return BuiltSpool(root, device, key, pub, records)
