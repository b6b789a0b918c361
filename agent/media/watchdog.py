"""No-data watchdog: notices when a camera or microphone stops delivering.

Both backends use it the same way: ``feed()`` on every frame (or audio buffer), ``check()``
periodically with the current monotonic time. A stream counts as failed once nothing arrived for
``timeout_s``; it counts as back as soon as something arrives again.

Failure posture: pure bookkeeping, never raises; the caller decides what a failure means.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class WatchdogEvent(Enum):
    FAILED = "failed"
    RECOVERED = "recovered"


@dataclass
class FrameWatchdog:
    """Tracks one data stream. Times are monotonic nanoseconds from the pipeline's Clock."""

    name: str
    timeout_s: float
    last_feed_ns: int | None = None
    last_end_ns: int | None = None
    failed: bool = False
    armed_at_ns: int | None = None

    def arm(self, now_ns: int) -> None:
        """Start watching (e.g. when the device is opened): no data after this is a failure."""
        self.armed_at_ns = now_ns
        self.last_feed_ns = None
        self.last_end_ns = None
        self.failed = False

    def disarm(self) -> None:
        self.armed_at_ns = None
        self.failed = False

    def feed(self, now_ns: int, end_ns: int | None = None) -> WatchdogEvent | None:
        """Data arrived at ``now_ns`` (media up to ``end_ns``); RECOVERED if it was down."""
        self.last_feed_ns = now_ns
        self.last_end_ns = end_ns if end_ns is not None else now_ns
        if self.failed:
            self.failed = False
            return WatchdogEvent.RECOVERED
        return None

    def check(self, now_ns: int) -> WatchdogEvent | None:
        """FAILED once when nothing arrived for ``timeout_s``; else None."""
        if self.armed_at_ns is None or self.failed:
            return None
        since_ns = self.last_feed_ns if self.last_feed_ns is not None else self.armed_at_ns
        if now_ns - since_ns >= self.timeout_s * 1e9:
            self.failed = True
            return WatchdogEvent.FAILED
        return None

    def silent_for_s(self, now_ns: int) -> float:
        since_ns = self.last_feed_ns if self.last_feed_ns is not None else self.armed_at_ns
        if since_ns is None:
            return 0.0
        return max(0.0, (now_ns - since_ns) / 1e9)
