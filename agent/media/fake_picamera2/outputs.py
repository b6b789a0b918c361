"""Outputs with the same interface and behaviour as picamera2's (0.3.36), written from reading
its source: ``Output``, ``CircularOutput2``, ``SplittableOutput``, ``PyavOutput``.

What the Pi backend relies on is reproduced exactly: ``CircularOutput2`` writes a frame only
once it is older than its buffer, rebases timestamps to its first keyframe (``_time_offset``)
and drops nothing with a 1 ms buffer; ``SplittableOutput.split_output`` blocks until the next
video keyframe and closes the old output in the caller's thread (``_split_done``);
``PyavOutput`` muxes with PyAV into whatever ``av.open`` accepts (a file object) and waits for a
keyframe per stream.

Failure posture: as picamera2's: misuse raises RuntimeError; a mux error closes the container
and is reported through ``error_callback``.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from fractions import Fraction
from typing import Any

import av


class Output:
    def __init__(self, pts: Any = None) -> None:
        self.recording = False
        self.ptsoutput = pts
        self.needs_pacing = False
        self.needs_add_stream = False

    def start(self) -> None:
        self.recording = True

    def stop(self) -> None:
        self.recording = False

    def outputframe(
        self,
        frame: Any,
        keyframe: bool = True,
        timestamp: int | None = None,
        packet: Any = None,
        audio: bool = False,
    ) -> None:
        """Receives every encoded frame (subclasses act on it)."""

    def _add_stream(self, encoder_stream: Any, *args: Any, **kwargs: Any) -> None:
        """Told about each of the encoder's streams (subclasses that mux need them)."""


class CircularOutput2(Output):
    def __init__(self, pts: Any = None, buffer_duration_ms: int = 5000) -> None:
        super().__init__(pts=pts)
        if buffer_duration_ms < 0:
            raise RuntimeError("buffer_duration_ms may not be negative")
        self._lock = threading.Lock()
        self._buffer_duration_ms = buffer_duration_ms
        self._circular: collections.deque[tuple[Any, bool, int, Any, bool]] = collections.deque()
        self._output: Output | None = None
        self._streams: list[tuple[Any, Any, dict[str, Any]]] = []
        self._first_frame = True
        self._time_offset = 0

    @property
    def buffer_duration_ms(self) -> int:
        return self._buffer_duration_ms

    @buffer_duration_ms.setter
    def buffer_duration_ms(self, value: int) -> None:
        with self._lock:
            self._buffer_duration_ms = value

    def open_output(self, output: Output) -> None:
        if self._output:
            raise RuntimeError("Underlying output must be closed first")
        output.start()
        for encoder_stream, codec, kwargs in self._streams:
            output._add_stream(encoder_stream, codec, **kwargs)
        with self._lock:
            self._output = output
            self._first_frame = True

    def close_output(self) -> None:
        if not self._output:
            raise RuntimeError("No underlying output has been opened")
        output = self._output
        with self._lock:
            self._output = None
        output.stop()

    def _expire(self, now: int | None, output: Output | None) -> None:
        # Everything older than the buffer leaves it: written out once a keyframe was seen.
        while self._circular:
            frame, keyframe, timestamp, packet, audio = self._circular[0]
            if now and now - timestamp < self._buffer_duration_ms * 1000:
                return
            self._circular.popleft()
            if keyframe and not audio:
                if self._first_frame:
                    self._time_offset = timestamp
                self._first_frame = False
            if not self._first_frame and output:
                rebased = timestamp - self._time_offset
                if rebased >= 0:
                    output.outputframe(frame, keyframe, rebased, packet, audio)

    def outputframe(
        self,
        frame: Any,
        keyframe: bool = True,
        timestamp: int | None = None,
        packet: Any = None,
        audio: bool = False,
    ) -> None:
        with self._lock:
            if self._buffer_duration_ms == 0 or not self.recording or timestamp is None:
                return
            self._circular.append((frame, keyframe, timestamp, packet, audio))
            self._expire(timestamp, self._output)

    def start(self) -> None:
        with self._lock:
            if self.recording:
                raise RuntimeError("Circular output is running")
            self.recording = True

    def stop(self) -> None:
        output = self._output
        with self._lock:
            if not self.recording:
                raise RuntimeError("Circular output was not started")
            self.recording = False
            self._output = None
        if output:
            self._expire(None, output)
            output.stop()

    def _add_stream(self, encoder_stream: Any, codec_name: Any, **kwargs: Any) -> None:
        self._streams.append((encoder_stream, codec_name, kwargs))


