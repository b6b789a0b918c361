"""``Picamera2`` for tests and bench runs: a camera thread that delivers YUV420 requests.

Like the real one it is configured with ``create_video_configuration`` / ``configure``, started
and stopped, has ``pre_callback`` (called with each request before the encoders see it, so an
overlay drawn there is in the encoded picture), ``start_encoder`` / ``stop_encoder`` and request
metadata with ``SensorTimestamp`` (ns, monotonic) and ``FrameDuration`` (us).

Test controls (what a real camera does to us): :meth:`drop_frames` (the sensor produced frames
that never reached us: a gap in ``SensorTimestamp``), :meth:`stall` / :meth:`unstall` (no
frames at all, as a dead ribbon cable). The picture is a grey gradient with a moving bar.

Failure posture: misuse (start before configure, an unknown stream) raises RuntimeError as
picamera2 does; an exception in ``pre_callback`` or an encoder is logged and the frame dropped,
the camera thread keeps running.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, ClassVar

from agent.media.fake_picamera2.encoders import Encoder
from agent.media.fake_picamera2.outputs import Output
from agent.media.fake_picamera2.request import CompletedRequest

log = logging.getLogger(__name__)

STRIDE_ALIGN = 64
"""libcamera pads YUV420 rows on a Pi; the fake pads the same way so strides are honoured."""


class Picamera2:
    instances: ClassVar[collections.deque[Picamera2]] = collections.deque(maxlen=8)
    """The cameras made most recently, newest last (tests reach the camera the backend opened);
    bounded so a long test session does not keep every camera alive."""

    def __init__(self, camera_num: int = 0, **_: Any) -> None:
        self.camera_num = camera_num
        self.pre_callback: Any = None
        self.post_callback: Any = None
        self.started = False
        self._config: dict[str, Any] | None = None
        self._encoders: set[Encoder] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._drop = 0
        self._stalled = threading.Event()
        self._last_metadata: dict[str, Any] = {}
        self.frames_delivered = 0
        self.frames_dropped = 0
        self.encoders_started: list[Encoder] = []
        """Every encoder started on this camera, in order (tests check the backend's choice)."""
        Picamera2.instances.append(self)

    # --- configuration ----------------------------------------------------------------------

    def create_video_configuration(
        self, main: dict[str, Any] | None = None, controls: dict[str, Any] | None = None, **_: Any
    ) -> dict[str, Any]:
        main = {"size": (1280, 720), "format": "YUV420", **(main or {})}
        controls = {"FrameDurationLimits": (33333, 33333), **(controls or {})}
        return {"main": main, "controls": controls, "encode": "main"}

    def configure(self, config: dict[str, Any]) -> None:
        main = dict(config["main"])
        if main.get("format") != "YUV420":
            raise RuntimeError(f"the fake camera delivers YUV420 only, not {main.get('format')}")
        width = main["size"][0]
        main["stride"] = -(-width // STRIDE_ALIGN) * STRIDE_ALIGN
        self._config = {**config, "main": main}

    def camera_configuration(self) -> dict[str, Any]:
        if self._config is None:
            raise RuntimeError("Camera has not been configured")
        return self._config

    @property
    def frame_duration_us(self) -> int:
        return int(self.camera_configuration()["controls"]["FrameDurationLimits"][0])

    # --- running ------------------------------------------------------------------------------

    def start(self, config: Any = None, show_preview: bool = False) -> None:
        if config is not None:
            self.configure(config)
        self.camera_configuration()
        if self.started:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fake-camera", daemon=True)
        self.started = True
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(10.0)
        self._thread = None
        self.started = False

    def close(self) -> None:
        self.stop()

    def start_encoder(
        self, encoder: Encoder, output: Output | None = None, name: str | None = None, **_: Any
    ) -> None:
        if output is not None:
            encoder.output = output
        main = self.camera_configuration()["main"]
        encoder.name = name or "main"
        encoder.width, encoder.height = main["size"]
        encoder.format = main["format"]
        encoder.stride = main["stride"]
        if encoder.framerate is None:
            encoder.framerate = 1e6 / self.frame_duration_us
        encoder.start()
        with self._lock:
            self._encoders.add(encoder)
            self.encoders_started.append(encoder)

    def stop_encoder(self, encoders: Any = None) -> None:
        with self._lock:
            chosen = (
                list(self._encoders)
                if encoders is None
                else ([encoders] if isinstance(encoders, Encoder) else list(encoders))
            )
            for encoder in chosen:
                self._encoders.discard(encoder)
        for encoder in chosen:
            encoder.stop()

    def capture_metadata(self) -> dict[str, Any]:
        return dict(self._last_metadata)

    # --- what a real camera does to us (test controls) ----------------------------------------

    def drop_frames(self, count: int) -> None:
        """The next ``count`` sensor frames are lost before reaching the application."""
        with self._lock:
            self._drop += count

    def stall(self) -> None:
        self._stalled.set()

    def unstall(self) -> None:
        self._stalled.clear()

    # --- the camera thread ----------------------------------------------------------------------

    def _run(self) -> None:
        period_ns = self.frame_duration_us * 1000
        main = self.camera_configuration()["main"]
        scene = _Scene(main["size"][0], main["size"][1], main["stride"])
        next_ns = time.monotonic_ns()
        n = 0
        while not self._stop.is_set():
            delay = (next_ns - time.monotonic_ns()) / 1e9
            if delay > 0 and self._stop.wait(delay):
                break
            sensor_ns, next_ns = next_ns, next_ns + period_ns
            if time.monotonic_ns() - sensor_ns > 4 * period_ns:
                next_ns = time.monotonic_ns()  # far behind (a loaded machine): catch up
            n += 1
            with self._lock:
                if self._drop:
                    self._drop -= 1
                    self.frames_dropped += 1
                    continue
            if self._stalled.is_set():
                continue
            self._deliver(scene.frame(n), sensor_ns)

    def _deliver(self, buf: bytearray, sensor_ns: int) -> None:
        metadata = {"SensorTimestamp": sensor_ns, "FrameDuration": self.frame_duration_us}
        request = CompletedRequest({"main": buf}, self.camera_configuration(), metadata)
        self._last_metadata = metadata
        try:
            if self.pre_callback is not None:
                self.pre_callback(request)
            if self.post_callback is not None:
                self.post_callback(request)
            with self._lock:
                encoders = list(self._encoders)
            for encoder in encoders:
                encoder.encode("main", request)
        except Exception:
            log.exception("fake camera: a callback or encoder failed; frame dropped")
            return
        self.frames_delivered += 1


class _Scene:
    """Grey gradient, neutral chroma and a bright vertical bar moving 8 px per frame."""

    def __init__(self, width: int, height: int, stride: int) -> None:
        self.width, self.height, self.stride = width, height, stride
        luma = bytearray()
        for row in range(height):
            luma += bytes([48 + (row * 96) // height]) * stride
        self._luma = bytes(luma)
        self._chroma = bytes([128]) * (stride // 2 * height // 2 * 2)
        self._bar = bytes([220]) * 12

    def frame(self, n: int) -> bytearray:
        buf = bytearray(self._luma)
        x = (n * 8) % max(1, self.width - len(self._bar))
        for row in range(self.height):
            start = row * self.stride + x
            buf[start : start + len(self._bar)] = self._bar
        return buf + self._chroma
