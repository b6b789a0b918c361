"""The capture contract: camera + microphone -> H.264/AAC MPEG-TS segments.

The agent drives a :class:`CapturePipeline` and receives finished segments through a
:class:`SegmentSink` it implements (the sink owns the ``*.part`` files; the pipeline only writes,
flushes and fsyncs them).

Failure posture: capture faults during a recording never raise into the agent. The pipeline closes
the current segment (so nothing written is lost), reports ``on_fault``, keeps trying, and when
frames flow again opens the next segment and reports ``on_resume``. Misuse (wrong call order, bad
arguments) raises a :class:`MediaError` subclass with a clear message and changes nothing.
"""

from __future__ import annotations

import functools
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, BinaryIO, Protocol

from agent.clock import Clock
from agent.errors import AgentError
from agent.media.liveness import CaptureLiveness

log = logging.getLogger(__name__)


class MediaError(AgentError):
    """Base of every error raised by ``agent.media``."""


class CaptureStateError(MediaError):
    """A call that is not allowed in the pipeline's current state."""

    def __init__(self, operation: str, state: str) -> None:
        super().__init__(f"cannot {operation} while capture is {state}")
        self.operation = operation
        self.state = state


class CaptureDeviceError(MediaError):
    """A camera, microphone or speaker could not be opened or used."""

    def __init__(self, device: str, detail: str) -> None:
        super().__init__(f"{device}: {detail}")
        self.device = device
        self.detail = detail


class AudioFormatError(MediaError):
    """PCM handed to :meth:`CapturePipeline.play_audio` is malformed."""

    def __init__(self, detail: str, *, sample_rate_hz: int, channels: int, size_bytes: int) -> None:
        super().__init__(
            f"bad PCM ({size_bytes} bytes, {sample_rate_hz} Hz, {channels} ch): {detail}"
        )
        self.detail = detail
        self.sample_rate_hz = sample_rate_hz
        self.channels = channels
        self.size_bytes = size_bytes


class UnknownBackendError(MediaError):
    """``create_capture`` was asked for a backend that does not exist."""

    def __init__(self, backend: str, known: list[str]) -> None:
        super().__init__(f"unknown capture backend {backend!r}; known: {', '.join(known)}")
        self.backend = backend
        self.known = known


@dataclass(frozen=True)
class SegmentStats:
    """What the pipeline knows about one finished segment (becomes the ``segment`` record)."""

    index: int
    """0-based within one recording."""
    media_start_us: int
    """On the recording's media timeline; segment 0 starts at 0 = the oldest pre-event frame."""
    media_end_us: int
    """End of the last frame (pts + duration); the next segment's ``media_start_us`` equals it."""
    utc_start: datetime
    """Wall clock of the first frame (from the pipeline's Clock)."""
    utc_end: datetime
    frames: int
    """Video frames written to this segment."""
    dropped_frames: int
    pre_event_us: int
    """Pre-event media in this segment (only segment 0; else 0)."""
    video: dict[str, Any]
    """``{"codec": "h264", "width": .., "height": .., "fps": ..}``"""
    audio: dict[str, Any] | None
    """``{"codec": "aac", "sample_rate": .., "channels": ..}`` or None without audio."""
    size_bytes: int = 0
    """Bytes written to the segment file (informative; the sink hashes the file itself)."""


class SegmentSink(Protocol):
    """Implemented by the agent: owns the segment files."""

    def open_segment(self, index: int) -> BinaryIO:
        """Create and return the ``.part`` file for segment ``index`` (binary, writable)."""
        ...

    def close_segment(self, index: int, stats: SegmentStats) -> None:
        """Called after the segment's last byte was written, flushed and fsynced.

        The pipeline no longer touches the file object; the sink closes it.
        """
        ...


class InterruptionSink(SegmentSink, Protocol):
    """A sink that also keeps the record of interruptions (optional; see :class:`CapturePipeline`).

    ``note_fault`` and ``note_resume`` are called on the pipeline's thread, with its lock held, at
    the moment the pipeline decides them: a fault after the interrupted segment was closed, a
    resume once the next segment's file is open and before anything of it can be closed. So a
    sink that writes a ``gap`` record in ``note_resume`` puts it in the chain before the segment
    that follows the interruption, whatever other threads do. They must not call back into the
    pipeline.
    """

    def note_fault(self, kind: FaultKind, when: datetime, detail: str) -> None: ...

    def note_resume(self, kind: FaultKind, when: datetime) -> None: ...


class FaultKind(StrEnum):
    """Why capture broke; the values are the ``gap`` record causes."""

    CAMERA = "camera-fault"
    MICROPHONE = "microphone-fault"
    STORAGE = "storage"
    """The segment file could not be opened or written (disk full, I/O error)."""


