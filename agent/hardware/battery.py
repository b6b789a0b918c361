"""Battery gauge from the kernel's power-supply class (``/sys/class/power_supply/*``).

Any fuel gauge with a kernel driver appears there, so one backend serves the Pi (e.g. a UPS HAT
with a driver) and simulation: a simulated battery is just a directory in the same layout
(:func:`write_simulated_battery`), read by the same code.

Failure posture: reading never raises for a missing or unparsable attribute; the reading says
what is unknown (``None``) and :meth:`BatteryGauge.read` returns ``None`` when no battery exists.
The pre-capture check turns that into a warning with the reason.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatteryReading:
    supply: str
    capacity_percent: float | None
    status: str
    """Kernel status: Charging, Discharging, Full, Not charging, Unknown."""
    voltage_v: float | None
    time_to_empty_s: float | None

    @property
    def on_external_power(self) -> bool:
        return self.status in ("Charging", "Full", "Not charging")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class BatteryGauge(ABC):
    """Reports the device battery.

    Subclasses must override :meth:`read`.
    """

    @abstractmethod
    def read(self) -> BatteryReading | None:
        """The current reading, or None when the device has no battery gauge."""


class SysfsBatteryGauge(BatteryGauge):
    """A gauge under a power-supply root (``/sys/class/power_supply`` or a simulated copy)."""

    def __init__(self, root: Path, supply: str = "") -> None:
        self.root = root
        self.supply = supply

    def _find_supply(self) -> Path | None:
        if self.supply:
            path = self.root / self.supply
            return path if path.is_dir() else None
        try:
            candidates = sorted(self.root.iterdir())
        except OSError:
            return None
        for candidate in candidates:
            if _read_str(candidate / "type") == "Battery":
                return candidate
        return None

    def read(self) -> BatteryReading | None:
        path = self._find_supply()
        if path is None:
            return None
        capacity = _read_num(path / "capacity")
        voltage_uv = _read_num(path / "voltage_now")
        return BatteryReading(
            supply=path.name,
            capacity_percent=capacity,
            status=_read_str(path / "status") or "Unknown",
            voltage_v=voltage_uv / 1e6 if voltage_uv is not None else None,
            time_to_empty_s=_time_to_empty_s(path),
        )


def _time_to_empty_s(path: Path) -> float | None:
    direct = _read_num(path / "time_to_empty_now")
    if direct is not None and direct > 0:
        return direct
    # Drivers without time_to_empty still give energy/power or charge/current (µWh/µW, µAh/µA).
    for amount_name, rate_name in (("energy_now", "power_now"), ("charge_now", "current_now")):
        amount = _read_num(path / amount_name)
        rate = _read_num(path / rate_name)
        if amount is not None and rate:
            return amount / abs(rate) * 3600.0
    return None


def _read_str(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def _read_num(path: Path) -> float | None:
    text = _read_str(path)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        log.warning("unparsable power-supply attribute %s: %r", path, text)
        return None


def write_simulated_battery(
    root: Path,
    *,
    capacity_percent: float = 80.0,
    status: str = "Discharging",
    voltage_v: float = 3.9,
    time_to_empty_s: float | None = None,
    supply: str = "BAT0",
) -> Path:
    """Create or update a battery directory in sysfs layout under ``root``; returns its path."""
    path = root / supply
    path.mkdir(parents=True, exist_ok=True)
    values = {
        "type": "Battery",
        "present": "1",
        "capacity": str(round(capacity_percent)),
        "status": status,
        "voltage_now": str(round(voltage_v * 1e6)),
    }
    if time_to_empty_s is not None:
        values["time_to_empty_now"] = str(round(time_to_empty_s))
    else:
        # a stale estimate from an earlier write would contradict the new capacity
        (path / "time_to_empty_now").unlink(missing_ok=True)
    for name, value in values.items():
        tmp = path / f".{name}.tmp"
        tmp.write_text(value + "\n", encoding="ascii")
        os.replace(tmp, path / name)
    return path
