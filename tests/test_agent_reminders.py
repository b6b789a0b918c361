"""Reminders during a scheduled window (missed-recording prevention), the I/O-free schedule."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.reminders import ReminderSchedule, Window, load_window, parse_window

T0 = datetime(2026, 12, 3, 1, 0, tzinfo=UTC)
WINDOW = Window(T0, T0 + timedelta(hours=1))


def _due(s: ReminderSchedule, minutes: float, recording: bool = False) -> bool:
    return s.due(WINDOW, T0 + timedelta(minutes=minutes), round(minutes * 60e9), recording)


def test_reminds_at_once_then_every_interval_while_not_recording() -> None:
    s = ReminderSchedule(120)
    assert not s.due(WINDOW, T0 - timedelta(minutes=1), 0, False)  # before the window
    assert _due(s, 0)
    assert not _due(s, 1)
    assert _due(s, 2)
    assert not _due(s, 3.9)
    assert _due(s, 4)


def test_recording_stops_reminders_and_a_stop_waits_a_full_interval() -> None:
    s = ReminderSchedule(120)
    assert _due(s, 0)
    assert not _due(s, 2, recording=True)
    assert not _due(s, 10, recording=True)
    assert not _due(s, 11)
    assert _due(s, 12)


def test_no_reminder_after_the_window_or_without_one() -> None:
    s = ReminderSchedule(120)
    assert not _due(s, 60)
    assert not _due(s, 90)
    assert not s.due(None, T0, 0, False)


def test_window_from_the_assignment_message(tmp_path: Path) -> None:
    start, end = "2026-12-03T01:00:00.000000Z", "2026-12-03T02:00:00.000000Z"
    good = {"case": "C1", "window": {"start_utc": start, "end_utc": end}}
    assert parse_window(good) == WINDOW
    assert parse_window({"case": "C1"}) is None
    assert parse_window({"window": {"start_utc": "yesterday", "end_utc": None}}) is None
    assert parse_window({"window": {"start_utc": end, "end_utc": start}}) is None
    assert load_window(tmp_path) is None
    (tmp_path / "assignment.json").write_text(json.dumps(good))
    assert load_window(tmp_path) == WINDOW
    (tmp_path / "assignment.json").write_text("{not json")
    assert load_window(tmp_path) is None
