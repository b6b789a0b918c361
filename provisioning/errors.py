"""Exceptions of the provisioning package.

Every class carries the data a caller needs to report it; the CLI prints ``str(exc)`` and exits
with status 2, so each message must say what is wrong and, where useful, what to do about it.
"""

from __future__ import annotations

from pathlib import Path


class ProvisioningError(Exception):
    """Base class of every error raised by :mod:`provisioning`."""


class InvalidDeviceIdError(ProvisioningError):
    """A device id (certificate CN, MQTT username, topic level) is not allowed."""

    def __init__(self, device_id: str, reason: str) -> None:
        self.device_id = device_id
        self.reason = reason
        super().__init__(f"device id {device_id!r} refused: {reason}")


class MaterialError(ProvisioningError):
    """A key, certificate, CSR or CRL file is missing, unreadable, malformed or inconsistent."""

    def __init__(self, path: Path | None, reason: str) -> None:
        self.path = path
        self.reason = reason
        where = f"{path}: " if path is not None else ""
        super().__init__(f"{where}{reason}")


class KeyMismatchError(MaterialError):
    """A certificate does not belong to the private key it is supposed to go with."""


class DockError(ProvisioningError):
    """The dock directory is missing, not initialised, already initialised or inconsistent."""

    def __init__(self, dock_dir: Path, reason: str) -> None:
        self.dock_dir = dock_dir
        self.reason = reason
        super().__init__(f"dock {dock_dir}: {reason}")


class RegistryError(ProvisioningError):
    """A registry operation is not allowed (unknown, duplicate or revoked device)."""

    def __init__(self, device_id: str, reason: str) -> None:
        self.device_id = device_id
        self.reason = reason
        super().__init__(f"device {device_id}: {reason}")


class BundleError(ProvisioningError):
    """A device bundle or enrolment request is corrupt, incomplete or does not fit this device.

    ``problems`` lists every problem found, so a technician sees all of them at once.
    """

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = list(problems)
        listing = "; ".join(self.problems)
        super().__init__(f"{path}: refused: {listing}")
