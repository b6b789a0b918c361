"""Buttons and signals on gpiozero's own MockFactory pins (press, hold, mark, bounce, LEDs).

Presses are timed on an injected simulated clock: a finger holding a button down advances it,
so a hold is a hold however loaded the machine is. Mock pins call the button handlers in the
thread that drives them, so every event has arrived when the finger helper returns. Signal
patterns are timed on the same clock: the tests step it and read the pins at exact simulated
times. One test runs the patterns on the machine's clock (the Pi path, a real thread) and waits
for the pin's states, never for a fixed time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from agent.clock import SimulatedClock
from agent.config import ControlsConfig
from agent.hardware.controls import ButtonEvent, ButtonLogic, Signal, SimulatedControls
from agent.hardware.patterns import PATTERNS, PatternPlayer

HOLD_S = 0.3
BOUNCE_S = 0.05
MS = 1_000_000
VIBRATION_PIN = 26


@pytest.fixture
def controls() -> Iterator[SimulatedControls]:
    cfg = ControlsConfig(hold_time_s=HOLD_S, bounce_time_s=BOUNCE_S, vibration_pin=VIBRATION_PIN)
    c = SimulatedControls(cfg, clock=SimulatedClock())
    try:
        yield c
    finally:
        c.close()
        c.mock_factory.reset()


def _events(c: SimulatedControls) -> list[ButtonEvent]:
    events: list[ButtonEvent] = []
    c.on_event = events.append
    return events


def _wait_until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """For the phase thread on the machine's clock (the Pi path), which runs on real time."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


Trace = list[tuple[int, bool]]


def _levels(c: SimulatedControls) -> dict[str, bool]:
    """Every output's mock pin, read directly."""
    pins = {"green": c.cfg.led_green_pin, "red": c.cfg.led_red_pin, "amber": c.cfg.led_amber_pin,
            "buzzer": c.cfg.buzzer_pin, "vibration": c.cfg.vibration_pin}  # fmt: skip
    return {name: bool(c.mock_factory.pin(pin).state) for name, pin in pins.items() if pin}


def _traces(c: SimulatedControls, until_ms: int, step_ms: int = 10) -> dict[str, Trace]:
    """Step the controls' simulated clock from now to ``until_ms`` later, reading every output
    at each step: per output, (ms since now, level) at the start and at each change."""
    assert isinstance(c.clock, SimulatedClock)
    traces: dict[str, Trace] = {name: [(0, level)] for name, level in _levels(c).items()}
    for t_ms in range(step_ms, until_ms + 1, step_ms):
        c.clock.advance_ns(step_ms * MS)
        for name, level in _levels(c).items():
            if traces[name][-1][1] != level:
                traces[name].append((t_ms, level))
    return traces


def _blinks(on_ms: int, off_ms: int, times: int, start_ms: int = 0) -> Trace:
    period = on_ms + off_ms
    return [
        change
        for n in range(times)
        for change in ((start_ms + n * period, True), (start_ms + n * period + on_ms, False))
    ]


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
    controls.signal(Signal.READY)  # the levels at the signal's start are set before it returns
    assert controls.led_states() == {"green": True, "red": False, "amber": False}
    controls.signal(Signal.RECORDING)
    assert controls.led_states() == {"green": False, "red": True, "amber": False}
    assert isinstance(controls.clock, SimulatedClock)
    controls.clock.advance_ns(200 * MS)  # the red blink's on-phase is over
    assert controls.led_states() == {"green": False, "red": False, "amber": False}
    controls.signal(Signal.FAULT)
    assert controls.led_states() == {"green": False, "red": True, "amber": True}
    controls.signal(Signal.OFF)
    assert controls.led_states() == {"green": False, "red": False, "amber": False}


def test_recording_blinks_red_and_beeps_twice_on_the_clock(controls: SimulatedControls) -> None:
    controls.signal(Signal.RECORDING)
    traces = _traces(controls, 6_100)
    assert traces["red"] == [*_blinks(200, 1_800, 3), (6_000, True)]
    assert traces["green"] == [(0, False)]
    assert traces["amber"] == [(0, False)]
    assert traces["buzzer"] == _blinks(50, 100, 2)
    assert traces["vibration"] == [(0, True), (200, False)]


