"""Capture backends: camera, microphone and speaker -> H.264/AAC MPEG-TS segments.

``create_capture("simulated" | "pi", clock, **options)`` builds a :class:`CapturePipeline`.
Backends are imported lazily so that importing this package never needs picamera2 or PyAudio.

Failure posture: an unknown backend name raises :class:`UnknownBackendError`; a backend whose
libraries are missing raises :class:`CaptureDeviceError` naming what is missing.
"""

from __future__ import annotations

from typing import Any

from agent.clock import Clock
from agent.media.base import (
    AudioFormatError,
    CaptureDeviceError,
    CaptureHealth,
    CapturePipeline,
    CaptureStateError,
    FaultKind,
    InterruptionSink,
    MediaError,
    SegmentSink,
    SegmentStats,
    UnknownBackendError,
)

BACKENDS = ("simulated", "pi")

__all__ = [
    "BACKENDS",
    "AudioFormatError",
    "CaptureDeviceError",
    "CaptureHealth",
    "CapturePipeline",
    "CaptureStateError",
    "FaultKind",
    "InterruptionSink",
    "MediaError",
    "SegmentSink",
    "SegmentStats",
    "UnknownBackendError",
    "create_capture",
]


def create_capture(backend: str, clock: Clock, **options: Any) -> CapturePipeline:
    """Build the capture pipeline ``backend`` ("simulated" or "pi") with ``options``.

    Options are the backend class's keyword arguments (e.g. ``segment_duration_s``,
    ``pre_event_s``, ``width``, ``fps``; ``realtime`` for "simulated": False gives the stepped
    capture that advances only through ``advance_to``).
    """
    if backend == "simulated":
        from agent.media.simulated import SimulatedCapture

        return SimulatedCapture(clock, **options)
    if backend == "pi":
        from agent.media.pi import PiCapture

        return PiCapture(clock, **options)
    raise UnknownBackendError(backend, list(BACKENDS))
