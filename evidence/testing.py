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

from evidence import layout
from evidence.chain import DeviceChain
from evidence.media import digest_file
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


def write_session(
    chain: DeviceChain,
    media: Sequence[Path],
    *,
    clock: SteppingClock,
    segment_s: int = 10,
    session: str | None = None,
    close: bool = True,
) -> list[Record]:
    """Append one complete session (open, one segment per media file, a marker, close)."""
    session = session or uuid.uuid4().hex
    out = [
        chain.append(
            RecordType.SESSION_OPEN,
            session,
            {
                "assignment": default_assignment(),
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
        shutil.copyfile(src, dst)
        start = clock.now or clock.start
        end_time = clock.tick(segment_s)
        body = {
            "index": index,
            "file": name,
            "media": digest_file(dst).to_dict(),
            "stored": None,
            "encryption": None,
            "utc_start": format_utc(start),
            "utc_end": end_time.utc,
            "media_start_us": index * segment_s * 1_000_000,
            "media_end_us": (index + 1) * segment_s * 1_000_000,
            "frames": segment_s * 15,
            "dropped_frames": 0,
            "video": {"codec": "h264", "width": 320, "height": 240, "fps": 15},
            "audio": {"codec": "aac", "sample_rate": 16000, "channels": 1},
            "pre_event_us": 0,
            "recovered": False,
        }
        out.append(chain.append(RecordType.SEGMENT, session, body, end_time))
    out.append(
        chain.append(
            RecordType.MARKER,
            session,
            {
                "kind": "important",
                "utc": (clock.now or clock.start).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "media_us": None,
                "note": "",
            },
            clock.tick(0.5),
        )
    )
    if close:
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


def build_chain(
    root: Path,
    device: str,
    key: Ed25519PrivateKey,
    media: Sequence[Path],
    *,
    sessions: int = 3,
    clock: SteppingClock | None = None,
) -> list[Record]:
    """A device chain of ``sessions`` complete sessions, each with one segment per media file."""
    chain = DeviceChain(root, device, key)
    clock = clock or SteppingClock()
    records: list[Record] = []
    for _ in range(sessions):
        records += write_session(chain, media, clock=clock)
    return records
