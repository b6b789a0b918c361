"""Typed markers by button pattern and reminders in a scheduled window, on the simulated device
(gpiozero MockFactory buttons, stepped simulated capture, real espeak-ng speech, real spool).

A mark press signs the marker the assignment's stage expects next and the device speaks it; a
mark hold signs ``obstruction`` with its own signal (Art. 10, 18, 20, 26). While the
assignment's scheduled window is active and the device is not recording, it reminds the officer
(speech + vibration) every ``reminder_interval_s``; recording stops the reminders.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.hardware.controls import Signal
from agent.recorder import State
from agent.reminders import REMINDER_ZH
from agent.simulation import Simulation
from evidence.records import RecordType, format_utc
from evidence.verify import verify_tree
from tests.support.simulation import START, Simulations, records_of


def _assignment(spool: Path, stage: str, window: tuple[datetime, datetime] | None = None) -> None:
    """What the uplink stores when the receiver pushes an assignment."""
    body = {"case": "JY-2026-0042", "officers": ["王芳"], "place": "某培训学校", "reason": "检查",
            "target": "某培训学校", "stage": stage}  # fmt: skip
    if window is not None:
        body["window"] = {"start_utc": format_utc(window[0]), "end_utc": format_utc(window[1])}
    state = spool / "state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "assignment.json").write_text(json.dumps(body, ensure_ascii=False), encoding="utf-8")


def _base(cfg: AgentConfig) -> None:
    cfg.capture.pre_event_s = 1.0
    cfg.hardware.controls.mark_hold_time_s = 1.0
    cfg.recording.reminder_interval_s = 10.0


@pytest.fixture
def make_sim(tmp_path: Path) -> Iterator[Callable[..., Simulation]]:
    with Simulations(tmp_path / "spool", _base) as sims:

        def make(stage: str, window: tuple[datetime, datetime] | None = None) -> Simulation:
            return sims.make(lambda cfg: _assignment(cfg.spool_path, stage, window))

        yield make


def _spoken(sim: Simulation) -> list[str]:
    return [p.text for p in sim.recorder.speaker.played]


def test_mark_presses_follow_the_stage_and_a_hold_signs_obstruction(
    make_sim: Callable[..., Simulation],
) -> None:
    sim = make_sim("inspection")
    sim.advance(1.5)
    sim.press_record()
    assert sim.state == State.RECORDING
    assert sim.until_quiet()  # the preamble
    for _ in range(3):
        sim.press_mark()
        assert sim.until_quiet()
    sim.controls.history.clear()
    sim.hold_mark()
    assert sim.until_quiet()
    assert Signal.OBSTRUCTION in sim.controls.history
    sim.hold_record()
    assert sim.state == State.IDLE
    markers = [r.body["kind"] for r in records_of(sim) if r.type == RecordType.MARKER]
    assert markers == ["arrival", "departure", "important", "obstruction"]
    spoken = [t for t in _spoken(sim) if t.startswith("已标记")]
    assert spoken == [
        "已标记：到达现场，拍摄入口",
        "已标记：离开现场，拍摄入口",
        "已标记：重要时刻",
        "已标记：执法受阻",
    ]
    report = verify_tree(sim.rt.spool.root)
    assert report.ok, [str(v) for v in report.violations]


def test_service_stage_offers_document_served_first(make_sim: Callable[..., Simulation]) -> None:
    sim = make_sim("service")
    sim.advance(1.5)
    sim.press_record()
    sim.press_mark()
    sim.hold_record()
    markers = [r.body["kind"] for r in records_of(sim) if r.type == RecordType.MARKER]
    assert markers == ["document-served"]


def test_reminder_during_the_window_until_recording_starts(
    make_sim: Callable[..., Simulation],
) -> None:
    window = (START - timedelta(minutes=1), START + timedelta(minutes=30))
    sim = make_sim("inspection", window)
    sim.advance(25)
    assert len(sim.recorder.reminders) == 3  # at once, then every 10 s
    assert Signal.REMINDER in sim.controls.history
    assert _spoken(sim).count(REMINDER_ZH) == 3
    sim.press_record()
    assert sim.state == State.RECORDING
    sim.advance(30)
    assert len(sim.recorder.reminders) == 3  # none while recording


def test_no_reminder_outside_the_window(make_sim: Callable[..., Simulation]) -> None:
    later = (START + timedelta(hours=2), START + timedelta(hours=3))
    sim = make_sim("inspection", later)
    sim.advance(25)
    assert not sim.recorder.reminders


def test_officer_pause_with_a_cause_is_a_signed_gap(make_sim: Callable[..., Simulation]) -> None:
    from agent.recorder import PAUSE_ARM_ZH, PAUSED_ZH

    sim = make_sim("inspection")
    sim.advance(1.5)
    sim.press_record()
    assert sim.until_quiet()
    sim.advance(3)
    sim.press_record()  # arms the pause only: a stray touch does not interrupt
    assert sim.state == State.RECORDING
    sim.press_record()
    assert sim.state == State.PAUSED
    sim.press_mark()  # weather
    sim.press_mark()  # obstruction
    assert sim.until_quiet()
    sim.advance(5)
    sim.press_record()
    assert sim.state == State.RECORDING
    sim.advance(3)
    assert sim.until_quiet()
    sim.hold_record()
    records = records_of(sim)
    [gap] = [r for r in records if r.type == RecordType.GAP]
    assert gap.body["cause"] == "obstruction"
    assert gap.body["spoken_reason"] is True
    assert not [r for r in records if r.type == RecordType.MARKER]  # choosing is not marking
    segments = [r for r in records if r.type == RecordType.SEGMENT]
    assert any(s.seq > gap.seq for s in segments)
    assert any(s.seq < gap.seq for s in segments)
    spoken = _spoken(sim)
    assert PAUSE_ARM_ZH in spoken
    assert PAUSED_ZH in spoken
    assert "中断原因：天气" in spoken
    assert "中断原因：执法受阻" in spoken
    report = verify_tree(sim.rt.spool.root)
    assert report.ok, [str(v) for v in report.violations]


def test_a_single_press_while_recording_expires_without_pausing(
    make_sim: Callable[..., Simulation],
) -> None:
    sim = make_sim("inspection")
    sim.advance(1.5)
    sim.press_record()
    sim.press_record()  # armed
    sim.advance(4)  # longer than the confirmation window
    sim.press_record()  # arms again, does not pause
    assert sim.state == State.RECORDING
    sim.hold_record()
    assert not [r for r in records_of(sim) if r.type == RecordType.GAP]


def test_pause_without_a_chosen_cause_is_a_manual_pause(
    make_sim: Callable[..., Simulation],
) -> None:
    sim = make_sim("inspection")
    sim.advance(1.5)
    sim.press_record()
    sim.press_record()
    sim.press_record()
    assert sim.state == State.PAUSED
    sim.advance(2)
    sim.hold_record()  # the session ends while paused: the gap is still signed
    assert sim.state == State.IDLE
    [gap] = [r for r in records_of(sim) if r.type == RecordType.GAP]
    assert gap.body["cause"] == "manual-pause"
    assert gap.body["spoken_reason"] is False
    report = verify_tree(sim.rt.spool.root)
    assert report.ok, [str(v) for v in report.violations]
