"""PiCapture on a real Raspberry Pi with camera, microphone and speaker.

Run on the device: ``pytest hardware_tests/test_camera_audio.py`` (``BODYCAM_TEST_MIC`` and
``BODYCAM_TEST_MIC_FORMAT`` choose the PyAV audio input, default ALSA "default").
Every test is skipped (with the reason) where picamera2 cannot be imported, i.e. anywhere but
a Pi with libcamera.
The checks mirror tests/test_media_simulated.py: MPEG-TS with H.264 + AAC in every segment,
contiguous segments without lost or duplicated frames at splits, segment 0 beginning with the
pre-event buffer, the speaker audible in the recording, and the fsync cadence.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from agent.clock import SystemClock
from agent.media.audio import tone_s16le
from agent.media.inspect import read_segment
from agent.media.pi import PiCapture
from agent.media.sinks import DirectorySink


def _picamera2_missing() -> str | None:
    if importlib.util.find_spec("picamera2") is None:
        return "picamera2 is not installed (these tests need a Raspberry Pi with a camera)"
    try:
        import picamera2  # noqa: F401
    except Exception as exc:  # libcamera missing or no camera: not a Pi we can test on
        return f"picamera2 is not importable here: {exc}"
    return None


_MISSING = _picamera2_missing()
pytestmark = [
    pytest.mark.skipif(_MISSING is not None, reason=_MISSING or ""),
    pytest.mark.slow,
    pytest.mark.timeout(300),
]

FPS = 25
SEGMENT_S = 4.0
PRE_EVENT_S = 3.0


@pytest.fixture
def capture() -> Iterator[PiCapture]:
    cap = PiCapture(
        SystemClock(),
        width=1280,
        height=720,
        fps=FPS,
        segment_duration_s=SEGMENT_S,
        pre_event_s=PRE_EVENT_S,
        audio_device=os.environ.get("BODYCAM_TEST_MIC", "default"),
        audio_input_format=os.environ.get("BODYCAM_TEST_MIC_FORMAT", "alsa"),
    )
    cap.start()
    try:
        yield cap
    finally:
        cap.stop()


def _ffprobe_codecs(path: Path) -> list[str]:
    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe not installed")
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_streams", "-show_format", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    info = json.loads(out)
    assert info["format"]["format_name"] == "mpegts"
    return sorted(s["codec_name"] for s in info["streams"])


def test_probe_sees_camera_and_microphone(capture: PiCapture) -> None:
    health = capture.probe(timeout_s=3.0)
    assert health.camera_ok, health.camera_detail
    assert health.frames_per_s == pytest.approx(FPS, rel=0.2)
    assert health.microphone_ok, health.microphone_detail


def test_recording_segments_pre_event_and_splits(capture: PiCapture, tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path)
    time.sleep(PRE_EVENT_S + 1.5)
    press_utc = SystemClock().utc_now()
    capture.start_recording(sink)
    time.sleep(10.0)
    capture.stop_recording()

    stats = sink.stats
    assert len(stats) >= 2
    assert stats[0].media_start_us == 0
    assert stats[0].pre_event_us >= (PRE_EVENT_S - 1.0) * 1e6
    assert (
        abs((stats[0].utc_start - (press_utc - timedelta(seconds=PRE_EVENT_S))).total_seconds())
        < 1.5
    )
    all_pts: list[float] = []
    for path, s in zip(sink.paths, stats, strict=True):
        assert _ffprobe_codecs(path) == ["aac", "h264"]
        contents = read_segment(path)
        assert contents.starts_with_keyframe
        assert len(contents.video_pts_s) == s.frames
        all_pts.extend(contents.video_pts_s)
    for prev, nxt in itertools.pairwise(stats):
        assert nxt.media_start_us == pytest.approx(prev.media_end_us, abs=1e6 / FPS)
    steps = [b - a for a, b in itertools.pairwise(all_pts)]
    assert min(steps) > 0, "a frame was duplicated at a split"
    assert max(steps) < 2.5 / FPS, "a frame was lost (or the camera stalled)"


def test_speaker_is_audible_in_the_recording(capture: PiCapture, tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path)
    capture.start_recording(sink)
    time.sleep(1.0)
    capture.play_audio(tone_s16le(1000.0, 1.0, 48000, amplitude=0.5), 48000, 1)
    time.sleep(1.0)
    capture.stop_recording()
    levels = [lv for p in sink.paths for lv in read_segment(p, decode_audio=True).audio_levels]
    assert levels
    loudest = max(db for _, db in levels)
    quietest = min(db for _, db in levels)
    assert loudest - quietest > 15.0, "the tone did not reach the microphone"


def test_part_file_trails_live_by_about_a_second(capture: PiCapture, tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path)
    capture.start_recording(sink)
    time.sleep(3.0)
    snapshot = tmp_path / "snapshot.ts"
    snapshot.write_bytes(sink.part_path(0).read_bytes())
    live_s = capture.media_time_us / 1e6
    capture.stop_recording()
    contents = read_segment(snapshot)
    assert contents.video_end_s is not None
    # The file's timeline starts at the oldest pre-event frame; the capture's at start().
    recorded_s = sink.stats[0].pre_event_us / 1e6 + 3.0
    assert recorded_s - contents.video_end_s <= 1.5, (live_s, contents.video_end_s)
