"""The burned-in overlay of the Pi backend: local time and device id in the picture.

picamera2 calls ``pre_callback(request)`` with every frame before the encoder sees it; the Pi
backend draws there into the YUV420 luma plane (``MappedArray(request, "main")``). The text is
the frame's local wall-clock time to the second with the UTC offset, then the device id, e.g.
``2026-12-02 09:41:07 +0800 PI-0042``; a viewer can compare it with the signed record times.

Cost: the line is rendered once per second into a small block and then copied row by row (one
slice assignment per row), so a Zero 2 W pays a few hundred microseconds per frame, not a
re-render.

Failure posture: pure computation on a buffer; text the font lacks is drawn as boxes, a frame
smaller than the text is clipped, never an exception into the camera thread (the caller logs
any surprise and the frame goes out without overlay).
"""

from __future__ import annotations

from datetime import datetime, tzinfo

from agent.media.font import TextRenderer


class Overlay:
    def __init__(self, width: int, height: int, device_id: str, tz: tzinfo | None = None) -> None:
        self.width = width
        self.height = height
        self.device_id = device_id
        self.tz = tz
        scale = max(1, min(width // 320, height // 180))
        self.renderer = TextRenderer(scale=scale)
        self.margin_px = 2 * scale
        self._text = ""
        self._rows: list[bytes] = []

    def text_for(self, utc: datetime) -> str:
        local = utc.astimezone(self.tz)
        return f"{local:%Y-%m-%d %H:%M:%S %z} {self.device_id}"

    def region(self, text: str) -> tuple[int, int, int, int]:
        """(x, y, width, height) of ``text`` in the luma plane, clipped to the frame."""
        width = min(self.renderer.text_width_px(text), self.width - self.margin_px)
        height = min(self.renderer.line_height_px, self.height - self.margin_px)
        return self.margin_px, self.margin_px, max(0, width), max(0, height)

    def render_block(self, text: str) -> list[bytes]:
        """The text as rows of luma bytes (cached while the text stays the same)."""
        if text != self._text:
            width = self.renderer.text_width_px(text)
            height = self.renderer.line_height_px
            block = bytearray(width * height)
            self.renderer.draw(block, width, height, 0, 0, text)
            self._rows = [bytes(block[r * width : (r + 1) * width]) for r in range(height)]
            self._text = text
        return self._rows

    def burn(self, luma: memoryview, stride: int, utc: datetime) -> str:
        """Draw the overlay for ``utc`` into ``luma`` (the Y plane, ``stride`` bytes a row)."""
        text = self.text_for(utc)
        x, y, width, height = self.region(text)
        rows = self.render_block(text)
        limit = min(width, stride - x)
        for r in range(height):
            start = (y + r) * stride + x
            luma[start : start + limit] = rows[r][:limit]
        return text
