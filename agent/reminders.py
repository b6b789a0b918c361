"""Missed-recording prevention on the device: reminders during an assignment's scheduled window.

The receiver pushes an assignment with an optional ``window`` ({``start_utc``, ``end_utc``});
while the window is active and the device is not recording, the officer is reminded (spoken +
vibration) every ``interval_s`` on the device's clock, starting as soon as the window opens.
Starting to record stops the reminders; stopping inside the window starts them again after a
full interval. :class:`ReminderSchedule` is I/O-free: the recorder asks it on each tick.

Failure posture: a missing, unreadable or malformed window means no reminders (logged once);
never an exception into the recorder's loop.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from evidence.errors import RecordFormatError
from evidence.records import parse_utc

log = logging.getLogger(__name__)

REMINDER_ZH = "提醒：现在是计划执法时间，尚未开始录像，请按录像键。"
ASSIGNMENT_FILE = "assignment.json"


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    def active(self, now: datetime) -> bool:
        return self.start <= now < self.end


def parse_window(assignment: Any) -> Window | None:
    """The ``window`` of an assignment message; None when absent or malformed."""
    if not isinstance(assignment, dict) or not isinstance(assignment.get("window"), dict):
        return None
    w = assignment["window"]
    try:
        window = Window(parse_utc(w.get("start_utc")), parse_utc(w.get("end_utc")))
    except RecordFormatError as exc:
        log.warning("assignment window ignored: %s", exc)
        return None
    return window if window.end > window.start else None


def load_window(state_dir: Path) -> Window | None:
    """The window of the assignment the device holds (``state/assignment.json``)."""
    path = state_dir / ASSIGNMENT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s for its window: %s", path, exc)
        return None
    return parse_window(data)


class ReminderSchedule:
    """When to remind: the window is active, the device is not recording, and ``interval_ns``
    has passed since the last reminder (or since recording stopped)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_ns = max(1, round(interval_s * 1e9))
        self._next_ns: int | None = None
        """None: remind at once when due (the window just opened)."""

    def due(self, window: Window | None, now: datetime, now_ns: int, recording: bool) -> bool:
        if recording:
            self._next_ns = now_ns + self.interval_ns  # a later stop waits a full interval
            return False
        if window is None or not window.active(now):
            self._next_ns = None
            return False
        if self._next_ns is not None and now_ns < self._next_ns:
            return False
        self._next_ns = now_ns + self.interval_ns
        return True
