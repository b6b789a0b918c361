"""Muxing already-encoded H.264/AAC packets into MPEG-TS segment files the agent owns.

A :class:`SegmentWriter` writes one segment into a file object handed out by the agent's
:class:`SegmentSink`. It never closes that file object (the sink does), flushes and fsyncs it on
request, and counts what it wrote so the pipeline can report :class:`SegmentStats`.

Failure posture: write errors (disk full, I/O error) propagate as ``OSError``/``av.FFmpegError`` to
the pipeline, which turns them into a storage fault; :meth:`SegmentWriter.close` always returns
stats for whatever reached the file, even when writing the trailer fails.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any, BinaryIO

import av

from agent.media.base import SegmentStats

log = logging.getLogger(__name__)

MICROSECOND = Fraction(1, 1_000_000)

# flush_packets: hand every muxed packet to our file object at once, so an fsync really covers
# everything muxed so far. pes_payload_size=0: do not hold audio back to fill larger PES packets.
# max_interleave_delta bounds how long the interleaver may hold one stream back for the other.
MPEGTS_OPTIONS = {
    "flush_packets": "1",
    "pes_payload_size": "0",
    "max_interleave_delta": "500000",
}


@dataclass(frozen=True)
class VideoParams:
    width: int
    height: int
    fps: int

    def describe(self) -> dict[str, Any]:
        return {"codec": "h264", "width": self.width, "height": self.height, "fps": self.fps}


@dataclass(frozen=True)
class AudioParams:
    sample_rate: int
    channels: int

    def describe(self) -> dict[str, Any]:
        return {"codec": "aac", "sample_rate": self.sample_rate, "channels": self.channels}


@dataclass
class EncodedPacket:
    """One encoded packet with its place on the capture timeline (microseconds since start)."""

    packet: av.Packet
    is_video: bool
    pts_us: int
    duration_us: int
    utc: datetime
    keyframe: bool

    @property
    def end_us(self) -> int:
        return self.pts_us + self.duration_us


class SegmentWriter:
    """Writes one MPEG-TS segment. Timestamps are rebased to the recording's origin."""

    def __init__(
        self,
        index: int,
        fileobj: BinaryIO,
        *,
        origin_us: int,
        video: VideoParams,
        audio: AudioParams | None,
        pre_event_us: int = 0,
    ) -> None:
        self.index = index
        self.fileobj = fileobj
        self.origin_us = origin_us
        self.video = video
        self.audio = audio
        self.pre_event_us = pre_event_us
        self.frames = 0
        self.dropped_frames = 0
        self.first_video_us: int | None = None
        self.end_video_us: int | None = None
        self.utc_start: datetime | None = None
        self.utc_end: datetime | None = None
        self._counting = _CountingWriter(fileobj)
        self._container: Any = av.open(
            self._counting, "w", format="mpegts", container_options=dict(MPEGTS_OPTIONS)
        )
        self._vstream: Any = self._container.add_stream("h264", rate=video.fps)
        self._vstream.width = video.width
        self._vstream.height = video.height
        self._vstream.pix_fmt = "yuv420p"
        self._astream: Any = None
        if audio is not None:
            self._astream = self._container.add_stream("aac", rate=audio.sample_rate)
            self._astream.layout = "stereo" if audio.channels == 2 else "mono"
        self._closed = False

    @property
    def size_bytes(self) -> int:
        return self._counting.size_bytes

    def write(self, item: EncodedPacket) -> bool:
        """Mux ``item``; False if it was skipped (audio without an audio stream, or before 0)."""
        rel_us = item.pts_us - self.origin_us
        if rel_us < 0:
            return False
        if item.is_video:
            stream = self._vstream
        elif self._astream is not None:
            stream = self._astream
        else:
            return False
        packet = item.packet
        packet.stream = stream
        packet.time_base = MICROSECOND
        packet.pts = rel_us
        packet.dts = rel_us
        packet.duration = item.duration_us
        self._container.mux(packet)
        if item.is_video:
            self.frames += 1
            if self.first_video_us is None:
                self.first_video_us = item.pts_us
                self.utc_start = item.utc
            self.end_video_us = item.end_us
            self.utc_end = item.utc + timedelta(microseconds=item.duration_us)
        return True

    def sync(self) -> None:
        """Push everything written so far to stable storage."""
        self._counting.flush()
        fsync_fileobj(self.fileobj)

    def close(self) -> SegmentStats:
        """Finish the file (trailer, flush, fsync) and return its stats; safe to call once."""
        if not self._closed:
            self._closed = True
            try:
                self._container.close()
            finally:
                self.sync()
        return self.stats()

    def stats(self) -> SegmentStats:
        start_us = self.first_video_us if self.first_video_us is not None else self.origin_us
        end_us = self.end_video_us if self.end_video_us is not None else start_us
        utc_start = self.utc_start if self.utc_start is not None else datetime.min
        return SegmentStats(
            index=self.index,
            media_start_us=start_us - self.origin_us,
            media_end_us=end_us - self.origin_us,
            utc_start=utc_start,
            utc_end=self.utc_end if self.utc_end is not None else utc_start,
            frames=self.frames,
            dropped_frames=self.dropped_frames,
            pre_event_us=self.pre_event_us,
            video=self.video.describe(),
            audio=self.audio.describe() if self.audio is not None else None,
            size_bytes=self.size_bytes,
        )


def fsync_fileobj(fileobj: BinaryIO) -> None:
    """Flush and fsync ``fileobj``; in-memory files (no descriptor) are only flushed."""
    fileobj.flush()
    try:
        fd = fileobj.fileno()
    except (io.UnsupportedOperation, AttributeError):
        return
    os.fsync(fd)


class _CountingWriter:
    """Write-only adapter that counts bytes; PyAV writes through it into the agent's file.

    Deliberately not seekable: MPEG-TS never seeks back, and the agent's file is append-only.
    """

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self.size_bytes = 0

    def write(self, data: Any) -> int:
        view = memoryview(data)
        written = self._target.write(view)
        count = len(view) if written is None else written
        self.size_bytes += count
        return count

    def flush(self) -> None:
        self._target.flush()
