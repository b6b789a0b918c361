"""The Pi backend's own code (agent/media/pi.py) on the fake Picamera2 shipped with the agent:
real H.264 (libx264) and AAC packets through picamera2's encoder/output interfaces, read back
with PyAV. Covers the burned-in overlay (read back from decoded frames by matching the font's
glyphs), dropped frames from injected sensor-timestamp gaps, the AAC channel metadata, the
encoder per board, audio before the press dropped by timestamp, and the microphone by name."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import av
import pytest

from agent.checks import Outcome, check_microphone
from agent.clock import SystemClock
from agent.media.base import FaultKind, SegmentStats
from agent.media.fake_picamera2 import Picamera2
from agent.media.inspect import read_segment
from agent.media.overlay import Overlay
from agent.media.pi import PiCapture
from agent.media.sinks import DirectorySink

FPS = 20
WIDTH, HEIGHT = 640, 360
DEVICE = "PI-TEST-7"
TZ = "Asia/Shanghai"
SINE = "sine=frequency=1000:sample_rate=48000"


def _capture(tmp_path: Path, model: str = "", **kw: Any) -> PiCapture:
    model_path = tmp_path / "model"
    if model:
        model_path.write_bytes(model.encode() + b"\x00")
    options: dict[str, Any] = {
        "camera": "fake",
        "width": WIDTH,
        "height": HEIGHT,
        "fps": FPS,
        "segment_duration_s": 2.0,
        "pre_event_s": 1.0,
        "bitrate_bps": 2_000_000,
        "audio_device": SINE,
        "audio_input_format": "lavfi",
        "device_id": DEVICE,
        "timezone": TZ,
        "model_path": model_path,
        **kw,
    }
    return PiCapture(SystemClock(), **options)


def _wait(predicate: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@dataclass
class Recording:
    capture: PiCapture
    camera: Picamera2
    stats: list[SegmentStats]
    paths: list[Path]
    injected_drops: int


def _record(
    cap: PiCapture, out: Path, *, segments: int = 2, drop: int = 0, settle_s: float = 1.3
) -> Recording:
    cap.start()
    try:
        camera = Picamera2.instances[-1]
        # the pre-event buffer fills (an event: media time passes the span)
        _wait(lambda: cap.media_time_us > settle_s * 1e6)
        sink = DirectorySink(out)
        cap.start_recording(sink)
        _wait(lambda: len(sink.stats) >= 1)
        if drop:
            camera.drop_frames(drop)
        _wait(lambda: len(sink.stats) >= segments)
        cap.stop_recording()
    finally:
        cap.stop()
    return Recording(cap, camera, sink.stats, sink.paths, drop)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    tmp = tmp_path_factory.mktemp("pi-fake")
    return _record(_capture(tmp), tmp / "out", segments=3, drop=5)


def _decoded_pts(path: Path) -> list[int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sorted(
            round(float(p.pts * p.time_base) * 1e6)
            for p in container.demux(stream)
            if p.pts is not None
        )


def _gaps(pts_us: list[int]) -> int:
    period = 1e6 / FPS
    return sum(max(0, round((b - a) / period) - 1) for a, b in itertools.pairwise(pts_us))


def test_segments_are_real_h264_aac_with_true_channel_metadata(recording: Recording) -> None:
    assert len(recording.paths) >= 3
    for path, stats in zip(recording.paths, recording.stats, strict=True):
        contents = read_segment(path)
        assert contents.format_name == "mpegts"
        assert (contents.video_codec, contents.audio_codec) == ("h264", "aac")
        assert contents.starts_with_keyframe
        assert len(contents.video_pts_s) == stats.frames
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            audio = stream.codec_context
            packets = sum(1 for p in container.demux(stream) if p.size)
        if stats.audio is None:  # a last segment cut before its first audio packet
            assert packets == 0
            assert stats.frames <= 2
            continue
        assert packets > 0
        assert stats.audio["channels"] == audio.channels == 1
        assert stats.audio["sample_rate"] == audio.sample_rate


def test_dropped_frames_are_counted_from_sensor_timestamp_gaps(recording: Recording) -> None:
    assert recording.camera.frames_dropped == recording.injected_drops
    counted = sum(s.dropped_frames for s in recording.stats)
    # every gap in the recorded timeline is in the records, and the injected ones are among them
    in_files = sum(_gaps(_decoded_pts(p)) for p in recording.paths)
    assert counted == in_files
    assert counted >= recording.injected_drops
    widest = max(b - a for p in recording.paths for a, b in itertools.pairwise(_decoded_pts(p)))
    assert widest >= (recording.injected_drops + 0.5) * 1e6 / FPS


def _luma(path: Path, index: int) -> tuple[bytes, int]:
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                plane = frame.planes[0]
                return bytes(plane), plane.line_size
    raise AssertionError("no such frame")


def _read_overlay(luma: bytes, stride: int, overlay: Overlay, length: int) -> str:
    """Read the burned-in line back: each character cell is matched against the font's glyphs."""
    alphabet = "0123456789-:+ " + DEVICE
    cell = overlay.renderer.cell_width_px
    height = overlay.renderer.line_height_px
    x0 = y0 = overlay.margin_px
    text = []
    for i in range(length):
        best, best_cost = "?", None
        for char in sorted(set(alphabet)):
            glyph = overlay.render_block(char)
            cost = 0
            for r in range(height):
                row = luma[
                    (y0 + r) * stride + x0 + i * cell : (y0 + r) * stride + x0 + (i + 1) * cell
                ]
                cost += sum(abs(a - b) for a, b in zip(row, glyph[r], strict=True))
            if best_cost is None or cost < best_cost:
                best, best_cost = char, cost
        text.append(best)
    return "".join(text)


