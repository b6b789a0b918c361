"""Free space of the spool's filesystem.

Failure posture: :meth:`StorageGauge.free_bytes` raises :class:`~agent.errors.HardwareError`
when the filesystem cannot be queried; callers treat that as "no space known" and warn.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

from agent.errors import HardwareError


class StorageGauge(ABC):
    """Free bytes where the spool lives.

    Subclasses must override :meth:`free_bytes`.
    """

    @abstractmethod
    def free_bytes(self) -> int:
        """Bytes an unprivileged writer can still use."""


class FilesystemStorage(StorageGauge):
    """``statvfs`` of the spool directory (what is really left on the SD card)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def free_bytes(self) -> int:
        try:
            st = os.statvfs(self.path)
        except OSError as exc:
            raise HardwareError("storage", f"statvfs({self.path}) failed: {exc}") from exc
        return st.f_bavail * st.f_frsize


class SimulatedStorage(StorageGauge):
    """A card of ``quota_bytes``: free = quota minus what the spool already holds.

    The spool's real size is measured, so recording really fills the simulated card.
    """

    def __init__(self, path: Path, quota_bytes: int) -> None:
        self.path = path
        self.quota_bytes = quota_bytes

    def used_bytes(self) -> int:
        total = 0
        for dirpath, _dirnames, filenames in os.walk(self.path):
            for name in filenames:
                try:
                    total += (Path(dirpath) / name).lstat().st_size
                except OSError:
                    continue  # a file renamed or removed while walking
        return total

    def free_bytes(self) -> int:
        return max(0, self.quota_bytes - self.used_bytes())
