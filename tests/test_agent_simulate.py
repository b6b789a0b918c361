"""``bodycam-agent simulate`` end to end: verifies, plays, adds up, no frame lost at splits."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from evidence import layout
from evidence.records import Record, RecordType, parse_utc
from evidence.values import format_utc

pytestmark = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe not installed")

FPS = 15  # simulated_config
PRE_EVENT_US = 30_000_000


def _agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _verify(spool: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evidence.cli", str(spool)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_packets",
            "-show_format",
            "-show_streams",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def _records(spool: Path) -> list[Record]:
    [device] = list(layout.iter_devices(spool))
    return [Record.load(p) for p in layout.iter_record_files(spool, device)]


SIMULATED: dict[str, Any] = {}


@pytest.fixture(scope="module")
def spool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sim") / "spool"
    result = _agent("simulate", "--spool", str(root), "--seconds", "60")
    SIMULATED.update(stdout=result.stdout, finished=datetime.now(UTC))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "DEVELOPMENT signing key" in result.stdout
    return root


def test_simulate_records_exactly_pre_event_preamble_and_the_seconds_asked(spool: Path) -> None:
    line = next(x for x in SIMULATED["stdout"].splitlines() if x.startswith("media: "))
    match = re.fullmatch(
        r"media: ([\d.]+) s pre-event \+ ([\d.]+) s preamble \+ ([\d.]+) s \(asked for 60 s\)",
        line,
    )
    assert match, line
    pre_s, preamble_s, after_s = (float(g) for g in match.groups())
    assert after_s == 60.0  # stepped: to the microsecond, idle or loaded
    assert 30.0 <= pre_s < 31.0  # back to the keyframe at or before 30 s
    assert preamble_s > 5.0  # the spoken preamble is on the recording before the N seconds
    close = _records(spool)[-1]
    assert close.body["duration_us"] == round((pre_s + preamble_s + after_s) * 1e6)


def test_simulated_times_are_never_in_the_future(spool: Path) -> None:
    records = _records(spool)
    finished: datetime = SIMULATED["finished"]
    assert all(r.time.datetime <= finished for r in records)
    # and they follow each other (one chain, one boot)
    assert [r.time.mono_ns for r in records] == sorted(r.time.mono_ns for r in records)


def test_simulated_session_verifies(spool: Path) -> None:
    result = _verify(spool)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_segment_is_mpegts_with_h264_and_aac(spool: Path) -> None:
    [device] = list(layout.iter_devices(spool))
    segments = [r for r in _records(spool) if r.type == RecordType.SEGMENT]
    assert len(segments) >= 7  # 30 s pre-event + >= 60 s, 10 s each (first holds the buffer)
    total_packets = 0
    for seg in segments:
        probe = _ffprobe(layout.media_path(spool, device, seg.body["file"]))
        assert probe["format"]["format_name"] == "mpegts"
        codecs = sorted(s["codec_name"] for s in probe["streams"])
        assert codecs == ["aac", "h264"], (seg.body["file"], codecs)
        video = next(s for s in probe["streams"] if s["codec_type"] == "video")
        assert int(video["nb_read_packets"]) == seg.body["frames"]
        total_packets += int(video["nb_read_packets"])
    close = _records(spool)[-1]
    assert close.type == RecordType.SESSION_CLOSE
    assert close.body["frames"] == total_packets


def test_durations_add_up_and_no_frame_is_lost_at_splits(spool: Path) -> None:
    records = _records(spool)
    segments = [r.body for r in records if r.type == RecordType.SEGMENT]
    close = records[-1].body
    assert segments[0]["media_start_us"] == 0
    for before, after in itertools.pairwise(segments):
        assert after["media_start_us"] == before["media_end_us"]  # contiguous timeline
    duration_us = segments[-1]["media_end_us"]
    assert sum(s["media_end_us"] - s["media_start_us"] for s in segments) == duration_us
    assert close["duration_us"] == duration_us
    assert duration_us >= PRE_EVENT_US + 60_000_000
    # frame count = duration x frame rate, exactly (to the frame)
    assert abs(close["frames"] - duration_us * FPS / 1e6) < 1.0
    assert close["dropped_frames"] == 0
    assert close["gaps"] == 0


def test_pre_event_buffer_is_at_the_start_of_the_first_segment(spool: Path) -> None:
    records = _records(spool)
    opened = records[0]
    assert opened.type == RecordType.SESSION_OPEN
    assert opened.body["pre_event_us"] == PRE_EVENT_US
    first = next(r for r in records if r.type == RecordType.SEGMENT)
    assert first.body["index"] == 0
    assert first.body["pre_event_us"] >= PRE_EVENT_US - 1_000_000
    lead_s = (opened.time.datetime - parse_utc(first.body["utc_start"])).total_seconds()
    # session-open is written right before the recording starts at the press: the lead is the
    # pre-event buffer (30 s back to a keyframe), exactly
    assert lead_s * 1e6 == pytest.approx(first.body["pre_event_us"], abs=1), lead_s
    assert 30.0 <= lead_s < 31.0, lead_s
    assert "现在开始全程录音录像" in opened.body["preamble"]["text"]
    assert opened.body["preamble"]["voice"] == "cmn-latn-pinyin"
    assert any(r.type == RecordType.MARKER for r in records)


def test_a_second_run_continues_the_same_chain(tmp_path: Path) -> None:
    # the first run dated a day back (--start): the second, dated by default, need not wait
    # for real time to pass the first one's end
    copy = tmp_path / "spool"
    day_ago = datetime.now(UTC) - timedelta(days=1)
    first = _agent(
        "simulate", "--spool", str(copy), "--seconds", "5", "--start", format_utc(day_ago)
    )
    assert first.returncode == 0, first.stderr[-3000:]
    before = _records(copy)
    assert day_ago < before[0].time.datetime < day_ago + timedelta(minutes=2)
    result = _agent("simulate", "--spool", str(copy), "--seconds", "5")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "DEVELOPMENT signing key" not in result.stdout
    after = _records(copy)
    new = after[len(before) :]
    assert new[0].type == RecordType.SESSION_OPEN
    assert new[0].seq == before[-1].seq + 1
    assert new[0].prev == before[-1].hash()
    assert new[0].session != before[0].session
    assert _verify(copy).returncode == 0
    status = _agent("status", "--spool", str(copy), "--json")
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    [dev] = info["devices"].values()
    assert dev["sessions"] == 2
    assert dev["head_seq"] == after[-1].seq
    assert dev["pending_upload_segments"] == dev["segments"]


def test_start_dates_the_run_never_in_the_future_nor_before_the_chain(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    for bad, says in (
        ("2999-01-01T00:00:00Z", "--start must be in the past"),
        ("yesterday\x1b[31m", "not a time with its zone"),
        ("2026-01-05T09:00:00", "not a time with its zone"),  # no zone: which 09:00?
    ):
        r = _agent("simulate", "--spool", str(spool), "--seconds", "5", "--start", bad)
        assert r.returncode == 2, r.stderr
        (line,) = r.stderr.strip().splitlines()
        assert says in line
        assert "\x1b" not in line
    assert not spool.exists()  # refused before anything was made
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    for _ in range(2):  # the same --start twice: the second run starts after the first
        r = _agent("simulate", "--spool", str(spool), "--seconds", "5",
                   "--start", format_utc(hour_ago))  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
    records = _records(spool)
    opens = [r for r in records if r.type == RecordType.SESSION_OPEN]
    assert len(opens) == 2
    assert opens[0].time.datetime >= hour_ago
    assert opens[1].time.datetime > records[records.index(opens[1]) - 1].time.datetime
    assert all(r.time.datetime < hour_ago + timedelta(minutes=10) for r in records)
    assert _verify(spool).returncode == 0


def _audio_rms_dbfs(path: Path, start_s: float, end_s: float) -> float:
    """RMS level of the decoded AAC between two times measured from the file's first frame."""
    import array
    import math

    import av

    total = 0.0
    count = 0
    resampler = av.AudioResampler(format="s16", layout="mono")
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        origin: float | None = None
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            origin = frame.time if origin is None else origin
            if not start_s <= frame.time - origin < end_s:
                continue
            for out in resampler.resample(frame):
                pcm = array.array("h", bytes(out.planes[0])[: out.samples * 2])
                total += sum(v * v for v in pcm)
                count += len(pcm)
    assert count, "no audio in the window"
    return 20 * math.log10(max(math.sqrt(total / count) / 32768, 1e-9))


def test_the_spoken_preamble_is_in_the_recording(spool: Path) -> None:
    [device] = list(layout.iter_devices(spool))
    records = _records(spool)
    first = next(r for r in records if r.type == RecordType.SEGMENT)
    path = layout.media_path(spool, device, first.body["file"])
    press_s = first.body["pre_event_us"] / 1e6  # the press is where the pre-event buffer ends
    before = _audio_rms_dbfs(path, press_s - 10, press_s - 1)
    during = _audio_rms_dbfs(path, press_s + 1, press_s + 9)
    # the room is quiet (simulated ambience) until the speaker says the preamble
    assert during > before + 10, (before, during)


@pytest.mark.parametrize("kind", ["file", "under-a-file"])
def test_unusable_spool_path_is_a_clear_error(tmp_path: Path, kind: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    target = blocker if kind == "file" else blocker / "spool"
    proc = _agent("simulate", "--spool", str(target), "--seconds", "1")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "bodycam-agent: cannot use" in proc.stderr
