"""Raspberry Pi capture: picamera2 (camera + H.264 + audio through PyAV) and PyAudio (speaker).

picamera2 is reached only through :mod:`agent.media.picamera2_shim` (version check, the private
fields); ``camera="fake"`` runs this same code on :mod:`agent.media.fake_picamera2` (real
H.264/AAC from a synthetic sensor), which is how every test run exercises this module. The
board decides the encoder (:mod:`agent.media.pimodel`: libx264 on a Pi 5, the V4L2 block
elsewhere) and caps the frame rate. Every frame gets the local time and device id burned in by
``pre_callback`` (:mod:`agent.media.overlay`); gaps in the frames' sensor timestamps are counted
as dropped frames per segment (:mod:`agent.media.frames`). The microphone is opened by ALSA
card name and the speaker by device name (:mod:`agent.media.alsa`); speech and tones are
resampled to the speaker's rate.

Pipeline per "generation" (one encoder's life)::

    H264Encoder (+ audio: ALSA -> AAC)
      -> Tap (feeds the watchdogs)
      -> CircularOutput2 (pre-event buffer)
      -> SplittableOutput -> SegmentOutput = PyavOutput(agent's file object, "mpegts")

Details taken from picamera2's source (outputs/circularoutput2.py, splittableoutput.py,
pyavoutput.py, encoders/encoder.py):

* ``CircularOutput2`` only writes a frame once it is older than ``buffer_duration_ms``; while
  recording that would keep the whole pre-event span off the disk, so the buffer is shrunk to
  1 ms when recording starts (0 would make it drop frames) and restored afterwards.
* ``PyavOutput`` hands its target to ``av.open``, which takes a file object: we pass the one the
  agent's sink created, so a control thread can flush and fsync it every ``sync_interval_s``.
* ``SplittableOutput.split_output`` blocks until the next keyframe and closes the old output in
  the calling thread, so splits run on our control thread, after ``force_key_frame()``.
  Timestamps keep running across a split (continuous PTS).
* A new encoder (and circular buffer) is started for every recording and after every restart,
  so each recording's file timestamps start at 0 at its oldest pre-event frame.

Failure posture: a no-frames watchdog (the same :class:`FrameWatchdog` the simulated backend
uses) notices a stalled camera or microphone; during a recording the current segment is closed,
``on_fault`` is called, the camera (or the audio input) is restarted until it delivers again, and
a new segment opens with ``on_resume``. Mux errors (disk full) become :attr:`FaultKind.STORAGE`.
Nothing raises into the agent from the control thread; it logs and keeps trying.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, BinaryIO

from agent.clock import Clock
from agent.media import picamera2_shim as shim
from agent.media.alsa import capture_device, choose_output_device
from agent.media.audio import SILENCE_DBFS, float_frame_dbfs, resample_s16le
from agent.media.base import (
    CaptureDeviceError,
    CaptureHealth,
    CapturePipeline,
    Event,
    FaultKind,
    SegmentSink,
    SegmentStats,
    check_pcm,
    fire_events,
)
from agent.media.frames import dropped_between
from agent.media.overlay import Overlay
from agent.media.pimodel import MODEL_PATH, EncoderPlan, effective_fps, plan_for, read_model
from agent.media.segments import MPEGTS_OPTIONS, fsync_fileobj
from agent.media.watchdog import FrameWatchdog, WatchdogEvent

log = logging.getLogger(__name__)

CIRCULAR_RECORDING_BUFFER_MS = 1
"""While recording: frames reach the segment at once (0 would make CircularOutput2 drop them)."""
CONTROL_PERIOD_S = 0.1
SPLIT_NEEDS_FRAMES_WITHIN_S = 0.3
"""A split starts only if a frame arrived this recently (a few frame periods)."""
MIC_RETRY_PERIOD_S = 5.0


@dataclass
class _SegmentState:
    """Bookkeeping for the segment an output is writing (updated from the encoder thread)."""

    index: int
    fileobj: BinaryIO
    generation: _Generation
    base_us: int = 0
    """Media position of this file's timestamp 0 on the recording's timeline."""
    needs_base: bool = True
    """True until the first frame arrived (only then is the circular buffer's offset known)."""
    press_abs_us: int | None = None
    """Segment 0 only: sensor time of the press, to compute the pre-event span."""
    pre_event_us: int = 0
    frames: int = 0
    dropped: int = 0
    """Frames missing between delivered ones (gaps in the sensor timestamps)."""
    first_ts_us: int | None = None
    last_ts_us: int | None = None
    has_audio: bool = False
    error: BaseException | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class _Generation:
    """One encoder's life: encoder, tap, circular buffer and (when recording) the splitter."""

    encoder: Any
    circular: Any
    tap: Any
    audio: bool
    audio_channels: int | None = None
    """Channels of the AAC stream the encoder really made (read back through the shim)."""
    audio_cutoff_us: int | None = None
    """With ``pre_event_audio`` off: audio older than this (encoder time) is dropped; None
    drops all audio (not recording)."""
    last_video_ts_us: int | None = None
    first_abs_us: int | None = None
    splitter: Any = None
    segment: _SegmentState | None = None
    output: Any = None


class PiCapture(CapturePipeline):
    """picamera2 + PyAudio capture pipeline (see the module docstring)."""

    def __init__(
        self,
        clock: Clock,
        *,
        width: int = 1280,
        height: int = 720,
        fps: int = 25,
        segment_duration_s: float = 10.0,
        pre_event_s: float = 30.0,
        pre_event_audio: bool = True,
        sync_interval_s: float = 1.0,
        bitrate_bps: int = 4_000_000,
        keyframe_interval_s: float = 1.0,
        audio: bool = True,
        audio_card: str = "",
        audio_device: str = "",
        audio_input_format: str = "alsa",
        audio_sample_rate_hz: int = 48000,
        audio_channels: int = 1,
        speaker_device: str = "",
        speaker_device_index: int | None = None,
        speaker_rate_hz: int = 48000,
        watchdog_timeout_s: float = 2.0,
        camera_index: int = 0,
        camera: str = "picamera2",
        timezone: str = "",
        model_path: Path = MODEL_PATH,
        device_id: str = "",
    ) -> None:
        super().__init__(
            clock,
            segment_duration_s=segment_duration_s,
            pre_event_s=pre_event_s,
            pre_event_audio=pre_event_audio,
            sync_interval_s=sync_interval_s,
        )
        self.width = width
        self.height = height
        self.fps = fps
        self.bitrate_bps = bitrate_bps
        self.keyframe_interval_s = keyframe_interval_s
        self.audio_wanted = audio
        self.audio_card = audio_card
        self.audio_device = audio_device
        self.audio_input_format = audio_input_format
        self.audio_sample_rate_hz = audio_sample_rate_hz
        self.audio_channels = audio_channels
        self.speaker_device = speaker_device
        self.speaker_device_index = speaker_device_index
        self.speaker_rate_hz = speaker_rate_hz
        self.watchdog_timeout_s = watchdog_timeout_s
        self.camera_index = camera_index
        self.camera = camera
        self.tz: tzinfo | None = zoneinfo.ZoneInfo(timezone) if timezone else None
        self.model_path = model_path
        self.device_id = device_id
        self.plan: EncoderPlan = plan_for("")
        self._mic_problem = ""
        """Why there is no microphone at all (no card configured, card absent), or ""."""
        self._overlay = Overlay(width, height, device_id, self.tz)
        self._overlay_error = False
        self._stride = width

        self._picam2: Any = None
        self._modules: shim.Picamera2Modules | None = None
        self._classes: dict[str, Any] = {}
        self._gen: _Generation | None = None
        self._camera_wd = FrameWatchdog("camera", watchdog_timeout_s)
        self._mic_wd = FrameWatchdog("microphone", watchdog_timeout_s)
        self._control: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._next_split_ns = 0
        self._next_sync_ns = 0
        self._next_mic_retry_ns = 0
        self._next_restart_ns = 0
        self._origin_abs_us: int | None = None
        self._last_frame_abs_us: int | None = None
        self._start_abs_us: int | None = None
        self._sensor_to_mono_us: int | None = None
        self._frames_total = 0
        self._level_window: list[float] = []
        self._measuring = False
        self._decoder: Any = None
        self._pyaudio: Any = None

    # ------------------------------------------------------------------ public API

    @property
    def media_time_us(self) -> int:
        start, last = self._start_abs_us, self._last_frame_abs_us
        if start is None or last is None:
            return 0
        return last - start

    def start(self) -> None:
        with self._lock:
            self._refuse_start_while_running()
            modules = self._import_picamera2()
            self.plan = plan_for(read_model(self.model_path))
            self.fps = effective_fps(self.fps, self.plan)
            self._resolve_microphone()
            try:
                self._picam2 = modules.picamera2.Picamera2(self.camera_index)
                self._configure_and_start_camera()
            except Exception as exc:
                self._picam2 = None
                raise CaptureDeviceError("camera", f"cannot start picamera2: {exc}") from exc
            self._start_generation(recording_output=None)
            self._stop_event.clear()
            self._running = True
            self._control = threading.Thread(target=self._control_loop, name="pi-capture")
            self._control.daemon = True
            self._control.start()
        log.info(
            "pi capture started: %s, %dx%d@%d fps, %s H.264, picamera2 %s%s",
            self.plan.model,
            self.width,
            self.height,
            self.fps,
            "software (libx264)" if self.plan.software_h264 else "hardware",
            ".".join(map(str, modules.version)),
            " (fake camera)" if modules.fake else "",
        )

    def stop(self) -> None:
        if self.recording:
            self.stop_recording()
        self._stop_event.set()
        control = self._control
        if control is not None and control is not threading.current_thread():
            control.join(timeout=10.0)
        with self._lock:
            self._stop_generation()
            if self._picam2 is not None:
                try:
                    self._picam2.stop()
                    self._picam2.close()
                except Exception as exc:
                    log.warning("closing the camera failed: %s", exc)
            self._picam2 = None
            self._running = False
            self._control = None
        if self._pyaudio is not None:
            self._pyaudio.terminate()
            self._pyaudio = None

    def start_recording(self, sink: SegmentSink) -> None:
        events: list[Event] = []
        with self._lock:
            self._claim_sink(sink)
            self._origin_abs_us = None
            now_ns = self.clock.monotonic_ns()
            self._next_split_ns = now_ns + round(self.segment_duration_s * 1e9)
            self._next_sync_ns = now_ns + round(self.sync_interval_s * 1e9)
            if self._gen is None or self._camera_wd.failed:
                self._camera_down_at_start(events)
            else:
                # Audio from before the press stays out (by timestamp) unless pre_event_audio.
                last = self._gen.last_video_ts_us
                self._gen.audio_cutoff_us = last if last is not None else 0
                # On failure a storage fault is reported and the control loop retries.
                self._open_segment_on(self._gen, events, resume=[])
        fire_events(events)

    def stop_recording(self) -> None:
        with self._lock:
            self._refuse_stop_unless_recording()
            gen = self._gen
            if gen is not None and gen.output is not None:
                gen.circular.close_output()
                self._finish_segment(gen)
            self._sink = None
            # A new encoder per recording: the next pre-event buffer and file timestamps start
            # afresh at 0.
            self._restart_generation()

    def play_audio(self, pcm_s16le: bytes, sample_rate_hz: int, channels: int = 1) -> None:
        check_pcm(pcm_s16le, sample_rate_hz, channels)
        if not pcm_s16le:
            return
        try:
            import pyaudio
        except ImportError as exc:
            raise CaptureDeviceError("speaker", "PyAudio is not installed") from exc
        if self._pyaudio is None:
            self._pyaudio = pyaudio.PyAudio()
        index = self._speaker_index()
        # espeak-ng speaks at 22.05 kHz, the tones are 16 kHz: the speaker runs at its own rate.
        pcm = resample_s16le(pcm_s16le, sample_rate_hz, channels, self.speaker_rate_hz, 1)
        try:
            stream = self._pyaudio.open(
                format=pyaudio.paInt16,
                channels=1,
                rate=self.speaker_rate_hz,
                output=True,
                output_device_index=index,
            )
        except OSError as exc:
            raise CaptureDeviceError("speaker", f"cannot open output: {exc}") from exc
        try:
            stream.write(pcm)  # blocks until the last buffer is queued
            # Wait for what is still in the device's buffer to be heard.
            time.sleep(max(0.0, stream.get_output_latency()))
        finally:
            stream.stop_stream()
            stream.close()

    def _speaker_index(self) -> int | None:
        """The speaker by name (indexes change between boots); None: the default output."""
        if not self.speaker_device:
            return self.speaker_device_index
        pa = self._pyaudio
        devices = [pa.get_device_info_by_index(i) for i in range(pa.get_device_count())]
        return choose_output_device(devices, self.speaker_device).index

    # ------------------------------------------------------------------ picamera2 plumbing

    def _import_picamera2(self) -> shim.Picamera2Modules:
        if self._modules is None:
            modules = shim.load(fake=self.camera == "fake")
            self._classes = _define_outputs(modules.outputs.Output, modules.outputs.PyavOutput)
            self._modules = modules
        return self._modules

    def _resolve_microphone(self) -> None:
        """The capture PCM from the configuration: a named card (``plughw:CARD=...``) or an
        explicit device; without either there is no microphone, and the check says so."""
        self._mic_problem = ""
        if not self.audio_wanted or self.audio_device:
            return
        if not self.audio_card:
            self._mic_problem = "no microphone configured ([capture] audio_card)"
            return
        try:
            self.audio_device = capture_device(self.audio_card)
        except CaptureDeviceError as exc:
            self._mic_problem = str(exc)

    def _configure_and_start_camera(self) -> None:
        picam2 = self._picam2
        frame_us = round(1e6 / self.fps)
        config = picam2.create_video_configuration(
            main={"size": (self.width, self.height), "format": "YUV420"},
            controls={"FrameDurationLimits": (frame_us, frame_us)},
        )
        picam2.configure(config)
        self._stride = int(picam2.camera_configuration()["main"]["stride"])
        picam2.pre_callback = self._pre_callback
        picam2.start()

    def _pre_callback(self, request: Any) -> None:
        """Camera thread, every frame before the encoder: burn in local time and device id."""
        try:
            assert self._modules is not None
            with self._modules.request.MappedArray(request, "main") as mapped:
                luma = memoryview(mapped.array).cast("B")
                self._overlay.burn(luma, self._stride, self.clock.utc_now())
        except Exception as exc:
            if not self._overlay_error:
                log.error("overlay failed (frames go out without it): %s", exc)
                self._overlay_error = True

    def _make_encoder(self, audio: bool) -> Any:
        assert self._modules is not None
        encoders = self._modules.encoders
        iperiod = max(1, round(self.keyframe_interval_s * self.fps))
        # A Pi 5 has no H.264 block: libx264, told our frame rate (picamera2 assumes 30).
        cls = encoders.LibavH264Encoder if self.plan.software_h264 else encoders.H264Encoder
        encoder = cls(bitrate=self.bitrate_bps, repeat=True, iperiod=iperiod, framerate=self.fps)
        if self.plan.software_h264:
            encoder.threads = self.plan.threads
        encoder.audio = audio
        if audio:
            # Under systemd there is no PulseAudio session: read ALSA directly.
            encoder.audio_input = {"file": self.audio_device, "format": self.audio_input_format}
            encoder.audio_output = {
                "codec_name": "aac",
                "rate": self.audio_sample_rate_hz,
                "layout": "stereo" if self.audio_channels == 2 else "mono",
            }
        return encoder

    def _start_generation(self, recording_output: Any) -> None:
        """Start a new encoder + circular buffer (pre-event sized) feeding from the camera."""
        del recording_output  # segments are attached later by _open_segment_on
        audio = self.audio_wanted and not self._mic_wd.failed and not self._mic_problem
        if audio and not self._microphone_opens():
            # Checked first: picamera2 opens the audio input only after starting the video
            # encoder, and a failure there leaves that encoder running.
            log.error("microphone %s cannot be opened; recording video only", self.audio_device)
            self._mic_wd.failed = True
            audio = False
        assert self._modules is not None
        outputs = self._modules.outputs
        # CircularOutput2 starts the file at the oldest keyframe younger than its buffer: one
        # keyframe interval more guarantees at least pre_event_s.
        buffer_ms = max(
            CIRCULAR_RECORDING_BUFFER_MS,
            round((self.pre_event_s + self.keyframe_interval_s) * 1000) if self.pre_event_s else 0,
        )
        circular = outputs.CircularOutput2(buffer_duration_ms=buffer_ms)
        tap = self._classes["tap"](self, circular)
        encoder = self._make_encoder(audio)
        gen = _Generation(encoder=encoder, circular=circular, tap=tap, audio=audio)
        # While recording, every audio packet of a new encoder is inside the recording.
        gen.audio_cutoff_us = 0 if self._sink is not None else None
        tap.generation = gen
        now_ns = self.clock.monotonic_ns()
        self._camera_wd.arm(now_ns)
        if audio:
            self._mic_wd.arm(now_ns)
        self._sensor_to_mono_us = None
        self._picam2.start_encoder(encoder, tap)
        gen.audio_channels = shim.audio_output_channels(encoder) if audio else None
        self._gen = gen

    def _stop_generation(self) -> None:
        gen = self._gen
        self._gen = None
        if gen is None:
            return
        try:
            self._picam2.stop_encoder(gen.encoder)
        except Exception as exc:
            log.warning("stopping the encoder failed: %s", exc)

    def _restart_generation(self) -> None:
        self._stop_generation()
        try:
            self._start_generation(recording_output=None)
        except Exception as exc:
            # _gen stays None: the control loop restarts the camera until it works.
            log.error("restarting the encoder failed: %s", exc)

    # ------------------------------------------------------------------ segments

    def _open_segment_on(
        self, gen: _Generation, events: list[Event], resume: list[FaultKind]
    ) -> bool:
        """Open the next segment and route ``gen``'s circular buffer into it."""
        assert self._sink is not None
        index = self._next_index
        try:
            fileobj = self._sink.open_segment(index)
        except Exception as exc:
            self._report_storage(f"cannot open segment {index}: {exc}", events)
            return False
        state = _SegmentState(index, fileobj, gen)
        if self._origin_abs_us is None:
            state.press_abs_us = self._last_frame_abs_us
        output = self._classes["segment"](self, fileobj, state)
        assert self._modules is not None
        gen.splitter = self._modules.outputs.SplittableOutput(output=output)
        gen.output = output
        gen.segment = state
        gen.circular.open_output(gen.splitter)
        gen.circular.buffer_duration_ms = CIRCULAR_RECORDING_BUFFER_MS
        self._next_index = index + 1
        if index > 0:
            # After a fault the schedule starts again from here, or it would split at once.
            self._next_split_ns = self.clock.monotonic_ns() + round(self.segment_duration_s * 1e9)
        self._resume_events(resume, self.clock.utc_now(), events)
        return True

    def _on_first_segment_frame(self, state: _SegmentState) -> None:
        """Place a new file on the recording's timeline (encoder thread; takes no lock).

        CircularOutput2 rebases timestamps so the first keyframe it writes is 0; it keeps that
        offset in ``_time_offset`` (read through the shim; no public accessor).
        """
        gen = state.generation
        offset_us = shim.circular_time_offset(gen.circular)
        file0_abs_us = (gen.first_abs_us or 0) + offset_us
        if self._origin_abs_us is None:
            self._origin_abs_us = file0_abs_us
            if state.press_abs_us is not None:
                state.pre_event_us = max(0, state.press_abs_us - file0_abs_us)
        state.base_us = file0_abs_us - self._origin_abs_us
        state.needs_base = False
        log.debug(
            "segment %d: file time 0 is media %d us (circular offset %d us)",
            state.index,
            state.base_us,
            offset_us,
        )

    def _split(self, gen: _Generation) -> None:
        """Seamless split at the next keyframe (blocks until it came)."""
        assert self._sink is not None
        index = self._next_index
        try:
            fileobj = self._sink.open_segment(index)
        except Exception as exc:
            events: list[Event] = []
            self._report_storage(f"cannot open segment {index}: {exc}", events)
            fire_events(events)
            return
        old_state = gen.segment
        state = _SegmentState(index, fileobj, gen)
        if old_state is not None and not old_state.needs_base:
            # Same encoder, same circular buffer: timestamps simply run on.
            state.base_us, state.needs_base = old_state.base_us, False
        output = self._classes["segment"](self, fileobj, state)
        gen.encoder.force_key_frame()
        # split_output blocks until the next keyframe; a camera that dies meanwhile must not
        # hang the control thread, so it runs in a helper thread with a deadline.
        done = threading.Event()

        def split() -> None:
            try:
                gen.splitter.split_output(output)
            except Exception as exc:
                log.error("split to segment %d failed: %s", index, exc)
            finally:
                done.set()

        threading.Thread(target=split, name="pi-split", daemon=True).start()
        if not done.wait(3 * self.keyframe_interval_s + 1.0):
            log.error("no keyframe for the split to segment %d; treating as a camera stall", index)
            # Release split_output's wait (picamera2 has no timeout of its own); it then stops
            # the old output, so both files are complete.
            shim.release_split(gen.splitter)
            done.wait(1.0)
            output.stop()
            gen.circular.close_output()
            # Both go through the sink in order: the old segment, then the new file, which got
            # nothing (sealed with 0 frames: its index is used, nothing is left as a .part).
            self._finish_segment(gen)
            self._next_index = index + 1
            self._close_segment(state)
            self._camera_wd.failed = False
            self._camera_wd.last_feed_ns = 0  # the next check reports FAILED
            return
        gen.output = output
        gen.segment = state
        self._next_index = index + 1
        if old_state is not None:
            self._close_segment(old_state)

    def _finish_segment(self, gen: _Generation) -> None:
        state = gen.segment
        gen.output = None
        gen.segment = None
        gen.splitter = None
        if state is not None:
            self._close_segment(state)

    def _close_segment(self, state: _SegmentState) -> None:
        try:
            fsync_fileobj(state.fileobj)
        except OSError as exc:
            log.error("fsync of segment %d failed: %s", state.index, exc)
        stats = self._stats(state)
        sink = self._sink
        if sink is None:
            return
        try:
            sink.close_segment(state.index, stats)
        except Exception:
            log.exception("sink.close_segment(%d) failed", state.index)

    def _stats(self, state: _SegmentState) -> SegmentStats:
        frame_us = round(1e6 / self.fps)
        with state.lock:
            first = state.first_ts_us if state.first_ts_us is not None else 0
            last = state.last_ts_us if state.last_ts_us is not None else first - frame_us
            frames = state.frames
            dropped = state.dropped
            has_audio = state.has_audio
        start_us = state.base_us + first
        end_us = state.base_us + last + frame_us
        origin = self._origin_abs_us or 0
        return SegmentStats(
            index=state.index,
            media_start_us=start_us,
            media_end_us=end_us,
            utc_start=self._utc_of_abs(origin + start_us),
            utc_end=self._utc_of_abs(origin + end_us),
            frames=frames,
            dropped_frames=dropped,
            pre_event_us=state.pre_event_us,
            size_bytes=_size_of(state.fileobj),
            video={"codec": "h264", "width": self.width, "height": self.height, "fps": self.fps},
            audio=(
                {
                    "codec": "aac",
                    "sample_rate": self.audio_sample_rate_hz,
                    "channels": state.generation.audio_channels or self.audio_channels,
                }
                if has_audio
                else None
            ),
        )

    def _utc_of_abs(self, abs_us: int) -> datetime:
        # Sensor timestamps may be CLOCK_BOOTTIME or CLOCK_MONOTONIC depending on the kernel;
        # instead of assuming, map them through the smallest observed arrival delay.
        offset_us = self._sensor_to_mono_us if self._sensor_to_mono_us is not None else 0
        now_us = self.clock.monotonic_ns() // 1000
        return self.clock.utc_now() - timedelta(microseconds=now_us - (abs_us + offset_us))

    # ------------------------------------------------------------------ control thread

    def _control_loop(self) -> None:
        while not self._stop_event.wait(CONTROL_PERIOD_S):
            self.liveness.beat()
            try:
                self._control_tick()
            except Exception:
                log.exception("pi capture control tick failed; continuing")

    def _control_tick(self) -> None:
        events: list[Event] = []
        with self._lock:
            gen = self._gen
            now_ns = self.clock.monotonic_ns()
            if gen is None:
                # A previous restart failed; keep trying at the watchdog's pace.
                if now_ns >= self._next_restart_ns:
                    self._next_restart_ns = now_ns + round(self.watchdog_timeout_s * 1e9)
                    self._restart_camera()
                return
            self._check_camera(gen, now_ns, events)
            gen = self._gen
            if gen is not None:
                self._check_microphone(gen, now_ns, events)
                gen = self._gen
            if gen is not None and self._sink is not None:
                self._recording_duties(gen, now_ns, events)
        fire_events(events)

    def _recording_duties(self, gen: _Generation, now_ns: int, events: list[Event]) -> None:
        state = gen.segment
        if state is not None and state.error is not None:
            detail = f"writing segment {state.index} failed: {state.error}"
            gen.circular.close_output()
            self._finish_segment(gen)
            self._report_storage(detail, events)
            return
        if gen.output is None:
            if self._camera_wd.last_feed_ns is None:
                return  # this encoder has not delivered a frame yet
            resume = sorted(self._open_faults & {FaultKind.CAMERA, FaultKind.STORAGE})
            self._open_segment_on(gen, events, resume)
            return
        # No split while frames are not arriving: split_output would wait for a keyframe that
        # does not come (blocking this thread past the no-frames watchdog); the watchdog's fault
        # path closes the segment instead, and a due split happens once frames flow again.
        flowing = self._camera_wd.silent_for_s(now_ns) < SPLIT_NEEDS_FRAMES_WITHIN_S
        if now_ns >= self._next_split_ns and state is not None and state.frames > 0 and flowing:
            self._next_split_ns = now_ns + round(self.segment_duration_s * 1e9)
            self._split(gen)
            return
        if now_ns >= self._next_sync_ns and state is not None:
            self._next_sync_ns = now_ns + round(self.sync_interval_s * 1e9)
            try:
                fsync_fileobj(state.fileobj)
            except OSError as exc:
                state.error = exc

    def _check_camera(self, gen: _Generation, now_ns: int, events: list[Event]) -> None:
        if self._camera_wd.check(now_ns) is not WatchdogEvent.FAILED:
            return
        if FaultKind.CAMERA not in self._open_faults and self._sink is not None:
            detail = f"no video frames for {self._camera_wd.silent_for_s(now_ns):.1f} s"
            last = self._last_frame_abs_us
            when = self._utc_of_abs(last) if last is not None else self.clock.utc_now()
            if gen.output is not None:
                gen.circular.close_output()
                self._finish_segment(gen)
            self._open_faults.add(FaultKind.CAMERA)
            events.append(self._fault_event(FaultKind.CAMERA, when, detail))
        log.warning("camera stalled; restarting it")
        self._stop_generation()
        self._next_restart_ns = now_ns + round(self.watchdog_timeout_s * 1e9)
        self._restart_camera()

    def _restart_camera(self) -> None:
        try:
            self._picam2.stop()
            self._picam2.start()
            self._start_generation(recording_output=None)
        except Exception as exc:
            log.error("camera restart failed (retrying): %s", exc)

    def _check_microphone(self, gen: _Generation, now_ns: int, events: list[Event]) -> None:
        if not self.audio_wanted:
            return
        if gen.audio and self._mic_wd.check(now_ns) is WatchdogEvent.FAILED:
            silent_s = self._mic_wd.silent_for_s(now_ns)
            detail = f"no audio for {silent_s:.1f} s"
            when = self.clock.utc_now() - timedelta(seconds=silent_s)
            recording = self._sink is not None and gen.output is not None
            if recording:
                gen.circular.close_output()
                self._finish_segment(gen)
                self._open_faults.add(FaultKind.MICROPHONE)
                events.append(self._fault_event(FaultKind.MICROPHONE, when, detail))
            self._restart_generation()  # video only (the watchdog says the mic failed)
            self._next_mic_retry_ns = now_ns + round(MIC_RETRY_PERIOD_S * 1e9)
            if recording and self._gen is not None:
                self._open_segment_on(self._gen, events, resume=[])
            return
        if not gen.audio and now_ns >= self._next_mic_retry_ns:
            self._next_mic_retry_ns = now_ns + round(MIC_RETRY_PERIOD_S * 1e9)
            if not self._microphone_opens():
                return
            self._mic_wd.failed = False
            recording = self._sink is not None and gen.output is not None
            if recording:
                gen.circular.close_output()
                self._finish_segment(gen)
            self._restart_generation()
            if recording and self._gen is not None:
                resume = [FaultKind.MICROPHONE] if FaultKind.MICROPHONE in self._open_faults else []
                self._open_segment_on(self._gen, events, resume)

    def _microphone_opens(self) -> bool:
        import av

        try:
            container: Any = av.open(self.audio_device, format=self.audio_input_format)
            container.close()
        except Exception as exc:
            log.debug("microphone still unavailable: %s", exc)
            return False
        return True

    def _report_storage(self, detail: str, events: list[Event]) -> None:
        if FaultKind.STORAGE in self._open_faults:
            log.debug("%s", detail)  # retried at each split while the card is full: one line
            return
        log.error("%s", detail)
        self._open_faults.add(FaultKind.STORAGE)
        when = self.clock.utc_now()
        events.append(self._fault_event(FaultKind.STORAGE, when, detail))

    # ------------------------------------------------------------------ called by the tap

    def _on_video(self, gen: _Generation, encoder_ts_us: int) -> None:
        first = getattr(gen.encoder, "firsttimestamp", None)
        abs_us = (first or 0) + encoder_ts_us
        if gen.first_abs_us is None:
            gen.first_abs_us = first if first is not None else abs_us
            # CircularOutput2 treats timestamp 0 as "flush everything" and so discards the
            # encoder's first keyframe; ask for another at once instead of losing a whole GOP.
            gen.encoder.force_key_frame()
        gen.last_video_ts_us = encoder_ts_us
        if self._start_abs_us is None:
            self._start_abs_us = abs_us
        self._last_frame_abs_us = abs_us
        self._frames_total += 1
        now_ns = self.clock.monotonic_ns()
        offset_us = now_ns // 1000 - abs_us
        if self._sensor_to_mono_us is None or offset_us < self._sensor_to_mono_us:
            self._sensor_to_mono_us = offset_us
        self._camera_wd.feed(now_ns)

    def _on_audio(self, packet: Any) -> None:
        self._mic_wd.feed(self.clock.monotonic_ns())
        if not self._measuring or packet is None:
            return
        try:
            if self._decoder is None:
                import av

                decoder: Any = av.CodecContext.create("aac", "r")
                extradata = getattr(packet.stream.codec_context, "extradata", None)
                if extradata:
                    decoder.extradata = extradata
                self._decoder = decoder
            for frame in self._decoder.decode(packet):
                self._level_window.append(float_frame_dbfs(frame))
        except Exception as exc:
            log.debug("level measurement failed: %s", exc)

    def _measure(self, timeout_s: float) -> CaptureHealth:
        deadline = time.monotonic() + timeout_s
        # A camera that was just started takes a moment to deliver: measure from its first frame.
        frames_before = self._frames_total
        while self._frames_total == frames_before and time.monotonic() < deadline:
            time.sleep(0.02)
        frames0 = self._frames_total
        self._level_window = []
        self._decoder = None
        self._measuring = True
        t0 = time.monotonic()
        try:
            time.sleep(max(0.0, min(1.0, deadline - t0)))
        finally:
            self._measuring = False
        elapsed_s = time.monotonic() - t0
        frames = self._frames_total - frames0
        fps = frames / elapsed_s if elapsed_s > 0 else 0.0
        camera_ok = frames > 0 and not self._camera_wd.failed
        camera_detail = (
            f"{self.width}x{self.height} at {fps:.1f} fps"
            if camera_ok
            else f"no video frames in {elapsed_s:.1f} s"
        )
        levels = self._level_window
        level = _mean_db(levels) if levels else SILENCE_DBFS
        gen = self._gen
        mic_ok = bool(levels) and gen is not None and gen.audio and level > -90.0
        if mic_ok:
            mic_detail = f"{self.audio_device}: level {level:.1f} dBFS"
        elif not self.audio_wanted:
            mic_detail = "audio disabled in configuration"
        elif self._mic_problem:
            mic_detail = self._mic_problem
        elif not levels:
            mic_detail = f"{self.audio_device}: no audio received"
        else:
            mic_detail = f"{self.audio_device}: silent ({level:.1f} dBFS)"
        return CaptureHealth(camera_ok, camera_detail, fps, mic_ok, mic_detail, level)


def _size_of(fileobj: BinaryIO) -> int:
    try:
        return fileobj.tell()
    except (OSError, ValueError):
        return 0


def _mean_db(levels: list[float]) -> float:
    power = sum(10 ** (db / 10) for db in levels) / len(levels)
    return 10 * math.log10(power) if power > 0 else SILENCE_DBFS


def _define_outputs(output_base: Any, pyav_output: Any) -> dict[str, Any]:
    """Output subclasses need picamera2's base classes, which exist only on a Pi."""

    class Tap(output_base):
        """First output of the encoder: feeds the watchdogs and forwards to the circular buffer.

        Audio is forwarded into the pre-event buffer only when ``pre_event_audio`` is set.
        """

        def __init__(self, capture: PiCapture, circular: Any) -> None:
            super().__init__()
            self.capture = capture
            self.circular = circular
            self.generation: _Generation | None = None
            self.needs_add_stream = True

        def start(self) -> None:
            super().start()
            self.circular.start()

        def stop(self) -> None:
            super().stop()
            self.circular.stop()

        def _add_stream(self, encoder_stream: Any, codec_name: Any, **kwargs: Any) -> None:
            shim.forward_stream(self.circular, encoder_stream, codec_name, **kwargs)

        def outputframe(
            self,
            frame: Any,
            keyframe: bool = True,
            timestamp: int | None = None,
            packet: Any = None,
            audio: bool = False,
        ) -> None:
            gen = self.generation
            if gen is not None and timestamp is not None:
                if audio:
                    self.capture._on_audio(packet)
                else:
                    self.capture._on_video(gen, timestamp)
            if audio and not self.capture.pre_event_audio:
                # Sound from before the press stays out, decided by its timestamp (packets
                # arrive late: the encoder's latency would otherwise let some slip in).
                cutoff = gen.audio_cutoff_us if gen is not None else None
                if cutoff is None or timestamp is None or timestamp < cutoff:
                    return
            self.circular.outputframe(frame, keyframe, timestamp, packet, audio)

    class SegmentOutput(pyav_output):
        """PyavOutput into the agent's file object, counting what it muxed."""

        def __init__(self, capture: PiCapture, fileobj: BinaryIO, state: _SegmentState) -> None:
            super().__init__(fileobj, format="mpegts", options=dict(MPEGTS_OPTIONS))
            self.capture = capture
            self.state = state
            self.error_callback = self._on_error

        def _on_error(self, exc: BaseException) -> None:
            log.error("segment %d: mux failed: %s", self.state.index, exc)
            self.state.error = exc

        def outputframe(
            self,
            frame: Any,
            keyframe: bool = True,
            timestamp: int | None = None,
            packet: Any = None,
            audio: bool = False,
        ) -> None:
            super().outputframe(frame, keyframe, timestamp, packet, audio)
            if not shim.output_is_open(self) or timestamp is None:
                return
            state = self.state
            if not audio and state.needs_base:
                self.capture._on_first_segment_frame(state)
            with state.lock:
                if audio:
                    state.has_audio = True
                    return
                state.frames += 1
                if state.first_ts_us is None:
                    state.first_ts_us = timestamp
                elif state.last_ts_us is not None:
                    state.dropped += dropped_between(
                        state.last_ts_us, timestamp, 1e6 / self.capture.fps
                    )
                state.last_ts_us = timestamp

    return {"tap": Tap, "segment": SegmentOutput}
