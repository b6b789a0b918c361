"""Capture-thread liveness for the systemd watchdog: is the camera/microphone thread still turning?

The media watchdog (:mod:`agent.media.watchdog`) notices a device that stops delivering data and
restarts it, but it runs on the capture thread: if that thread itself hangs (a driver call that
never returns, a deadlock), nothing inside the process can repair it. The capture thread calls
:meth:`CaptureLiveness.beat` once per loop turn; the agent's main loop pings systemd's watchdog
only while :meth:`CaptureLiveness.stalled` is False, so a hung capture thread gets the whole
agent restarted by systemd (``WatchdogSec=``), exactly like a hung main loop.

Times are real monotonic seconds (``time.monotonic``): systemd's watchdog counts real time, and
simulated media time may stand still on purpose.

Failure posture: never raises. A capture thread that has exited (capture stopped on purpose) is
not stalled. :meth:`inject_hang` exists for bench and installation tests (sim-control
``hang-capture``): the next :meth:`beat` blocks that thread for good, as a hung driver call does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

DEFAULT_STALL_S = 10.0
"""A loop turn takes one frame period; ten seconds without one is a hang, not load."""


class CaptureLiveness:
    def __init__(
        self, stall_s: float = DEFAULT_STALL_S, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.stall_s = stall_s
        self._now = now
        self._lock = threading.Lock()
        self._last_beat: float | None = None
        self._thread: threading.Thread | None = None
        self._hang = threading.Event()
        self._released = threading.Event()
        self._reported = False

    def beat(self) -> None:
        """Called by the capture thread once per loop turn."""
        with self._lock:
            self._last_beat = self._now()
            self._thread = threading.current_thread()
        if self._hang.is_set():
            log.error("capture thread %s hangs (injected)", threading.current_thread().name)
            self._released.wait()
            with self._lock:
                self._last_beat = self._now()

    def stalled(self) -> bool:
        """True when the capture thread is alive but has not turned for ``stall_s``."""
        with self._lock:
            last, thread = self._last_beat, self._thread
        if last is None or thread is None or not thread.is_alive():
            return False
        silent = self._now() - last
        stalled = silent > self.stall_s
        if stalled and not self._reported:
            log.error(
                "capture thread %s silent for %.1f s: withholding the watchdog ping",
                thread.name,
                silent,
            )
        elif not stalled and self._reported:
            log.warning("capture thread %s turning again", thread.name)
        self._reported = stalled
        return stalled

    def silent_for_s(self) -> float:
        with self._lock:
            last = self._last_beat
        return 0.0 if last is None else max(0.0, self._now() - last)

    def inject_hang(self) -> None:
        """Bench testing: the capture thread blocks at its next beat until :meth:`release`."""
        self._hang.set()

    def release(self) -> None:
        self._hang.clear()
        self._released.set()
        self._released = threading.Event()
