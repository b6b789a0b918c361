"""The receiver's side of the transfer protocol (:mod:`evidence.transfer`), without MQTT.

:class:`Ingest` takes one incoming message (topic + payload) at a time and returns the messages
to publish in reply (receipts, resend requests, the clock). It reassembles a segment by writing
each chunk at its offset into a temp file, so memory does not grow with segment size; it checks
every chunk against the signed record's chunk hash on arrival and the whole file at ``fin``; only
then does it commit the file to the content-addressed store, the record to the evidence tree and
the metadata to SQLite, and only after that commit does it sign a receipt.

Failure posture: it believes no device, broker or network. Malformed input (garbage, wrong JSON,
oversized, unknown topic, a device publishing under another device's topic) is logged and
ignored. Evidence that fails verification (unregistered or revoked device, wrong key, bad
signature, tampered chunk or file, a second record for a stored seq) is quarantined with its
reason and answered with a *quarantined* receipt; it is never filed as valid. A store error
(disk full) is logged and answered with nothing, so the device keeps its copy and retries.
:meth:`Ingest.handle` never raises.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from evidence import layout
from evidence import transfer as wire
from evidence.errors import RecordFormatError
from evidence.keys import key_id
from evidence.media import FileDigest
from evidence.receipt import STATUS_QUARANTINED, STATUS_STORED, Receipt
from evidence.records import Record, RecordType, format_utc, parse_utc
from receiver.cases import CaseBook
from receiver.errors import ConflictError, ReceiverError
from receiver.registry import DeviceRegistry
from receiver.store import EvidenceStore, sha256_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outgoing:
    topic: str
    payload: bytes
    retain: bool = False


@dataclass
class Transfer:
    """A segment being received: its signed record and a temp file filled chunk by chunk."""

    record: Record
    record_hash: str
    digest: FileDigest
    file_name: str
    temp: Path
    fd: int
    received: set[int] = field(default_factory=set)
    problem: str | None = None  # first verification failure seen; quarantined at fin
    last_activity: float = field(default_factory=time.monotonic)
    # whole-file hash of the in-order prefix, so the usual in-order transfer is not re-read
    running: Any = field(default_factory=hashlib.sha256)
    next_in_order: int = 0

    @property
    def device(self) -> str:
        return self.record.device

    def missing(self) -> list[int]:
        return [i for i in range(len(self.digest.chunks)) if i not in self.received]

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


@dataclass
class IngestStats:
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    ignored: int = 0
    chunks: int = 0
    bytes_stored: int = 0


def _now() -> str:
    return format_utc(datetime.now(UTC))


class Ingest:
    def __init__(
        self,
        store: EvidenceStore,
        conn: sqlite3.Connection,
        receipt_key: Ed25519PrivateKey,
        *,
        max_segment_bytes: int = 2 * 1024**3,
        max_transfers: int = 64,
        transfer_timeout_s: float = 900.0,
    ) -> None:
        self.store = store
        self.conn = conn
        self.receipt_key = receipt_key
        self.receiver_id = key_id(receipt_key.public_key())
        self.registry = DeviceRegistry(conn)
        self.cases = CaseBook(conn)
        self.max_segment_bytes = max_segment_bytes
        self.max_transfers = max_transfers
        self.transfer_timeout_s = transfer_timeout_s
        self.transfers: dict[str, Transfer] = {}
        self.stats = IngestStats()
        #: monotonic time the message being processed arrived (None when idle); the service
        #: stops petting the systemd watchdog when one message takes too long
        self.busy_since: float | None = None

    # -- entry point -----------------------------------------------------------------------
    def handle(self, topic: str, payload: bytes) -> list[Outgoing]:
        self.busy_since = time.monotonic()
        try:
            return self._handle(topic, payload)
        finally:
            self.busy_since = None

    def _handle(self, topic: str, payload: bytes) -> list[Outgoing]:
        try:
            t = wire.parse_topic(topic)
            if t.direction == "status":
                return []
            if t.direction != "up":
                raise wire.WireError("not an upstream topic", topic)
            if t.kind == wire.UP_CHUNK:
                return self._on_chunk(t.device, wire.unpack_chunk(payload, topic))
            if t.kind == wire.UP_INIT:
                return self._on_init(t.device, wire.parse_json(payload, wire.INIT, topic))
            if t.kind == wire.UP_FIN:
                return self._on_fin(t.device, wire.parse_json(payload, wire.FIN, topic))
            if t.kind == wire.UP_QUERY:
                return self._on_query(t.device, wire.parse_json(payload, wire.QUERY, topic))
            if t.kind == wire.UP_HELLO:
                return self._on_hello(t.device, wire.parse_json(payload, wire.HELLO, topic))
            raise wire.WireError("unhandled message kind", topic)
        except (wire.WireError, RecordFormatError) as exc:
            self.stats.ignored += 1
            reason = exc.reason if isinstance(exc, wire.WireError) else str(exc)
            log.warning("ignored message on %s (%d bytes): %s", topic, len(payload), reason)
        except ReceiverError as exc:
            log.error("could not process message on %s: %s", topic, exc)
        except Exception:  # keep serving: one bad message must not stop the service
            log.exception("unexpected error processing message on %s", topic)
        return []

    # -- hello / clock ---------------------------------------------------------------------
    def _on_hello(self, device: str, msg: dict[str, Any]) -> list[Outgoing]:
        dev = self.registry.get(device)
        if dev is None or dev.revoked:
            log.warning("hello from %s device %s ignored", "revoked" if dev else "unknown", device)
            return []
        now = datetime.now(UTC)
        try:
            offset_s: float | None = (parse_utc(msg["device_utc"]) - now).total_seconds()
        except RecordFormatError:
            offset_s = None
        self.registry.seen(
            device,
            clock_offset_s=offset_s,
            pending_segments=msg["pending_segments"],
            oldest_pending_utc=msg["oldest_pending_utc"],
            report=True,
        )
        reply = {
            "v": wire.PROTOCOL_VERSION,
            "receiver_utc": format_utc(now),
            "echo_device_utc": msg["device_utc"],
            "receiver": self.receiver_id,
        }
        return [Outgoing(wire.down_topic(device, wire.DOWN_CLOCK), wire.encode_json(reply))]

    # -- init ------------------------------------------------------------------------------
    def _on_init(self, device: str, msg: dict[str, Any]) -> list[Outgoing]:
        record = Record.from_dict(msg["record"])
        if record.device != device:
            raise wire.WireError(f"record of device {record.device!r} published by {device!r}")
        record_hash = record.hash()
        stored = self._stored_receipt(record_hash, device)
        if stored is not None:
            self.stats.duplicates += 1
            return [stored]
        problem = self._check_record(record)
        if problem is not None:
            return [self._quarantine(record, record_hash, problem)]
        if record.type != RecordType.SEGMENT:
            return [self._commit(record, record_hash, None)]
        if record_hash in self.transfers:
            self.transfers[record_hash].last_activity = time.monotonic()
            return []
        return self._open_transfer(record, record_hash)

    def _check_record(self, record: Record) -> str | None:
        dev = self.registry.get(record.device)
        if dev is None:
            return f"device {record.device} is not registered"
        if dev.revoked:
            return f"device {record.device} is revoked"
        if record.key != dev.key_id:
            return f"signed with key {record.key}, device is registered with {dev.key_id}"
        if not record.signature_valid(dev.public_key):
            return "record signature does not verify"
        row = self.conn.execute(
            "SELECT hash FROM records WHERE device = ? AND seq = ?", (record.device, record.seq)
        ).fetchone()
        if row is not None:
            return f"seq {record.seq} is already stored as a different record {row['hash'][:16]}…"
        return None

    def _open_transfer(self, record: Record, record_hash: str) -> list[Outgoing]:
        body = record.body
        try:
            file_name = body["file"]
            digest = FileDigest.from_dict(body["stored"] or body["media"])
            if not isinstance(file_name, str) or not layout.SAFE_NAME_RE.match(file_name):
                raise RecordFormatError(f"segment file name {file_name!r} is not a safe name")
        except (KeyError, TypeError, RecordFormatError) as exc:
            return [self._quarantine(record, record_hash, f"malformed segment body: {exc}")]
        if digest.size > self.max_segment_bytes:
            return [
                self._quarantine(
                    record, record_hash, f"segment of {digest.size} bytes exceeds the limit"
                )
            ]
        if not wire.MIN_CHUNK_SIZE_BYTES <= digest.chunk_size <= wire.MAX_CHUNK_SIZE_BYTES:
            return [
                self._quarantine(
                    record, record_hash, f"chunk size {digest.chunk_size} outside the wire limits"
                )
            ]
        if self.store.has_object(digest.sha256):
            # same bytes already stored (re-sent after a crash between object and metadata)
            return [self._commit(record, record_hash, (file_name, digest))]
        self._evict_if_full()
        temp = self.store.temp_path(record_hash)
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.transfers[record_hash] = Transfer(record, record_hash, digest, file_name, temp, fd)
        if digest.size == 0:
            return []
        log.debug("transfer of %s seq %d opened", record.device, record.seq)
        return []

    def _evict_if_full(self) -> None:
        while len(self.transfers) >= self.max_transfers:
            oldest = min(self.transfers.values(), key=lambda t: t.last_activity)
            log.warning("dropping idle transfer %s to make room", oldest.record_hash[:16])
            self._drop(oldest)

    def _drop(self, tr: Transfer) -> None:
        tr.close()
        self.transfers.pop(tr.record_hash, None)
        with contextlib.suppress(FileNotFoundError):
            tr.temp.unlink()

    def expire(self) -> int:
        """Drop transfers idle for longer than the timeout (their temp files go too)."""
        limit = time.monotonic() - self.transfer_timeout_s
        stale = [t for t in self.transfers.values() if t.last_activity < limit]
        for tr in stale:
            log.info("transfer %s idle too long, dropped", tr.record_hash[:16])
            self._drop(tr)
        return len(stale)

    # -- chunk -----------------------------------------------------------------------------
    def _on_chunk(self, device: str, chunk: wire.Chunk) -> list[Outgoing]:
        tr = self.transfers.get(chunk.record)
        if tr is None:
            log.debug("chunk %d for unknown transfer %s ignored", chunk.index, chunk.record[:16])
            return []
        if tr.device != device:
            raise wire.WireError(f"chunk for a transfer of {tr.device!r} published by {device!r}")
        tr.last_activity = time.monotonic()
        d = tr.digest
        if tr.problem is not None or chunk.index in tr.received:
            return []
        if chunk.index >= len(d.chunks):
            tr.problem = f"chunk index {chunk.index} beyond the {len(d.chunks)} signed chunks"
            return []
        expected_len = min(d.chunk_size, d.size - chunk.index * d.chunk_size)
        if chunk.offset != chunk.index * d.chunk_size or len(chunk.data) != expected_len:
            tr.problem = f"chunk {chunk.index} has offset/length not matching the signed record"
            return []
        if chunk.sha256 != d.chunks[chunk.index]:
            tr.problem = f"chunk {chunk.index} does not match its signed hash (tampered)"
            return []
        os.pwrite(tr.fd, chunk.data, chunk.offset)
        tr.received.add(chunk.index)
        if chunk.index == tr.next_in_order:
            tr.running.update(chunk.data)
            tr.next_in_order += 1
        self.stats.chunks += 1
        return []

    # -- fin -------------------------------------------------------------------------------
    def _on_fin(self, device: str, msg: dict[str, Any]) -> list[Outgoing]:
        record_hash = msg["record"]
        known = self._known_receipt(record_hash, device)
        if known is not None:
            return [known]
        tr = self.transfers.get(record_hash)
        if tr is None:
            return [self._need(device, record_hash, wire.NEED_ALL, [], "no transfer in progress")]
        if tr.device != device:
            raise wire.WireError(f"fin for a transfer of {tr.device!r} published by {device!r}")
        tr.last_activity = time.monotonic()
        d = tr.digest
        if tr.problem is None and (
            msg["size"] != d.size or msg["sha256"] != d.sha256 or msg["chunks"] != len(d.chunks)
        ):
            tr.problem = "fin does not describe the signed file"
        if tr.problem is not None:
            return [self._quarantine_transfer(tr, tr.problem)]
        missing = tr.missing()
        if missing:
            return [
                self._need(
                    device, record_hash, wire.NEED_CHUNKS, missing[: wire.MAX_NEED_CHUNKS], "gaps"
                )
            ]
        tr.close()
        if tr.next_in_order == len(d.chunks):
            sha, size = tr.running.hexdigest(), os.stat(tr.temp).st_size
        else:  # chunks came out of order (resends): hash what is on disk
            sha, size = sha256_file(tr.temp)
        if sha != d.sha256 or size != d.size:
            return [self._quarantine_transfer(tr, "assembled file does not match its signed hash")]
        self.store.commit_object(tr.temp, d.sha256)
        self.transfers.pop(record_hash, None)
        return [self._commit(tr.record, record_hash, (tr.file_name, d))]

    # -- query -----------------------------------------------------------------------------
    def _on_query(self, device: str, msg: dict[str, Any]) -> list[Outgoing]:
        out: list[Outgoing] = []
        for record_hash in msg["records"][: wire.MAX_QUERY_RECORDS]:
            if not isinstance(record_hash, str) or not wire._HEX64.match(record_hash):
                raise wire.WireError("query lists something that is not a record hash")
            known = self._known_receipt(record_hash, device)
            if known is not None:
                out.append(known)
                continue
            tr = self.transfers.get(record_hash)
            if tr is not None and tr.device == device and tr.problem is None:
                missing = tr.missing()[: wire.MAX_NEED_CHUNKS]
                out.append(self._need(device, record_hash, wire.NEED_CHUNKS, missing, "query"))
            else:
                out.append(self._need(device, record_hash, wire.NEED_ALL, [], "unknown"))
        return out

    def _need(
        self, device: str, record_hash: str, what: str, chunks: list[int], reason: str
    ) -> Outgoing:
        msg = {
            "v": wire.PROTOCOL_VERSION,
            "record": record_hash,
            "what": what,
            "chunks": chunks,
            "reason": reason,
        }
        return Outgoing(wire.down_topic(device, wire.DOWN_NEED), wire.encode_json(msg))

    # -- commit and receipts ---------------------------------------------------------------
    def _commit(
        self, record: Record, record_hash: str, media: tuple[str, FileDigest] | None
    ) -> Outgoing:
        data = record.canonical()
        if media is not None:
            conflict = self.store.media_conflict(record.device, media[0], media[1].sha256)
            if conflict is not None:
                return self._quarantine(record, record_hash, conflict)
        try:
            self.store.write_record(record.device, record.seq, data)
            if media is not None:
                self.store.link_media(record.device, media[0], media[1].sha256)
        except ConflictError as exc:
            return self._quarantine(record, record_hash, str(exc))
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute(
                "INSERT INTO records (hash, device, seq, session, type, prev, utc, body, "
                "media_file, media_sha256, media_size, stored_utc) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record_hash,
                    record.device,
                    record.seq,
                    record.session,
                    record.type,
                    record.prev,
                    record.time.utc,
                    json.dumps(record.body, ensure_ascii=False),
                    media[0] if media else None,
                    media[1].sha256 if media else None,
                    media[1].size if media else None,
                    _now(),
                ),
            )
            if record.type == RecordType.SESSION_OPEN:
                case = self.cases.file_on_open(record.session, record.device, record.body)
                log.info(
                    "session %s of %s %s",
                    record.session,
                    record.device,
                    f"filed to case {case}" if case else "put in the unfiled inbox",
                )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.registry.seen(record.device)
        self.stats.stored += 1
        if media is not None:
            self.stats.bytes_stored += media[1].size
        log.debug("stored %s seq %d (%s)", record.device, record.seq, record.type)
        return self._receipt(
            record.device,
            record_hash,
            record.seq,
            record.type,
            STATUS_STORED,
            None,
            media[1].sha256 if media else None,
            media[1].size if media else None,
        )

    def _quarantine_transfer(self, tr: Transfer, reason: str) -> Outgoing:
        tr.close()
        self.transfers.pop(tr.record_hash, None)
        return self._quarantine(tr.record, tr.record_hash, reason, media=tr.temp)

    def _quarantine(
        self, record: Record, record_hash: str, reason: str, media: Path | None = None
    ) -> Outgoing:
        seen = self.conn.execute(
            "SELECT 1 FROM quarantine WHERE record_hash = ? AND reason = ?", (record_hash, reason)
        ).fetchone()
        if seen is not None:
            # the same evidence failing the same way again: answer, but keep one copy
            if media is not None:
                with contextlib.suppress(FileNotFoundError):
                    media.unlink()
            return self._receipt(
                record.device, record_hash, record.seq, record.type, STATUS_QUARANTINED, reason
            )
        path = self.store.quarantine(
            device=record.device,
            record_hash=record_hash,
            reason=reason,
            record_bytes=record.canonical(),
            media=media,
        )
        self.conn.execute(
            "INSERT INTO quarantine (device, record_hash, seq, session, record_type, reason, "
            "path, utc) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.device,
                record_hash,
                record.seq,
                record.session,
                record.type,
                reason,
                str(path.relative_to(self.store.data_dir)),
                _now(),
            ),
        )
        self.stats.quarantined += 1
        log.warning(
            "quarantined %s seq %d (%s): %s", record.device, record.seq, record.type, reason
        )
        return self._receipt(
            record.device, record_hash, record.seq, record.type, STATUS_QUARANTINED, reason
        )

    def _stored_receipt(self, record_hash: str, device: str) -> Outgoing | None:
        # only ever about the asking device's own records: no device learns of another's
        row = self.conn.execute(
            "SELECT device, seq, type, media_sha256, media_size FROM records "
            "WHERE hash = ? AND device = ?",
            (record_hash, device),
        ).fetchone()
        if row is None:
            return None
        return self._receipt(
            row["device"],
            record_hash,
            row["seq"],
            row["type"],
            STATUS_STORED,
            None,
            row["media_sha256"],
            row["media_size"],
        )

    def _known_receipt(self, record_hash: str, device: str) -> Outgoing | None:
        """The receipt for a record already decided on (stored or quarantined), if any."""
        stored = self._stored_receipt(record_hash, device)
        if stored is not None:
            return stored
        row = self.conn.execute(
            "SELECT device, seq, record_type, reason FROM quarantine WHERE record_hash = ? "
            "AND device = ? ORDER BY id DESC LIMIT 1",
            (record_hash, device),
        ).fetchone()
        if row is None or record_hash in self.transfers:
            return None
        return self._receipt(
            row["device"],
            record_hash,
            row["seq"],
            row["record_type"] or "unknown",
            STATUS_QUARANTINED,
            row["reason"],
        )

    def _receipt(
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

    def close(self) -> None:
        for tr in list(self.transfers.values()):
            tr.close()
