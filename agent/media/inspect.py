"""Reading segments back: what is in an MPEG-TS file (used by self-tests and tests).

Failure posture: a file PyAV cannot open raises :class:`SegmentReadError` naming the file; a
truncated file is read up to its last complete packet (that is the point of MPEG-TS).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from agent.media.audio import SILENCE_DBFS, float_frame_dbfs
from agent.media.base import MediaError

log = logging.getLogger(__name__)


class SegmentReadError(MediaError):
    """A segment file could not be read."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"cannot read segment {path}: {detail}")
        self.path = path
        self.detail = detail


@dataclass
class SegmentContents:
    """What a segment file holds. Times are seconds on the file's own (continuous) timeline."""

    path: Path
    format_name: str
    video_codec: str | None = None
    audio_codec: str | None = None
    width: int = 0
    height: int = 0
    audio_sample_rate_hz: int = 0
    video_pts_s: list[float] = field(default_factory=list)
    video_keyframes: list[bool] = field(default_factory=list)
    audio_levels: list[tuple[float, float]] = field(default_factory=list)
    """(start_s, rms dBFS) per decoded audio frame (only with ``decode_audio=True``)."""

    @property
    def starts_with_keyframe(self) -> bool:
        return bool(self.video_keyframes) and self.video_keyframes[0]

    @property
    def video_end_s(self) -> float | None:
        if len(self.video_pts_s) < 2:
            return self.video_pts_s[-1] if self.video_pts_s else None
        step = self.video_pts_s[-1] - self.video_pts_s[-2]
        return self.video_pts_s[-1] + step


def read_segment(path: Path, *, decode_audio: bool = False) -> SegmentContents:
    """Demux ``path`` (and decode its audio if asked) without trusting any of our own metadata."""
    try:
        container: Any = av.open(str(path), "r")
    except (OSError, av.FFmpegError) as exc:
        raise SegmentReadError(path, str(exc)) from exc
    with container:
        contents = SegmentContents(path=path, format_name=container.format.name)
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is not None:
            contents.video_codec = video.codec_context.name
            contents.width = video.codec_context.width
            contents.height = video.codec_context.height
        if audio is not None:
            contents.audio_codec = audio.codec_context.name
            contents.audio_sample_rate_hz = audio.codec_context.sample_rate
        streams = [s for s in (video, audio) if s is not None]
        try:
            for packet in container.demux(streams):
                if packet.pts is None or packet.size == 0:
                    continue
                t_s = float(packet.pts * packet.time_base)
                if packet.stream is video:
                    contents.video_pts_s.append(t_s)
                    contents.video_keyframes.append(bool(packet.is_keyframe))
                elif decode_audio:
                    for frame in packet.decode():
                        contents.audio_levels.append((_frame_start_s(frame, t_s), _level(frame)))
        except av.FFmpegError as exc:
            # A cut-off file ends in a partial packet; everything before it is still evidence.
            log.info("%s: stopped reading at a damaged packet: %s", path, exc)
    return contents


def _frame_start_s(frame: Any, fallback_s: float) -> float:
    if frame.pts is None or frame.time_base is None:
        return fallback_s
    return float(frame.pts * Fraction(frame.time_base))


def _level(frame: Any) -> float:
    if frame.format.name not in ("flt", "fltp") or len(frame.layout.channels) != 1:
        # Only the first channel of float audio is measured; bring anything else to that.
        resampler = av.AudioResampler(format="flt", layout="mono", rate=frame.sample_rate)
        converted = resampler.resample(frame)
        if not converted:
            return SILENCE_DBFS
        frame = converted[0]
    return float_frame_dbfs(frame)
