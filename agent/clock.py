"""The one clock for media timestamps and record times.

Every part of the agent that needs "now" asks a :class:`Clock`, so a simulated device can run
faster than real time and tests can step time deterministically.

A stepped (fast simulated) clock also owns the timing of whatever else must follow it: a part
asks :meth:`SimulatedClock.call_at` to be called back at a monotonic deadline, and an advance
stops at each due deadline, in order, to call it with the clock reading exactly that deadline.
So LED and buzzer phases change at their own simulated times, however time is advanced.

Failure posture: a clock never raises in normal use. :class:`SystemClock` falls back to a
random per-process boot id (logged once) when ``/proc/sys/kernel/random/boot_id`` cannot be
read, because records must still carry *some* boot identity. A timer callback that raises is
logged and dropped; the advance goes on.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

log = logging.getLogger(__name__)

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
SIMULATED_BOOT_ID = "00000000-0000-4000-8000-000000000000"


class Clock(ABC):
    """Source of wall-clock UTC, monotonic nanoseconds and sleeping.

    Subclasses must override :meth:`utc_now`, :meth:`monotonic_ns` and :meth:`sleep`, and set
    ``boot_id`` in their constructor. They may override :meth:`sleep_until_ns`.
    """

    boot_id: str

    @property
    def stepped(self) -> bool:
        """Time moves only when advanced (then :meth:`SimulatedClock.call_at` times callbacks);
        False: it moves by itself, and a part that waits on it needs its own thread."""
        return False

    @abstractmethod
    def utc_now(self) -> datetime:
        """Current wall-clock time, timezone-aware in UTC."""

    @abstractmethod
    def monotonic_ns(self) -> int:
        """Nanoseconds on a clock that never goes backwards within one boot."""

    @abstractmethod
    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time (real or simulated)."""

    def sleep_until_ns(self, deadline_ns: int) -> None:
        """Wait until :meth:`monotonic_ns` reaches ``deadline_ns`` (no-op if already past)."""
        remaining_ns = deadline_ns - self.monotonic_ns()
        if remaining_ns > 0:
            self.sleep(remaining_ns / 1e9)


def read_boot_id(path: Path = BOOT_ID_PATH) -> str:
    """The kernel's boot id, or a random one (with a warning) when it cannot be read."""
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError as exc:
        fallback = str(uuid.uuid4())
        log.warning("cannot read boot id from %s (%s); using random id %s", path, exc, fallback)
        return fallback


class SystemClock(Clock):
    """The machine's real clocks (``time.time_ns`` / ``time.monotonic_ns``)."""

    def __init__(self, boot_id: str | None = None) -> None:
        self.boot_id = boot_id if boot_id is not None else read_boot_id()

    def utc_now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class Timer:
    """A callback waiting for a stepped clock to reach its deadline (see
    :meth:`SimulatedClock.call_at`)."""

    def __init__(self, deadline_ns: int, callback: Callable[[], None]) -> None:
        self.deadline_ns = deadline_ns
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """It will not be called (idempotent; harmless once called)."""
        self.cancelled = True


