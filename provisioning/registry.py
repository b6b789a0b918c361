"""The dock's device registry: one JSON file, written atomically under an exclusive lock.

It records, per device id: status (active/revoked), the Ed25519 evidence-signing public key the
receiver must trust for it, and every certificate ever issued to it (serials feed the CRL).
The receiver follows this file (its ``dock_registry`` setting): it reads it with
:func:`read_entries`, without the lock, which is safe because every write is an atomic rename.

Failure posture: a registry file that cannot be parsed raises :class:`DockError` and is never
overwritten; changes go through :meth:`Registry.update`, which holds ``registry.lock`` (flock)
for the whole read-modify-write so two technicians' commands cannot lose each other's changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evidence.fsutil import atomic_write
from provisioning.errors import DockError

REGISTRY_FORMAT = "bodycam-device-registry/1"
ACTIVE = "active"
REVOKED = "revoked"


@dataclass
class CertificateEntry:
    serial: int
    fingerprint: str
    issued_utc: str
    not_after_utc: str


@dataclass
class DeviceEntry:
    device_id: str
    status: str
    enrolled_utc: str
    signing_key_id: str
    signing_public_pem: str
    certificates: list[CertificateEntry] = field(default_factory=list)
    revoked_utc: str | None = None
    revoke_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeviceEntry:
        certs = [CertificateEntry(**c) for c in d.get("certificates", [])]
        return cls(**{**d, "certificates": certs})


def read_entries(path: Path) -> list[DeviceEntry]:
    """The entries of a registry file, read without taking its lock (for the receiver, which may
    not be allowed to write in the dock directory). A missing file is an empty registry."""
    return [e for _, e in sorted(Registry(path)._load().items())]


class Registry:
    """Device entries of one dock, kept in ``path`` (JSON) with ``path``.lock beside it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_suffix(".lock")

    def _load(self) -> dict[str, DeviceEntry]:
        if not self.path.exists():
            return {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if raw.get("format") != REGISTRY_FORMAT:
                raise ValueError(f"unknown format {raw.get('format')!r}")
            return {k: DeviceEntry.from_dict(v) for k, v in raw["devices"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DockError(
                self.path.parent, f"device registry {self.path.name} is unreadable: {exc}"
            ) from exc

    def _save(self, entries: dict[str, DeviceEntry]) -> None:
        doc = {
            "format": REGISTRY_FORMAT,
            "devices": {k: entries[k].to_dict() for k in sorted(entries)},
        }
        atomic_write(self.path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def entries(self) -> list[DeviceEntry]:
        with self._locked():
            return [e for _, e in sorted(self._load().items())]

    def get(self, device_id: str) -> DeviceEntry | None:
        with self._locked():
            return self._load().get(device_id)

    @contextlib.contextmanager
    def update(self) -> Iterator[dict[str, DeviceEntry]]:
        """Yield the entries for modification; they are saved when the block ends without error."""
        with self._locked():
            entries = self._load()
            yield entries
            self._save(entries)
