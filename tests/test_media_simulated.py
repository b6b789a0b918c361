"""SimulatedCapture end to end: real H.264/AAC MPEG-TS segments checked with ffprobe and PyAV."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import av
import pytest

from agent.clock import SimulatedClock, SystemClock
from agent.media import UnknownBackendError, create_capture
from agent.media.audio import tone_s16le
from agent.media.base import (
    AudioFormatError,
    CaptureStateError,
    FaultKind,
    SegmentStats,
)
from agent.media.inspect import SegmentContents, read_segment
from agent.media.scene import SyntheticScene
from agent.media.simulated import SimulatedCapture
from agent.media.sinks import DirectorySink

FPS = 15
START = datetime(2026, 11, 30, 8, 0, 0, tzinfo=UTC)

pytestmark = pytest.mark.timeout(120)


def ffprobe(path: Path) -> dict:
    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe not installed")
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-of",
            "json",
            "-count_frames",
            "-show_format",
            "-show_streams",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


class EventLog:
    """A sink wrapper recording the order of sink calls and pipeline callbacks."""

    def __init__(self, sink: DirectorySink) -> None:
        self.sink = sink
        self.events: list[tuple[str, object]] = []
        self.faults: list[tuple[FaultKind, datetime, str]] = []
        self.resumes: list[tuple[FaultKind, datetime]] = []
        self.lock = threading.Lock()

    def open_segment(self, index: int) -> BinaryIO:
        with self.lock:
            self.events.append(("open", index))
        return self.sink.open_segment(index)

    def close_segment(self, index: int, stats: SegmentStats) -> None:
        self.sink.close_segment(index, stats)
        with self.lock:
            self.events.append(("close", index))

    def on_fault(self, kind: FaultKind, when: datetime, detail: str) -> None:
        with self.lock:
            self.events.append(("fault", kind))
            self.faults.append((kind, when, detail))

    def on_resume(self, kind: FaultKind, when: datetime) -> None:
        with self.lock:
            self.events.append(("resume", kind))
            self.resumes.append((kind, when))

    def kinds(self) -> list[str]:
        with self.lock:
            return [k for k, _ in self.events]


@pytest.fixture
def fast_capture() -> Iterator[Callable[..., SimulatedCapture]]:
    made: list[SimulatedCapture] = []

    def make(**options: object) -> SimulatedCapture:
        clock = SimulatedClock(START)
        opts: dict[str, object] = {"realtime": False, "fps": FPS, "width": 320, "height": 180}
        opts.update(options)
        capture = SimulatedCapture(clock, **opts)  # type: ignore[arg-type]
        made.append(capture)
        return capture

    yield make
    for capture in made:
        capture.stop()


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """25 s (fast) recording after a 12 s idle start, with a 10 s pre-event buffer."""
    directory = tmp_path_factory.mktemp("long")
    clock = SimulatedClock(START)
    capture = SimulatedCapture(clock, realtime=False, fps=FPS, pre_event_s=10.0, device_id="T-1")
    sink = DirectorySink(directory)
    capture.start()
    try:
        capture.advance_to(12_000_000)
        capture.start_recording(sink)
        press_us = capture.press_media_us
        press_utc = capture.press_utc
        assert press_us is not None
        capture.advance_to(press_us + 25_000_000)
        capture.stop_recording()
        stop_us = capture.stop_media_us
    finally:
        capture.stop()
    return {
        "sink": sink,
        "press_us": press_us,
        "press_utc": press_utc,
        "stop_us": stop_us,
        "contents": [read_segment(p) for p in sink.paths],
    }


def test_each_segment_is_mpegts_with_h264_and_aac(long_recording: dict) -> None:
    sink: DirectorySink = long_recording["sink"]
    assert len(sink.paths) == 3  # 10 s pre-event + 10 s, then 10 s, then ~5 s
    for path in sink.paths:
        info = ffprobe(path)
        assert info["format"]["format_name"] == "mpegts"
        codecs = sorted(s["codec_name"] for s in info["streams"])
        assert codecs == ["aac", "h264"], path
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        assert (video["width"], video["height"]) == (640, 360)
        audio = next(s for s in info["streams"] if s["codec_type"] == "audio")
        assert int(audio["sample_rate"]) == 16000
        assert int(video["nb_read_frames"]) > 0


def test_segments_are_contiguous_and_durations_add_up(long_recording: dict) -> None:
    stats: list[SegmentStats] = long_recording["sink"].stats
    assert [s.index for s in stats] == [0, 1, 2]
    assert stats[0].media_start_us == 0
    for prev, nxt in itertools.pairwise(stats):
        assert nxt.media_start_us == prev.media_end_us
        assert nxt.utc_start == prev.utc_end
    # Splits fall 10 s apart, counted from the press.
    pre_event_us = stats[0].pre_event_us
    assert stats[0].media_end_us - stats[0].media_start_us == pytest.approx(
        pre_event_us + 10_000_000, abs=2 * 1_000_000 / FPS
    )
    assert stats[1].media_end_us - stats[1].media_start_us == pytest.approx(10_000_000, abs=1)
    total_us = stats[-1].media_end_us
    recorded_us = long_recording["stop_us"] - long_recording["press_us"]
    assert total_us == pytest.approx(pre_event_us + recorded_us, abs=2 * 1_000_000 / FPS)
    assert sum(s.frames for s in stats) == round(total_us * FPS / 1e6)
    assert all(s.dropped_frames == 0 for s in stats)
    # ffprobe agrees with our own stats about each file's video duration.
    for path, s in zip(long_recording["sink"].paths, stats, strict=True):
        video = next(v for v in ffprobe(path)["streams"] if v["codec_type"] == "video")
        assert int(video["nb_read_frames"]) == s.frames
        assert float(video["start_time"]) == pytest.approx(s.media_start_us / 1e6, abs=0.001)


def test_no_frame_lost_or_duplicated_at_splits(long_recording: dict) -> None:
    contents: list[SegmentContents] = long_recording["contents"]
    all_pts: list[float] = []
    for c in contents:
        assert c.starts_with_keyframe, c.path
        assert c.video_codec == "h264"
        assert c.audio_codec == "aac"
        all_pts.extend(c.video_pts_s)
    steps = [b - a for a, b in itertools.pairwise(all_pts)]
    assert min(steps) == pytest.approx(1 / FPS, abs=1e-4)
    assert max(steps) == pytest.approx(1 / FPS, abs=1e-4)
    # Across each split the next file starts exactly one frame after the last one ended.
    for a, b in itertools.pairwise(contents):
        assert b.video_pts_s[0] - a.video_pts_s[-1] == pytest.approx(1 / FPS, abs=1e-4)


def test_segment_zero_begins_with_the_pre_event_media(long_recording: dict) -> None:
    first: SegmentStats = long_recording["sink"].stats[0]
    assert first.media_start_us == 0
    # The buffer starts at a keyframe (1 s apart), reaching at least pre_event_s back.
    assert 10_000_000 <= first.pre_event_us <= 11_000_000
    expected = long_recording["press_utc"] - timedelta(microseconds=first.pre_event_us)
    assert abs((first.utc_start - expected).total_seconds()) < 0.1
    assert (long_recording["press_utc"] - first.utc_start).total_seconds() == pytest.approx(
        10.0, abs=1.1
    )
    assert all(s.pre_event_us == 0 for s in long_recording["sink"].stats[1:])


def _luma_region(frame: av.VideoFrame, region: tuple[int, int, int, int]) -> list[int]:
    x, y, w, h = region
    plane = frame.planes[0]
    data = bytes(plane)
    return [b for row in range(y, y + h) for b in data[row * plane.line_size + x :][:w]]


def test_video_shows_the_utc_clock_of_its_stats(long_recording: dict) -> None:
    path: Path = long_recording["sink"].paths[1]
    stats: SegmentStats = long_recording["sink"].stats[1]
    with av.open(str(path)) as container:
        first = next(container.decode(video=0))
    scene = SyntheticScene(640, 360, "T-1")
    region = scene.clock_region(stats.utc_start)
    seen = _luma_region(first, region)

    def distance(utc: datetime) -> float:
        expected = _luma_region(scene.render(0, utc), region)
        return sum(abs(a - b) for a, b in zip(seen, expected, strict=True)) / len(seen)

    right = distance(stats.utc_start)
    wrong = distance(stats.utc_start + timedelta(hours=1, minutes=11, seconds=11, milliseconds=111))
    assert right < 4.0
    assert wrong > 2 * right + 5.0  # a different time is visibly different


@pytest.mark.parametrize("press_us", [5_000_000, 5_066_667, 5_133_333])
def test_pre_event_audio_off_keeps_no_sound_from_before_the_press(
    fast_capture: Callable[..., SimulatedCapture], tmp_path: Path, press_us: int
) -> None:
    # The AAC encoder hands sound out a frame or two late, so at the press it still holds sound
    # from before it: audio must be kept or dropped by its timestamp, not by when it comes out.
    capture = fast_capture(pre_event_s=3.0, pre_event_audio=False)
    sink = DirectorySink(tmp_path)
    capture.start()
    capture.advance_to(press_us)
    capture.start_recording(sink)
    press_s = (capture.press_media_us or 0) / 1e6
    capture.advance_to(capture.media_time_us + 6_000_000)
    capture.stop_recording()
    (stats,) = sink.stats
    contents = read_segment(sink.paths[0], decode_audio=True)
    assert contents.video_pts_s[0] == pytest.approx(0.0, abs=0.001)  # pre-event video is there
    # The file's timeline starts at the oldest pre-event frame; the press is pre_event_us later.
    assert stats.media_start_us == 0
    assert press_s == pytest.approx(5.0, abs=0.2)
    file_press_s = stats.pre_event_us / 1e6
    first_audio_s = contents.audio_levels[0][0]
    aac_frame_s = 1024 / 16000
    assert file_press_s - 1e-6 <= first_audio_s < file_press_s + aac_frame_s, (
        first_audio_s,
        file_press_s,
    )


def test_camera_fault_closes_segment_reports_and_resumes(
    fast_capture: Callable[..., SimulatedCapture], tmp_path: Path
) -> None:
    # Long segments: a regular split inside the window would add its own open/close events.
    capture = fast_capture(pre_event_s=2.0, watchdog_timeout_s=1.0, segment_duration_s=60.0)
    log = EventLog(DirectorySink(tmp_path))
    capture.on_fault = log.on_fault
    capture.on_resume = log.on_resume
    capture.start()
    capture.advance_to(3_000_000)
    capture.start_recording(log)
    press = capture.media_time_us
    capture.advance_to(press + 4_000_000)
    capture.inject_camera_fault(3.0)
    assert capture.run_until(lambda: "resume" in log.kinds(), 10_000_000)
    resumed_at = capture.media_time_us
    capture.advance_to(resumed_at + 2_000_000)
    capture.stop_recording()

    assert log.kinds() == ["open", "close", "fault", "open", "resume", "close"]
    ((kind, fault_utc, detail),) = log.faults
    assert kind is FaultKind.CAMERA
    assert "no video frames" in detail
    ((resume_kind, resume_utc),) = log.resumes
    assert resume_kind is FaultKind.CAMERA
    assert (resume_utc - fault_utc).total_seconds() == pytest.approx(3.0, abs=0.2)
    before, after = log.sink.stats
    assert after.index == before.index + 1
    # The gap shows on the media timeline; each side is a playable file of its own.
    assert (after.media_start_us - before.media_end_us) / 1e6 == pytest.approx(3.0, abs=0.2)
    assert before.utc_end == fault_utc
    assert after.utc_start == resume_utc
    for path in log.sink.paths:
        contents = read_segment(path)
        assert contents.starts_with_keyframe
        assert contents.video_codec == "h264"
        assert contents.audio_codec == "aac"


def test_microphone_fault_keeps_video_in_a_video_only_segment(
    fast_capture: Callable[..., SimulatedCapture], tmp_path: Path
) -> None:
    capture = fast_capture(pre_event_s=0.0, segment_duration_s=60.0)  # no regular split inside
    log = EventLog(DirectorySink(tmp_path))
    capture.on_fault = log.on_fault
    capture.on_resume = log.on_resume
    capture.start()
    capture.start_recording(log)
    capture.advance_to(3_000_000)
    capture.inject_microphone_fault(2.5)
    assert capture.run_until(lambda: "resume" in log.kinds(), 10_000_000)
    mark = capture.media_time_us
    capture.advance_to(mark + 2_000_000)
    capture.stop_recording()

    assert log.kinds() == ["open", "close", "fault", "open", "close", "open", "resume", "close"]
    assert [f[0] for f in log.faults] == [FaultKind.MICROPHONE]
    assert [r[0] for r in log.resumes] == [FaultKind.MICROPHONE]
    stats = log.sink.stats
    assert [s.audio is not None for s in stats] == [True, False, True]
    # Video never stopped: no hole between the three segments.
    for prev, nxt in itertools.pairwise(stats):
        assert nxt.media_start_us == prev.media_end_us
    middle = ffprobe(log.sink.paths[1])
    assert [s["codec_name"] for s in middle["streams"]] == ["h264"]
    assert (stats[1].media_end_us - stats[1].media_start_us) / 1e6 == pytest.approx(2.5, abs=1.2)


def test_played_audio_is_in_the_recording_at_the_right_time(
    fast_capture: Callable[..., SimulatedCapture], tmp_path: Path
) -> None:
    capture = fast_capture(pre_event_s=0.0, segment_duration_s=4.0)
    sink = DirectorySink(tmp_path)
    capture.start()
    capture.start_recording(sink)
    capture.advance_to(2_000_000)
    origin_us = capture.media_time_us - (capture.recording_time_us or 0)
    play_from_s = (capture.media_time_us - origin_us) / 1e6
    capture.play_audio(tone_s16le(1000.0, 1.5, 48000, amplitude=0.5), 48000, 1)
    play_to_s = (capture.media_time_us - origin_us) / 1e6
    capture.advance_to(origin_us + round((play_to_s + 2.0) * 1e6))
    capture.stop_recording()

    levels = [lv for p in sink.paths for lv in read_segment(p, decode_audio=True).audio_levels]
    loud = [t for t, db in levels if db > -20.0]
    assert loud, "the played tone is not in the recording"
    # Stepped capture: the tone starts where the call was made and the call returns once it
    # has been captured (to the AAC frame).
    aac_frame_s = 1024 / 16000
    assert min(loud) == pytest.approx(play_from_s, abs=aac_frame_s)
    assert max(loud) + aac_frame_s == pytest.approx(play_to_s, abs=2 * aac_frame_s)
    assert max(loud) + aac_frame_s - min(loud) == pytest.approx(1.5, abs=0.15)
    quiet = [db for t, db in levels if t < min(loud) - 0.2 or t > max(loud) + 0.2]
    assert quiet
    assert max(quiet) < -30.0


def _wait_recorded(capture: SimulatedCapture, seconds: float, timeout_s: float = 60.0) -> None:
    """Realtime: wait (polling) until the recording holds ``seconds`` of media."""
    deadline = time.monotonic() + timeout_s
    while (capture.recording_time_us or 0) < seconds * 1e6:
        assert time.monotonic() < deadline, "capture stalled"
        time.sleep(0.01)


def test_realtime_played_audio_starts_when_played(tmp_path: Path) -> None:
    capture = SimulatedCapture(
        SystemClock(boot_id="test"),
        realtime=True,
        fps=FPS,
        width=320,
        height=180,
        pre_event_s=0.0,
    )
    sink = DirectorySink(tmp_path)
    tone = tone_s16le(1000.0, 1.0, 16000, amplitude=0.5)
    capture.start()
    try:
        capture.start_recording(sink)
        _wait_recorded(capture, 0.6)
        called_s = (capture.recording_time_us or 0) / 1e6
        capture.play_audio(tone, 16000, 1)
        returned_s = (capture.recording_time_us or 0) / 1e6
        _wait_recorded(capture, returned_s + 0.5)
        capture.stop_recording()
    finally:
        capture.stop()
    levels = [lv for p in sink.paths for lv in read_segment(p, decode_audio=True).audio_levels]
    loud = [t for t, db in levels if db > -20.0]
    assert loud
    aac_frame_s = 1024 / 16000
    # Media-time relations only (a loaded machine delays the threads, not the timeline): the
    # tone starts where capture was when it was played, lasts its 1 s, and the call returned
    # only once all of it had been captured.
    assert min(loud) >= called_s - aac_frame_s
    assert max(loud) + aac_frame_s - min(loud) == pytest.approx(1.0, abs=0.15)
    assert returned_s >= max(loud) + aac_frame_s - 0.1  # blocked until played


def test_realtime_capture_syncs_the_part_file_about_every_second(tmp_path: Path) -> None:
    capture = SimulatedCapture(
        SystemClock(boot_id="test"),
        realtime=True,
        fps=FPS,
        width=320,
        height=180,
        pre_event_s=0.0,
        sync_interval_s=1.0,
    )
    sink = DirectorySink(tmp_path)
    capture.start()
    try:
        capture.start_recording(sink)
        _wait_recorded(capture, 3.2)
        recorded_s = (capture.recording_time_us or 0) / 1e6
        # A second handle sees only what reached the file, as a reader after a power cut would.
        snapshot = tmp_path / "snapshot.ts"
        snapshot.write_bytes(sink.part_path(0).read_bytes())
        capture.stop_recording()
    finally:
        capture.stop()
    on_disk = read_segment(snapshot)
    assert on_disk.video_end_s is not None
    lag_s = recorded_s - on_disk.video_end_s
    assert recorded_s >= 3.0
    assert lag_s <= 1.3, f"file trails the recording by {lag_s:.2f} s"


class FsyncSpy:
    """A real segment file that notes the clock whenever its descriptor is fetched for fsync."""

    def __init__(self, fileobj: BinaryIO, clock: SimulatedClock) -> None:
        self._fileobj = fileobj
        self._clock = clock
        self.fsync_at_ns: list[int] = []

    def write(self, data: bytes) -> int:
        return self._fileobj.write(data)

    def flush(self) -> None:
        self._fileobj.flush()

    def fileno(self) -> int:
        self.fsync_at_ns.append(self._clock.monotonic_ns())
        return self._fileobj.fileno()

    def close(self) -> None:
        self._fileobj.close()


def test_open_segment_is_fsynced_every_sync_interval(tmp_path: Path) -> None:
    clock = SimulatedClock(START)
    capture = SimulatedCapture(
        clock,
        realtime=False,
        fps=FPS,
        width=320,
        height=180,
        pre_event_s=0.0,
        segment_duration_s=30.0,
        sync_interval_s=1.0,
    )
    spies: list[FsyncSpy] = []

    class SpySink(DirectorySink):
        def open_segment(self, index: int) -> BinaryIO:
            spy = FsyncSpy(super().open_segment(index), clock)
            spies.append(spy)
            return spy  # type: ignore[return-value]

    capture.start()
    try:
        capture.start_recording(SpySink(tmp_path))
        capture.advance_to(6_500_000)
        capture.stop_recording()
    finally:
        capture.stop()
    (spy,) = spies
    gaps_s = [(b - a) / 1e9 for a, b in itertools.pairwise(spy.fsync_at_ns[:-1])]
    assert len(gaps_s) >= 4
    assert all(s == pytest.approx(1.0, abs=1.5 / FPS) for s in gaps_s), gaps_s


def test_probe_reports_working_and_broken_devices(
    fast_capture: Callable[..., SimulatedCapture],
) -> None:
    capture = fast_capture()
    health = capture.probe(timeout_s=5.0)  # not started: probe starts and stops it
    assert not capture.running
    assert health.camera_ok
    assert health.microphone_ok
    assert health.frames_per_s == pytest.approx(FPS, rel=0.1)
    assert health.audio_rms_dbfs == pytest.approx(-40.0, abs=3.0)
    capture.start()
    capture.inject_camera_fault(30.0)
    capture.advance_to(2_500_000)
    broken = capture.probe(timeout_s=5.0)
    assert not broken.camera_ok
    assert "no video frames" in broken.camera_detail
    assert broken.microphone_ok


def test_storage_fault_is_reported_and_recording_resumes(
    fast_capture: Callable[..., SimulatedCapture], tmp_path: Path
) -> None:
    class FlakySink(DirectorySink):
        failures = 2

        def open_segment(self, index: int) -> BinaryIO:
            if index == 1 and self.failures:
                self.failures -= 1
                raise OSError(28, "No space left on device")
            return super().open_segment(index)

    capture = fast_capture(pre_event_s=0.0, segment_duration_s=2.0)
    sink = FlakySink(tmp_path)
    log = EventLog(sink)
    capture.on_fault = log.on_fault
    capture.on_resume = log.on_resume
    capture.start()
    capture.start_recording(log)
    assert capture.run_until(lambda: "resume" in log.kinds(), 20_000_000)
    capture.stop_recording()
    assert [f[0] for f in log.faults] == [FaultKind.STORAGE]
    assert "No space left" in log.faults[0][2]
    assert [r[0] for r in log.resumes] == [FaultKind.STORAGE]
    assert [s.index for s in sink.stats] == [0, 1]
    assert sink.stats[1].media_start_us > sink.stats[0].media_end_us


def test_misuse_raises_clear_errors_and_changes_nothing(
    fast_capture: Callable[..., SimulatedCapture], tmp_path: Path
) -> None:
    capture = fast_capture()
    with pytest.raises(CaptureStateError, match="stopped"):
        capture.start_recording(DirectorySink(tmp_path))
    with pytest.raises(CaptureStateError, match="not recording"):
        capture.stop_recording()
    with pytest.raises(AudioFormatError, match="whole number"):
        capture.play_audio(b"\x00\x01\x02", 16000, 1)
    capture.start()
    with pytest.raises(CaptureStateError, match="running"):
        capture.start()
    assert not capture.recording
    with pytest.raises(ValueError, match="SimulatedClock"):
        SimulatedCapture(SystemClock(boot_id="x"), realtime=False)
    with pytest.raises(ValueError, match="moves by itself"):
        SimulatedCapture(SimulatedClock(START), realtime=True)
    with pytest.raises(UnknownBackendError, match="simulated, pi"):
        create_capture("webcam", SimulatedClock(START))


def test_factory_builds_the_simulated_backend() -> None:
    capture = create_capture("simulated", SimulatedClock(START), realtime=False, fps=10)
    assert isinstance(capture, SimulatedCapture)
    assert capture.fps == 10


def _scripted_capture(directory: Path) -> list[bytes]:
    capture = SimulatedCapture(
        SimulatedClock(START), realtime=False, fps=FPS, width=320, height=180, pre_event_s=2.0,
        segment_duration_s=3.0,
    )  # fmt: skip
    sink = DirectorySink(directory)
    capture.start()
    try:
        capture.advance_to(3_000_000)
        capture.start_recording(sink)
        capture.advance_to(4_500_000)
        capture.play_audio(tone_s16le(1000.0, 0.5, 48000, amplitude=0.5), 48000, 1)
        capture.inject_camera_fault(1.5)
        capture.advance_to(10_000_000)
        capture.stop_recording()
    finally:
        capture.stop()
    return [path.read_bytes() for path in sink.paths]


def test_a_stepped_capture_is_a_pure_function_of_its_script(tmp_path: Path) -> None:
    first = _scripted_capture(tmp_path / "one")
    second = _scripted_capture(tmp_path / "two")
    assert len(first) >= 3
    assert first == second


def test_only_a_fast_capture_can_be_stepped(tmp_path: Path) -> None:
    capture = SimulatedCapture(SystemClock(boot_id="x"), realtime=True, fps=FPS, pre_event_s=0.0)
    assert not capture.stepped
    with pytest.raises(CaptureStateError, match="realtime"):
        capture.advance_to(1_000_000)
    with pytest.raises(CaptureStateError, match="realtime"):
        capture.queue_audio(b"\x00\x00", 16000, 1)
