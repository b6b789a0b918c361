"""Frame accounting from sensor timestamps: how many frames never reached the file.

A camera delivers one frame every frame period; its ``SensorTimestamp`` says when each was
exposed. When the pipeline falls behind (CPU, memory, a slow card) frames are dropped before the
encoder, and the next timestamp jumps by several periods. :func:`dropped_between` turns such a
gap into a count; the Pi backend sums it per segment into the signed ``segment`` record.

Failure posture: pure arithmetic; timestamps that go backwards or repeat count as 0 dropped
(they are reported elsewhere as a timing problem), never negative.
"""

from __future__ import annotations


def dropped_between(previous_us: int, current_us: int, frame_us: float) -> int:
    """Frames missing between two consecutive delivered frames (half-period tolerance)."""
    if frame_us <= 0:
        raise ValueError(f"frame_us must be > 0, got {frame_us}")
    gap = current_us - previous_us
    if gap <= 0:
        return 0
    return max(0, int((gap + frame_us / 2) // frame_us) - 1)
