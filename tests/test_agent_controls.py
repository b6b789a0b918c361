"""Buttons and signals on gpiozero's own MockFactory pins (press, hold, mark, bounce, LEDs).

Presses are timed on an injected simulated clock: a finger holding a button down advances it,
so a hold is a hold however loaded the machine is. Mock pins call the button handlers in the
thread that drives them, so every event has arrived when the finger helper returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from agent.clock import SimulatedClock
from agent.config import ControlsConfig
from agent.hardware.controls import ButtonEvent, ButtonLogic, Signal, SimulatedControls

HOLD_S = 0.3
BOUNCE_S = 0.05
MS = 1_000_000


@pytest.fixture
def controls() -> Iterator[SimulatedControls]:
    c = SimulatedControls(
        ControlsConfig(hold_time_s=HOLD_S, bounce_time_s=BOUNCE_S), clock=SimulatedClock()
    )
    try:
        yield c
    finally:
        c.close()
        c.mock_factory.reset()


def _events(c: SimulatedControls) -> list[ButtonEvent]:
    events: list[ButtonEvent] = []
    c.on_event = events.append
    return events


def _wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """For gpiozero's own LED/buzzer threads, which run on real time."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_short_press_is_one_press(controls: SimulatedControls) -> None:
    events = _events(controls)
    controls.press_record(0.05 + BOUNCE_S)
    assert events == [ButtonEvent.RECORD_PRESS]


def test_long_press_is_a_hold_and_not_also_a_press(controls: SimulatedControls) -> None:
    events = _events(controls)
    controls.press_record(HOLD_S + 0.3)
    assert events == [ButtonEvent.RECORD_HOLD]


def test_press_just_under_the_hold_time_is_a_press(controls: SimulatedControls) -> None:
    events = _events(controls)
    controls.press_record(HOLD_S - 0.001)
    controls.press_record(HOLD_S)
    assert events == [ButtonEvent.RECORD_PRESS, ButtonEvent.RECORD_HOLD]


def test_hold_flag_resets_so_the_next_short_press_is_a_press(controls: SimulatedControls) -> None:
    events = _events(controls)
    controls.hold_record()
    controls.press_record(0.1)
    assert events == [ButtonEvent.RECORD_HOLD, ButtonEvent.RECORD_PRESS]


def test_bouncy_release_after_a_hold_is_one_hold(controls: SimulatedControls) -> None:
    events = _events(controls)
    pin = controls.cfg.record_pin
    # press (chatter 2 ms, 1 ms), held 1 s, release (bounces 3 ms later for 2 ms), quiet
    controls.bounce(pin, [0.0, 0.002, 0.001, 1.0, 0.003, 0.002])
    assert events == [ButtonEvent.RECORD_HOLD]
    controls.press_record(0.1)  # the next real press is still a press
    assert events == [ButtonEvent.RECORD_HOLD, ButtonEvent.RECORD_PRESS]


def test_bouncy_short_press_is_one_press(controls: SimulatedControls) -> None:
    events = _events(controls)
    controls.bounce(controls.cfg.record_pin, [0.0, 0.001, 0.002, 0.15, 0.004, 0.001])
    assert events == [ButtonEvent.RECORD_PRESS]


def test_one_bouncy_mark_press_is_one_marker(controls: SimulatedControls) -> None:
    events = _events(controls)
    pin = controls.cfg.mark_pin
    controls.bounce(pin, [0.0, 0.002, 0.001, 0.003, 0.001, 0.12, 0.002, 0.001, 0.003, 0.002])
    assert events == [ButtonEvent.MARK]
    controls.press_mark()
    assert events == [ButtonEvent.MARK, ButtonEvent.MARK]


def test_a_contact_shorter_than_the_bounce_time_is_noise(controls: SimulatedControls) -> None:
    events = _events(controls)
    controls.bounce(controls.cfg.record_pin, [0.0, 0.01])
    controls.press_record(0.1)
    assert events == [ButtonEvent.RECORD_PRESS]


def test_button_logic_without_debounce_counts_every_edge() -> None:
    logic = ButtonLogic(0, hold_ns=300 * MS)
    decided = [logic.pressed(0), logic.released(1 * MS), logic.pressed(2 * MS)]
    decided.append(logic.released(400 * MS))
    assert decided == [None, ButtonEvent.RECORD_PRESS, None, ButtonEvent.RECORD_HOLD]


def test_bounce_time_reaches_gpiozero(controls: SimulatedControls) -> None:
    # On a Pi, lgpio filters with it; the mock pins store it (and our logic filters).
    assert controls.record_button.pin.bounce == pytest.approx(BOUNCE_S)
    assert controls.mark_button.pin.bounce == pytest.approx(BOUNCE_S)


def test_mark_button_marks_on_every_press(controls: SimulatedControls) -> None:
    events = _events(controls)
    controls.press_mark()
    controls.press_mark()
    assert events == [ButtonEvent.MARK, ButtonEvent.MARK]


def test_signals_are_distinct_on_the_leds(controls: SimulatedControls) -> None:
    pins = {
        name: controls.mock_factory.pin(pin)
        for name, pin in (
            ("green", controls.cfg.led_green_pin),
            ("red", controls.cfg.led_red_pin),
            ("amber", controls.cfg.led_amber_pin),
        )
        if pin is not None
    }
    controls.signal(Signal.READY)  # steady outputs are set before signal() returns
    assert controls.led_states() == {"green": True, "red": False, "amber": False}
    pins["red"].clear_states()
    controls.signal(Signal.RECORDING)
    assert controls.led_states()["green"] is False
    # The red blink runs on gpiozero's thread: wait until its pin has been switched on.
    _wait_until(lambda: any(s.state for s in pins["red"].states[1:]))
    controls.signal(Signal.FAULT)
    assert controls.led_states()["amber"] is True
    controls.signal(Signal.OFF)
    assert controls.led_states() == {"green": False, "red": False, "amber": False}


def test_buzzer_beeps_for_a_refusal(controls: SimulatedControls) -> None:
    buzzer_pin = controls.mock_factory.pin(ControlsConfig().buzzer_pin)
    buzzer_pin.clear_states()
    controls.signal(Signal.REFUSED)
    _wait_until(lambda: any(s.state for s in buzzer_pin.states[1:]))
    assert controls.last_signal == Signal.REFUSED


def test_a_broken_handler_does_not_kill_the_button(controls: SimulatedControls) -> None:
    seen: list[ButtonEvent] = []

    def handler(event: ButtonEvent) -> None:
        seen.append(event)
        raise RuntimeError("agent bug")

    controls.on_event = handler
    controls.press_mark()
    controls.press_mark()
    assert seen == [ButtonEvent.MARK, ButtonEvent.MARK]
