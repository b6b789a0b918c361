"""Admission: the verdict on one record (accept, quarantine, or *later*) and its answer.

A record of a registered device is refused for good (quarantined, with a *quarantined* receipt
the device sees) when it is revoked, signed with another key, its signature does not verify,
it is invalid as evidence although signed (:func:`receiver.ingest.messages.record_problem`), or
it contradicts the device's stored chain (another record holds its seq, or its ``prev`` is not
the stored predecessor). A record whose predecessor is not stored yet continues nothing: it
waits (see :class:`receiver.ingest.core.Ingest`). Refusals whose cause can go away (device not
registered yet, a full disk, a full quarantine quota) are answered ``need: later``.

Quarantine is bounded per device (items and bytes): beyond the quota nothing more of that
device is kept, the refusal is counted in one summary row per device, and the device is told
why ("later", so it keeps its copy).

Failure posture: SQLite and store errors propagate (the caller answers "later"); nothing is
half-kept.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from evidence import transfer as wire
from evidence.keys import key_id
from evidence.receipt import STATUS_QUARANTINED, Receipt
from evidence.records import GENESIS_PREV, Record
from receiver.custody import record_event
from receiver.ingest.limits import Limits, LogLimiter
from receiver.ingest.messages import record_problem
from receiver.registry import DeviceRegistry, DockRegistryFollower
from receiver.store import EvidenceStore
from receiver.store.records import RecordsTable

log = logging.getLogger(__name__)

CONTINUES = "continues"
WAITS = "waits"


@dataclass(frozen=True)
class Outgoing:
    """One message to publish (QoS 1)."""

    topic: str
    payload: bytes
    retain: bool = False


def need(device: str, record_hash: str, what: str, chunks: list[int], reason: str) -> Outgoing:
    msg = {
        "v": wire.PROTOCOL_VERSION,
        "record": record_hash,
        "what": what,
        "chunks": chunks,
        "reason": reason,
    }
    return Outgoing(wire.down_topic(device, wire.DOWN_NEED), wire.encode_json(msg))


class Admission:
    def __init__(
        self,
        store: EvidenceStore,
        conn: sqlite3.Connection,
        receipt_key: Ed25519PrivateKey,
        limits: Limits,
        logs: LogLimiter,
        dock_registry: Path | None,
    ) -> None:
        self.store = store
        self.conn = conn
        self.table = RecordsTable(conn)
        self.receipt_key = receipt_key
        self.receiver_id = key_id(receipt_key.public_key())
        self.limits = limits
        self.logs = logs
        self.registry = DeviceRegistry(conn)
        self.follower = (
            DockRegistryFollower(self.registry, dock_registry) if dock_registry else None
        )
        self.quarantined = 0
        self.deferred = 0

    def refresh_registry(self) -> None:
        """Apply enrolments and revocations made at the dock since the last message."""
        if self.follower is not None:
            self.follower.refresh()

    # -- verdicts --------------------------------------------------------------------------
    def problem(self, record: Record) -> str | None:
        """Why a record of a registered device is refused for good, or None."""
        dev = self.registry.get(record.device)
        if dev is None:
            return f"device {record.device} is not registered"
        if dev.revoked:
            return dev.revocation
        if record.key != dev.key_id:
            return f"signed with key {record.key}, device is registered with {dev.key_id}"
        if not record.signature_valid(dev.public_key):
            return "record signature does not verify"
        invalid = record_problem(record)
        if invalid is not None:
            return f"signed but invalid: {invalid}"
        return self.chain_problem(record)

    def chain_problem(self, record: Record) -> str | None:
        """A contradiction with the stored chain (a fork), or None."""
        held = self.table.hash_at(record.device, record.seq)
        # the same record kept in quarantine for its media only (a chain link) may come back
        # with good media: that continues the chain, it does not fork it
        if held is not None and held != record.hash():
            return f"seq {record.seq} is already stored as a different record {held[:16]}…"
        if record.seq == 0:
            return None if record.prev == GENESIS_PREV else "seq 0 does not start the chain"
        before = self.table.hash_at(record.device, record.seq - 1)
        if before is not None and before != record.prev:
            return f"prev does not match the stored record at seq {record.seq - 1} {before[:16]}…"
        return None

    def chain_state(self, record: Record) -> str:
        """CONTINUES when the record may be stored now, WAITS for its predecessor otherwise
        (call after :meth:`chain_problem` returned None)."""
        if record.seq == 0 or self.table.hash_at(record.device, record.seq - 1) is not None:
            return CONTINUES
        return WAITS

    # -- answers ---------------------------------------------------------------------------
    def quarantine(
        self,
        record: Record,
        record_hash: str,
        reason: str,
        media: Path | None = None,
        *,
        media_only: bool = False,
    ) -> Outgoing:
        """Keep ``record`` (and its media) in quarantine and answer with a quarantined
        receipt. ``media_only``: the record is authentic and only its media are refused; when
        it continues the stored chain, it stays a link of the chain its successors continue."""
        dev = record.device
        if self.table.quarantined_for(record_hash, dev, reason):
            # the same evidence failing the same way again: answer, but keep one copy
            if media is not None:
                with contextlib.suppress(FileNotFoundError):
                    media.unlink()
            return self.receipt_quarantined(record, record_hash, reason)
        data = record.canonical()
        size = len(data) + (media.stat().st_size if media is not None and media.exists() else 0)
        count, held = self.table.quarantine_usage(dev)
        lim = self.limits
        if count >= lim.device_quarantine_count or held + size > lim.device_quarantine_bytes:
            if media is not None:
                with contextlib.suppress(FileNotFoundError):
                    media.unlink()
            self.table.note_overflow(dev, size, reason)
            why = (
                f"quarantine of device {dev} is full ({count} items, {held} bytes; limits"
                f" {lim.device_quarantine_count}, {lim.device_quarantine_bytes}): not kept"
                f" ({reason})"
            )
            self.logs.log(logging.WARNING, dev, "quarantine-full", "%s", why)
            self.deferred += 1
            return need(dev, record_hash, wire.NEED_LATER, [], why)
        path = self.store.quarantine(
            device=dev, record_hash=record_hash, reason=reason, record_bytes=data, media=media
        )
        link = media_only and self.chain_state(record) == CONTINUES
        self.table.add_quarantine(
            record,
            record_hash,
            reason,
            str(path.relative_to(self.store.data_dir)),
            size,
            chain_link=link,
        )
        record_event(
            self.table.conn,
            "quarantine",
            actor=f"device:{dev}",
            device=dev,
            seq=record.seq,
            session=record.session,
            record=record_hash,
            detail=reason,
            path=str(path.relative_to(self.store.data_dir)),
        )
        self.quarantined += 1
        self.logs.log(
            logging.WARNING,
            dev,
            "quarantined",
            "quarantined %s seq %d (%s): %s",
            dev,
            record.seq,
            record.type,
            reason,
        )
        return self.receipt_quarantined(record, record_hash, reason)

    def defer(self, record: Record, record_hash: str, reason: str) -> Outgoing:
        """Not accepted *yet*: list it as waiting (bounded per device) and say "later"."""
        try:
            if self.table.waiting_count(record.device) < self.limits.device_waiting_records:
                self.table.wait(record, record_hash, reason)
        except sqlite3.Error as exc:  # a full disk may refuse this too; the device retries
            # the line below says it is not accepted and why; this would be a second one
            log.debug("could not list %s seq %d as waiting: %s", record.device, record.seq, exc)
        self.deferred += 1
        self.logs.log(
            logging.WARNING,
            record.device,
            "later",
            "not accepted yet: %s seq %d (%s): %s; the device keeps it and resends later",
            record.device,
            record.seq,
            record.type,
            reason,
        )
        return need(record.device, record_hash, wire.NEED_LATER, [], reason)

    def receipt_quarantined(self, record: Record, record_hash: str, reason: str) -> Outgoing:
        return self.receipt(
            record.device, record_hash, record.seq, record.type, STATUS_QUARANTINED, reason
        )

    def receipt(
        self,
        device: str,
        record_hash: str,
        seq: int,
        record_type: str,
        status: str,
        reason: str | None,
        media_sha256: str | None = None,
        media_size: int | None = None,
    ) -> Outgoing:
        receipt = Receipt.create(
            device=device,
            record=record_hash,
            seq=seq,
            record_type=record_type,
            status=status,
            reason=reason,
            media_sha256=media_sha256,
            media_size=media_size,
            receiver_key=self.receipt_key,
        )
        return Outgoing(wire.down_topic(device, wire.DOWN_RECEIPT), receipt.canonical())
