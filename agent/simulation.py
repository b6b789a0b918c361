"""A scripted device on stepped simulated hardware, driven from one thread.

:class:`Simulation` wraps a :class:`~agent.runtime.Runtime` built with a fast (stepped)
simulated capture. Nothing moves on its own: the script advances media time frame by frame,
and after every frame the recorder handles what happened (button events, faults, resumes,
seals) and does its periodic work (cue, storage, battery) on the simulated clock. A finger on a
simulated button waits on the same clock, which runs the capture meanwhile; speech is queued on
the simulated speaker and is heard as media time passes. So a session is a pure function of its
script: the same script gives the same segments, frames, records and media times on every run,
on an idle or a loaded machine.

Failure posture: a runtime that is not stepped (realtime capture) is refused with
:class:`ValueError` at construction, and so is a finger on buttons it was built without;
waits that do not come true within their media-time bound return False instead of hanging.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from agent.hardware.controls import SimulatedControls
from agent.recorder import State
from agent.runtime import Runtime

log = logging.getLogger(__name__)


class Simulation:
    def __init__(self, rt: Runtime) -> None:
        if not rt.capture.stepped:
            raise ValueError("a scripted simulation needs the fast (stepped) simulated capture")
        self.rt = rt
        self.capture = rt.capture
        self.recorder = rt.recorder
        self._controls = rt.controls if isinstance(rt.controls, SimulatedControls) else None

    @property
    def controls(self) -> SimulatedControls:
        """The simulated buttons (ValueError for a runtime built without them)."""
        if self._controls is None:
            raise ValueError("this simulation has no simulated buttons")
        return self._controls

    @property
    def media_us(self) -> int:
        """Media time captured since the capture started."""
        return self.capture.media_time_us

    def start(self) -> None:
        self.recorder.start()
        self.settle()

    def shutdown(self) -> None:
        self.recorder.shutdown()

    def settle(self) -> None:
        """Let the recorder handle everything queued so far (no time passes)."""
        self.recorder.step(0.0)

    def step_frame(self) -> None:
        self.capture.advance_to(self.capture.media_time_us + 1)
        self.settle()

    def advance_to(self, media_us: int) -> None:
        """Capture (and let the recorder react after each frame) up to ``media_us``."""
        while self.capture.media_time_us < media_us:
            self.step_frame()

    def advance(self, seconds: float) -> None:
        self.advance_to(self.capture.media_time_us + round(seconds * 1e6))

    def run_until(self, done: Callable[[], bool], max_s: float) -> bool:
        """Advance frame by frame until ``done()``; False if ``max_s`` of media passed first."""
        limit_us = self.capture.media_time_us + round(max_s * 1e6)
        while not done():
            if self.capture.media_time_us >= limit_us:
                return False
            self.step_frame()
        return True

    def until_quiet(self, max_s: float = 300.0) -> bool:
        """Advance until everything the speaker was given has been heard."""
        return self.run_until(lambda: self.recorder.speaker.idle, max_s)

    # --- the officer's fingers (each press takes its time on the simulated clock) ---

    def press_record(self, duration_s: float = 0.1) -> None:
        self.controls.press_record(duration_s)
        self.settle()

    def hold_record(self) -> None:
        self.controls.hold_record()
        self.settle()

    def press_mark(self) -> None:
        self.controls.press_mark()
        self.settle()

    def hold_mark(self) -> None:
        self.controls.hold_mark()
        self.settle()

    @property
    def state(self) -> State:
        return self.recorder.state
