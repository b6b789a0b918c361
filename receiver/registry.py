"""Device registry: each device's Ed25519 public key, revoked flag and dock status.

A record is accepted only from a registered, non-revoked device and only when signed with the
key registered for it. Devices come from two places: the provisioning dock's registry
(``dock_registry`` in the receiver config, followed by :class:`DockRegistryFollower` on every
change, so ``bodycam-provision enrol``/``revoke`` take effect here without a second command) and
``bodycam-receiver device add/revoke`` for devices provisioned elsewhere.

Failure posture: unreadable key files and unknown devices raise
:class:`InvalidInputError`/:class:`NotFoundError`; nothing is half-registered. A revocation is
never undone: neither a later ``device add`` nor the dock's registry clears it. A dock registry
that cannot be read is logged and the last state read stays in force (revocations included).
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from evidence.errors import KeyFileError
from evidence.keys import key_id, load_public_key, public_pem
from evidence.records import DEVICE_ID_RE
from receiver.custody import record_event
from receiver.errors import InvalidInputError, NotFoundError
from receiver.store.devices import DevicesTable

log = logging.getLogger(__name__)

#: the custody log's actor for what the receiver takes from the provisioning dock's registry
DOCK_ACTOR = "dock-registry"

SOURCE_DOCK = "dock"
SOURCE_MANUAL = "manual"


@dataclass(frozen=True)
class Device:
    id: str
    key_id: str
    public_key: Ed25519PublicKey
    revoked: bool
    added_utc: str
    last_seen_utc: str | None
    clock_offset_s: float | None
    pending_segments: int | None
    oldest_pending_utc: str | None
    revoked_utc: str | None = None
    revoke_reason: str | None = None
    source: str = SOURCE_MANUAL

    @property
    def revocation(self) -> str:
        """The quarantine reason for anything from this device (starts "device revoked")."""
        detail = ", ".join(x for x in (self.revoked_utc, self.revoke_reason) if x)
        return f"device revoked: {self.id}" + (f" ({detail})" if detail else "")


def _row_to_device(row: sqlite3.Row) -> Device:
    key = serialization.load_pem_public_key(row["public_key_pem"].encode("ascii"))
    assert isinstance(key, Ed25519PublicKey)  # only Ed25519 keys are ever inserted
    return Device(
        id=row["id"],
        key_id=row["key_id"],
        public_key=key,
        revoked=bool(row["revoked"]),
        added_utc=row["added_utc"],
        last_seen_utc=row["last_seen_utc"],
        clock_offset_s=row["clock_offset_s"],
        pending_segments=row["pending_segments"],
        oldest_pending_utc=row["oldest_pending_utc"],
        revoked_utc=row["revoked_utc"],
        revoke_reason=row["revoke_reason"],
        source=row["source"],
    )


class DeviceRegistry:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.table = DevicesTable(conn)

    def add(self, device_id: str, key_file: Path, *, replace_key: bool = False) -> Device:
        if not DEVICE_ID_RE.fullmatch(device_id):
            raise InvalidInputError("device id", f"{device_id!r} is not a valid device id")
        try:
            public = load_public_key(key_file)
        except KeyFileError as exc:
            raise InvalidInputError("key", str(exc)) from exc
        return self.add_key(device_id, public, replace_key=replace_key)

    def add_key(
        self,
        device_id: str,
        public: Ed25519PublicKey,
        *,
        replace_key: bool = False,
        source: str = SOURCE_MANUAL,
    ) -> Device:
        pem = public_pem(public).decode("ascii")
        existing = self.get(device_id)
        if existing is not None and existing.key_id != key_id(public) and not replace_key:
            raise InvalidInputError(
                "key",
                f"device {device_id} is registered with key {existing.key_id}; "
                "pass --replace-key to re-enrol it",
            )
        self.table.upsert_key(device_id, pem, key_id(public), source)
        device = self.get(device_id)
        assert device is not None
        return device

    def revoke(
        self, device_id: str, reason: str | None = None, *, revoked_utc: str | None = None
    ) -> Device:
        """Refuse everything from the device from now on (idempotent; first reason kept)."""
        if not self.table.revoke(device_id, reason, revoked_utc):
            raise NotFoundError("device", device_id)
        device = self.get(device_id)
        assert device is not None
        return device

    def get(self, device_id: str) -> Device | None:
        row = self.table.row(device_id)
        return _row_to_device(row) if row else None

    def all(self) -> list[Device]:
        return [_row_to_device(r) for r in self.table.rows()]

    def seen(
        self,
        device_id: str,
        *,
        clock_offset_s: float | None = None,
        pending_segments: int | None = None,
        oldest_pending_utc: str | None = None,
        report: bool = False,
    ) -> None:
        """Note that a device talked to us; ``report=True`` also stores its hello figures."""
        self.table.seen(
            device_id,
            report=report,
            clock_offset_s=clock_offset_s,
            pending_segments=pending_segments,
            oldest_pending_utc=oldest_pending_utc,
        )


@dataclass
class SyncResult:
    added: list[str]
    revoked: list[str]


class DockRegistryFollower:
    """Mirrors the provisioning dock's device registry into the receiver's, on every change.

    :meth:`refresh` costs one ``stat`` when nothing changed, so the ingest calls it for every
    record it is about to judge: an enrolment or revocation counts from the next message on.
    """

    def __init__(self, registry: DeviceRegistry, path: Path) -> None:
        self.registry = registry
        self.path = Path(path)
        self._seen: tuple[int, int, int] | None = None

    def refresh(self) -> SyncResult | None:
        """Re-read the dock registry if it changed; None when it did not (or is unreadable)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            stamp = (0, 0, 0)
        except OSError as exc:
            log.error("dock registry %s cannot be read: %s", self.path, exc)
            return None
        else:
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._seen:
            return None
        # also after a failed read: it is logged once and retried when the file changes
        self._seen = stamp
        try:
            return self.sync()
        except Exception:
            # not applied (e.g. the database's disk is full): try again at the next refresh,
            # or the devices it adds stay unknown until the file changes
            self._seen = None
            raise

    def sync(self) -> SyncResult | None:
        # imported here: provisioning is only needed where a dock registry is configured
        from provisioning.errors import ProvisioningError
        from provisioning.registry import REVOKED, read_entries

        try:
            entries = read_entries(self.path)
        except ProvisioningError as exc:
            log.error("dock registry not applied (last state stays in force): %s", exc)
            return None
        result = SyncResult([], [])
        for entry in entries:
            try:
                public = serialization.load_pem_public_key(entry.signing_public_pem.encode())
            except ValueError as exc:
                log.error("dock registry: %s has an unusable key: %s", entry.device_id, exc)
                continue
            if not isinstance(public, Ed25519PublicKey) or not DEVICE_ID_RE.fullmatch(
                entry.device_id
            ):
                log.error("dock registry: %s is not a valid device entry", entry.device_id)
                continue
            current = self.registry.get(entry.device_id)
            if current is None or current.key_id != key_id(public):
                if current is not None:
                    log.warning(
                        "device %s: key %s from the dock registry replaces %s",
                        entry.device_id,
                        key_id(public),
                        current.key_id,
                    )
                device = self.registry.add_key(
                    entry.device_id, public, replace_key=True, source=SOURCE_DOCK
                )
                # custody (Art. 5): the audit holds the key to this entry from now on
                record_event(
                    self.registry.conn,
                    "device-registration",
                    actor=DOCK_ACTOR,
                    device=device.id,
                    key=device.key_id,
                )
                result.added.append(entry.device_id)
                log.info("device %s registered from the dock registry", entry.device_id)
            if entry.status == REVOKED and not (current is not None and current.revoked):
                self.registry.revoke(
                    entry.device_id, entry.revoke_reason, revoked_utc=entry.revoked_utc
                )
                record_event(
                    self.registry.conn,
                    "device-revocation",
                    actor=DOCK_ACTOR,
                    device=entry.device_id,
                    detail=entry.revoke_reason,
                )
                result.revoked.append(entry.device_id)
                log.warning(
                    "device %s revoked at the dock (%s): its uploads are quarantined from now on",
                    entry.device_id,
                    entry.revoke_reason,
                )
        return result
