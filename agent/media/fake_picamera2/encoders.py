"""Encoders with picamera2's interface that produce real H.264 (libx264 via PyAV) and real AAC.

Two shapes, as picamera2 has them:

- :class:`H264Encoder` behaves like the V4L2 hardware encoder of a Pi 4 / Zero 2 W: it tells its
  outputs about the stream as ``_add_stream("video", "h264", width=, height=)`` and hands over
  each frame as bytes (``packet=None``), so ``PyavOutput`` makes the packet;
- :class:`LibavH264Encoder` behaves like picamera2's software encoder (what ``H264Encoder`` is on
  a Pi 5): the stream object itself is announced and PyAV packets are handed over.

Timestamps come from each request's ``SensorTimestamp`` (first frame = 0, microseconds), key
frames every ``iperiod`` frames and on ``force_key_frame()``. With ``audio = True`` the encoder
opens ``av.open(**audio_input)`` (e.g. ``{"file": "sine=frequency=1000", "format": "lavfi"}``),
encodes with ``audio_output`` (``add_stream(**audio_output)``, keeping the private
``_audio_output_stream`` picamera2 has) and, paced in real time like a sound card, sends AAC
packets with ``audio=True`` once the first video frame was encoded.

Failure posture: as picamera2: misuse raises RuntimeError; an audio input that cannot be opened
raises from ``start()``; the audio thread ends quietly when its input ends or fails.
"""

from __future__ import annotations

import logging
import threading
import time
from fractions import Fraction
from typing import Any

import av

from agent.media.fake_picamera2.outputs import Output
from agent.media.fake_picamera2.request import CompletedRequest

log = logging.getLogger(__name__)


