"""Buttons, LEDs, buzzer and optional vibration motor (gpiozero).

Record button: a press (released before ``hold_time_s``) starts recording; a hold (released
after ``hold_time_s``) stops it. Both are decided on release from the press's length on the
injected clock, so a long press never also counts as a press. Mark button, decided on release
the same way: a press adds the marker the current stage expects next (``evidence.markers``), a
hold (``mark_hold_time_s``) an ``obstruction`` marker (Art. 26).

Contacts bounce. gpiozero's ``bounce_time`` (``bounce_time_s``) filters edges on a real Pi, and
:class:`ButtonLogic` (I/O-free) applies the same rule on the injected clock to whatever edges
arrive: an edge closer than ``bounce_time_s`` to the previous edge is contact chatter. So a
bouncy release after a hold is one hold (not hold + press, which would start a new session),
one bouncy mark press is one marker, and a contact shorter than ``bounce_time_s`` is noise.

Signals have distinct LED and tone patterns (see :data:`~agent.hardware.patterns.PATTERNS`) so
an officer can tell them apart without looking: ready, recording, warning, refused, fault, cue,
mark. The gpiozero devices are only switched on and off; when is decided by a
:class:`~agent.hardware.patterns.PatternPlayer` on the injected clock. On a clock that moves by
itself (the Pi) one small thread wakes at each phase change; on a stepped simulated clock the
clock calls back at each change (:meth:`~agent.clock.SimulatedClock.call_at`), so the phases
happen at their simulated times, in the thread that advances time, and tests step to them.

The Pi backend is gpiozero's default pin factory; the simulated backend is the same code on
gpiozero's ``MockFactory`` pins, which :class:`SimulatedControls` can also drive (press, hold).

Failure posture: a pin that cannot be claimed raises :class:`~agent.errors.HardwareError` at
construction (the daemon logs it and runs without that output); signalling never raises, because
a broken LED must not stop a recording: an output that cannot be switched is logged and the
others still follow the pattern. Optional outputs are disabled by a negative pin number.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from agent.clock import Clock, SimulatedClock, SystemClock, Timer
from agent.config import ControlsConfig
from agent.errors import HardwareError
from agent.hardware.patterns import PATTERNS, PatternPlayer, Signal

log = logging.getLogger(__name__)


class ButtonEvent(StrEnum):
    RECORD_PRESS = "record-press"
    RECORD_HOLD = "record-hold"
    MARK = "mark"
    MARK_HOLD = "mark-hold"


EventCallback = Callable[[ButtonEvent], None]


class ButtonLogic:
    """Debounce and press/hold decision for one button, fed with edge times (ns). I/O-free.

    ``hold_ns`` None: a momentary button (mark) that acts on the press edge. Otherwise the
    action is decided on release: held at least ``hold_ns`` is a hold, else a press. Edges closer
    than ``bounce_ns`` to the previous edge are chatter: a release in chatter only ends the
    press if no press edge follows within ``bounce_ns`` (else the press goes on); a press edge in
    chatter after a release is the release bouncing, not a new press.
    """

    def __init__(
        self,
        bounce_ns: int,
        hold_ns: int | None = None,
        *,
        press: ButtonEvent = ButtonEvent.RECORD_PRESS,
        hold: ButtonEvent = ButtonEvent.RECORD_HOLD,
    ) -> None:
        self.bounce_ns = max(0, bounce_ns)
        self.hold_ns = hold_ns
        self.press_event = press
        self.hold_event = hold
        self._last_edge_ns: int | None = None
        self._down_ns: int | None = None
        """Start of the current press; None while released."""
        self._chatter_up = False
        """The last release came in chatter: undecided until the next edge."""

    def _chatter(self, now_ns: int) -> bool:
        last, self._last_edge_ns = self._last_edge_ns, now_ns
        return last is not None and now_ns - last < self.bounce_ns

    def pressed(self, now_ns: int) -> ButtonEvent | None:
        chatter = self._chatter(now_ns)
        if self._chatter_up:
            self._chatter_up = False
            if chatter:
                return None  # the press bounced and goes on
            self._down_ns = None  # that contact ended in chatter and silence: noise
        if chatter or self._down_ns is not None:
            if chatter and self._down_ns is None:
                log.debug("button bounce ignored (press edge right after a release)")
            return None
        self._down_ns = now_ns
        return ButtonEvent.MARK if self.hold_ns is None else None

    def released(self, now_ns: int) -> ButtonEvent | None:
        chatter = self._chatter(now_ns)
        down = self._down_ns
        if down is None:
            return None
        if chatter:
            self._chatter_up = True
            return None
        self._down_ns = None
        if self.hold_ns is None:
            return None
        held = now_ns - down >= self.hold_ns
        return self.hold_event if held else self.press_event


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


class _PhaseThread:
    """Wakes at the next phase change on a clock that moves by itself, and calls ``show``.

    One thread for all outputs; :meth:`wake_at` moves its next wake-up (None: sleep until told).
    """

    def __init__(self, clock: Clock, show: Callable[[], None]) -> None:
        self._clock = clock
        self._show = show
        self._cond = threading.Condition()
        self._due_ns: int | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="signals", daemon=True)
        self._thread.start()

    def wake_at(self, due_ns: int | None) -> None:
        with self._cond:
            self._due_ns = due_ns
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    def _wait_due(self) -> bool:
        """Block until the due time has come (True) or the thread is stopped (False)."""
        with self._cond:
            while not self._stopped:
                due_ns = self._due_ns
                if due_ns is None:
                    self._cond.wait()
                    continue
                wait_s = (due_ns - self._clock.monotonic_ns()) / 1e9
                if wait_s <= 0:
                    self._due_ns = None
                    return True
                self._cond.wait(wait_s)
            return False

    def _run(self) -> None:
        while self._wait_due():
            self._show()


class GpioControls(Controls):
    """gpiozero devices on ``pin_factory`` (None: gpiozero's default, i.e. the real Pi).

    ``clock`` is the injected clock that times presses, bounce and the signal patterns'
    phases (default: the machine's clocks).
    """

    def __init__(
        self,
        cfg: ControlsConfig,
        pin_factory: Any = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__()
        from gpiozero import LED, Button, Buzzer, DigitalOutputDevice

        self.cfg = cfg
        self._factory = pin_factory
        self.clock: Clock = clock if clock is not None else SystemClock(boot_id="controls")
        self._now_ns = self.clock.monotonic_ns
        bounce_ns = round(cfg.bounce_time_s * 1e9)
        self._record = ButtonLogic(bounce_ns, round(cfg.hold_time_s * 1e9))
        # mark: decided on release too — a press marks, a hold signs an obstruction
        self._mark = ButtonLogic(
            bounce_ns,
            round(cfg.mark_hold_time_s * 1e9),
            press=ButtonEvent.MARK,
            hold=ButtonEvent.MARK_HOLD,
        )
        self._lock = threading.Lock()
        self._devices: list[Any] = []
        self._init_signalling()
        bounce_s = cfg.bounce_time_s if cfg.bounce_time_s > 0 else None
        try:
            self.record_button = self._add(
                Button(cfg.record_pin, bounce_time=bounce_s, pin_factory=pin_factory)
            )
            self.mark_button = self._add(
                Button(cfg.mark_pin, bounce_time=bounce_s, pin_factory=pin_factory)
            )
            self.green = self._add(LED(cfg.led_green_pin, pin_factory=pin_factory))
            self.red = self._add(LED(cfg.led_red_pin, pin_factory=pin_factory))
            self.amber = self._optional(LED, cfg.led_amber_pin)
            self.buzzer = self._optional(Buzzer, cfg.buzzer_pin)
            self.vibration = self._optional(DigitalOutputDevice, cfg.vibration_pin)
        except Exception as exc:
            self.close()
            raise HardwareError("gpio", f"cannot claim pins: {exc}") from exc
        self.record_button.when_pressed = self._edge(self._record, pressed=True)
        self.record_button.when_released = self._edge(self._record, pressed=False)
        self.mark_button.when_pressed = self._edge(self._mark, pressed=True)
        self.mark_button.when_released = self._edge(self._mark, pressed=False)

    def _init_signalling(self) -> None:
        self._signal_lock = threading.Lock()
        """Serialises the player, the output writes and the scheduling of the next change."""
        self._player = PatternPlayer()
        self._shown: dict[str, bool] = {}
        """Level last written to each output (an unchanged output is not written again)."""
        self._broken: set[str] = set()
        """Outputs whose last write failed (logged once)."""
        self._timer: Timer | None = None
        self._phase_thread: _PhaseThread | None = None
        self._closed = False

    def _add(self, device: Any) -> Any:
        self._devices.append(device)
        return device

    def _optional(self, cls: Any, pin: int | None) -> Any:
        if pin is None or pin < 0:
            return None
        return self._add(cls(pin, pin_factory=self._factory))

    def _edge(self, logic: ButtonLogic, *, pressed: bool) -> Callable[[], None]:
        def on_edge() -> None:
            # gpiozero's thread on a Pi; the caller's thread on mock pins.
            with self._lock:
                now_ns = self._now_ns()
                event = logic.pressed(now_ns) if pressed else logic.released(now_ns)
            if event is not None:
                self._emit(event)

        return on_edge

    def signal(self, signal: Signal) -> None:
        try:
            with self._signal_lock:
                if not self._closed:
                    now_ns = self.clock.monotonic_ns()
                    self._player.play(PATTERNS[signal], now_ns)
                    self._show(now_ns)
        except Exception:
            log.exception("cannot show signal %s", signal)
        self.last_signal = signal
        self.history.append(signal)
        log.debug("signal %s", signal)

    def _outputs(self) -> dict[str, Any]:
        return {
            "green": self.green,
            "red": self.red,
            "amber": self.amber,
            "buzzer": self.buzzer,
            "vibration": self.vibration,
        }

    def _show(self, now_ns: int) -> None:
        """Signal lock held: write the levels due at ``now_ns``, then wait for the next change."""
        outputs = self._outputs()
        for name, level in self._player.levels(now_ns).items():
            device = outputs.get(name)
            if device is None or self._shown.get(name) is level:
                continue
            try:
                if level:
                    device.on()
                else:
                    device.off()
            except Exception:
                # One broken output must not keep the others from their pattern; a blink would
                # repeat the same traceback at every phase, so it is logged once until it works.
                if name not in self._broken:
                    self._broken.add(name)
                    log.exception("cannot switch %s %s", name, "on" if level else "off")
                continue
            self._broken.discard(name)
            self._shown[name] = level
        self._schedule(self._player.next_change_ns(now_ns))

    def _schedule(self, due_ns: int | None) -> None:
        """Signal lock held: be called back at ``due_ns`` on the clock (None: no change due)."""
        clock = self.clock
        if isinstance(clock, SimulatedClock) and clock.stepped:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None if due_ns is None else clock.call_at(due_ns, self._on_due)
            return
        if self._phase_thread is None:
            if due_ns is None:
                return
            self._phase_thread = _PhaseThread(clock, self._on_due)
        self._phase_thread.wake_at(due_ns)

    def _on_due(self) -> None:
        """A phase change is due (the phase thread, or the thread advancing a stepped clock)."""
        try:
            with self._signal_lock:
                if not self._closed:
                    self._show(self.clock.monotonic_ns())
        except Exception:
            log.exception("cannot show the next signal phase")

    def close(self) -> None:
        with self._signal_lock:
            self._closed = True
            timer, self._timer = self._timer, None
            phase_thread, self._phase_thread = self._phase_thread, None
        if timer is not None:
            timer.cancel()
        if phase_thread is not None:
            phase_thread.stop()
        devices, self._devices = self._devices, []
        for device in reversed(devices):
            try:
                device.close()
            except Exception:
                log.exception("closing %r failed", device)


class SimulatedControls(GpioControls):
    """:class:`GpioControls` on gpiozero mock pins, with helpers that act like a finger.

    ``clock`` times presses and bounce and is what a finger waits on: with a stepped simulated
    clock, holding a button down runs the simulated world for that long.
    """

    def __init__(self, cfg: ControlsConfig, clock: Clock | None = None) -> None:
        from gpiozero.pins.mock import MockFactory

        self.mock_factory = MockFactory()
        super().__init__(cfg, pin_factory=self.mock_factory, clock=clock)

    def _drive(self, pin: int, duration_s: float) -> None:
        mock_pin = self.mock_factory.pin(pin)
        mock_pin.drive_low()  # buttons pull up: pressed pulls the line low
        self.clock.sleep(duration_s)
        mock_pin.drive_high()
        # The finger lifts off: the next press is a new one, not this contact bouncing.
        self.clock.sleep(self.cfg.bounce_time_s)

    def bounce(self, pin: int, edges_s: list[float]) -> None:
        """Toggle ``pin`` once after each wait in ``edges_s`` (on the clock), starting with a
        press: a bouncy contact, e.g. ``[0, 0.002, 0.001, 0.5]`` is press, chatter, release."""
        mock_pin = self.mock_factory.pin(pin)
        for i, wait_s in enumerate(edges_s):
            self.clock.sleep(wait_s)
            if i % 2 == 0:
                mock_pin.drive_low()
            else:
                mock_pin.drive_high()
        self.clock.sleep(self.cfg.bounce_time_s)

    def press_record(self, duration_s: float = 0.1) -> None:
        self._drive(self.cfg.record_pin, duration_s)

    @property
    def hold_duration_s(self) -> float:
        """How long :meth:`hold_record` keeps the button down."""
        return self.cfg.hold_time_s + 0.3

    def hold_record(self) -> None:
        self._drive(self.cfg.record_pin, self.hold_duration_s)

    def press_mark(self, duration_s: float = 0.1) -> None:
        self._drive(self.cfg.mark_pin, duration_s)

    def hold_mark(self) -> None:
        self._drive(self.cfg.mark_pin, self.cfg.mark_hold_time_s + 0.3)

    def led_states(self) -> dict[str, bool]:
        """Current output level of each LED (what an observer would see right now)."""
        leds = {"green": self.green, "red": self.red, "amber": self.amber}
        return {name: bool(led.value) for name, led in leds.items() if led is not None}
