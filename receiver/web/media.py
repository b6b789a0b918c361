"""Playback: a session's MPEG-TS segments remuxed into one MP4 the browser's own player plays.

Browsers play H.264 + AAC in MP4, not ``video/mp2t``; PyAV copies the packets into a
fragmented MP4 without re-encoding (a 10-second segment remuxes in milliseconds). Each segment
is shifted to start where the previous one ended, so the player's timeline runs across all
segments and seeking into any of them works; the burned-in time on the picture is untouched.
The result is a derived copy in a cache directory (never evidence): it is written to a temp
file, then renamed, so a crash leaves no half file, and it is named by the SHA-256 of the
segments' hashes, so a different set of segments can never be served from a stale copy.

Failure posture: a segment PyAV cannot read raises :class:`PlaybackError` naming it and nothing
is cached; the evidence objects are only ever opened for reading.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from av.bitstream import BitStreamFilterContext

from receiver.errors import ReceiverError

log = logging.getLogger(__name__)

MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"


class PlaybackError(ReceiverError):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path.name}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class Remuxed:
    path: Path
    #: where each segment starts on the player's timeline, in seconds
    starts_s: tuple[float, ...]
    duration_s: float


def cache_name(segment_hashes: list[str]) -> str:
    return hashlib.sha256("\n".join(segment_hashes).encode()).hexdigest()


def session_mp4(segments: list[Path], hashes: list[str], cache_dir: Path) -> Remuxed:
    """The session's MP4 (built once, then served from the cache)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    name = cache_name(hashes)
    target = cache_dir / f"{name}.mp4"
    index = cache_dir / f"{name}.starts"
    if target.is_file() and index.is_file():
        values = [float(v) for v in index.read_text().split()]
        return Remuxed(target, tuple(values[:-1]), values[-1])
    tmp = cache_dir / f"{name}.{os.getpid()}.part"
    try:
        starts, duration = remux(segments, tmp)
        index.write_text(" ".join(f"{v:.6f}" for v in [*starts, duration]))
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return Remuxed(target, tuple(starts), duration)


def remux(segments: list[Path], out: Path) -> tuple[list[float], float]:
    """Copy the segments' video and audio packets into one fragmented MP4 at ``out``."""
    starts: list[float] = []
    end_s = 0.0
    with av.open(str(out), "w", format="mp4", options={"movflags": MOVFLAGS}) as dst:
        streams: dict[str, av.stream.Stream] = {}
        for path in segments:
            starts.append(end_s)
            end_s = _copy_segment(path, dst, streams, Fraction(end_s))
    return starts, end_s


def _copy_segment(
    path: Path,
    dst: av.container.OutputContainer,
    streams: dict[str, av.stream.Stream],
    at_s: Fraction,
) -> float:
    try:
        src = av.open(str(path))
    except av.FFmpegError as exc:
        raise PlaybackError(path, f"not readable as MPEG-TS: {exc}") from exc
    with src:
        inputs = [s for s in src.streams if s.type in ("video", "audio")]
        # MPEG-TS carries AAC with ADTS headers; MP4 wants the bare frames + AudioSpecificConfig
        adts = {
            s.index: BitStreamFilterContext("aac_adtstoasc", s)
            for s in inputs
            if s.type == "audio" and s.codec_context.name == "aac"
        }
        for s in inputs:
            if s.type not in streams:
                streams[s.type] = dst.add_stream_from_template(s)
        first = _first_time(path)
        end_s = float(at_s)
        try:
            for raw in src.demux(inputs):
                if raw.dts is None or raw.pts is None or raw.time_base is None:
                    continue  # the demuxer's flush packets
                bsf = adts.get(raw.stream.index)
                for packet in bsf.filter(raw) if bsf else [raw]:
                    end_s = max(end_s, _place(packet, at_s - first))
                    packet.stream = streams[raw.stream.type]
                    dst.mux(packet)
        except av.FFmpegError as exc:
            raise PlaybackError(path, f"cannot remux: {exc}") from exc
    return end_s


def _place(packet: av.Packet, shift_s: Fraction) -> float:
    """Shift the packet by ``shift_s`` seconds; where it ends on the timeline, in seconds."""
    assert packet.time_base is not None
    assert packet.pts is not None
    assert packet.dts is not None
    shift = round(shift_s / packet.time_base)
    packet.pts += shift
    packet.dts += shift
    return float((packet.pts + (packet.duration or 0)) * packet.time_base)


def _first_time(path: Path) -> Fraction:
    """The earliest timestamp of the segment, in seconds (where it is placed from)."""
    firsts: list[Fraction] = []
    with av.open(str(path)) as probe:
        for s in probe.streams:
            if s.type not in ("video", "audio"):
                continue
            for packet in probe.demux(s):
                if packet.dts is not None and packet.time_base is not None:
                    firsts.append(Fraction(packet.dts) * packet.time_base)
                    break
            probe.seek(0)
    if not firsts:
        raise PlaybackError(path, "holds no audio or video packets")
    return min(firsts)
