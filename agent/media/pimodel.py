"""Which Raspberry Pi this is, and what that means for video encoding.

Read from ``/proc/device-tree/model`` (e.g. ``Raspberry Pi 5 Model B Rev 1.0``, NUL-terminated):

============================  ==========  ============  =========================================
model                         H.264       frame rate    why
============================  ==========  ============  =========================================
Pi 5                          libx264     <= 25 fps     no hardware encoder (picamera2 falls back
                              (software)                 to libx264 and assumes 30 fps unless
                                                         told); 720p25 ultrafast costs about one
                                                         A76 core
Pi 4 / 400 / CM4              V4L2 (hw)   <= 30 fps     hardware encoder, 1080p30 max
Zero 2 W                      V4L2 (hw)   <= 25 fps     512 MB RAM, 4x A53: keep 720p25; the
                                                         30 s pre-event buffer at 4 Mbit/s is
                                                         ~15 MB of encoded packets
Pi 3 and others               V4L2 (hw)   <= 25 fps     as the Zero 2 W
not a Pi (fake camera)        as config   as config
============================  ==========  ============  =========================================

Failure posture: an unreadable or unknown model is "not a Pi": the configuration is used as it
is and a warning names what was read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MODEL_PATH = Path("/proc/device-tree/model")


@dataclass(frozen=True)
class EncoderPlan:
    model: str
    software_h264: bool
    """True: libx264 through picamera2's LibavH264Encoder (no V4L2 H.264 block)."""
    max_fps: int | None
    """Frame rate cap for this model (None: whatever is configured)."""
    threads: int = 0
    """libx264 threads (0: libav chooses); the Pi 5 keeps one core for the rest of the agent."""


def read_model(path: Path = MODEL_PATH) -> str:
    try:
        return path.read_bytes().rstrip(b"\x00\n").decode("utf-8", "replace")
    except OSError:
        return ""


def plan_for(model: str) -> EncoderPlan:
    if model.startswith("Raspberry Pi 5") or model.startswith("Raspberry Pi Compute Module 5"):
        return EncoderPlan(model, software_h264=True, max_fps=25, threads=3)
    if model.startswith(("Raspberry Pi 4", "Raspberry Pi 400", "Raspberry Pi Compute Module 4")):
        return EncoderPlan(model, software_h264=False, max_fps=30)
    if model.startswith("Raspberry Pi"):
        return EncoderPlan(model, software_h264=False, max_fps=25)
    if model:
        log.warning("unknown board %r: using the configured encoder settings", model)
    return EncoderPlan(model or "not a Raspberry Pi", software_h264=False, max_fps=None)


def effective_fps(configured: int, plan: EncoderPlan) -> int:
    if plan.max_fps is not None and configured > plan.max_fps:
        log.warning("%s: %d fps configured, capped at %d fps", plan.model, configured, plan.max_fps)
        return plan.max_fps
    return configured