@dataclass(frozen=True)
class CaptureHealth:
    """Result of :meth:`CapturePipeline.probe` (pre-capture checks, Art. 11)."""

    camera_ok: bool
    camera_detail: str
    frames_per_s: float
    microphone_ok: bool
    microphone_detail: str
    audio_rms_dbfs: float
    extra: dict[str, Any] = field(default_factory=dict)


FaultCallback = Callable[[FaultKind, datetime, str], None]
ResumeCallback = Callable[[FaultKind, datetime], None]
Event = Callable[[], None]
"""A callback collected under the pipeline's lock and called once it is released."""


def fire_events(events: list[Event]) -> None:
    for event in events:
        event()


class CapturePipeline(ABC):
    """camera + microphone -> H.264/AAC MPEG-TS segments, with a pre-event buffer.

    Lifecycle: ``start()`` -> [``start_recording(sink)`` ... ``stop_recording()``]* -> ``stop()``.
    Between ``start`` and ``start_recording`` the pipeline keeps the last ``pre_event_s`` of
    encoded media; ``start_recording`` makes that buffer the beginning of segment 0. Segments are
    split every ``segment_duration_s`` on a keyframe with continuous timestamps and no frame lost
    or duplicated; the open file is flushed and fsynced about every ``sync_interval_s``.

    Subclasses must override :meth:`start`, :meth:`start_recording`, :meth:`stop_recording`,
    :meth:`stop`, :meth:`play_audio`, :meth:`_measure` and :attr:`media_time_us`. They keep the
    shared recording state this class sets up (``_lock``, ``_running``, ``_sink``,
    ``_next_index``, ``_open_faults``) and use its helpers for the state checks and callbacks.
    They must call ``on_fault`` only after the current segment was closed via ``close_segment``,
    and ``on_resume`` only once the next segment is open (through :meth:`_fault_event` and
    :meth:`_resume_events`, which also tell an :class:`InterruptionSink` synchronously);
    callbacks are called from a pipeline thread and must not call back into the pipeline's
    recording methods. They may override :meth:`probe`, :attr:`recording` and
    :meth:`_notify_fault` / :meth:`_notify_resume` (e.g. to add logging).
    """

    on_fault: FaultCallback | None
    on_resume: ResumeCallback | None

    def __init__(
        self,
        clock: Clock,
        *,
        segment_duration_s: float = 10.0,
        pre_event_s: float = 30.0,
        pre_event_audio: bool = True,
        sync_interval_s: float = 1.0,
    ) -> None:
        if segment_duration_s <= 0:
            raise ValueError(f"segment_duration_s must be > 0, got {segment_duration_s}")
        if pre_event_s < 0:
            raise ValueError(f"pre_event_s must be >= 0, got {pre_event_s}")
        if sync_interval_s <= 0:
            raise ValueError(f"sync_interval_s must be > 0, got {sync_interval_s}")
        self.clock = clock
        self.segment_duration_s = segment_duration_s
        self.pre_event_s = pre_event_s
        self.pre_event_audio = pre_event_audio
        self.sync_interval_s = sync_interval_s
        self.on_fault = None
        self.on_resume = None
        self._lock = threading.RLock()
        self._running = False
        self._sink: SegmentSink | None = None
        self._next_index = 0
        """Index of the next segment to open in the current recording."""
        self._open_faults: set[FaultKind] = set()
        """Faults reported with ``on_fault`` and not yet followed by ``on_resume``."""
        self.liveness = CaptureLiveness()
        """Beaten by the capture thread; a stall withholds the systemd watchdog ping."""

    @abstractmethod
    def start(self) -> None:
        """Camera and microphone running, pre-event buffer filling."""

    @abstractmethod
    def start_recording(self, sink: SegmentSink) -> None:
        """Begin segment 0 with the pre-event buffer and record continuously into ``sink``."""

    @abstractmethod
    def stop_recording(self) -> None:
        """Close the final segment; ``close_segment`` has returned before this returns."""

    @abstractmethod
    def stop(self) -> None:
        """Stop capture (stops a running recording first). Idempotent."""

    @abstractmethod
    def play_audio(self, pcm_s16le: bytes, sample_rate_hz: int, channels: int = 1) -> None:
        """Play PCM through the speaker, blocking until played.

        On simulated hardware the sound is mixed into the microphone signal, so it is in the
        recording as it would be in a real room.
        """

    def probe(self, timeout_s: float = 3.0) -> CaptureHealth:
        """Check that camera and microphone deliver data (pre-capture checks, Art. 11).

        Starts capture for the measurement (and stops it again) when it is not running.
        """
        started_here = False
        if not self._running:
            self.start()
            started_here = True
        try:
            return self._measure(timeout_s)
        finally:
            if started_here:
                self.stop()

    @abstractmethod
    def _measure(self, timeout_s: float) -> CaptureHealth:
        """Measure running capture for at most ``timeout_s`` (see :meth:`probe`)."""

    @property
    @abstractmethod
    def media_time_us(self) -> int:
        """Media time captured so far since :meth:`start` (simulate scripts wait on it)."""

    @property
    def stepped(self) -> bool:
        """True when capture advances only through :meth:`advance_to` (fast simulation)."""
        return False

    def advance_to(self, media_us: int) -> None:
        """Stepped backends: capture until :attr:`media_time_us` reaches ``media_us``."""
        raise CaptureStateError("advance", "running on its own clock")

    def queue_audio(self, pcm_s16le: bytes, sample_rate_hz: int, channels: int = 1) -> None:
        """Stepped backends: play PCM after what is queued, without blocking; it sounds as the
        capture is advanced (a blocking :meth:`play_audio` would wait for a step that only the
        waiting thread could make)."""
        raise CaptureStateError("queue audio", "running on its own clock")

    @property
    def audio_queued(self) -> bool:
        """Stepped backends: sound queued with :meth:`queue_audio` that has not played yet."""
        return False

    @property
    def recording(self) -> bool:
        """True between :meth:`start_recording` and :meth:`stop_recording`."""
        return self._sink is not None

    def _refuse_start_while_running(self) -> None:
        """Lock held: the first check of :meth:`start`."""
        if self._running:
            raise CaptureStateError("start", "running")

    def _claim_sink(self, sink: SegmentSink) -> None:
        """Lock held: the checks and state reset that begin :meth:`start_recording`."""
        if not self._running:
            raise CaptureStateError("start recording", "stopped")
        if self._sink is not None:
            raise CaptureStateError("start recording", "already recording")
        self._sink = sink
        self._next_index = 0
        self._open_faults = set()

    def _refuse_stop_unless_recording(self) -> None:
        """Lock held: the first check of :meth:`stop_recording`."""
        if self._sink is None:
            raise CaptureStateError("stop recording", "not recording")

    def _camera_down_at_start(self, events: list[Event]) -> None:
        """Lock held, in :meth:`start_recording`: the camera delivers nothing; queue the fault."""
        self._open_faults.add(FaultKind.CAMERA)
        when = self.clock.utc_now()
        detail = "camera not delivering frames when recording started"
        events.append(self._fault_event(FaultKind.CAMERA, when, detail))

    def _fault_event(self, kind: FaultKind, when: datetime, detail: str) -> Event:
        """Lock held: tell an :class:`InterruptionSink` now; the ``on_fault`` report to fire once
        the lock is released."""
        self._tell_sink("note_fault", kind, when, detail)
        return functools.partial(self._notify_fault, kind, when, detail)

    def _resume_events(self, resume: list[FaultKind], when: datetime, events: list[Event]) -> None:
        """Lock held, next segment open: close the ``resume`` faults, tell an
        :class:`InterruptionSink` now and queue the ``on_resume`` reports."""
        for kind in resume:
            self._open_faults.discard(kind)
            self._tell_sink("note_resume", kind, when)
            events.append(functools.partial(self._notify_resume, kind, when))

    def _tell_sink(self, method: str, *args: Any) -> None:
        note = getattr(self._sink, method, None)
        if note is None:
            return
        try:
            note(*args)
        except Exception:
            # The agent's bug must not stop the capture thread: recording goes on.
            log.exception("sink.%s failed", method)

    def _notify_fault(self, kind: FaultKind, when: datetime, detail: str) -> None:
        log.warning("capture fault %s at %s: %s", kind, when.isoformat(), detail)
        callback = self.on_fault
        if callback is None:
            return
        try:
            callback(kind, when, detail)
        except Exception:
            # The agent's bug must not stop the capture thread: recording goes on.
            log.exception("on_fault callback failed")

    def _notify_resume(self, kind: FaultKind, when: datetime) -> None:
        log.info("capture resumed after %s at %s", kind, when.isoformat())
        callback = self.on_resume
        if callback is None:
            return
        try:
            callback(kind, when)
        except Exception:
            log.exception("on_resume callback failed")


def check_pcm(pcm_s16le: bytes, sample_rate_hz: int, channels: int) -> None:
    """Raise :class:`AudioFormatError` unless the PCM can be played as given."""
    size_bytes = len(pcm_s16le)
    if sample_rate_hz < 1000 or sample_rate_hz > 192000:
        raise AudioFormatError(
            "sample rate out of range 1000..192000",
            sample_rate_hz=sample_rate_hz,
            channels=channels,
            size_bytes=size_bytes,
        )
    if channels not in (1, 2):
        raise AudioFormatError(
            "only mono or stereo",
            sample_rate_hz=sample_rate_hz,
            channels=channels,
            size_bytes=size_bytes,
        )
    if size_bytes % (2 * channels):
        raise AudioFormatError(
            "length is not a whole number of s16le frames",
            sample_rate_hz=sample_rate_hz,
            channels=channels,
            size_bytes=size_bytes,
        )
