"""On-device tests for the buttons, LEDs, buzzer and battery gauge (run on the Raspberry Pi).

With ``BODYCAM_HARDWARE=1`` missing GPIO or gauge FAILS; elsewhere they skip with the reason
(hardware_tests/conftest.py). Pins come from the agent config
(``$BODYCAM_AGENT_CONFIG`` or ``/etc/bodycam/agent.toml``; defaults when absent). Tests that
need a finger run only with ``BODYCAM_HW_INTERACTIVE=1`` and print what to do; the LED and
buzzer tests ask the technician to watch (see the checklist in the README).

    BODYCAM_HW_INTERACTIVE=1 pytest -s hardware_tests/test_gpio_battery.py
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.hardware.battery import SysfsBatteryGauge
from agent.hardware.controls import ButtonEvent, GpioControls, Signal
from hardware_tests.conftest import missing

INTERACTIVE = os.environ.get("BODYCAM_HW_INTERACTIVE") == "1"
needs_finger = pytest.mark.skipif(
    not INTERACTIVE, reason="needs a technician: set BODYCAM_HW_INTERACTIVE=1"
)


@pytest.fixture
def controls(device_config: AgentConfig) -> Iterator[GpioControls]:
    try:
        c = GpioControls(device_config.hardware.controls)
    except Exception as exc:
        missing(f"GPIO not usable: {exc}")
    try:
        yield c
    finally:
        c.close()


def _wait_event(events: list[ButtonEvent], timeout_s: float) -> ButtonEvent | None:
    deadline = time.monotonic() + timeout_s
    while not events and time.monotonic() < deadline:
        time.sleep(0.02)
    return events[0] if events else None


def test_buttons_are_not_stuck_pressed(controls: GpioControls) -> None:
    assert not controls.record_button.is_pressed, "record button reads pressed at rest"
    assert not controls.mark_button.is_pressed, "mark button reads pressed at rest"


def test_leds_follow_the_signals(controls: GpioControls) -> None:
    controls.signal(Signal.READY)
    time.sleep(0.05)
    assert controls.green.value
    assert not controls.red.value
    controls.signal(Signal.FAULT)
    time.sleep(0.05)
    assert not controls.green.value
    controls.signal(Signal.OFF)


@needs_finger
def test_record_press_and_hold(controls: GpioControls) -> None:
    events: list[ButtonEvent] = []
    controls.on_event = events.append
    print("\n>>> press the RECORD button briefly (10 s)")
    assert _wait_event(events, 10) == ButtonEvent.RECORD_PRESS
    events.clear()
    print(f">>> HOLD the RECORD button for {controls.cfg.hold_time_s + 1:.0f} s, then release")
    assert _wait_event(events, 15) == ButtonEvent.RECORD_HOLD
    time.sleep(0.3)
    assert events == [ButtonEvent.RECORD_HOLD], "a hold must not also count as a press"


@needs_finger
def test_mark_button(controls: GpioControls) -> None:
    events: list[ButtonEvent] = []
    controls.on_event = events.append
    print("\n>>> press the MARK button (10 s)")
    assert _wait_event(events, 10) == ButtonEvent.MARK


@needs_finger
def test_every_signal_for_the_technician(controls: GpioControls) -> None:
    for signal in (
        Signal.READY,
        Signal.RECORDING,
        Signal.WARNING,
        Signal.REFUSED,
        Signal.FAULT,
        Signal.CUE,
        Signal.MARK,
    ):
        print(f"\n>>> showing signal {signal}: check LEDs/buzzer/vibration match the README")
        controls.signal(signal)
        time.sleep(3)
    controls.signal(Signal.OFF)


def test_battery_gauge_reads_sensible_values(device_config: AgentConfig) -> None:
    bc = device_config.hardware.battery
    reading = SysfsBatteryGauge(Path(bc.sysfs_root), bc.supply).read()
    if reading is None:
        missing(f"no battery under {bc.sysfs_root} (no fuel-gauge driver loaded?)")
    assert reading.capacity_percent is not None, "gauge gives no capacity"
    assert 0 <= reading.capacity_percent <= 100
    assert reading.status in ("Charging", "Discharging", "Full", "Not charging", "Unknown")
    if reading.voltage_v is not None:
        assert 2.5 <= reading.voltage_v <= 30.0, reading.voltage_v
