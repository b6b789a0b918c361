"""The receiver's side of the transfer protocol (:mod:`evidence.transfer`), without MQTT.

:class:`Ingest` takes one incoming message (topic + payload) at a time and returns the messages
to publish in reply (receipts, resend requests, the clock). It reassembles a segment by writing
each chunk at its offset into a temp file, so memory does not grow with segment size; it checks
every chunk against the signed record's chunk hash on arrival and the whole file at ``fin``; only
then does it commit the file to the content-addressed store, the record to the evidence tree and
the metadata to SQLite, and only after that commit does it sign a receipt.

Failure posture: it believes no device, broker or network. Malformed input (garbage, wrong JSON,
oversized, unknown topic, a device publishing under another device's topic) is logged and
ignored. Evidence that fails verification for good (revoked device, wrong key, bad signature,
tampered chunk or file, a second record for a stored seq, encrypted media that are not for this
receiver, do not decrypt or whose plaintext does not match its signed digest) is quarantined
with its reason and answered with a *quarantined* receipt (the device stops resending it); it is
never filed as valid. A refusal whose cause can go away (the device is not registered *yet*, no
``encryption_key`` is configured, a local storage or I/O failure such as a full disk) is never a
quarantine: the record is listed in the ``waiting`` table and answered with a ``need`` of kind
:data:`NEED_LATER`, so the device keeps its copy and resends after a back-off; once the cause is
fixed the next attempt is stored and receipted (Art. 14: nothing stranded on the device). The
same checks apply whatever the route: MQTT, or ``bodycam-receiver import`` of a spool copy
(:mod:`receiver.importer`), which feeds the very same messages through :meth:`handle`.
:meth:`Ingest.handle` never raises.

Encryption at rest: a segment with ``stored`` + ``encryption`` arrives as ciphertext. Its chunks
and whole file are checked against the signed ``stored`` digest, then it is decrypted with the
receiver's X25519 key and the plaintext checked against the signed ``media`` digest (a segment
recovered after a crash has ``media: null``; its authenticated prefix is accepted in the
explicit recovered-prefix mode). Both are kept as content-addressed objects: the ciphertext is
the original the device signed (the evidence tree verifies without a key), the plaintext is what
playback and export use (see ``receiver/README.md``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from evidence import encryption, layout
from evidence import transfer as wire
from evidence.errors import EvidenceError, RecordFormatError
from evidence.keys import key_id
from evidence.media import CHUNK_SIZE, FileDigest, StreamingDigest
from evidence.receipt import STATUS_QUARANTINED, STATUS_STORED, Receipt
from evidence.records import Record, RecordType, format_utc, parse_utc
from receiver.cases import CaseBook
from receiver.custody import record_event
from receiver.custody.anchors import accept_chain_head
from receiver.errors import ConflictError, ReceiverError, StoreError
from receiver.registry import DeviceRegistry, DockRegistryFollower
from receiver.store import EvidenceStore, sha256_file

log = logging.getLogger(__name__)

NEED_LATER = wire.NEED_LATER

# Local failures while storing: retryable, never a verdict on the evidence.
_LOCAL_FAILURES = (OSError, StoreError, sqlite3.OperationalError)


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
    deferred: int = 0
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
        dock_registry: Path | None = None,
        encryption_key: X25519PrivateKey | None = None,
    ) -> None:
        self.store = store
        self.conn = conn
        self.receipt_key = receipt_key
        self.receiver_id = key_id(receipt_key.public_key())
        self.registry = DeviceRegistry(conn)
        self.follower = (
            DockRegistryFollower(self.registry, dock_registry) if dock_registry else None
        )
        self.encryption_key = encryption_key
        self.recipient = (
            encryption.recipient_id(encryption_key.public_key()) if encryption_key else None
        )
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
        self.refresh_registry()
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
        if msg.get("chain_head") is not None:  # custody hook: anchor the chain's tail
            refused = accept_chain_head(self.conn, device, dev.public_key, msg["chain_head"])
            if refused:
                log.warning("chain head from %s refused: %s", device, refused)
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
        self.refresh_registry()
        if self.registry.get(record.device) is None:
            # enrolment may simply come later (docked before the clerk registered it)
            return [self._defer(record, record_hash, f"device {record.device} is not registered")]
        problem = self._check_record(record)
        if problem is not None:
            return [self._quarantine(record, record_hash, problem)]
        if record.type != RecordType.SEGMENT:
            return [
                self._or_defer(record, record_hash, lambda: self._commit(record, record_hash, None))
            ]
        if record_hash in self.transfers:
            self.transfers[record_hash].last_activity = time.monotonic()
            return []
        return self._open_transfer(record, record_hash)

    def refresh_registry(self) -> None:
        """Apply enrolments and revocations made at the dock since the last message."""
        if self.follower is not None:
            self.follower.refresh()

    def _check_record(self, record: Record) -> str | None:
        """Why a record of a registered device is refused for good, or None."""
        self.refresh_registry()
        dev = self.registry.get(record.device)
        if dev is None:
            return f"device {record.device} is not registered"
        if dev.revoked:
            return dev.revocation
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
        if body.get("encryption") is not None and self.encryption_key is None:
            return [
                self._defer(
                    record,
                    record_hash,
                    "media are encrypted but this receiver has no encryption_key configured",
                )
            ]
        problem = self._encryption_problem(body)
        if problem is not None:
            return [self._quarantine(record, record_hash, problem)]
        if self.store.has_object(digest.sha256):
            # same bytes already stored (re-sent after a crash between object and metadata)
            return [
                self._or_defer(
                    record,
                    record_hash,
                    lambda: self._store_segment(record, record_hash, file_name, digest, None),
                )
            ]
        self._evict_if_full()
        temp = self.store.temp_path(record_hash)
        try:
            fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as exc:
            reason = f"receiver cannot store it now: {exc.strerror or exc}"
            return [self._defer(record, record_hash, reason)]
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

    def abandon(self, record_hash: str) -> None:
        """Forget an unfinished transfer and its temp file (nothing of it is kept)."""
        tr = self.transfers.get(record_hash)
        if tr is not None:
            self._drop(tr)

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
        try:
            os.pwrite(tr.fd, chunk.data, chunk.offset)
        except OSError as exc:  # e.g. disk full: the device resends the whole segment later
            self._drop(tr)
            reason = f"receiver cannot store it now: {exc.strerror or exc}"
            return [self._defer(tr.record, tr.record_hash, reason)]
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
            waiting = self.conn.execute(
                "SELECT reason FROM waiting WHERE record_hash = ? AND device = ?",
                (record_hash, device),
            ).fetchone()
            if waiting is not None:  # its init was just answered "later": say so again
                return [self._need(device, record_hash, NEED_LATER, [], waiting["reason"])]
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
        self.refresh_registry()
        dev = self.registry.get(device)
        if dev is not None and dev.revoked:  # revoked while its media were in flight
            return [self._quarantine_transfer(tr, dev.revocation)]
        self.transfers.pop(record_hash, None)
        return [
            self._or_defer(
                tr.record,
                record_hash,
                lambda: self._store_segment(tr.record, record_hash, tr.file_name, d, tr.temp),
                cleanup=(tr.temp, self.store.plain_temp_path(record_hash)),
            )
        ]

    # -- encrypted media -------------------------------------------------------------------
    def _encryption_problem(self, body: dict[str, Any]) -> str | None:
        """Why an encrypted segment cannot be accepted here at all (checked before its chunks)."""
        enc = body.get("encryption")
        if enc is None:
            if body.get("media") is None:
                return "malformed segment body: no media digest and not encrypted"
            return None
        if not isinstance(enc, dict) or body.get("stored") is None:
            return "malformed segment body: 'encryption' needs a dict and a 'stored' digest"
        if body.get("media") is None and not body.get("recovered"):
            return "malformed segment body: 'media' is null but the segment is not recovered"
        if enc.get("scheme") != encryption.SCHEME:
            return f"media encrypted with unknown scheme {enc.get('scheme')!r}"
        if self.encryption_key is None:
            return "media are encrypted but this receiver has no encryption_key configured"
        if enc.get("recipient") != self.recipient:
            return (
                f"media encrypted to {enc.get('recipient')}, not to this receiver's key"
                f" {self.recipient}"
            )
        return None

    def _decrypt(self, record: Record, record_hash: str, cipher: Path) -> FileDigest | str:
        """Decrypt ``cipher`` into tmp/<hash>.plain and check it; the plaintext digest, or why
        not (then no plaintext file is left). A local I/O failure (reading the ciphertext,
        writing the plaintext) is not a verdict on the media: the OSError propagates."""
        assert self.encryption_key is not None  # _encryption_problem refused it otherwise
        body = record.body
        recovered = body.get("media") is None
        expected = None if recovered else FileDigest.from_dict(body["media"])
        out = self.store.plain_temp_path(record_hash)
        digest = StreamingDigest(expected.chunk_size if expected else CHUNK_SIZE)
        try:
            with open(out, "wb") as f:
                for block in encryption.decrypt_blocks(
                    cipher, self.encryption_key, recovered_prefix=recovered
                ):
                    digest.update(block)
                    f.write(block)
        except EvidenceError as exc:
            with contextlib.suppress(FileNotFoundError):
                out.unlink()
            return f"cannot decrypt: {exc}"
        except OSError:
            with contextlib.suppress(OSError):
                out.unlink()
            raise
        got = digest.finish()
        if expected is not None and (
            got.sha256 != expected.sha256
            or got.size != expected.size
            or got.chunks != expected.chunks
        ):
            with contextlib.suppress(FileNotFoundError):
                out.unlink()
            return "decrypted media does not match its signed plaintext digest"
        return got

    def _store_segment(
        self,
        record: Record,
        record_hash: str,
        file_name: str,
        digest: FileDigest,
        temp: Path | None,
    ) -> Outgoing:
        """Store a segment whose bytes match the signed digest: ``temp`` in tmp/, or (None) an
        object already in the store. Encrypted media are decrypted and checked first."""
        plain: FileDigest | None = None
        if record.body.get("encryption") is not None:
            source = temp if temp is not None else self.store.object_path(digest.sha256)
            checked = self._decrypt(record, record_hash, source)
            if isinstance(checked, str):
                return self._quarantine(record, record_hash, checked, media=temp)
            plain = checked
        if temp is not None:
            self.store.commit_object(temp, digest.sha256)
        if plain is not None:
            self.store.commit_object(self.store.plain_temp_path(record_hash), plain.sha256)
        return self._commit(record, record_hash, (file_name, digest), plain=plain)

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
        self,
        record: Record,
        record_hash: str,
        media: tuple[str, FileDigest] | None,
        *,
        plain: FileDigest | None = None,
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
                "media_file, media_sha256, media_size, stored_utc, plain_sha256, plain_size) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    plain.sha256 if plain else None,
                    plain.size if plain else None,
                ),
            )
            self.conn.execute("DELETE FROM waiting WHERE record_hash = ?", (record_hash,))
            record_event(  # custody hook: commits with the row it describes
                self.conn,
                "ingest",
                actor=f"device:{record.device}",
                device=record.device,
                seq=record.seq,
                session=record.session,
                record=record_hash,
                type=str(record.type),
                media=media[1].sha256 if media else None,
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
        self.conn.execute("DELETE FROM waiting WHERE record_hash = ?", (record_hash,))
        record_event(  # custody hook
            self.conn,
            "quarantine",
            actor=f"device:{record.device}",
            device=record.device,
            seq=record.seq,
            session=record.session,
            record=record_hash,
            detail=reason,
            path=str(path.relative_to(self.store.data_dir)),
        )
        self.stats.quarantined += 1
        log.warning(
            "quarantined %s seq %d (%s): %s", record.device, record.seq, record.type, reason
        )
        return self._receipt(
            record.device, record_hash, record.seq, record.type, STATUS_QUARANTINED, reason
        )

    def _or_defer(
        self,
        record: Record,
        record_hash: str,
        store: Callable[[], Outgoing],
        *,
        cleanup: tuple[Path, ...] = (),
    ) -> Outgoing:
        """Run ``store``; a local failure (disk full, I/O error, database locked) leaves nothing
        half-kept and asks the device to resend later instead of refusing the evidence."""
        try:
            return store()
        except _LOCAL_FAILURES as exc:
            for path in cleanup:
                with contextlib.suppress(OSError):
                    path.unlink()
            detail = exc.reason if isinstance(exc, StoreError) else (str(exc) or repr(exc))
            return self._defer(record, record_hash, f"receiver cannot store it now: {detail}")

    def _defer(self, record: Record, record_hash: str, reason: str) -> Outgoing:
        """Not accepted *yet*: list it as waiting and tell the device to resend it later."""
        now = _now()
        try:
            self.conn.execute(
                "INSERT INTO waiting (record_hash, device, seq, session, record_type, reason, "
                "first_utc, last_utc) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (record_hash) DO UPDATE SET reason = excluded.reason, "
                "last_utc = excluded.last_utc, attempts = attempts + 1",
                (
                    record_hash,
                    record.device,
                    record.seq,
                    record.session,
                    record.type,
                    reason,
                    now,
                    now,
                ),
            )
        except sqlite3.Error as exc:  # a full disk may refuse this too; the device retries anyway
            log.error("could not list %s seq %d as waiting: %s", record.device, record.seq, exc)
        self.stats.deferred += 1
        log.warning(
            "not accepted yet: %s seq %d (%s): %s; the device keeps it and resends later",
            record.device,
            record.seq,
            record.type,
            reason,
        )
        msg = {
            "v": wire.PROTOCOL_VERSION,
            "record": record_hash,
            "what": NEED_LATER,
            "chunks": [],
            "reason": reason,
        }
        return Outgoing(wire.down_topic(record.device, wire.DOWN_NEED), wire.encode_json(msg))

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