class SimulatedClock(Clock):
    """A clock for simulated devices and tests.

    It starts at ``start`` (default: the real current UTC). In fast mode (``realtime=False``)
    time only moves through :meth:`advance_ns` and :meth:`sleep`, which advances instead of
    waiting, so a 30-minute recording can be produced in seconds. A driver attached with
    :meth:`attach_driver` (the stepped simulated capture) makes :meth:`sleep` run the simulated
    world for that long, so waiting on the clock (a button held down, a measurement window)
    produces the media of that time, in the caller's thread, deterministically.
    ``never_ahead_of_real=True`` keeps fast time from passing the machine's real UTC: an advance
    that would, waits (in real time) until it no longer does, so records are never dated in the
    future. In realtime mode it follows the machine's monotonic clock from ``start`` and
    :meth:`advance_ns` adds a jump on top (useful to simulate a clock step). Thread-safe.

    In fast mode, :meth:`call_at` registers a callback for a monotonic deadline: every advance
    (also one made by a driver) stops at each due deadline in turn and calls it there.
    """

    #: the simulated monotonic clock starts here so that 0 is never a valid reading
    MONO_ORIGIN_NS = 1_000_000_000

    def __init__(
        self,
        start: datetime | None = None,
        *,
        realtime: bool = False,
        boot_id: str = SIMULATED_BOOT_ID,
        never_ahead_of_real: bool = False,
    ) -> None:
        if start is None:
            start = datetime.now(UTC)
        elif start.tzinfo is None:
            raise ValueError("SimulatedClock start must be timezone-aware")
        self._start = start.astimezone(UTC)
        self.realtime = realtime
        self.boot_id = boot_id
        self._lock = threading.Lock()
        self._offset_ns = 0
        self._real_origin_ns = time.monotonic_ns()
        self.never_ahead_of_real = never_ahead_of_real
        self._driver: Callable[[int], None] | None = None
        self._timers: list[tuple[int, int, Timer]] = []
        """Heap of (offset at the deadline, registration order, timer)."""
        self._timer_seq = itertools.count()

    @property
    def stepped(self) -> bool:
        return not self.realtime

    def _elapsed_ns(self) -> int:
        with self._lock:
            offset_ns = self._offset_ns
        if self.realtime:
            return offset_ns + (time.monotonic_ns() - self._real_origin_ns)
        return offset_ns

    def utc_now(self) -> datetime:
        return self._start + timedelta(microseconds=self._elapsed_ns() // 1000)

    def monotonic_ns(self) -> int:
        return self.MONO_ORIGIN_NS + self._elapsed_ns()

    def call_at(self, deadline_ns: int, callback: Callable[[], None]) -> Timer:
        """Fast mode: call ``callback`` (in the advancing thread, no lock held) when an advance
        reaches ``deadline_ns`` on :meth:`monotonic_ns`; a deadline already reached is called at
        the next advance. Realtime mode has no stepped time to hook: ValueError."""
        if self.realtime:
            raise ValueError("call_at needs a stepped (fast) simulated clock")
        timer = Timer(deadline_ns, callback)
        with self._lock:
            entry = (deadline_ns - self.MONO_ORIGIN_NS, next(self._timer_seq), timer)
            heapq.heappush(self._timers, entry)
        return timer

    def advance_ns(self, ns: int) -> None:
        """Move time forward by ``ns`` nanoseconds (negative values are refused), stopping at
        each due :meth:`call_at` deadline on the way to call its callback."""
        if ns < 0:
            raise ValueError(f"a clock cannot go backwards (advance_ns({ns}))")
        remaining_ns = ns
        while True:
            with self._lock:
                timer = self._pop_due(self._offset_ns + remaining_ns)
                if timer is None:
                    self._offset_ns += remaining_ns
                    break
                step_ns = max(0, timer.deadline_ns - self.MONO_ORIGIN_NS - self._offset_ns)
                self._offset_ns += step_ns
                remaining_ns -= step_ns
            self._fire(timer)
        if self.never_ahead_of_real and not self.realtime:
            ahead_s = (self.utc_now() - datetime.now(UTC)).total_seconds()
            if ahead_s > 0:
                # Records must never be dated in the future: let real time catch up.
                time.sleep(ahead_s)

    def _pop_due(self, until_offset_ns: int) -> Timer | None:
        """Lock held: the first live timer due by ``until_offset_ns``, taken off the heap."""
        while self._timers and self._timers[0][0] <= until_offset_ns:
            timer = heapq.heappop(self._timers)[2]
            if not timer.cancelled:
                return timer
        return None

    @staticmethod
    def _fire(timer: Timer) -> None:
        if timer.cancelled:
            return
        try:
            timer.callback()
        except Exception:
            # A broken listener must not stop time (the capture drives it frame by frame).
            log.exception("clock timer callback failed")

    def attach_driver(self, driver: Callable[[int], None] | None) -> None:
        """Fast mode: ``sleep(s)`` calls ``driver(ns)``, which must advance this clock by ``ns``
        (e.g. by running the simulated capture for that long). None detaches."""
        self._driver = driver

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self.realtime:
            time.sleep(seconds)
            return
        ns = round(seconds * 1e9)
        driver = self._driver
        if driver is None:
            self.advance_ns(ns)
        else:
            driver(ns)
