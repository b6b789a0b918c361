"""Signal patterns and when each output changes: the timing of LEDs, buzzer and vibration.

Each signal is a :class:`Pattern` (see :data:`PATTERNS`): per output a steady level, a
:class:`Blink`, or nothing (leave that output as it is, blinking or not). :class:`PatternPlayer`
answers, for a start time and any later time on the injected clock, which level each output
has and when the next change is. It does no I/O and owns no thread: whoever owns the clock
drives it (a small thread on a real clock, the stepped clock's timers in the simulation), so a
pattern's phases follow the same clock as everything else.

Blinks start "on" and end "off", like gpiozero's ``blink``/``beep``: ``Blink(0.2, 1.8)`` is
on 0.2 s, off 1.8 s, again; with ``times`` it is off for good after that many cycles.

Failure posture: pure arithmetic on integers (nanoseconds); nothing here raises for a valid
pattern. A blink with no on-time is off, one with no off-time is on (until its cycles end).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Signal(StrEnum):
    READY = "ready"
    RECORDING = "recording"
    WARNING = "warning"
    REFUSED = "refused"
    FAULT = "fault"
    CUE = "cue"
    MARK = "mark"
    OBSTRUCTION = "obstruction"
    REMINDER = "reminder"
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
    Signal.OBSTRUCTION: Pattern(None, None, Blink(0.1, 0.1, 10), Blink(0.6, 0.1, 2), 0.6),
    Signal.REMINDER: Pattern(None, None, Blink(0.3, 0.3, 3), Blink(0.2, 0.2, 2), 0.8),
    Signal.OFF: Pattern(False, False, False, None),
}

OUTPUTS = ("green", "red", "amber", "buzzer", "vibration")

Program = bool | Blink
"""What one output does from its start time: a steady level or a blink."""

VIBRATION_GAP_S = 0.01
"""The off-time of the vibration's single pulse (it ends off; the gap is never seen)."""


def programs(pattern: Pattern) -> dict[str, Program]:
    """The outputs ``pattern`` sets, with their programs (outputs it leaves alone are absent)."""
    out: dict[str, Program] = {}
    for name, state in (("green", pattern.green), ("red", pattern.red), ("amber", pattern.amber)):
        if state is not None:
            out[name] = state
    if pattern.beeps is not None:
        b = pattern.beeps
        out["buzzer"] = Blink(b.on_s, b.off_s, b.times or 1)
    if pattern.vibrate_s > 0:
        out["vibration"] = Blink(pattern.vibrate_s, VIBRATION_GAP_S, 1)
    return out


def _ns(seconds: float) -> int:
    return max(0, round(seconds * 1e9))


def level_at(program: Program, start_ns: int, now_ns: int) -> bool:
    """The output's level at ``now_ns`` for ``program`` started at ``start_ns``."""
    if not isinstance(program, Blink):
        return program
    on_ns, off_ns = _ns(program.on_s), _ns(program.off_s)
    period_ns = on_ns + off_ns
    if on_ns == 0:
        return False
    elapsed_ns = max(0, now_ns - start_ns)
    if program.times is not None and elapsed_ns >= program.times * period_ns:
        return False
    return elapsed_ns % period_ns < on_ns


def next_change_ns(program: Program, start_ns: int, now_ns: int) -> int | None:
    """The first time after ``now_ns`` at which the level changes; None: it never does."""
    if not isinstance(program, Blink):
        return None
    on_ns, off_ns = _ns(program.on_s), _ns(program.off_s)
    period_ns = on_ns + off_ns
    if on_ns == 0:
        return None
    end_ns = None if program.times is None else start_ns + program.times * period_ns
    if end_ns is not None and now_ns >= end_ns:
        return None
    if off_ns == 0:
        return end_ns  # on throughout its cycles
    elapsed_ns = max(0, now_ns - start_ns)
    cycle_ns = start_ns + elapsed_ns // period_ns * period_ns
    if elapsed_ns % period_ns < on_ns:
        return cycle_ns + on_ns
    following_ns = cycle_ns + period_ns
    if end_ns is not None and following_ns >= end_ns:
        return None  # the last off phase: off for good
    return following_ns


class PatternPlayer:
    """The programs currently running on each output, and their levels over time.

    :meth:`play` starts a pattern at a time: each output the pattern sets starts its program
    then (cancelling what remained of the previous one); the others carry on. Not thread-safe:
    the caller serialises.
    """

    def __init__(self) -> None:
        self._running: dict[str, tuple[int, Program]] = {}
        """Output name -> (start time, program)."""

    def play(self, pattern: Pattern, now_ns: int) -> None:
        for name, program in programs(pattern).items():
            self._running[name] = (now_ns, program)

    def levels(self, now_ns: int) -> dict[str, bool]:
        """The level of every output that has been given a program."""
        return {
            name: level_at(program, start_ns, now_ns)
            for name, (start_ns, program) in self._running.items()
        }

    def next_change_ns(self, now_ns: int) -> int | None:
        """The first time after ``now_ns`` at which any output changes; None: none will."""
        changes = [
            change
            for start_ns, program in self._running.values()
            if (change := next_change_ns(program, start_ns, now_ns)) is not None
        ]
        return min(changes, default=None)
