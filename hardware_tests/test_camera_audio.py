"""PiCapture on a real Raspberry Pi with camera, microphone and speaker, with the production
configuration (30 s pre-event buffer, the configured bitrate, microphone card and speaker).

Run on the device inside the unit's sandbox: ``/usr/lib/bodycam-agent/hardware-test``. With
``BODYCAM_HARDWARE=1`` a missing picamera2, camera, microphone or speaker FAILS; elsewhere the
tests skip with the reason (hardware_tests/conftest.py).
The checks mirror tests/test_media_pi_fake.py: MPEG-TS with H.264 + AAC in every segment,
contiguous segments without lost or duplicated frames at splits, segment 0 beginning with the
pre-event buffer, no dropped frames, the speaker audible in the recording, the fsync cadence.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from agent.clock import SystemClock
from agent.config import AgentConfig
from agent.media.audio import tone_s16le
from agent.media.base import MediaError
from agent.media.inspect import read_segment
from agent.media.pi import PiCapture
from agent.media.sinks import DirectorySink
from hardware_tests.conftest import missing


def _picamera2_missing() -> str | None:
    if importlib.util.find_spec("picamera2") is None:
        return "picamera2 is not installed (apt install python3-picamera2)"
    try:
        import picamera2  # noqa: F401
    except Exception as exc:  # libcamera missing: not a Pi we can test on
        return f"picamera2 is not importable here: {exc}"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def capture(device_config: AgentConfig) -> Iterator[PiCapture]:
    reason = _picamera2_missing()
    if reason is not None:
        missing(reason)
    c = device_config.capture
    cap = PiCapture(
        SystemClock(),
        width=c.width,
        height=c.height,
        fps=c.fps,
        segment_duration_s=c.segment_duration_s,
        pre_event_s=c.pre_event_s,
        bitrate_bps=c.bitrate_bits_per_s,
        audio_card=c.audio_card,
        audio_device=c.audio_device,
        audio_channels=c.audio_channels,
        speaker_device=c.speaker_device,
        speaker_rate_hz=c.speaker_rate_hz,
        timezone=device_config.device.timezone,
        device_id=device_config.device.id or "HW-TEST",
    )
    try:
        cap.start()
    except MediaError as exc:
        missing(f"the camera does not start: {exc}")
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
    if not health.camera_ok:
        missing(f"no camera frames: {health.camera_detail}")
    assert health.frames_per_s == pytest.approx(capture.fps, rel=0.2)
    if not health.microphone_ok:
        missing(f"no microphone signal: {health.microphone_detail}")


def test_recording_segments_pre_event_and_splits(capture: PiCapture, tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path)
    pre_event_s = capture.pre_event_s
    time.sleep(pre_event_s + 1.5)  # the production pre-event buffer fills (30 s)
    press_utc = SystemClock().utc_now()
    capture.start_recording(sink)
    time.sleep(2.5 * capture.segment_duration_s)
    capture.stop_recording()

    stats = sink.stats
    assert len(stats) >= 2
    assert stats[0].media_start_us == 0
    assert stats[0].pre_event_us >= (pre_event_s - 1.0) * 1e6
    assert (
        abs((stats[0].utc_start - (press_utc - timedelta(seconds=pre_event_s))).total_seconds())
        < 1.5
    )
    assert sum(s.dropped_frames for s in stats) == 0, "frames dropped at production settings"
    all_pts: list[float] = []
    for path, s in zip(sink.paths, stats, strict=True):
        assert _ffprobe_codecs(path) == ["aac", "h264"]
        contents = read_segment(path)
        assert contents.starts_with_keyframe
        assert len(contents.video_pts_s) == s.frames
        all_pts.extend(contents.video_pts_s)
    for prev, nxt in itertools.pairwise(stats):
        assert nxt.media_start_us == pytest.approx(prev.media_end_us, abs=1e6 / capture.fps)
    steps = [b - a for a, b in itertools.pairwise(all_pts)]
    assert min(steps) > 0, "a frame was duplicated at a split"
    assert max(steps) < 2.5 / capture.fps, "a frame was lost (or the camera stalled)"


def test_speaker_is_audible_in_the_recording(capture: PiCapture, tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path)
    capture.start_recording(sink)
    time.sleep(1.0)
    try:
        # 16 kHz on purpose: the backend resamples to the speaker's rate.
        capture.play_audio(tone_s16le(1000.0, 1.0, 16000, amplitude=0.5), 16000, 1)
    except MediaError as exc:
        missing(f"no speaker: {exc}")
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
