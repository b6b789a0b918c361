"""PCM helpers shared by the capture backends (pure Python + PyAV, no numpy).

Failure posture: malformed PCM raises :class:`AudioFormatError` before anything is played.
"""

from __future__ import annotations

import array
import math
from collections.abc import Sequence
from typing import Any

import av

from agent.media.base import check_pcm

SILENCE_DBFS = -120.0
"""Reported level of digital silence (log of zero is undefined)."""


def rms_dbfs(samples: Sequence[float]) -> float:
    """RMS level of float samples (full scale = 1.0) in dBFS; :data:`SILENCE_DBFS` if silent."""
    if not samples:
        return SILENCE_DBFS
    mean_square = math.fsum(s * s for s in samples) / len(samples)
    if mean_square <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10.0 * math.log10(mean_square))


def float_frame_dbfs(frame: Any) -> float:
    """RMS level in dBFS of the first plane of a float PyAV audio frame (``flt``/``fltp``).

    :data:`SILENCE_DBFS` for an empty or all-zero frame.
    """
    samples: array.array[float] = array.array("f")
    samples.frombytes(bytes(frame.planes[0])[: frame.samples * 4])
    if not samples:
        return SILENCE_DBFS
    mean_square = math.fsum(s * s for s in samples) / len(samples)
    return 10 * math.log10(mean_square) if mean_square > 0 else SILENCE_DBFS


def s16le_to_float_mono(
    pcm_s16le: bytes, sample_rate_hz: int, channels: int, target_rate_hz: int
) -> array.array[float]:
    """Convert interleaved s16le PCM to mono float samples at ``target_rate_hz``."""
    check_pcm(pcm_s16le, sample_rate_hz, channels)
    out: array.array[float] = array.array("f")
    n_samples = len(pcm_s16le) // (2 * channels)
    if n_samples == 0:
        return out
    frame = av.AudioFrame(
        format="s16", layout="stereo" if channels == 2 else "mono", samples=n_samples
    )
    frame.planes[0].update(pcm_s16le)
    frame.sample_rate = sample_rate_hz
    resampler = av.AudioResampler(format="flt", layout="mono", rate=target_rate_hz)
    for converted in [*resampler.resample(frame), *resampler.resample(None)]:
        out.frombytes(bytes(converted.planes[0])[: converted.samples * 4])
    return out


def float_to_s16le(samples: Sequence[float]) -> bytes:
    """Float samples (clipped to [-1, 1]) as s16le bytes."""
    ints = array.array("h", (int(max(-1.0, min(1.0, s)) * 32767) for s in samples))
    return ints.tobytes()


def tone_s16le(
    frequency_hz: float, duration_s: float, sample_rate_hz: int, *, amplitude: float = 0.5
) -> bytes:
    """A sine tone as mono s16le PCM (for cues and tests)."""
    n = round(duration_s * sample_rate_hz)
    step = 2.0 * math.pi * frequency_hz / sample_rate_hz
    return float_to_s16le([amplitude * math.sin(step * i) for i in range(n)])


def resample_s16le(
    pcm_s16le: bytes,
    sample_rate_hz: int,
    channels: int,
    target_rate_hz: int,
    target_channels: int = 1,
) -> bytes:
    """Interleaved s16le PCM converted to ``target_rate_hz`` / ``target_channels`` (libswresample).

    Speech (espeak-ng: 22.05 kHz) and tones (16 kHz) must reach a speaker at the rate it
    runs at (usually 48 kHz); played at the wrong rate they come out at the wrong pitch and
    length, or the device refuses them.
    """
    check_pcm(pcm_s16le, sample_rate_hz, channels)
    if sample_rate_hz == target_rate_hz and channels == target_channels:
        return pcm_s16le
    n_samples = len(pcm_s16le) // (2 * channels)
    if n_samples == 0:
        return b""
    layouts = {1: "mono", 2: "stereo"}
    if channels not in layouts or target_channels not in layouts:
        raise ValueError(f"only mono and stereo are supported, not {channels}->{target_channels}")
    frame = av.AudioFrame(format="s16", layout=layouts[channels], samples=n_samples)
    frame.planes[0].update(pcm_s16le)
    frame.sample_rate = sample_rate_hz
    resampler = av.AudioResampler(
        format="s16", layout=layouts[target_channels], rate=target_rate_hz
    )
    out = bytearray()
    for converted in [*resampler.resample(frame), *resampler.resample(None)]:
        out += bytes(converted.planes[0])[: converted.samples * 2 * target_channels]
    return bytes(out)