def test_overlay_time_and_device_id_are_readable_in_decoded_frames(recording: Recording) -> None:
    overlay = Overlay(WIDTH, HEIGHT, DEVICE, ZoneInfo(TZ))
    path, stats = recording.paths[1], recording.stats[1]
    length = len(overlay.text_for(stats.utc_start))
    for index in (0, stats.frames // 2, stats.frames - 1):
        luma, stride = _luma(path, index)
        text = _read_overlay(luma, stride, overlay, length)
        assert text.endswith(" +0800 " + DEVICE), text
        shown = datetime.strptime(text[:25], "%Y-%m-%d %H:%M:%S %z")
        # the frame's own time, to the second, in the segment's span (local time, +08:00)
        assert (
            stats.utc_start - timedelta(seconds=1.5)
            <= shown
            <= stats.utc_end + timedelta(seconds=1.5)
        ), (text, stats.utc_start, stats.utc_end)


def test_pi5_encodes_with_libx264_at_its_frame_rate_stereo(tmp_path: Path) -> None:
    cap = _capture(tmp_path, model="Raspberry Pi 5 Model B Rev 1.0", fps=30, audio_channels=2)
    rec = _record(cap, tmp_path / "out", segments=1)
    assert cap.plan.software_h264
    assert cap.fps == 25
    assert type(rec.camera.encoders_started[0]).__name__ == "LibavH264Encoder"
    stats = rec.stats[0]
    with av.open(str(rec.paths[0])) as container:
        assert container.streams.audio[0].codec_context.channels == 2
    assert stats.audio is not None
    assert stats.audio["channels"] == 2
    assert stats.video is not None
    assert stats.video["fps"] == 25
    pts = _decoded_pts(rec.paths[0])
    median_step = sorted(b - a for a, b in itertools.pairwise(pts))[len(pts) // 2]
    assert median_step == pytest.approx(1e6 / 25, rel=0.1)


def test_zero_2_w_keeps_the_hardware_encoder_shape(tmp_path: Path) -> None:
    cap = _capture(tmp_path, model="Raspberry Pi Zero 2 W Rev 1.0", fps=30)
    rec = _record(cap, tmp_path / "out", segments=1)
    assert not cap.plan.software_h264
    assert cap.fps == 25
    assert type(rec.camera.encoders_started[0]).__name__ == "H264Encoder"
    assert read_segment(rec.paths[0]).video_codec == "h264"


def _first_audio_s(path: Path) -> float:
    """Seconds from the file's first video frame to its first audio packet."""
    first: dict[str, float] = {}
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.pts is None or not packet.size:
                continue
            t = float(packet.pts * packet.time_base)
            kind = packet.stream.type
            first[kind] = min(first.get(kind, t), t)
    return first["audio"] - first["video"]


@pytest.mark.parametrize("pre_event_audio", [False, True])
def test_audio_from_before_the_press_is_dropped_by_timestamp(
    tmp_path: Path, pre_event_audio: bool
) -> None:
    cap = _capture(tmp_path, pre_event_s=1.5, pre_event_audio=pre_event_audio)
    rec = _record(cap, tmp_path / "out", segments=1, settle_s=2.0)
    stats = rec.stats[0]
    assert stats.pre_event_us >= 1.0e6
    offset_s = _first_audio_s(rec.paths[0])
    if pre_event_audio:
        assert offset_s < 0.5  # sound from the whole pre-event span
    else:
        # no sound from before the press; it starts within a frame or two of it
        press_s = stats.pre_event_us / 1e6
        assert press_s - 0.15 <= offset_s <= press_s + 0.5, (offset_s, press_s)


def test_a_named_card_that_is_absent_fails_the_microphone_check(tmp_path: Path) -> None:
    cap = _capture(tmp_path, audio_device="", audio_card="NoSuchCard")
    cap.start()
    try:
        health = cap.probe(timeout_s=3.0)
    finally:
        cap.stop()
    assert health.camera_ok
    assert not health.microphone_ok
    assert "NoSuchCard" in health.microphone_detail
    assert check_microphone(health).outcome == Outcome.FAIL
    assert check_microphone(health, silent="warn").outcome == Outcome.WARN


def test_no_microphone_configured_is_said_so(tmp_path: Path) -> None:
    cap = _capture(tmp_path, audio_device="")
    cap.start()
    try:
        health = cap.probe(timeout_s=3.0)
    finally:
        cap.stop()
    assert not health.microphone_ok
    assert "audio_card" in health.microphone_detail


def test_a_stalled_camera_is_a_fault_then_resumes(tmp_path: Path) -> None:
    """The Pi backend's no-frames watchdog on the fake sensor: segment closed, CAMERA fault,
    camera restarted until frames come back, a new segment and on_resume."""
    cap = _capture(tmp_path, watchdog_timeout_s=1.0)
    faults: list[tuple[FaultKind, str]] = []
    resumed: list[FaultKind] = []
    cap.on_fault = lambda kind, when, detail: faults.append((kind, detail))
    cap.on_resume = lambda kind, when: resumed.append(kind)
    sink = DirectorySink(tmp_path / "out")
    cap.start()
    try:
        _wait(lambda: cap.media_time_us > 1.2e6)
        cap.start_recording(sink)
        _wait(lambda: cap.media_time_us > 2.5e6)
        Picamera2.instances[-1].stall()
        _wait(lambda: bool(faults))
        for camera in list(Picamera2.instances):
            camera.unstall()
        _wait(lambda: bool(resumed))
        _wait(lambda: len(sink.stats) >= 2)
        cap.stop_recording()
    finally:
        cap.stop()
    assert faults[0][0] == FaultKind.CAMERA
    assert "no video frames" in faults[0][1]
    assert resumed[0] == FaultKind.CAMERA
    before, after = sink.stats[0], sink.stats[-1]
    assert before.frames > 0
    assert after.frames > 0
    assert after.utc_start >= before.utc_end  # the gap lies between them
    for path in sink.paths:
        assert read_segment(path).starts_with_keyframe
