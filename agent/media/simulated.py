"""Simulated camera, microphone and speaker producing real H.264 + AAC MPEG-TS (PyAV).

One capture thread ticks once per video frame. Each tick it generates the microphone's samples
for that frame period (ambient tone plus whatever :meth:`SimulatedCapture.play_audio` put into the
"room"), renders a synthetic frame with the burned-in UTC clock and device id, encodes both
(libx264 ultrafast/zerolatency, native AAC), and routes the packets: into the pre-event buffer
(whole GOPs of encoded packets, never raw frames) when idle, or into the open segment when
recording. ``realtime=True`` paces ticks at wall rate on a capture thread. ``realtime=False`` is
*stepped*: there is no capture thread; media time advances only when told, through
:meth:`SimulatedCapture.advance_to` (or a sleep on the attached :class:`SimulatedClock`, a
measurement window, a blocking :meth:`~SimulatedCapture.play_audio`), in the caller's thread,
moving the clock with the media. So a script of actions at media times gives the same frames,
packets and callbacks on every run, on an idle or a loaded machine.

Audio is routed by its timestamp, not by when the encoder hands it out: with
``pre_event_audio=False`` no sound from before the press reaches a segment, although the AAC
encoder still holds some of it when the press comes.

Failure posture: a camera or microphone that stops delivering (see ``inject_camera_fault`` /
``inject_microphone_fault``) is noticed by the same no-data watchdog the Pi backend uses; during
a recording the current segment is closed, ``on_fault`` is called, and when data flows again a
new segment is opened and ``on_resume`` is called. While only the microphone is down, video goes
on in video-only segments (``audio`` is None in their stats). A failing segment file (disk full,
I/O error) is handled the same way with :attr:`FaultKind.STORAGE`. Unexpected errors inside a
tick are logged and the thread carries on; nothing raises into the agent from the capture thread.
"""

from __future__ import annotations

import array
import logging
import math
import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

import av
from av.video.frame import PictureType

from agent.clock import Clock, SimulatedClock
from agent.media.audio import SILENCE_DBFS, rms_dbfs, s16le_to_float_mono
from agent.media.base import (
    CaptureHealth,
    CapturePipeline,
    CaptureStateError,
    Event,
    FaultKind,
    SegmentSink,
    fire_events,
)
from agent.media.scene import SyntheticScene
from agent.media.segments import AudioParams, EncodedPacket, SegmentWriter, VideoParams
from agent.media.watchdog import FrameWatchdog, WatchdogEvent

log = logging.getLogger(__name__)

AAC_FRAME_SAMPLES = 1024
MAX_CATCH_UP_S = 1.0
"""Realtime capture behind by more than this skips frames (counted as dropped)."""
SUPPORTED_SAMPLE_RATES_HZ = (8000, 16000, 22050, 32000, 44100, 48000)
MICROPHONE_SILENT_DBFS = -90.0
"""Below this the microphone counts as dead: a real room is never digitally silent."""


@dataclass
class _Pending:
    """A segment to open at the next video keyframe (after a split point, fault or resume)."""

    index: int
    resume: list[FaultKind] = field(default_factory=list)


@dataclass
class _FaultWindow:
    start_us: int
    end_us: int

    def covers(self, t_us: int) -> bool:
        return self.start_us <= t_us < self.end_us


