"""The one place that touches picamera2's private fields, behind a version check.

The Pi backend needs five things picamera2 (0.3.26 .. 0.3.36, read from its source) has no
public API for:

- ``CircularOutput2._time_offset``: the sensor time its first written keyframe was rebased to 0
  (to place each file on the recording's timeline);
- ``SplittableOutput._split_done``: the event ``split_output`` waits on, set to release a split
  that would otherwise wait forever for a keyframe from a dead camera;
- ``Output._add_stream``: how a wrapping output forwards the encoder's streams to the output it
  wraps (CircularOutput2 and SplittableOutput do the same internally);
- ``Encoder._audio_output_stream``: the AAC stream the encoder created, whose channel layout is
  what the file really contains;
- ``PyavOutput._container``: None once a mux error closed the file (the frame was not written,
  so it must not be counted).

:func:`load` imports picamera2 (or the fake, :mod:`agent.media.fake_picamera2`), refuses a
version without ``SplittableOutput`` (< 0.3.26) and warns about one newer than the newest
checked here. Each accessor raises :class:`Picamera2ShimError` naming the field if a future
release renamed it, instead of an AttributeError deep in a recording.

Failure posture: refuses (raises :class:`~agent.media.base.CaptureDeviceError` /
:class:`Picamera2ShimError`) rather than guessing; never swallows an error.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

from agent.media.base import CaptureDeviceError, MediaError

log = logging.getLogger(__name__)

MIN_VERSION = (0, 3, 26)
"""First release with SplittableOutput (and CircularOutput2's open/close_output)."""
NEWEST_CHECKED = (0, 3, 36)
"""Newest release whose source these private-field accesses were checked against."""


class Picamera2ShimError(MediaError):
    def __init__(self, field: str, owner: Any) -> None:
        self.field = field
        super().__init__(
            f"picamera2 changed: {type(owner).__name__}.{field} is gone; "
            f"agent/media/picamera2_shim.py must be updated for this release"
        )


@dataclass(frozen=True)
class Picamera2Modules:
    """The picamera2 pieces the Pi backend uses (the real package or the fake)."""

    picamera2: Any
    encoders: Any
    outputs: Any
    request: Any
    version: tuple[int, ...]
    fake: bool


def parse_version(text: str) -> tuple[int, ...]:
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if match is None:
        raise ValueError(f"not a version: {text!r}")
    return tuple(int(part or 0) for part in match.groups())


def check_version(version: tuple[int, ...]) -> None:
    shown = ".".join(map(str, version))
    if version < MIN_VERSION:
        raise CaptureDeviceError(
            "camera",
            f"picamera2 {shown} is too old: SplittableOutput needs >= "
            f"{'.'.join(map(str, MIN_VERSION))} (apt install python3-picamera2 from "
            "Raspberry Pi OS)",
        )
    if version > NEWEST_CHECKED:
        log.warning(
            "picamera2 %s is newer than %s, the newest this agent was checked against; "
            "run the hardware tests before fielding it",
            shown,
            ".".join(map(str, NEWEST_CHECKED)),
        )


def load(fake: bool = False) -> Picamera2Modules:
    """Import picamera2 (``fake``: the fake shipped with the agent) and check its version."""
    name = "agent.media.fake_picamera2" if fake else "picamera2"
    try:
        root = importlib.import_module(name)
        encoders = importlib.import_module(f"{name}.encoders")
        outputs = importlib.import_module(f"{name}.outputs")
        request = importlib.import_module(f"{name}.request")
    except ImportError as exc:
        raise CaptureDeviceError(
            "camera", f"picamera2 is not importable ({exc}); the Pi backend needs a Pi"
        ) from exc
    text = getattr(root, "__version__", None)
    if text is None:
        try:
            text = importlib.metadata.version("picamera2")
        except importlib.metadata.PackageNotFoundError:
            raise CaptureDeviceError("camera", "cannot tell picamera2's version") from None
    version = parse_version(text)
    check_version(version)
    return Picamera2Modules(root, encoders, outputs, request, version, fake)


def _field(owner: Any, name: str) -> Any:
    try:
        return getattr(owner, name)
    except AttributeError:
        raise Picamera2ShimError(name, owner) from None


def circular_time_offset(circular: Any) -> int:
    """CircularOutput2's rebase offset (sensor us of the first keyframe it wrote)."""
    return int(_field(circular, "_time_offset") or 0)


def release_split(splitter: Any) -> None:
    """Wake a ``split_output`` that waits for a keyframe that will not come."""
    event = _field(splitter, "_split_done")
    if not isinstance(event, threading.Event):
        raise Picamera2ShimError("_split_done", splitter)
    event.set()


def forward_stream(output: Any, encoder_stream: Any, codec_name: Any, **kwargs: Any) -> None:
    """Tell a wrapped output about one of the encoder's streams."""
    _field(output, "_add_stream")(encoder_stream, codec_name, **kwargs)


def output_is_open(output: Any) -> bool:
    """Whether a PyavOutput still has its container (a mux error closes it)."""
    return _field(output, "_container") is not None


def audio_output_channels(encoder: Any) -> int | None:
    """Channels of the AAC stream the encoder really produces (None: no audio stream)."""
    stream = getattr(encoder, "_audio_output_stream", None)
    if stream is None:
        return None
    layout = stream.codec_context.layout
    return int(layout.nb_channels)
