"""Helpers for tests and demos: build a well-formed device chain over given media files.

Used by this project's tests (and usable by anyone writing a verifier) to produce real signed
chains over real media; nothing here is used by the recorder or the receiver themselves.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from evidence import layout
from evidence.chain import DeviceChain
from evidence.encryption import encrypt_for_spool
from evidence.media import CHUNK_SIZE, digest_file
from evidence.records import Record, RecordTime, RecordType, format_utc


@dataclass
class SteppingClock:
    """Record times that advance by a fixed step per record, from a fixed start."""

    start: datetime = field(default_factory=lambda: datetime(2026, 11, 2, 9, 0, tzinfo=UTC))
    boot_id: str = "boot-test-0001"
    now: datetime | None = None
    mono_ns: int = 1_000_000_000

    def tick(self, seconds: float) -> RecordTime:
        self.now = (self.now or self.start) + timedelta(seconds=seconds)
        self.mono_ns += int(seconds * 1e9)
        return RecordTime.from_datetime(self.now, self.mono_ns, self.boot_id, True)


def default_assignment() -> dict[str, Any]:
    return {
        "case": "JY-2026-0001",
        "officers": ["王芳 (执法证 14001)", "李强 (执法证 14002)"],
        "place": "太原市某培训学校",
        "reason": "校外培训机构专项检查",
        "target": "某培训学校",
        "stage": "inspection",
    }


def session_open_body(assignment: dict[str, Any] | None = None) -> dict[str, Any]:
    """A complete §3 ``session-open`` body (the default assignment unless one is given)."""
    return {
        "assignment": dict(assignment) if assignment is not None else default_assignment(),
        "checks": {"outcome": "pass", "checks": []},
        "preamble": {"text": "现在开始录音录像", "lang": "zh", "voice": "cmn-latn-pinyin"},
        "pre_event_us": 0,
    }


@dataclass(frozen=True)
class SessionMarker:
    """The one marker record a built session carries."""

    kind: str = "important"
    after_segment: int | None = None
    """Index of the segment it follows; None: after the last segment (also when there is none)."""
    advance_s: float = 0.5
    """How far the clock moves for the marker record."""


@dataclass(frozen=True)
class SessionPlan:
    """What :func:`write_session` puts into each session it appends."""

    assignment: dict[str, Any] = field(default_factory=default_assignment)
    segment_s: int = 10
    chunk_size_bytes: int = CHUNK_SIZE
    encrypt_to: X25519PublicKey | None = None
    """The receiver's key: media are then stored encrypted as an encrypting device stores them."""
    marker: SessionMarker | None = field(default_factory=SessionMarker)
    close: bool = True


def write_session(
    chain: DeviceChain,
    media: Sequence[Path],
    *,
    clock: SteppingClock,
    session: str | None = None,
    plan: SessionPlan | None = None,
) -> list[Record]:
    """Append one session: open, one segment per media file, the plan's marker, close."""
    plan = plan or SessionPlan()
    session = session or uuid.uuid4().hex
    out = [
        chain.append(
            RecordType.SESSION_OPEN, session, session_open_body(plan.assignment), clock.tick(1)
        )
    ]
    marker = plan.marker
    for index, src in enumerate(media):
        out.append(_write_segment(chain, session, index, src, clock, plan))
        if marker is not None and marker.after_segment == index:
            out.append(_write_marker(chain, session, clock, marker))
    if marker is not None and marker.after_segment is None:
        out.append(_write_marker(chain, session, clock, marker))
    if plan.close:
        segment_s = plan.segment_s
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


def segment_body(
    name: str,
    media: dict[str, Any] | None,
    *,
    stored: dict[str, Any] | None = None,
    encryption: dict[str, Any] | None = None,
    **members: Any,
) -> dict[str, Any]:
    """A complete segment body (every member §3 requires) for ``name``; ``members`` override
    the defaults (one 1-second 320x240 segment at index 0, H.264 + AAC, not recovered)."""
    body: dict[str, Any] = {
        "index": 0,
        "file": name,
        "media": media,
        "stored": stored,
        "encryption": encryption,
        "utc_start": "2026-11-02T09:00:00.000000Z",
        "utc_end": "2026-11-02T09:00:01.000000Z",
        "media_start_us": 0,
        "media_end_us": 1_000_000,
        "frames": 15,
        "dropped_frames": 0,
        "video": {"codec": "h264", "width": 320, "height": 240, "fps": 15},
        "audio": {"codec": "aac", "sample_rate": 16000, "channels": 1},
        "pre_event_us": 0,
        "recovered": False,
    }
    body.update(members)
    return body


def marker_body(
    kind: str = "important", *, utc: str = "2026-11-02T09:00:00.000000Z", note: str = ""
) -> dict[str, Any]:
    """A complete marker body (§3)."""
    return {"kind": kind, "utc": utc, "media_us": None, "note": note}


def _write_segment(
    chain: DeviceChain,
    session: str,
    index: int,
    src: Path,
    clock: SteppingClock,
    plan: SessionPlan,
) -> Record:
    name = f"{session[:12]}-{index:05d}.ts"
    dst = layout.media_path(chain.root, chain.device_id, name)
    dst.parent.mkdir(parents=True, exist_ok=True)
    stored: dict[str, Any] | None = None
    encryption: dict[str, Any] | None = None
    if plan.encrypt_to is None:
        shutil.copyfile(src, dst)
        media_digest = digest_file(dst, plan.chunk_size_bytes).to_dict()
    else:
        enc = encrypt_for_spool(
            src, dst, plan.encrypt_to, digest_chunk_size_bytes=plan.chunk_size_bytes
        )
        media_digest, stored, encryption = enc.media.to_dict(), enc.stored.to_dict(), enc.encryption
    segment_s = plan.segment_s
    start = clock.now or clock.start
    end_time = clock.tick(segment_s)
    body = segment_body(
        name,
        media_digest,
        stored=stored,
        encryption=encryption,
        index=index,
        utc_start=format_utc(start),
        utc_end=end_time.utc,
        media_start_us=index * segment_s * 1_000_000,
        media_end_us=(index + 1) * segment_s * 1_000_000,
        frames=segment_s * 15,
    )
    return chain.append(RecordType.SEGMENT, session, body, end_time)


def _write_marker(
    chain: DeviceChain, session: str, clock: SteppingClock, marker: SessionMarker
) -> Record:
    body = marker_body(marker.kind, utc=format_utc(clock.now or clock.start))
    return chain.append(RecordType.MARKER, session, body, clock.tick(marker.advance_s))


def build_chain(
    root: Path,
    device: str,
    key: Ed25519PrivateKey,
    media: Sequence[Path],
    *,
    sessions: int = 3,
    clock: SteppingClock | None = None,
    plan: SessionPlan | None = None,
) -> list[Record]:
    """A device chain of ``sessions`` sessions, each with one segment per media file."""
    chain = DeviceChain(root, device, key)
    clock = clock or SteppingClock()
    records: list[Record] = []
    for _ in range(sessions):
        records += write_session(chain, media, clock=clock, plan=plan)
    return records
