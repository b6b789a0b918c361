"""Real small MPEG-TS clips (H.264 + AAC) made with ffmpeg, for spools built in tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCES = ("testsrc", "testsrc2", "smptebars", "rgbtestsrc", "mandelbrot", "yuvtestsrc")


def make_clips(directory: Path, count: int = 3, *, seconds: float = 1.0) -> list[Path]:
    """``count`` distinct clips (different test patterns, so different bytes)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("ffmpeg is not installed (scripts/setup installs it)")
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        path = directory / f"clip{i}.ts"
        if not path.exists():
            src = SOURCES[i % len(SOURCES)]
            subprocess.run(
                [
                    ffmpeg,
                    "-loglevel",
                    "error",
                    "-y",
                    "-f",
                    "lavfi",
                    "-i",
                    f"{src}=size=320x240:rate=15",
                    "-f",
                    "lavfi",
                    "-i",
                    f"sine=frequency={300 + 100 * i}:sample_rate=16000",
                    "-t",
                    str(seconds),
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-g",
                    "15",
                    "-c:a",
                    "aac",
                    "-b:a",
                    "32k",
                    "-f",
                    "mpegts",
                    str(path),
                ],
                check=True,
            )
        out.append(path)
    return out
