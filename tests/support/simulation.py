"""Scripted simulated devices in process: the stepped capture, mock-pin buttons, a real spool.

:class:`Simulations` builds each :class:`~agent.simulation.Simulation` from the simulated config
(plus the test module's and the test's tweaks), starts it, and shuts every one down afterwards,
releasing gpiozero's mock pins for the next test.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.clock import Clock, SimulatedClock
from agent.config import AgentConfig, simulated_config
from agent.hardware.controls import SimulatedControls
from agent.runtime import build_runtime
from agent.simulation import Simulation
from agent.spool import ensure_dev_key
from evidence import layout
from evidence.keys import save_signing_key
from evidence.records import Record

DEVICE = "SIM-TEST-1"
START = datetime(2026, 11, 30, 8, 0, 0, tzinfo=UTC)

Tweak = Callable[[AgentConfig], None]


class Simulations:
    """Devices on one spool: ``base`` adjusts every config (after the shared defaults), the
    tweak given to :meth:`make` the one device's. Use as a context manager."""

    def __init__(self, spool: Path, base: Tweak | None = None, device: str = DEVICE) -> None:
        self.spool = spool
        self.base = base
        self.device = device
        self._made: list[Simulation] = []

    def config(self, tweak: Tweak | None = None) -> AgentConfig:
        cfg = simulated_config(self.spool)
        cfg.hardware.controls.hold_time_s = 0.2
        for adjust in (self.base, tweak):
            if adjust is not None:
                adjust(cfg)
        return cfg

    def make(
        self,
        tweak: Tweak | None = None,
        *,
        clock: Clock | None = None,
        key: Ed25519PrivateKey | None = None,
        **runtime: Any,
    ) -> Simulation:
        """A started simulation (``runtime``: further :func:`build_runtime` options)."""
        cfg = self.config(tweak)
        if key is None:
            key, _ = ensure_dev_key(cfg.key_path)
        else:
            save_signing_key(cfg.key_path, key)
        clock = clock if clock is not None else SimulatedClock(START)
        rt = build_runtime(cfg, clock=clock, key=key, device_id=self.device, **runtime)
        sim = Simulation(rt)
        self._made.append(sim)
        sim.start()
        return sim

    def close(self) -> None:
        made, self._made = self._made, []
        for sim in made:
            sim.shutdown()
            if isinstance(sim.rt.controls, SimulatedControls):
                sim.rt.controls.mock_factory.reset()

    def __enter__(self) -> Simulations:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def records_of(sim: Simulation) -> list[Record]:
    """The simulated device's records in its spool, in order."""
    spool = sim.rt.spool
    return [Record.load(p) for p in layout.iter_record_files(spool.root, spool.device_id)]