def test_refused_blinks_ten_times_then_stops(controls: SimulatedControls) -> None:
    controls.signal(Signal.REFUSED)
    traces = _traces(controls, 5_000)
    assert traces["red"] == _blinks(100, 100, 10)
    assert traces["green"] == [(0, True)]
    assert traces["buzzer"] == [(0, True), (1_000, False)]
    assert traces["vibration"] == [(0, True), (1_000, False)]


def test_one_long_step_plays_every_phase_at_its_time(controls: SimulatedControls) -> None:
    # The clock stops at each phase change inside one advance: no blink is skipped.
    red = controls.mock_factory.pin(controls.cfg.led_red_pin)
    red.clear_states()
    controls.signal(Signal.REFUSED)
    assert isinstance(controls.clock, SimulatedClock)
    controls.clock.advance_ns(3_000 * MS)
    assert [s.state for s in red.states] == [False] + [True, False] * 10


def test_a_new_signal_cancels_the_old_ones_remaining_phases(controls: SimulatedControls) -> None:
    controls.signal(Signal.REFUSED)
    first = _traces(controls, 500)
    controls.signal(Signal.READY)  # at 500 ms: red steady off, one short beep; vibration left
    then = _traces(controls, 2_500)
    assert first["red"] == _blinks(100, 100, 3)  # the third ends as READY comes
    assert then["red"] == [(0, False)]
    assert then["green"] == [(0, True)]
    assert then["buzzer"] == [(0, True), (50, False)]  # not REFUSED's beep until 1 000 ms
    assert then["vibration"] == [(0, True), (500, False)]  # REFUSED's pulse carries on


def test_a_signal_that_leaves_an_output_keeps_its_phase(controls: SimulatedControls) -> None:
    controls.signal(Signal.RECORDING)
    first = _traces(controls, 1_000)
    controls.signal(Signal.WARNING)  # at 1 000 ms: amber blinks, red is left as it was
    then = _traces(controls, 2_900)
    assert first["red"] == [(0, True), (200, False)]
    assert then["red"] == [(0, False), (1_000, True), (1_200, False)]
    assert then["amber"] == _blinks(500, 500, 3)
    assert then["buzzer"] == _blinks(100, 100, 3)


def test_no_phase_is_pending_once_every_pattern_has_ended() -> None:
    player = PatternPlayer()
    player.play(PATTERNS[Signal.REFUSED], 0)
    assert player.next_change_ns(1_850 * MS) == 1_900 * MS  # the tenth blink goes off
    assert player.next_change_ns(1_900 * MS) is None  # and stays off
    assert {k for k, v in player.levels(1_900 * MS).items() if v} == {"green"}
    player.play(PATTERNS[Signal.RECORDING], 2_000 * MS)
    assert player.next_change_ns(5_000 * MS) == 6_000 * MS  # recording blinks until changed


def test_a_broken_output_does_not_stop_the_others(
    controls: SimulatedControls, caplog: pytest.LogCaptureFixture
) -> None:
    controls.red.close()  # a dead LED: gpiozero raises on every write to it
    controls.signal(Signal.REFUSED)
    traces = _traces(controls, 1_500)
    assert traces["green"] == [(0, True)]
    assert traces["buzzer"] == [(0, True), (1_000, False)]
    assert controls.last_signal == Signal.REFUSED
    # ten blinks of a dead LED: one logged failure, not one per phase
    assert [r.message for r in caplog.records] == ["cannot switch red on"]


def test_on_the_machines_clock_a_thread_plays_the_phases() -> None:
    before = set(threading.enumerate())
    c = SimulatedControls(ControlsConfig())  # no clock given: the system clock, as on a Pi
    red = c.mock_factory.pin(c.cfg.led_red_pin)
    try:
        red.clear_states()
        c.signal(Signal.REFUSED)
        _wait_until(lambda: len(red.states) == 21)
        assert [s.state for s in red.states] == [False] + [True, False] * 10
        started = [t for t in set(threading.enumerate()) - before if t.name == "signals"]
    finally:
        c.close()
        c.mock_factory.reset()
    assert len(started) == 1  # one thread for all outputs
    assert not started[0].is_alive()  # and close() ends it


def test_a_broken_handler_does_not_kill_the_button(controls: SimulatedControls) -> None:
    seen: list[ButtonEvent] = []

    def handler(event: ButtonEvent) -> None:
        seen.append(event)
        raise RuntimeError("agent bug")

    controls.on_event = handler
    controls.press_mark()
    controls.press_mark()
    assert seen == [ButtonEvent.MARK, ButtonEvent.MARK]
