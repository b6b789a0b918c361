"""Sealing and crash recovery of the spool, on real MPEG-TS files and a real signed chain."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.clock import SimulatedClock
from agent.errors import SealError
from agent.media.base import SegmentStats
from agent.recovery import probe_ts, recover
from agent.spool import RecordingSpool, SessionSink, SessionState, segment_body, to_stored_form
from evidence import layout
from evidence.keys import generate_signing_key
from evidence.media import digest_file
from evidence.records import Record, RecordType, format_utc
from evidence.testing import session_open_body
from evidence.verify import verify_tree

DEVICE = "SIM-SPOOL-1"
T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
KEY = generate_signing_key()


def _spool(root: Path, boot_id: str) -> RecordingSpool:
    return RecordingSpool(root, DEVICE, KEY, SimulatedClock(T0, boot_id=boot_id))


def _stats(index: int, start_us: int, end_us: int, frames: int) -> SegmentStats:
    return SegmentStats(
        index=index,
        media_start_us=start_us,
        media_end_us=end_us,
        utc_start=T0 + timedelta(microseconds=start_us),
        utc_end=T0 + timedelta(microseconds=end_us),
        frames=frames,
        dropped_frames=0,
        pre_event_us=0,
        video={"codec": "h264", "width": 320, "height": 240, "fps": 15},
        audio={"codec": "aac", "sample_rate": 16000, "channels": 1},
    )


def _open_session(spool: RecordingSpool, session: str = "S1") -> SessionState:
    state = SessionState(session=session, boot_id=spool.clock.boot_id, opened_utc=format_utc(T0))
    spool.save_session(state)
    spool.append(RecordType.SESSION_OPEN, session, session_open_body())
    return state


def _records(root: Path) -> list[Record]:
    return [Record.load(p) for p in layout.iter_record_files(root, DEVICE)]


def _write_part(spool: RecordingSpool, session: str, index: int, clip: Path) -> Path:
    sink_file = spool.open_part(session, index)
    with sink_file as fh:
        fh.write(clip.read_bytes())
    return spool.part_path(session, index)


def test_sink_seals_part_into_media_with_a_signed_record(
    tmp_path: Path, mpegts_clips: list[Path]
) -> None:
    spool = _spool(tmp_path, "boot-A")
    state = _open_session(spool)
    sink = SessionSink(spool, state)
    fh = sink.open_segment(0)
    fh.write(mpegts_clips[0].read_bytes())
    fh.flush()
    sink.close_segment(0, _stats(0, 0, 1_000_000, 15))
    [_, seg] = _records(tmp_path)
    assert seg.type == RecordType.SEGMENT
    assert seg.body["file"] == "S1-0000.ts"
    media = layout.media_path(tmp_path, DEVICE, "S1-0000.ts")
    assert media.read_bytes() == mpegts_clips[0].read_bytes()
    assert seg.body["media"]["sha256"] == digest_file(media).sha256
    assert seg.body["stored"] is None
    assert seg.body["encryption"] is None
    assert not list(spool.parts_dir.iterdir())
    assert spool.load_session() == state
    assert state.segments == 1
    assert state.frames == 15


def test_seal_never_overwrites_a_sealed_segment(tmp_path: Path, mpegts_clips: list[Path]) -> None:
    spool = _spool(tmp_path, "boot-A")
    _open_session(spool)
    part = _write_part(spool, "S1", 0, mpegts_clips[0])
    spool.seal(part, "S1", 0, _stats(0, 0, 1_000_000, 15))
    again = _write_part(spool, "S1", 0, mpegts_clips[1])
    with pytest.raises(SealError, match="refusing to overwrite"):
        spool.seal(again, "S1", 0, _stats(0, 0, 1_000_000, 15))
    assert again.exists()  # nothing lost
    sealed = layout.media_path(tmp_path, DEVICE, "S1-0000.ts")
    assert sealed.read_bytes() == mpegts_clips[0].read_bytes()


def test_power_loss_recovers_cut_part_and_closes_session(
    tmp_path: Path, mpegts_clips: list[Path]
) -> None:
    spool = _spool(tmp_path, "boot-A")
    state = _open_session(spool)
    sink = SessionSink(spool, state)
    fh = sink.open_segment(0)
    fh.write(mpegts_clips[0].read_bytes())
    sink.close_segment(0, _stats(0, 0, 1_000_000, 15))
    # segment 1 was being written when the power went: cut mid-packet
    part = _write_part(spool, "S1", 1, mpegts_clips[1])
    data = part.read_bytes()
    part.write_bytes(data[: len(data) * 2 // 3 + 77])

    result = recover(_spool(tmp_path, "boot-B"))  # a new boot: the power was cut

    assert result.sessions_closed == ["S1"]
    assert len(result.recovered_segments) == 1
    assert 0 < result.trimmed_bytes < 188
    records = _records(tmp_path)
    assert [r.type for r in records] == [
        RecordType.SESSION_OPEN,
        RecordType.SEGMENT,
        RecordType.SEGMENT,
        RecordType.GAP,
        RecordType.SESSION_CLOSE,
    ]
    recovered, gap, close = records[2], records[3], records[4]
    assert recovered.body["recovered"] is True
    assert recovered.body["index"] == 1
    assert recovered.body["media"]["size"] % 188 == 0
    assert recovered.body["media_start_us"] == 1_000_000  # continues the timeline
    assert 0 < recovered.body["frames"] < 15
    assert recovered.body["video"]["codec"] == "h264"
    assert gap.body["cause"] == "power-loss"
    assert gap.body["spoken_reason"] is False
    assert close.body["reason"] == "crash-recovery"
    assert close.body["segments"] == 2
    assert close.body["gaps"] == 1
    assert spool.load_session() is None
    assert not list(spool.parts_dir.iterdir())
    report = verify_tree(tmp_path)
    assert report.ok, [str(v) for v in report.violations]
    # recovery is idempotent: a second start finds nothing to do
    assert not recover(_spool(tmp_path, "boot-B")).anything


def test_crash_between_record_and_rename_completes_the_rename(
    tmp_path: Path, mpegts_clips: list[Path]
) -> None:
    spool = _spool(tmp_path, "boot-A")
    _open_session(spool)
    part = _write_part(spool, "S1", 0, mpegts_clips[0])
    body = segment_body(
        "S1-0000.ts",
        0,
        digest_file(part),
        to_stored_form(part),
        _stats(0, 0, 1_000_000, 15),
        recovered=False,
    )
    spool.append(RecordType.SEGMENT, "S1", body)  # ... and the process died before the rename

    result = recover(_spool(tmp_path, "boot-A"))

    assert result.completed_renames == ["S1-0000.ts"]
    assert not result.recovered_segments
    assert layout.media_path(tmp_path, DEVICE, "S1-0000.ts").exists()
    gap = next(r for r in _records(tmp_path) if r.type == RecordType.GAP)
    assert gap.body["cause"] == "crash"  # same boot: the process died, not the power
    assert verify_tree(tmp_path).ok


def test_probe_reads_a_truncated_ts(tmp_path: Path, mpegts_clips: list[Path]) -> None:
    whole = probe_ts(mpegts_clips[0])
    assert whole.frames == 15
    assert 900_000 <= whole.duration_us <= 1_100_000
    cut = tmp_path / "cut.ts"
    shutil.copyfile(mpegts_clips[0], cut)
    with cut.open("rb+") as fh:
        fh.truncate(cut.stat().st_size // 2 // 188 * 188)
    half = probe_ts(cut)
    assert 0 < half.frames < 15
    assert half.duration_us < whole.duration_us
    assert half.video["width"] == 320
    assert half.audio is not None


def test_a_second_agent_process_on_the_same_spool_is_refused(tmp_path: Path) -> None:
    """Two recorders on one spool would race for seq numbers; the second is refused loudly."""
    import subprocess
    import sys

    _spool(tmp_path, "boot-1")  # this process now holds the spool
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from agent.clock import SimulatedClock\n"
        "from agent.errors import SpoolError\n"
        "from agent.spool import RecordingSpool\n"
        "from evidence.keys import generate_signing_key\n"
        "try:\n"
        f"    RecordingSpool(Path({str(tmp_path)!r}), {DEVICE!r}, generate_signing_key(),\n"
        "          SimulatedClock())\n"
        "except SpoolError as exc:\n"
        "    print(exc); sys.exit(3)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 3, result.stderr
    assert "another agent process is using this spool" in result.stdout
