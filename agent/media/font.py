"""A 5x7 bitmap font for burning the clock and device id into simulated video.

Failure posture: characters the font does not have are drawn as a hollow box, never raised.
"""

from __future__ import annotations

GLYPH_WIDTH = 5
GLYPH_HEIGHT = 7

# Each glyph: 7 rows of 5 pixels, "#" = ink.
_GLYPHS: dict[str, tuple[str, ...]] = {
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "B": ("####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "D": ("###..", "#..#.", "#...#", "#...#", "#...#", "#..#.", "###.."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "F": ("#####", "#....", "#....", "####.", "#....", "#....", "#...."),
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "I": (".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "J": ("..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "N": ("#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "Q": (".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "V": ("#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."),
    "W": ("#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."),
    "X": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
    "Y": ("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."),
    "Z": ("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"),
    "-": (".....", ".....", ".....", "#####", ".....", ".....", "....."),
    ":": (".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."),
    ".": (".....", ".....", ".....", ".....", ".....", ".##..", ".##.."),
    "/": ("....#", "...#.", "...#.", "..#..", ".#...", ".#...", "#...."),
    "_": (".....", ".....", ".....", ".....", ".....", ".....", "#####"),
    "+": (".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."),
    " ": (".....", ".....", ".....", ".....", ".....", ".....", "....."),
}
_UNKNOWN = ("#####", "#...#", "#...#", "#...#", "#...#", "#...#", "#####")


def glyph_rows(char: str) -> tuple[str, ...]:
    """The 7 rows of ``char`` (upper-cased); a hollow box when the font lacks it."""
    return _GLYPHS.get(char.upper(), _UNKNOWN)


class TextRenderer:
    """Renders text into an 8-bit luma plane (a ``bytearray`` with a given row stride).

    Glyphs are pre-scaled once per instance so drawing a line costs one slice assignment per
    glyph row, which keeps a pure-Python renderer cheap enough for 30 frames per second.
    """

    def __init__(self, scale: int = 2, *, ink: int = 235, paper: int = 16, spacing_px: int = 2):
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        self.scale = scale
        self.ink = ink
        self.paper = paper
        self.spacing_px = spacing_px
        self._cache: dict[str, list[bytes]] = {}

    @property
    def cell_width_px(self) -> int:
        return GLYPH_WIDTH * self.scale + self.spacing_px

    @property
    def line_height_px(self) -> int:
        return GLYPH_HEIGHT * self.scale

    def _scaled(self, char: str) -> list[bytes]:
        rows = self._cache.get(char)
        if rows is None:
            rows = []
            spacer = bytes([self.paper]) * self.spacing_px
            for pattern in glyph_rows(char):
                line = b"".join(
                    bytes([self.ink if px == "#" else self.paper]) * self.scale for px in pattern
                )
                rows.extend([line + spacer] * self.scale)
            self._cache[char] = rows
        return rows

    def text_width_px(self, text: str) -> int:
        return len(text) * self.cell_width_px

    def draw(self, plane: bytearray, stride: int, height: int, x: int, y: int, text: str) -> None:
        """Draw ``text`` with its top-left corner at (``x``, ``y``), clipped to the plane."""
        for i, char in enumerate(text):
            left = x + i * self.cell_width_px
            if left >= stride:
                break
            for r, row in enumerate(self._scaled(char)):
                top = y + r
                if top < 0 or top >= height:
                    continue
                start = top * stride + left
                visible = row[: max(0, stride - left)]
                plane[start : start + len(visible)] = visible