class SimulatedCapture(CapturePipeline):
    """Capture pipeline on simulated hardware. See the module docstring for the model."""

    def __init__(
        self,
        clock: Clock,
        *,
        width: int = 640,
        height: int = 360,
        fps: int = 15,
        realtime: bool = True,
        device_id: str = "SIM",
        audio_sample_rate_hz: int = 16000,
        segment_duration_s: float = 10.0,
        pre_event_s: float = 30.0,
        pre_event_audio: bool = True,
        sync_interval_s: float = 1.0,
        keyframe_interval_s: float = 1.0,
        watchdog_timeout_s: float = 1.0,
        ambient_level_dbfs: float = -40.0,
        speaker_gain: float = 0.7,
        audio_bitrate_bps: int = 48000,
    ) -> None:
        super().__init__(
            clock,
            segment_duration_s=segment_duration_s,
            pre_event_s=pre_event_s,
            pre_event_audio=pre_event_audio,
            sync_interval_s=sync_interval_s,
        )
        if not 1 <= fps <= 60:
            raise ValueError(f"fps must be 1..60, got {fps}")
        if audio_sample_rate_hz not in SUPPORTED_SAMPLE_RATES_HZ:
            raise ValueError(
                f"audio_sample_rate_hz must be one of {SUPPORTED_SAMPLE_RATES_HZ}, "
                f"got {audio_sample_rate_hz}"
            )
        if keyframe_interval_s <= 0 or watchdog_timeout_s <= 0:
            raise ValueError("keyframe_interval_s and watchdog_timeout_s must be > 0")
        fast_clock = isinstance(clock, SimulatedClock) and not clock.realtime
        if realtime and fast_clock:
            raise ValueError(
                "realtime capture needs a clock that moves by itself "
                "(SystemClock or SimulatedClock(realtime=True))"
            )
        if not realtime and not fast_clock:
            raise ValueError("fast capture (realtime=False) needs SimulatedClock(realtime=False)")
        self.width = width
        self.height = height
        self.fps = fps
        self.realtime = realtime
        self.device_id = device_id
        self.sample_rate_hz = audio_sample_rate_hz
        self.keyframe_interval_s = keyframe_interval_s
        self.watchdog_timeout_s = watchdog_timeout_s
        self.speaker_gain = speaker_gain
        self.audio_bitrate_bps = audio_bitrate_bps
        self.video_params = VideoParams(width, height, fps)
        self.audio_params = AudioParams(audio_sample_rate_hz, 1)
        self._scene = SyntheticScene(width, height, device_id)
        self._ambient = _ambient_loop(audio_sample_rate_hz, ambient_level_dbfs)

        self._room = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()

        # Capture timeline (microseconds since start()).
        self._mono0_ns = 0
        self._next_frame = 0
        self._media_time_us = 0
        self._frames_total = 0
        self._dropped_total = 0
        self._camera_faults: list[_FaultWindow] = []
        self._mic_faults: list[_FaultWindow] = []
        self._camera_wd = FrameWatchdog("camera", watchdog_timeout_s)
        self._mic_wd = FrameWatchdog("microphone", watchdog_timeout_s)
        self._last_video_end_utc: datetime | None = None
        self._last_audio_end_utc: datetime | None = None
        self._force_keyframe = False

        self._venc: Any = None
        self._aenc: Any = None
        self._audio_next_sample = 0
        self._audio_pending: array.array[float] = array.array("f")
        self._audio_pending_start = 0
        self._recent_levels: deque[tuple[float, int]] = deque(maxlen=max(1, fps))

        # Speaker -> room -> microphone.
        self._room_samples: array.array[float] = array.array("f")
        self._room_consumed = 0
        self._room_base = 0

        # Pre-event buffer: whole GOPs of encoded packets.
        self._gops: deque[list[EncodedPacket]] = deque()

        # Recording state.
        self._writer: SegmentWriter | None = None
        self._pending: _Pending | None = None
        self._origin_us: int | None = None
        self._press_us = 0
        self.press_utc: datetime | None = None
        """Wall clock at the last start_recording (the "press")."""
        self.press_media_us: int | None = None
        """Capture media time at the last start_recording."""
        self.stop_media_us: int | None = None
        """Capture media time at the last stop_recording."""
        self._next_split_us = 0
        self._last_sync_us = 0
        self._step_lock = threading.RLock()
        """Held while a thread steps a fast capture (one stepper at a time)."""
        if fast_clock:
            assert isinstance(clock, SimulatedClock)
            clock.attach_driver(self.run_for_ns)

    # ------------------------------------------------------------------ public API

    @property
    def media_time_us(self) -> int:
        return self._media_time_us

    @property
    def running(self) -> bool:
        return self._running

    @property
    def stepped(self) -> bool:
        return not self.realtime

    def advance_to(self, media_us: int) -> None:
        """Capture frames in this thread until :attr:`media_time_us` reaches ``media_us``.

        Fast (stepped) mode only. Whole frames: it stops at the first frame end at or after
        ``media_us``; the clock ends at that frame end.
        """
        self._require_stepped("advance")
        with self._step_lock:
            while self._running and self._media_time_us < media_us:
                self._step_frame()

    def run_for_ns(self, ns: int) -> None:
        """Let ``ns`` of simulated time pass: capture every frame that ends within it, then move
        the clock to exactly ``ns`` later (the driver of the fast clock's ``sleep``)."""
        self._require_stepped("run")
        assert isinstance(self.clock, SimulatedClock)
        with self._step_lock:
            target_ns = self.clock.monotonic_ns() + ns
            while self._running and self._frame_start_ns(self._next_frame + 1) <= target_ns:
                self._step_frame()
            self._clock_to(target_ns)

    def run_until(self, done: Callable[[], bool], max_us: int) -> bool:
        """Step frame by frame until ``done()`` or ``max_us`` more media; whether it is done."""
        self._require_stepped("run")
        limit_us = self._media_time_us + max_us
        while not done():
            if not self._running or self._media_time_us >= limit_us:
                return done()
            with self._step_lock:
                self._step_frame()
        return True

    def queue_audio(self, pcm_s16le: bytes, sample_rate_hz: int, channels: int = 1) -> None:
        self._require_stepped("queue audio")
        samples = s16le_to_float_mono(pcm_s16le, sample_rate_hz, channels, self.sample_rate_hz)
        with self._room:
            self._room_samples.extend(samples)

    @property
    def audio_queued(self) -> bool:
        with self._room:
            return len(self._room_samples) > self._room_consumed

    @property
    def recording_time_us(self) -> int | None:
        """Current position on the recording's media timeline (for markers), or None."""
        with self._lock:
            if self._sink is None or self._origin_us is None:
                return None
            return self._media_time_us - self._origin_us

    def start(self) -> None:
        with self._lock:
            self._refuse_start_while_running()
            self._open_video_encoder()
            self._aenc = None
            self._mono0_ns = self.clock.monotonic_ns()
            self._next_frame = 0
            self._media_time_us = 0
            self._audio_next_sample = 0
            self._camera_wd.arm(self._mono0_ns)
            self._mic_wd.arm(self._mono0_ns)
            self._stop_event.clear()
            self._running = True
            if self.realtime:
                self._thread = threading.Thread(
                    target=self._run, name=f"sim-capture-{self.device_id}", daemon=True
                )
                self._thread.start()
        log.info(
            "simulated capture started: %dx%d@%d fps, %d Hz audio, %s",
            self.width,
            self.height,
            self.fps,
            self.sample_rate_hz,
            "realtime" if self.realtime else "fast",
        )

    def stop(self) -> None:
        if self.recording:
            self.stop_recording()
        thread = self._thread
        self._stop_event.set()
        with self._room:
            self._room.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10.0)
            if thread.is_alive():
                log.error("capture thread did not stop within 10 s")
        with self._lock:
            self._running = False
            self._thread = None
            self._gops.clear()
            self._venc = None
            self._aenc = None
            # Fault windows are on this run's media timeline, which restarts at 0.
            self._camera_faults.clear()
            self._mic_faults.clear()

    def start_recording(self, sink: SegmentSink) -> None:
        events: list[Event] = []
        with self._lock:
            self._claim_sink(sink)
            self._origin_us = None
            self._press_us = self._media_time_us
            self.press_media_us = self._press_us
            self.press_utc = self.clock.utc_now()
            self.stop_media_us = None
            self._next_split_us = self._press_us + round(self.segment_duration_s * 1e6)
            horizon_us = self._press_us - round(self.pre_event_s * 1e6)
            while len(self._gops) >= 2 and self._gops[1][0].pts_us <= horizon_us:
                self._gops.popleft()
            buffered = [p for gop in self._gops for p in gop]
            self._gops.clear()
            camera_down = self._camera_wd.failed
            if buffered and not camera_down:
                self._origin_us = buffered[0].pts_us
                if self._open_writer(events, resume=[], when=buffered[0].utc):
                    for item in buffered:
                        if not self._write(item, events):
                            break
            else:
                self._pending = _Pending(0)
                self._force_keyframe = True
            if camera_down:
                self._pending = _Pending(0, [FaultKind.CAMERA])
                self._camera_down_at_start(events)
            if self._mic_wd.failed:
                self._open_faults.add(FaultKind.MICROPHONE)
                mic_when = self.clock.utc_now()
                mic_detail = "microphone not delivering samples when recording started"
                events.append(self._fault_event(FaultKind.MICROPHONE, mic_when, mic_detail))
            log.info(
                "recording started at media %d us with %d us of pre-event media",
                self._press_us,
                self._press_us
                - (self._origin_us if self._origin_us is not None else self._press_us),
            )
        fire_events(events)

    def stop_recording(self) -> None:
        events: list[Event] = []
        with self._lock:
            self._refuse_stop_unless_recording()
            if self._writer is not None:
                # The AAC encoder holds the last ~2 frames of sound: get them into the file.
                self._flush_audio_encoder(events)
                self._close_writer()
            self._sink = None
            self._pending = None
            self._origin_us = None
            self.stop_media_us = self._media_time_us
        log.info("recording stopped at media %d us", self._media_time_us)
        fire_events(events)

    def play_audio(self, pcm_s16le: bytes, sample_rate_hz: int, channels: int = 1) -> None:
        samples = s16le_to_float_mono(pcm_s16le, sample_rate_hz, channels, self.sample_rate_hz)
        if not samples:
            return
        if not self.realtime:
            # Stepped: playing takes its time by capturing it, in this thread.
            if not self._running:
                self.clock.sleep(len(samples) / self.sample_rate_hz)
                return
            with self._room:
                self._room_samples.extend(samples)
            self.run_until(
                lambda: not self.audio_queued,
                len(samples) * 1_000_000 // self.sample_rate_hz + 1_000_000,
            )
            return
        with self._room:
            if not self._running:
                # Nobody listening: the sound goes nowhere but still takes its time.
                self.clock.sleep(len(samples) / self.sample_rate_hz)
                return
            end = self._room_base + len(self._room_samples) + len(samples)
            self._room_samples.extend(samples)
            while self._room_base + self._room_consumed < end and not self._stop_event.is_set():
                self._room.wait(timeout=0.5)

    def inject_camera_fault(self, duration_s: float) -> None:
        """From the next frame on, the camera delivers nothing for ``duration_s``."""
        self._inject(self._camera_faults, duration_s)

    def inject_microphone_fault(self, duration_s: float) -> None:
        """From the next frame on, the microphone delivers nothing for ``duration_s``."""
        self._inject(self._mic_faults, duration_s)

    # ------------------------------------------------------------------ capture thread

    def _require_stepped(self, operation: str) -> None:
        if self.realtime:
            raise CaptureStateError(operation, "realtime (it runs on its own)")

    def _frame_start_ns(self, n: int) -> int:
        return self._mono0_ns + n * 10**9 // self.fps

    def _clock_to(self, mono_ns: int) -> None:
        assert isinstance(self.clock, SimulatedClock)
        behind_ns = mono_ns - self.clock.monotonic_ns()
        if behind_ns > 0:
            self.clock.advance_ns(behind_ns)

    def _step_frame(self) -> None:
        """Stepped mode, step lock held: capture the next frame at its own time."""
        self.liveness.beat()
        n = self._next_frame
        deadline_ns = self._frame_start_ns(n)
        self._clock_to(deadline_ns)
        try:
            self._tick(n, deadline_ns, self.clock.monotonic_ns(), 0)
        except Exception:
            log.exception("simulated capture tick %d failed; continuing", n)
        self._next_frame = n + 1
        self._clock_to(self._frame_start_ns(n + 1))

    def _run(self) -> None:
        """Realtime capture thread."""
        frame_ns = 10**9 / self.fps
        while not self._stop_event.is_set():
            self.liveness.beat()
            n = self._next_frame
            deadline_ns = self._mono0_ns + round(n * frame_ns)
            self._pace(deadline_ns)
            if self._stop_event.is_set():
                break
            now_ns = self.clock.monotonic_ns()
            skipped = 0
            if now_ns - deadline_ns >= MAX_CATCH_UP_S * 1e9:
                # A real camera pipeline queues a little and then drops: catch up on short
                # stalls (frames come in a burst), skip frames on long ones.
                skipped = int((now_ns - deadline_ns) // frame_ns)
                n += skipped
                deadline_ns = self._mono0_ns + round(n * frame_ns)
            try:
                self._tick(n, deadline_ns, now_ns, skipped)
            except Exception:
                log.exception("simulated capture tick %d failed; continuing", n)
            self._next_frame = n + 1

    def _pace(self, deadline_ns: int) -> None:
        now_ns = self.clock.monotonic_ns()
        if now_ns < deadline_ns:
            self._stop_event.wait((deadline_ns - now_ns) / 1e9)

    def _tick(self, n: int, deadline_ns: int, now_ns: int, skipped: int) -> None:
        t_us = n * 1_000_000 // self.fps
        t_end_us = (n + 1) * 1_000_000 // self.fps
        frame_utc = self.clock.utc_now() - timedelta(microseconds=(now_ns - deadline_ns) // 1000)
        end_utc = frame_utc + timedelta(microseconds=t_end_us - t_us)
        events: list[Event] = []
        # The whole tick runs under the lock so start/stop_recording see a consistent state
        # and the encoders are never used from two threads.
        with self._lock:
            audio_items = self._capture_audio(t_us, t_end_us, frame_utc, now_ns, events)
            video_items: list[EncodedPacket] = []
            camera_alive = not any(w.covers(t_us) for w in self._camera_faults)
            if camera_alive:
                if self._camera_wd.feed(now_ns) is WatchdogEvent.RECOVERED:
                    log.info("camera delivering frames again at media %d us", t_us)
                    self._force_keyframe = True
                video_items = self._encode_video(n, t_us, t_end_us, frame_utc)
                self._last_video_end_utc = end_utc
            if skipped:
                self._dropped_total += skipped
                if self._writer is not None:
                    self._writer.dropped_frames += skipped
            for item in audio_items:
                self._route(item, events)
            for item in video_items:
                self._route(item, events)
            self._frames_total += len(video_items)
            self._check_watchdogs(now_ns, events)
            if self._writer is not None and t_end_us - self._last_sync_us >= round(
                self.sync_interval_s * 1e6
            ):
                self._sync_writer(events)
                self._last_sync_us = t_end_us
            self._media_time_us = t_end_us
        fire_events(events)

    # -- audio

    def _capture_audio(
        self, t_us: int, t_end_us: int, frame_utc: datetime, now_ns: int, events: list[Event]
    ) -> list[EncodedPacket]:
        first = self._audio_next_sample
        last = t_end_us * self.sample_rate_hz // 1_000_000
        self._audio_next_sample = last
        count = last - first
        mic_alive = not any(w.covers(t_us) for w in self._mic_faults)
        room = self._take_room(count)
        if not mic_alive or count <= 0:
            return []
        samples = self._mic_samples(first, count, room)
        self._recent_levels.append((math.fsum(s * s for s in samples), count))
        if self._aenc is None:
            self._open_audio_encoder()
            self._audio_pending = array.array("f")
            self._audio_pending_start = first
        if self._mic_wd.feed(now_ns) is WatchdogEvent.RECOVERED:
            log.info("microphone delivering samples again at media %d us", t_us)
            self._on_microphone_back()
        self._last_audio_end_utc = frame_utc + timedelta(microseconds=t_end_us - t_us)
        self._audio_pending.extend(samples)
        return self._drain_audio(frame_utc, t_us)

    def _mic_samples(self, first: int, count: int, room: array.array[float]) -> array.array[float]:
        ambient = self._ambient
        period = len(ambient)
        start = first % period
        out: array.array[float] = array.array("f")
        while len(out) < count:
            take = min(count - len(out), period - start)
            out.extend(ambient[start : start + take])
            start = 0
        if room:
            gain = self.speaker_gain
            for i, value in enumerate(room):
                out[i] = max(-1.0, min(1.0, out[i] + gain * value))
        return out

    def _take_room(self, count: int) -> array.array[float]:
        with self._room:
            available = len(self._room_samples) - self._room_consumed
            if available <= 0 or count <= 0:
                return array.array("f")
            take = min(count, available)
            chunk = self._room_samples[self._room_consumed : self._room_consumed + take]
            self._room_consumed += take
            if self._room_consumed == len(self._room_samples):
                self._room_base += self._room_consumed
                self._room_samples = array.array("f")
                self._room_consumed = 0
            self._room.notify_all()
            return chunk

    def _drain_audio(self, frame_utc: datetime, t_us: int) -> list[EncodedPacket]:
        out: list[EncodedPacket] = []
        sr = self.sample_rate_hz
        while len(self._audio_pending) >= AAC_FRAME_SAMPLES:
            chunk = self._audio_pending[:AAC_FRAME_SAMPLES]
            del self._audio_pending[:AAC_FRAME_SAMPLES]
            frame = av.AudioFrame(format="fltp", layout="mono", samples=AAC_FRAME_SAMPLES)
            frame.planes[0].update(chunk.tobytes())
            frame.sample_rate = sr
            frame.time_base = Fraction(1, sr)
            frame.pts = self._audio_pending_start
            self._audio_pending_start += AAC_FRAME_SAMPLES
            out.extend(self._audio_packets(self._aenc.encode(frame), frame_utc, t_us))
        return out

    def _audio_packets(self, packets: Any, frame_utc: datetime, t_us: int) -> list[EncodedPacket]:
        sr = self.sample_rate_hz
        out = []
        for packet in packets:
            if packet.pts is None:
                continue
            pts_us = packet.pts * 1_000_000 // sr
            end_us = (packet.pts + (packet.duration or AAC_FRAME_SAMPLES)) * 1_000_000 // sr
            utc = frame_utc + timedelta(microseconds=pts_us - t_us)
            out.append(EncodedPacket(packet, False, pts_us, end_us - pts_us, utc, False))
        return out

    # -- video

    def _encode_video(
        self, n: int, t_us: int, t_end_us: int, frame_utc: datetime
    ) -> list[EncodedPacket]:
        frame = self._scene.render(n, frame_utc)
        frame.pts = n
        frame.time_base = Fraction(1, self.fps)
        split_due = self._sink is not None and t_us >= self._next_split_us
        if self._force_keyframe or split_due:
            frame.pict_type = PictureType.I
            self._force_keyframe = False
        out = []
        for packet in self._venc.encode(frame):
            # zerolatency: no reordering, each packet is the frame just encoded
            pts = packet.pts if packet.pts is not None else n
            p_us = pts * 1_000_000 // self.fps
            e_us = (pts + 1) * 1_000_000 // self.fps
            utc = frame_utc + timedelta(microseconds=p_us - t_us)
            out.append(EncodedPacket(packet, True, p_us, e_us - p_us, utc, packet.is_keyframe))
        return out

    def _open_video_encoder(self) -> None:
        gop = max(1, round(self.keyframe_interval_s * self.fps))
        enc: Any = av.CodecContext.create("libx264", "w")
        enc.width = self.width
        enc.height = self.height
        enc.pix_fmt = "yuv420p"
        enc.time_base = Fraction(1, self.fps)
        enc.framerate = Fraction(self.fps)
        enc.gop_size = gop
        enc.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "forced-idr": "1",
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
        }
        enc.open()
        self._venc = enc

    def _open_audio_encoder(self) -> None:
        enc: Any = av.CodecContext.create("aac", "w")
        enc.sample_rate = self.sample_rate_hz
        enc.layout = "mono"
        enc.format = "fltp"
        enc.time_base = Fraction(1, self.sample_rate_hz)
        enc.bit_rate = self.audio_bitrate_bps
        enc.open()
        self._aenc = enc

    # ------------------------------------------------------------------ routing (lock held)

    def _route(self, item: EncodedPacket, events: list[Event]) -> None:
        if self._sink is None:
            self._buffer_pre_event(item)
            return
        if not item.is_video and not self.pre_event_audio and item.pts_us < self._press_us:
            # Sound from before the press that the encoder handed out only now: by its
            # timestamp it is pre-event audio, which is off.
            return
        if item.is_video and item.keyframe:
            if self._pending is not None:
                self._open_pending(item, events)
            elif self._writer is not None and item.pts_us >= self._next_split_us:
                self._close_writer()
                self._pending = _Pending(self._next_index)
                self._open_pending(item, events)
        if self._writer is not None:
            self._write(item, events)

    def _buffer_pre_event(self, item: EncodedPacket) -> None:
        if self.pre_event_s <= 0:
            return
        if item.is_video and item.keyframe:
            self._gops.append([item])
            horizon_us = item.end_us - round(self.pre_event_s * 1e6)
            # Keep the oldest GOP that still reaches back to the horizon.
            while len(self._gops) >= 2 and self._gops[1][0].pts_us <= horizon_us:
                self._gops.popleft()
        elif self._gops and (item.is_video or self.pre_event_audio):
            self._gops[-1].append(item)

    def _open_pending(self, keyframe: EncodedPacket, events: list[Event]) -> None:
        pending = self._pending
        assert pending is not None
        if self._writer is not None:
            self._close_writer()
        if self._origin_us is None:
            self._origin_us = keyframe.pts_us
        self._next_index = pending.index
        if not self._open_writer(events, resume=pending.resume, when=keyframe.utc):
            return  # stays pending; retried at the next keyframe
        self._pending = None
        if keyframe.pts_us >= self._next_split_us:
            self._next_split_us = keyframe.pts_us + round(self.segment_duration_s * 1e6)

    def _open_writer(self, events: list[Event], resume: list[FaultKind], when: datetime) -> bool:
        assert self._sink is not None
        assert self._origin_us is not None
        index = self._next_index
        try:
            fileobj = self._sink.open_segment(index)
            pre_event_us = self._press_us - self._origin_us if index == 0 else 0
            audio = None if self._mic_wd.failed else self.audio_params
            self._writer = SegmentWriter(
                index,
                fileobj,
                origin_us=self._origin_us,
                video=self.video_params,
                audio=audio,
                pre_event_us=max(0, pre_event_us),
            )
        except Exception as exc:
            # retried at every keyframe: one error line per fault, not one per try
            new_fault = FaultKind.STORAGE not in self._open_faults
            log.log(
                logging.ERROR if new_fault else logging.DEBUG,
                "cannot open segment %d: %s",
                index,
                exc,
            )
            if new_fault:
                self._open_faults.add(FaultKind.STORAGE)
                detail = f"cannot open segment {index}: {exc}"
                events.append(self._fault_event(FaultKind.STORAGE, when, detail))
            self._pending = _Pending(index, sorted({*resume, FaultKind.STORAGE}))
            return False
        self._next_index = index + 1
        self._last_sync_us = self._media_time_us
        self._resume_events(resume, when, events)
        return True

    def _write(self, item: EncodedPacket, events: list[Event]) -> bool:
        """Write ``item`` into the open segment; False (after a storage fault) if that failed."""
        writer = self._writer
        if writer is None:
            return False
        try:
            writer.write(item)
        except Exception as exc:
            self._storage_fault(f"writing segment {writer.index} failed: {exc}", events)
            return False
        return True

    def _sync_writer(self, events: list[Event]) -> None:
        writer = self._writer
        assert writer is not None
        try:
            writer.sync()
        except Exception as exc:
            self._storage_fault(f"syncing segment {writer.index} failed: {exc}", events)

    def _storage_fault(self, detail: str, events: list[Event]) -> None:
        log.error("%s", detail)
        self._close_writer()
        self._open_faults.add(FaultKind.STORAGE)
        self._pending = _Pending(self._next_index, [FaultKind.STORAGE])
        when = self.clock.utc_now()
        events.append(self._fault_event(FaultKind.STORAGE, when, detail))

    def _close_writer(self) -> None:
        writer = self._writer
        sink = self._sink
        self._writer = None
        if writer is None:
            return
        try:
            writer.close()
        except Exception as exc:
            # What reached the file stays valid MPEG-TS up to the last whole packet.
            log.error("closing segment %d failed: %s", writer.index, exc)
        stats = writer.stats()
        log.debug("segment %d closed: %s", writer.index, stats)
        if sink is not None:
            try:
                sink.close_segment(writer.index, stats)
            except Exception:
                log.exception("sink.close_segment(%d) failed", writer.index)

    def _check_watchdogs(self, now_ns: int, events: list[Event]) -> None:
        if self._camera_wd.check(now_ns) is WatchdogEvent.FAILED:
            detail = f"no video frames for {self._camera_wd.silent_for_s(now_ns):.1f} s"
            when = self._last_video_end_utc or self.clock.utc_now()
            self._gops.clear()
            if self._sink is not None and FaultKind.CAMERA not in self._open_faults:
                self._close_writer()
                self._open_faults.add(FaultKind.CAMERA)
                self._pending = _Pending(self._next_index, [FaultKind.CAMERA])
                events.append(self._fault_event(FaultKind.CAMERA, when, detail))
            else:
                log.warning("camera: %s (not recording)", detail)
        if self._mic_wd.check(now_ns) is WatchdogEvent.FAILED:
            detail = f"no audio samples for {self._mic_wd.silent_for_s(now_ns):.1f} s"
            when = self._last_audio_end_utc or self.clock.utc_now()
            self._flush_audio_encoder(events)
            if self._sink is not None and FaultKind.MICROPHONE not in self._open_faults:
                self._open_faults.add(FaultKind.MICROPHONE)
                if self._writer is not None:
                    self._close_writer()
                    # Video goes on without audio from the next (forced) keyframe.
                    self._pending = _Pending(self._next_index)
                    self._force_keyframe = True
                events.append(self._fault_event(FaultKind.MICROPHONE, when, detail))
            else:
                log.warning("microphone: %s (not recording)", detail)

    def _flush_audio_encoder(self, events: list[Event]) -> None:
        enc = self._aenc
        self._aenc = None
        self._audio_pending = array.array("f")
        if enc is None:
            return
        utc = self._last_audio_end_utc or self.clock.utc_now()
        try:
            for item in self._audio_packets(enc.encode(None), utc, self._media_time_us):
                self._route(item, events)
        except Exception as exc:
            log.warning("flushing the audio encoder failed: %s", exc)

    def _on_microphone_back(self) -> None:
        if self._sink is None or FaultKind.MICROPHONE not in self._open_faults:
            return
        resume = [FaultKind.MICROPHONE]
        if self._pending is not None:
            resume = sorted({*self._pending.resume, FaultKind.MICROPHONE})
            self._pending = _Pending(self._pending.index, resume)
        else:
            self._pending = _Pending(self._next_index, resume)
        self._force_keyframe = True

    # ------------------------------------------------------------------ helpers

    def _inject(self, windows: list[_FaultWindow], duration_s: float) -> None:
        if duration_s <= 0:
            raise ValueError(f"duration_s must be > 0, got {duration_s}")
        with self._lock:
            start_us = self._media_time_us
            windows.append(_FaultWindow(start_us, start_us + round(duration_s * 1e6)))

    def _measure(self, timeout_s: float) -> CaptureHealth:
        window_us = 1_000_000
        with self._lock:
            t0_us = self._media_time_us
            frames0 = self._frames_total
            mono0 = self.clock.monotonic_ns()
        if self.realtime:
            self._wait_media(t0_us + window_us, timeout_s)
        else:
            self.advance_to(t0_us + window_us)  # the measurement takes its second of media
        with self._lock:
            frames = self._frames_total - frames0
            elapsed_s = max(1e-9, (self.clock.monotonic_ns() - mono0) / 1e9)
            levels = list(self._recent_levels)
            now_ns = self.clock.monotonic_ns()
            camera_silent_s = self._camera_wd.silent_for_s(now_ns)
            mic_failed = self._mic_wd.failed
        fps = frames / elapsed_s if frames else 0.0
        camera_ok = frames > 0 and not self._camera_wd.failed
        if camera_ok:
            camera_detail = f"{self.width}x{self.height} at {fps:.1f} fps (simulated)"
        else:
            camera_detail = f"no video frames for {camera_silent_s:.1f} s"
        sum_sq = sum(s for s, _ in levels)
        count = sum(c for _, c in levels)
        level = 10 * math.log10(sum_sq / count) if count and sum_sq > 0 else SILENCE_DBFS
        mic_ok = count > 0 and not mic_failed and level > MICROPHONE_SILENT_DBFS
        if mic_ok:
            mic_detail = f"{self.sample_rate_hz} Hz mono, level {level:.1f} dBFS (simulated)"
        elif count == 0 or mic_failed:
            mic_detail = "no audio samples"
        else:
            mic_detail = f"signal is silent ({level:.1f} dBFS)"
        return CaptureHealth(
            camera_ok=camera_ok,
            camera_detail=camera_detail,
            frames_per_s=fps,
            microphone_ok=mic_ok,
            microphone_detail=mic_detail,
            audio_rms_dbfs=level,
        )

    def _wait_media(self, target_us: int, timeout_s: float) -> None:
        """Realtime: wait for the capture thread to reach ``target_us``, at most ``timeout_s``."""
        deadline = threading.Event()
        timer = threading.Timer(timeout_s, deadline.set)
        timer.daemon = True
        timer.start()
        try:
            while self._media_time_us < target_us and not deadline.is_set():
                deadline.wait(0.01)
        finally:
            timer.cancel()


def _ambient_loop(sample_rate_hz: int, level_dbfs: float) -> array.array[float]:
    """One second of room sound: a hum plus a little noise at ``level_dbfs`` RMS, looped."""
    rms = 10 ** (level_dbfs / 20)
    hum = rms * math.sqrt(2) * 0.9
    noise = rms * 0.4
    rng = random.Random(1234)
    step = 2 * math.pi * 220 / sample_rate_hz
    out = array.array(
        "f",
        (hum * math.sin(step * i) + noise * (rng.random() * 2 - 1) for i in range(sample_rate_hz)),
    )
    log.debug("ambient loop level %.1f dBFS", rms_dbfs(out))
    return out
