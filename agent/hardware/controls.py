"""Buttons, LEDs, buzzer and optional vibration motor (gpiozero).

Record button: a press (released before ``hold_time_s``) starts recording; a hold (released
after ``hold_time_s``) stops it. Because both are decided on release with a "held" flag, a long
press never also counts as a press. Mark button: every press adds an important marker.

Signals have distinct LED and tone patterns (see :data:`PATTERNS`) so an officer can tell them
apart without looking: ready, recording, warning, refused, fault, cue, mark.

The Pi backend is gpiozero's default pin factory; the simulated backend is the same code on
gpiozero's ``MockFactory`` pins, which :class:`SimulatedControls` can also drive (press, hold).

Failure posture: a pin that cannot be claimed raises :class:`~agent.errors.HardwareError` at
construction (the daemon logs it and runs without that output); signalling never raises, because
a broken LED must not stop a recording. Optional outputs are disabled by a negative pin number.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from agent.config import ControlsConfig
from agent.errors import HardwareError

log = logging.getLogger(__name__)


class ButtonEvent(StrEnum):
    RECORD_PRESS = "record-press"
    RECORD_HOLD = "record-hold"
    MARK = "mark"


class Signal(StrEnum):
    READY = "ready"
    RECORDING = "recording"
    WARNING = "warning"
    REFUSED = "refused"
    FAULT = "fault"
    CUE = "cue"
    MARK = "mark"
    OFF = "off"


@dataclass(frozen=True)
class Blink:
    on_s: float
    off_s: float
    times: int | None = None
    """None: until changed."""


@dataclass(frozen=True)
class Pattern:
    """LED states (None: leave as is, True: steady on, False: off, Blink) and buzzer beeps."""

    green: bool | Blink | None
    red: bool | Blink | None
    amber: bool | Blink | None
    beeps: Blink | None
    vibrate_s: float = 0.0


PATTERNS: dict[Signal, Pattern] = {
    Signal.READY: Pattern(True, False, False, Blink(0.05, 0.05, 1)),
    Signal.RECORDING: Pattern(False, Blink(0.2, 1.8), False, Blink(0.05, 0.1, 2), 0.2),
    Signal.WARNING: Pattern(None, None, Blink(0.5, 0.5), Blink(0.1, 0.1, 3), 0.3),
    Signal.REFUSED: Pattern(True, Blink(0.1, 0.1, 10), None, Blink(1.0, 0.1, 1), 1.0),
    Signal.FAULT: Pattern(False, Blink(0.1, 0.1), True, Blink(0.5, 0.5, 3), 0.5),
    Signal.CUE: Pattern(None, None, None, Blink(0.05, 0.1, 1), 0.2),
    Signal.MARK: Pattern(None, None, None, Blink(0.05, 0.05, 2), 0.1),
    Signal.OFF: Pattern(False, False, False, None),
}

EventCallback = Callable[[ButtonEvent], None]


class Controls(ABC):
    """The officer's buttons and the device's LEDs/tones.

    Subclasses must override :meth:`signal` and :meth:`close`, and deliver button events by
    calling :meth:`_emit`. They may override :meth:`_emit` to add logging.
    """

    def __init__(self) -> None:
        self.on_event: EventCallback | None = None
        self.last_signal: Signal = Signal.OFF
        self.history: deque[Signal] = deque(maxlen=64)
        """Recent signals, newest last (status and tests)."""

    @abstractmethod
    def signal(self, signal: Signal) -> None:
        """Show ``signal`` on the LEDs/buzzer/vibration. Never raises."""

    @abstractmethod
    def close(self) -> None:
        """Release the pins. Idempotent."""

    def _emit(self, event: ButtonEvent) -> None:
        log.info("button event %s", event)
        callback = self.on_event
        if callback is None:
            return
        try:
            callback(event)
        except Exception:
            # gpiozero calls us from its own thread; an agent bug must not kill that thread.
            log.exception("button event handler failed for %s", event)


class GpioControls(Controls):
    """gpiozero devices on ``pin_factory`` (None: gpiozero's default, i.e. the real Pi)."""

    def __init__(self, cfg: ControlsConfig, pin_factory: Any = None) -> None:
        super().__init__()
        from gpiozero import LED, Button, Buzzer, DigitalOutputDevice

        self.cfg = cfg
        self._factory = pin_factory
        self._held = False
        self._lock = threading.Lock()
        self._devices: list[Any] = []
        try:
            self.record_button = self._add(
                Button(cfg.record_pin, hold_time=cfg.hold_time_s, pin_factory=pin_factory)
            )
            self.mark_button = self._add(Button(cfg.mark_pin, pin_factory=pin_factory))
            self.green = self._add(LED(cfg.led_green_pin, pin_factory=pin_factory))
            self.red = self._add(LED(cfg.led_red_pin, pin_factory=pin_factory))
            self.amber = self._optional(LED, cfg.led_amber_pin)
            self.buzzer = self._optional(Buzzer, cfg.buzzer_pin)
            self.vibration = self._optional(DigitalOutputDevice, cfg.vibration_pin)
        except Exception as exc:
            self.close()
            raise HardwareError("gpio", f"cannot claim pins: {exc}") from exc
        self.record_button.when_held = self._record_held
        self.record_button.when_released = self._record_released
        self.mark_button.when_pressed = self._mark_pressed

    def _add(self, device: Any) -> Any:
        self._devices.append(device)
        return device

    def _optional(self, cls: Any, pin: int | None) -> Any:
        if pin is None or pin < 0:
            return None
        return self._add(cls(pin, pin_factory=self._factory))

    def _record_held(self) -> None:
        with self._lock:
            self._held = True

    def _record_released(self) -> None:
        with self._lock:
            held, self._held = self._held, False
        self._emit(ButtonEvent.RECORD_HOLD if held else ButtonEvent.RECORD_PRESS)

    def _mark_pressed(self) -> None:
        self._emit(ButtonEvent.MARK)

    def signal(self, signal: Signal) -> None:
        pattern = PATTERNS[signal]
        try:
            for led, state in (
                (self.green, pattern.green),
                (self.red, pattern.red),
                (self.amber, pattern.amber),
            ):
                _apply(led, state)
            if self.buzzer is not None and pattern.beeps is not None:
                b = pattern.beeps
                self.buzzer.beep(on_time=b.on_s, off_time=b.off_s, n=b.times or 1)
            if self.vibration is not None and pattern.vibrate_s > 0:
                self.vibration.blink(on_time=pattern.vibrate_s, off_time=0.01, n=1)
        except Exception:
            log.exception("cannot show signal %s", signal)
        self.last_signal = signal
        self.history.append(signal)
        log.debug("signal %s", signal)

    def close(self) -> None:
        devices, self._devices = self._devices, []
        for device in reversed(devices):
            try:
                device.close()
            except Exception:
                log.exception("closing %r failed", device)


def _apply(led: Any, state: bool | Blink | None) -> None:
    if led is None or state is None:
        return
    if isinstance(state, Blink):
        led.blink(on_time=state.on_s, off_time=state.off_s, n=state.times)
    elif state:
        led.on()
    else:
        led.off()


class SimulatedControls(GpioControls):
    """:class:`GpioControls` on gpiozero mock pins, with helpers that act like a finger."""

    def __init__(self, cfg: ControlsConfig) -> None:
        from gpiozero.pins.mock import MockFactory

        self.mock_factory = MockFactory()
        super().__init__(cfg, pin_factory=self.mock_factory)

    def _drive(self, pin: int, duration_s: float) -> None:
        mock_pin = self.mock_factory.pin(pin)
        mock_pin.drive_low()  # buttons pull up: pressed pulls the line low
        time.sleep(duration_s)
        mock_pin.drive_high()

    def press_record(self, duration_s: float = 0.1) -> None:
        self._drive(self.cfg.record_pin, duration_s)

    def hold_record(self) -> None:
        self._drive(self.cfg.record_pin, self.cfg.hold_time_s + 0.3)

    def press_mark(self, duration_s: float = 0.1) -> None:
        self._drive(self.cfg.mark_pin, duration_s)

    def led_states(self) -> dict[str, bool]:
        """Current output level of each LED (what an observer would see right now)."""
        leds = {"green": self.green, "red": self.red, "amber": self.amber}
        return {name: bool(led.value) for name, led in leds.items() if led is not None}
