"""A named pipe that presses the simulated buttons of a running simulated agent.

``bodycam-agent run`` on simulated hardware creates ``<spool>/state/sim-control`` (a FIFO);
writing a line ``press``, ``hold`` or ``mark`` to it acts like a finger on the gpiozero mock
pins, e.g. ``echo press > spool/state/sim-control``; ``hang-capture`` makes the capture thread
hang for good (the systemd watchdog must then restart the agent). Bench testing only; never on
a Pi.

Failure posture: unknown commands are logged and ignored; the reader thread never raises.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
from pathlib import Path

from agent.hardware.controls import SimulatedControls
from agent.media.liveness import CaptureLiveness

log = logging.getLogger(__name__)


class SimControlFifo:
    def __init__(
        self, path: Path, controls: SimulatedControls, liveness: CaptureLiveness | None = None
    ) -> None:
        self.path = path
        self.controls = controls
        self.liveness = liveness
        self._stop = threading.Event()
        if path.exists() and not stat.S_ISFIFO(path.stat().st_mode):
            path.unlink()
        if not path.exists():
            os.mkfifo(path, 0o600)
        self._thread = threading.Thread(target=self._run, name="sim-control", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        actions = {
            "press": self.controls.press_record,
            "hold": self.controls.hold_record,
            "mark": self.controls.press_mark,
        }
        if self.liveness is not None:
            actions["hang-capture"] = self.liveness.inject_hang
        while not self._stop.is_set():
            try:
                with self.path.open("r", encoding="utf-8") as fifo:  # blocks until a writer
                    for line in fifo:
                        command = line.strip()
                        action = actions.get(command)
                        if action is None:
                            if command:
                                log.warning("sim-control: unknown command %r", command)
                            continue
                        log.info("sim-control: %s", command)
                        action()
            except OSError as exc:
                log.warning("sim-control: %s", exc)
                self._stop.wait(1.0)

    def close(self) -> None:
        self._stop.set()
        # Unblock the reader waiting in open() by opening the write end once.
        with contextlib.suppress(OSError):
            fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        self._thread.join(2.0)
        with contextlib.suppress(OSError):
            self.path.unlink()
