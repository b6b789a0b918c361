"""Build device spools for the compliance tests: real signed chains over real media, with the
session contents a compliance test needs to vary (check result, preamble, stage, markers, gaps,
an unsynchronised clock), at explicit wall-clock times.

Only public evidence APIs are used (``DeviceChain``, ``digest_file``, ``layout``), so the
records are exactly what a device writes and the receiver verifies them as it would any upload.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from evidence import layout
from evidence.chain import DeviceChain
from evidence.media import digest_file
from evidence.records import Record, RecordTime, RecordType, format_utc


@dataclass(frozen=True)
class Gap:
    cause: str
    spoken: bool = False
    seconds: int = 60


@dataclass(frozen=True)
class Plan:
    case: str | None
    officers: tuple[str, ...]
    stage: str
    start: datetime
    markers: tuple[str, ...] = ()
    gaps: tuple[Gap, ...] = ()
    check: str | None = "pass"
    preamble: bool = True
    unsynced_close: bool = False
    assignment_extra: dict[str, Any] = field(default_factory=dict)


class Clock:
    """Explicit record times on one boot, monotonic alongside."""

    def __init__(self) -> None:
        self.mono_ns = 1_000_000_000
        self.last: datetime | None = None

    def at(self, dt: datetime, *, synced: bool = True) -> RecordTime:
        if self.last is not None:
            if dt < self.last:
                raise ValueError("record times must not go backwards within a device chain")
            self.mono_ns += int((dt - self.last).total_seconds() * 1e9)
        self.last = dt
        return RecordTime.from_datetime(dt, self.mono_ns, "boot-compliance", synced)


def _segment(
    chain: DeviceChain, session: str, index: int, src: Path, start: datetime, clock: Clock
) -> Record:
    name = f"{session[:12]}-{index:05d}.ts"
    dst = layout.media_path(chain.root, chain.device_id, name)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    end = start + timedelta(seconds=1)
    body = {
        "index": index,
        "file": name,
        "media": digest_file(dst).to_dict(),
        "stored": None,
        "encryption": None,
        "utc_start": format_utc(start),
        "utc_end": format_utc(end),
        "media_start_us": index * 1_000_000,
        "media_end_us": (index + 1) * 1_000_000,
        "frames": 15,
        "dropped_frames": 0,
        "video": {"codec": "h264", "width": 320, "height": 240, "fps": 15},
        "audio": {"codec": "aac", "sample_rate": 16000, "channels": 1},
        "pre_event_us": 0,
        "recovered": False,
    }
    return chain.append(RecordType.SEGMENT, session, body, clock.at(end))


def write_session(
    chain: DeviceChain, clock: Clock, media: Sequence[Path], plan: Plan
) -> tuple[str, list[Record]]:
    """open, segment, [gap, segment]..., markers, close — returns (session id, records)."""
    session = uuid.uuid4().hex
    t = plan.start
    open_body: dict[str, Any] = {
        "assignment": {
            "case": plan.case,
            "officers": list(plan.officers),
            "place": "太原市某培训学校",
            "reason": "专项检查",
            "target": "某培训学校",
            "stage": plan.stage,
            **plan.assignment_extra,
        },
        "preamble": {
            "text": "现在开始录音录像" if plan.preamble else "",
            "lang": "zh",
            "voice": "cmn-latn-pinyin",
        },
        "pre_event_us": 0,
        # no outcome: a report that records no passing check (the device defines the members)
        "checks": {} if plan.check is None else {"outcome": plan.check, "checks": []},
    }
    records = [chain.append(RecordType.SESSION_OPEN, session, open_body, clock.at(t))]
    records.append(_segment(chain, session, 0, media[0], t, clock))
    t += timedelta(seconds=1)
    for i, gap in enumerate(plan.gaps, 1):
        end = t + timedelta(seconds=gap.seconds)
        body = {
            "cause": gap.cause,
            "start_utc": format_utc(t),
            "end_utc": format_utc(end),
            "spoken_reason": gap.spoken,
            "detail": "",
        }
        records.append(chain.append(RecordType.GAP, session, body, clock.at(end)))
        records.append(_segment(chain, session, i, media[i % len(media)], end, clock))
        t = end + timedelta(seconds=1)
    for kind in plan.markers:
        t += timedelta(milliseconds=100)
        body = {"kind": kind, "utc": format_utc(t), "media_us": None, "note": ""}
        records.append(chain.append(RecordType.MARKER, session, body, clock.at(t)))
    t += timedelta(seconds=1)
    close = {
        "reason": "stopped",
        "duration_us": (1 + len(plan.gaps)) * 1_000_000,  # the segments' media time (§3)
        "segments": 1 + len(plan.gaps),
        "frames": 15 * (1 + len(plan.gaps)),
        "dropped_frames": 0,
        "gaps": len(plan.gaps),
    }
    time = clock.at(t, synced=not plan.unsynced_close)
    records.append(chain.append(RecordType.SESSION_CLOSE, session, close, time))
    return session, records
