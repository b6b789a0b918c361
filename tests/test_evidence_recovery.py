"""Crash recovery's records as the format requires them (§3): a recovered encrypted segment has
its video/audio parameters, the crash gap covers the lost interval, the close counts add up."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.clock import SimulatedClock
from agent.media.base import SegmentStats
from agent.recovery import recover
from agent.spool import RecordingSpool, SessionSink, SessionState
from evidence import layout
from evidence.encryption import generate_encryption_key
from evidence.keys import generate_signing_key
from evidence.records import Record, RecordType, format_utc, parse_utc
from evidence.testing import session_open_body
from evidence.verify import verify_tree

DEVICE = "SIM-RECOVER-1"
T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
TS_PACKET = 188


def _stats(index: int, start_us: int, end_us: int) -> SegmentStats:
    return SegmentStats(
        index=index,
        media_start_us=start_us,
        media_end_us=end_us,
        utc_start=T0 + timedelta(microseconds=start_us),
        utc_end=T0 + timedelta(microseconds=end_us),
        frames=15,
        dropped_frames=0,
        pre_event_us=0,
        video={"codec": "h264", "width": 640, "height": 360, "fps": 15},
        audio={"codec": "aac", "sample_rate": 48000, "channels": 1},
    )


def test_recovered_encrypted_segment_has_its_parameters_and_the_gap_covers_the_loss(
    tmp_path: Path, mpegts_clips: list[Path]
) -> None:
    key, signing = generate_encryption_key(), generate_signing_key()

    def spool(boot: str, at: datetime) -> RecordingSpool:
        clock = SimulatedClock(at, boot_id=boot)
        return RecordingSpool(tmp_path, DEVICE, signing, clock, recipient=key.public_key())

    first = spool("boot-A", T0)
    state = SessionState(session="S1", boot_id="boot-A", opened_utc=format_utc(T0))
    first.save_session(state)
    first.append(RecordType.SESSION_OPEN, "S1", session_open_body())
    sink = SessionSink(first, state)
    fh = sink.open_segment(0)
    fh.write(mpegts_clips[0].read_bytes())
    sink.close_segment(0, _stats(0, 0, 1_000_000))
    # segment 1 was being written (and flushed) when the power went
    part = sink.open_segment(1)
    clip = mpegts_clips[1].read_bytes()
    part.write(clip[: len(clip) // 2 // TS_PACKET * TS_PACKET])
    part.flush()
    os.fsync(part.fileno())
    del part

    restart = T0 + timedelta(minutes=5)
    result = recover(spool("boot-B", restart))

    [recovered] = result.recovered_segments
    body = recovered.body
    assert body["media"] is None
    assert body["recovered"]
    assert body["encryption"] is not None
    assert body["video"] == {"codec": "h264", "width": 640, "height": 360, "fps": 15}
    assert body["audio"] == {"codec": "aac", "sample_rate": 48000, "channels": 1}
    [gap] = result.gaps
    assert gap.seq > recovered.seq
    start, end = parse_utc(gap.body["start_utc"]), parse_utc(gap.body["end_utc"])
    assert start == parse_utc(body["utc_end"])
    assert end == restart
    assert end > start
    records = [Record.load(p) for p in layout.iter_record_files(tmp_path, DEVICE)]
    close = records[-1]
    assert close.type == RecordType.SESSION_CLOSE
    assert close.body["segments"] == 2
    assert close.body["gaps"] == 1
    report = verify_tree(tmp_path)
    assert report.ok, [str(v) for v in report.violations]