class Encoder:
    def __init__(self, framerate: float | None = 30) -> None:
        self.width = 0
        self.height = 0
        self.stride = 0
        self.format: str | None = None
        self.name: str | None = None
        self.framerate = framerate
        self._output: list[Output] = []
        self._running = False
        self._lock = threading.Lock()
        self._output_lock = threading.Lock()
        self.firsttimestamp: int | None = None
        self.frames_encoded = 0
        self.audio = False
        self.audio_input: dict[str, Any] = {"file": "default", "format": "pulse"}
        self.audio_output: dict[str, Any] = {"codec_name": "aac"}
        self.audio_sync = -100000
        self._audio_start = threading.Event()
        self._audio_thread: threading.Thread | None = None
        self._audio_output_stream: Any = None
        self._first_audio_time: int | None = None
        self.bitrate: int | None = None
        self.iperiod: int | None = None

    @property
    def running(self) -> bool:
        return self._running

    @property
    def output(self) -> Any:
        return self._output[0] if len(self._output) == 1 else self._output

    @output.setter
    def output(self, value: Any) -> None:
        outputs = value if isinstance(value, list) else [value]
        if not all(isinstance(out, Output) for out in outputs):
            raise RuntimeError("Must pass Output")
        self._output = outputs

    def start(self, quality: Any = None) -> None:
        with self._lock:
            if self._running:
                raise RuntimeError("Encoder already running")
            self.frames_encoded = 0
            self.firsttimestamp = None
            self._start_video()
            self._running = True
            for out in self._output:
                out.start()
            for out in self._output:
                self._send_streams(out)
            if self.audio:
                self._start_audio()

    def stop(self) -> None:
        with self._lock:
            if not self._running:
                raise RuntimeError("Encoder already stopped")
            self._running = False
            self._flush_video()
            if self._audio_thread is not None:
                self._audio_start.set()
                self._audio_thread.join(10.0)
                self._audio_thread = None
            for out in self._output:
                out.stop()

    def encode(self, stream: str, request: CompletedRequest) -> None:
        if self.audio:
            self._audio_start.set()
        with self._lock:
            if not self._running:
                return
            ts = int(request.get_metadata()["SensorTimestamp"] // 1000)
            if self.firsttimestamp is None:
                self.firsttimestamp = ts
            self._encode_frame(request.buffer(stream), ts - self.firsttimestamp)
            self.frames_encoded += 1

    def outputframe(
        self,
        frame: Any,
        keyframe: bool = True,
        timestamp: int | None = None,
        packet: Any = None,
        audio: bool = False,
    ) -> None:
        with self._output_lock:
            for out in self._output:
                out.outputframe(frame, keyframe, timestamp, packet, audio)

    # --- video (libx264) --------------------------------------------------------------------

    def _start_video(self) -> None:
        self._container = av.open("/dev/null", "w", format="null")
        stream = self._container.add_stream("libx264", rate=round(self.framerate or 30))
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
        ctx = stream.codec_context
        ctx.time_base = Fraction(1, 1000000)
        ctx.gop_size = self.iperiod or 30
        if self.bitrate:
            ctx.bit_rate = self.bitrate
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "repeat-headers": "1"}
        self._stream = stream
        self._keyframes_requested = 0

    def force_key_frame(self) -> None:
        self._keyframes_requested += 1

    def _encode_frame(self, buf: bytearray, timestamp_us: int) -> None:
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        y_size = self.stride * self.height
        c_stride = self.stride // 2
        c_size = c_stride * (self.height // 2)
        _copy_plane(frame.planes[0], buf, 0, self.stride, self.height)
        _copy_plane(frame.planes[1], buf, y_size, c_stride, self.height // 2)
        _copy_plane(frame.planes[2], buf, y_size + c_size, c_stride, self.height // 2)
        frame.pts = timestamp_us
        frame.time_base = Fraction(1, 1000000)
        if self._keyframes_requested:
            self._keyframes_requested = 0
            frame.pict_type = av.video.frame.PictureType.I
        for packet in self._stream.encode(frame):
            self._emit_video(packet)

    def _flush_video(self) -> None:
        try:
            for packet in self._stream.encode(None):
                self._emit_video(packet)
        finally:
            self._container.close()

    def _emit_video(self, packet: Any) -> None:
        raise NotImplementedError

    def _send_streams(self, output: Output) -> None:
        raise NotImplementedError

    # --- audio (AAC, paced like a sound card) -------------------------------------------------

    def _start_audio(self) -> None:
        self._audio_input_container = av.open(**self.audio_input)
        self._audio_input_stream = self._audio_input_container.streams.audio[0]
        self._audio_output_container = av.open("/dev/null", "w", format="null")
        self._audio_output_stream = self._audio_output_container.add_stream(**self.audio_output)
        for out in self._output:
            out._add_stream(self._audio_output_stream, **self.audio_output)
        self._first_audio_time = None
        self._audio_start.clear()
        self._audio_thread = threading.Thread(
            target=self._audio_loop, name="fake-audio", daemon=True
        )
        self._audio_thread.start()

    def _audio_loop(self) -> None:
        try:
            self._audio_start.wait()
            t0 = time.monotonic()
            for frame in self._audio_input_container.decode(self._audio_input_stream):
                if not self._running:
                    break
                # A sound card delivers in real time: never ahead of the wall clock.
                due = t0 + float(frame.time or 0.0)
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                for packet in self._audio_output_stream.encode(frame):
                    self._handle_audio_packet(packet)
            for packet in self._audio_output_stream.encode(None):
                self._handle_audio_packet(packet)
        except Exception as exc:
            log.warning("fake audio input ended: %s", exc)
        finally:
            self._audio_input_container.close()
            self._audio_output_container.close()

    def _handle_audio_packet(self, packet: Any) -> None:
        scale = 1000000 * packet.stream.codec_context.time_base
        delta = int(self.audio_sync / scale)
        if self._first_audio_time is None:
            self._first_audio_time = packet.pts
        packet.pts -= self._first_audio_time + delta
        packet.dts -= self._first_audio_time + delta
        timestamp = int(packet.pts * scale)
        if packet.pts >= 0:
            self.outputframe(None, True, timestamp, packet, True)


def _copy_plane(plane: Any, buf: bytearray, offset: int, stride: int, rows: int) -> None:
    if plane.line_size == stride:
        plane.update(bytes(buf[offset : offset + stride * rows]))
        return
    out = bytearray(plane.line_size * rows)
    width = min(stride, plane.line_size)
    for r in range(rows):
        src = offset + r * stride
        out[r * plane.line_size : r * plane.line_size + width] = buf[src : src + width]
    plane.update(bytes(out))


class H264Encoder(Encoder):
    """Shaped like the V4L2 hardware encoder (Pi 4, Zero 2 W): frames leave as bytes."""

    def __init__(
        self,
        bitrate: int | None = None,
        repeat: bool = True,
        iperiod: int | None = None,
        framerate: float | None = None,
        enable_sps_framerate: bool = False,
        qp: int | None = None,
        profile: str | None = None,
    ) -> None:
        super().__init__(framerate)
        self.bitrate = bitrate
        self.repeat = repeat
        self.iperiod = iperiod
        self.qp = qp
        self.profile = profile

    def _send_streams(self, output: Output) -> None:
        output._add_stream("video", "h264", width=self.width, height=self.height)

    def _emit_video(self, packet: Any) -> None:
        self.outputframe(bytes(packet), packet.is_keyframe, timestamp=packet.pts)


class LibavH264Encoder(Encoder):
    """Shaped like picamera2's software encoder (a Pi 5's H264Encoder): PyAV packets leave."""

    def __init__(
        self,
        bitrate: int | None = None,
        repeat: bool = True,
        iperiod: int = 30,
        framerate: float = 30,
        qp: int | None = None,
        profile: str | None = None,
    ) -> None:
        super().__init__(framerate)
        self.bitrate = bitrate
        self.repeat = repeat
        self.iperiod = iperiod
        self.qp = qp
        self.profile = profile
        self.preset: str | None = None
        self.threads = 0

    def _send_streams(self, output: Output) -> None:
        output._add_stream(
            self._stream,
            "h264",
            rate=round(self.framerate or 30),
            width=self.width,
            height=self.height,
        )

    def _emit_video(self, packet: Any) -> None:
        self.outputframe(bytes(packet), packet.is_keyframe, timestamp=packet.pts, packet=packet)
