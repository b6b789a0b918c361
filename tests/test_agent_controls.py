"""Buttons and signals on gpiozero's own MockFactory pins (press, hold, mark, LEDs)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from agent.config import ControlsConfig
from agent.hardware.controls import ButtonEvent, Signal, SimulatedControls

HOLD_S = 0.3


@pytest.fixture
def controls() -> Iterator[SimulatedControls]:
    c = SimulatedControls(ControlsConfig(hold_time_s=HOLD_S))
    try:
        yield c
    finally:
        c.close()
        c.mock_factory.reset()


def _events(c: SimulatedControls) -> list[ButtonEvent]:
    events: list[ButtonEvent] = []
    c.on_event = events.append
    return events


def _settle(events: list[ButtonEvent], count: int, timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(events) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # and nothing more arrives


def test_short_press_is_one_press(controls: SimulatedControls) -> None:
    events = _events(controls)
    controls.press_record(0.05)
    _settle(events, 1)
    assert events == [ButtonEvent.RECORD_PRESS]


def test_long_press_is_a_hold_and_not_also_a_press(controls: SimulatedControls) -> None:
    events = _events(controls)
    controls.press_record(HOLD_S + 0.3)
    _settle(events, 1)
    assert events == [ButtonEvent.RECORD_HOLD]


def test_hold_flag_resets_so_the_next_short_press_is_a_press(controls: SimulatedControls) -> None:
    events = _events(controls)
    controls.hold_record()
    _settle(events, 1)
    controls.press_record(0.05)
    _settle(events, 2)
    assert events == [ButtonEvent.RECORD_HOLD, ButtonEvent.RECORD_PRESS]


def test_mark_button_marks_on_every_press(controls: SimulatedControls) -> None:
    events = _events(controls)
    controls.press_mark()
    controls.press_mark()
    _settle(events, 2)
    assert events == [ButtonEvent.MARK, ButtonEvent.MARK]


def test_signals_are_distinct_on_the_leds(controls: SimulatedControls) -> None:
    controls.signal(Signal.READY)
    time.sleep(0.02)
    ready = controls.led_states()
    assert ready == {"green": True, "red": False, "amber": False}
    controls.signal(Signal.RECORDING)
    time.sleep(0.05)  # inside the first 0.2 s "on" phase of the red blink
    assert controls.led_states()["green"] is False
    assert controls.led_states()["red"] is True
    controls.signal(Signal.FAULT)
    time.sleep(0.02)
    assert controls.led_states()["amber"] is True
    controls.signal(Signal.OFF)
    time.sleep(0.05)
    assert controls.led_states() == {"green": False, "red": False, "amber": False}


def test_buzzer_beeps_for_a_refusal(controls: SimulatedControls) -> None:
    buzzer_pin = controls.mock_factory.pin(ControlsConfig().buzzer_pin)
    buzzer_pin.clear_states()
    controls.signal(Signal.REFUSED)
    time.sleep(0.1)
    assert any(state for _, state in buzzer_pin.states), "the buzzer never sounded"


def test_a_broken_handler_does_not_kill_the_button(controls: SimulatedControls) -> None:
    seen: list[ButtonEvent] = []

    def handler(event: ButtonEvent) -> None:
        seen.append(event)
        raise RuntimeError("agent bug")

    controls.on_event = handler
    controls.press_mark()
    controls.press_mark()
    _settle(seen, 2)
    assert seen == [ButtonEvent.MARK, ButtonEvent.MARK]
