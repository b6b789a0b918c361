"""A synthetic camera scene for simulated hardware: moving bar, burned-in UTC clock and device id.

The burned-in clock is the pipeline Clock's UTC of the frame, so a viewer can compare what the
picture says with the signed record times. Pure Python (no numpy): the frame is assembled from
pre-built rows with slice assignments.

Failure posture: pure computation; invalid sizes raise ``ValueError`` at construction.
"""

from __future__ import annotations

from datetime import datetime

import av

from agent.media.font import TextRenderer


class SyntheticScene:
    """Renders yuv420p frames of ``width`` x ``height`` for frame index ``n`` at ``utc``."""

    BAR_WIDTH_PX = 16
    BAR_SPEED_PX = 6

    def __init__(self, width: int, height: int, device_id: str) -> None:
        if width < 64 or height < 48 or width % 2 or height % 2:
            raise ValueError(f"frame size must be even and at least 64x48, got {width}x{height}")
        self.width = width
        self.height = height
        self.device_id = device_id
        probe = av.VideoFrame(width, height, "yuv420p")
        self._strides = [plane.line_size for plane in probe.planes]
        self._plane_heights = [height, height // 2, height // 2]
        scale = max(1, min(width // 200, height // 90))
        self._text = TextRenderer(scale=scale)
        self._margin_px = 2 * scale
        y_stride = self._strides[0]
        base = bytearray()
        for row in range(height):
            # A vertical gradient gives the encoder something that is not flat.
            luma = 40 + (row * 120) // height
            base += bytes([luma]) * y_stride
        self._base_y = bytes(base)
        self._u = bytes([150]) * (self._strides[1] * self._plane_heights[1])
        self._v = bytes([110]) * (self._strides[2] * self._plane_heights[2])
        self._bar = bytes([230]) * self.BAR_WIDTH_PX

    @staticmethod
    def clock_text(utc: datetime) -> str:
        """The burned-in clock line for ``utc`` (millisecond resolution)."""
        return utc.strftime("%Y-%m-%d %H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"

    def clock_region(self, utc: datetime) -> tuple[int, int, int, int]:
        """(x, y, width, height) of the burned-in clock line in the luma plane."""
        width = self._text.text_width_px(self.clock_text(utc))
        return self._margin_px, self._margin_px, width, self._text.line_height_px

    def render(self, n: int, utc: datetime) -> av.VideoFrame:
        y_stride = self._strides[0]
        luma = bytearray(self._base_y)
        x = (n * self.BAR_SPEED_PX) % (self.width - self.BAR_WIDTH_PX)
        bar = self._bar
        for row in range(self.height):
            start = row * y_stride + x
            luma[start : start + self.BAR_WIDTH_PX] = bar
        stamp = self.clock_text(utc)
        text = self._text
        top = self._margin_px
        text.draw(luma, y_stride, self.height, self._margin_px, top, stamp)
        top += text.line_height_px + self._margin_px
        text.draw(luma, y_stride, self.height, self._margin_px, top, f"{self.device_id} F{n:07d}")
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        frame.planes[0].update(bytes(luma))
        frame.planes[1].update(self._u)
        frame.planes[2].update(self._v)
        return frame