class SplittableOutput(Output):
    def __init__(self, output: Output | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._output = output
        self._new_output: Output | None = None
        self._split_done = threading.Event()
        self._streams: list[tuple[Any, Any, dict[str, Any]]] = []
        self._wait_for_keyframe = True
        self.needs_add_stream = True

    def split_output(self, new_output: Output, wait_for_keyframe: bool = True) -> None:
        old_output = self._output
        new_output.start()
        for encoder_stream, codec, kwargs in self._streams:
            new_output._add_stream(encoder_stream, codec, **kwargs)
        self._wait_for_keyframe = wait_for_keyframe
        self._new_output = new_output
        self._split_done.wait()
        self._split_done.clear()
        if old_output:
            old_output.stop()

    def outputframe(
        self,
        frame: Any,
        keyframe: bool = True,
        timestamp: int | None = None,
        packet: Any = None,
        audio: bool = False,
    ) -> None:
        if self._new_output and (not self._wait_for_keyframe or (keyframe and not audio)):
            self._split_done.set()
            self._output = self._new_output
            self._new_output = None
        if self._output:
            self._output.outputframe(frame, keyframe, timestamp, packet, audio)

    def start(self) -> None:
        super().start()
        if self._output:
            self._output.start()

    def stop(self) -> None:
        super().stop()
        if self._output:
            self._output.stop()

    def _add_stream(self, encoder_stream: Any, codec_name: Any, **kwargs: Any) -> None:
        self._streams.append((encoder_stream, codec_name, kwargs))
        if self._output:
            self._output._add_stream(encoder_stream, codec_name, **kwargs)


class PyavOutput(Output):
    def __init__(
        self, output_name: Any, format: str | None = None, pts: Any = None, options: Any = None
    ) -> None:
        super().__init__(pts=pts)
        self._output_name = output_name
        self._format = format
        self._options = options
        self._streams: dict[Any, Any] = {}
        self._container: Any = None
        self._seen_keyframe: dict[Any, bool] = {}
        self.error_callback: Any = None
        self.needs_add_stream = True

    def _add_stream(self, encoder_stream: Any, codec_name: Any, **kwargs: Any) -> None:
        self._streams[encoder_stream] = self._container.add_stream(codec_name, **kwargs)

    def start(self) -> None:
        self._container = av.open(
            self._output_name, "w", format=self._format, options=self._options
        )
        super().start()

    def stop(self) -> None:
        super().stop()
        if self._container:
            # As picamera2: closing a broken container is best effort.
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
            self._streams = {}
            self._seen_keyframe = {}

    def outputframe(
        self,
        frame: Any,
        keyframe: bool = True,
        timestamp: int | None = None,
        packet: Any = None,
        audio: bool = False,
    ) -> None:
        if not (self.recording and self._container):
            return
        if packet is None:
            # A hardware (V4L2) encoder hands over bytes: the packet is made here.
            packet = av.Packet(frame)
            packet.stream = self._streams["video"]
        else:
            source = packet.stream
            if source not in self._streams:
                raise RuntimeError("Stream not found in PyavOutput")
            packet = av.Packet(packet)  # a copy, re-homed to our container's stream
            packet.stream = self._streams[source]
            seen = self._seen_keyframe.get(packet.stream, False) or keyframe
            self._seen_keyframe[packet.stream] = seen
            if not seen:
                return
        packet.dts = timestamp
        packet.pts = timestamp
        packet.time_base = Fraction(1, 1000000)
        packet.is_keyframe = keyframe
        try:
            self._container.mux(packet)
        except Exception as exc:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
            if self.error_callback:
                self.error_callback(exc)
