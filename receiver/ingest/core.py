"""The receiver's side of the transfer protocol (:mod:`evidence.transfer`), without MQTT.

:class:`Ingest` takes one incoming message (topic + payload) at a time and returns the messages
to publish in reply (receipts, resend requests, the clock); it does no network I/O and reads
time from an injected clock. It parses each message once into a typed value
(:mod:`receiver.ingest.messages`), reassembles segments (:mod:`receiver.ingest.reassembly`),
decides on each record (:mod:`receiver.ingest.admission`) and leaves all SQL to
:mod:`receiver.store`. Only after the media object, the record file and the metadata are
durably committed does it sign a *stored* receipt.

Chain continuity: a record is stored only when it continues the device's stored chain (seq 0
with the genesis ``prev``, or its predecessor is stored and ``prev`` is its hash). A record
whose predecessor has not arrived yet *waits* (bounded per device: records, and the temp bytes
of completed segments); it is stored, and receipted, the moment its predecessor is. A waiting
record that turns out not to continue the chain is quarantined as a fork.

Failure posture: it believes no device, broker or network. Malformed input is logged
(rate-limited per device and cause) and ignored; evidence that fails verification for good is
quarantined (bounded per device) and answered with a *quarantined* receipt; a refusal whose
cause can go away (device not registered yet, no ``encryption_key``, a full disk, a device over
its budget) is answered ``need: later`` and the device keeps its copy. The same checks apply to
``bodycam-receiver import`` (:mod:`receiver.importer`), which feeds the same messages through
:meth:`Ingest.handle`. :meth:`Ingest.handle` never raises.

Encryption at rest: a segment with ``stored`` + ``encryption`` arrives as ciphertext, checked
against the signed ``stored`` digest, then decrypted with the receiver's X25519 key and the
plaintext checked against the signed ``media`` digest (a recovered segment has ``media: null``;
its authenticated prefix is accepted). Both are kept as content-addressed objects.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from evidence import encryption
from evidence import transfer as wire
from evidence.errors import EvidenceError
from evidence.media import CHUNK_SIZE, FileDigest, StreamingDigest
from evidence.receipt import STATUS_QUARANTINED, STATUS_STORED
from evidence.records import Record, RecordType, format_utc
from receiver.cases import CaseBook
from receiver.custody import record_event
from receiver.custody.anchors import accept_chain_head
from receiver.errors import ConflictError, ReceiverError, StoreError, disk_full
from receiver.ingest import messages as m
from receiver.ingest.admission import CONTINUES, Admission, Outgoing, need
from receiver.ingest.limits import Clock, Limits, LogLimiter, grant_window
from receiver.ingest.reassembly import Reassembly, Transfer
from receiver.store import EvidenceStore
from receiver.store.records import MediaRef

log = logging.getLogger(__name__)

NEED_LATER = wire.NEED_LATER

# Local failures while storing: retryable, never a verdict on the evidence.
_LOCAL_FAILURES = (OSError, StoreError, sqlite3.OperationalError)


@dataclass
class IngestStats:
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    deferred: int = 0
    ignored: int = 0
    chunks: int = 0
    bytes_stored: int = 0


@dataclass
class Parked:
    """A verified record waiting for its predecessor; a segment's checked temp file with it."""

    record: Record
    record_hash: str
    file_name: str | None = None
    digest: FileDigest | None = None
    temp: Path | None = None
    since: float = 0.0


class Ingest:
    def __init__(
        self,
        store: EvidenceStore,
        conn: sqlite3.Connection,
        receipt_key: Ed25519PrivateKey,
        *,
        limits: Limits | None = None,
        dock_registry: Path | None = None,
        encryption_key: X25519PrivateKey | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.store = store
        self.conn = conn
        self.limits = limits or Limits()
        self.clock = clock
        self.logs = LogLimiter(log, self.limits.log_lines_per_minute, clock)
        self.admission = Admission(store, conn, receipt_key, self.limits, self.logs, dock_registry)
        self.registry = self.admission.registry
        self.table = self.admission.table
        self.receiver_id = self.admission.receiver_id
        self.encryption_key = encryption_key
        self.recipient = (
            encryption.recipient_id(encryption_key.public_key()) if encryption_key else None
        )
        self.cases = CaseBook(conn)
        self.reassembly = Reassembly(self.limits, clock)
        #: per device: records verified but waiting for their predecessor, by record hash
        self.parked: dict[str, dict[str, Parked]] = {}
        self.stats = IngestStats()
        #: devices that said hello recently (clock time): the windows granted share the broker
        self.docked: dict[str, float] = {}
        #: clock time the message being processed arrived (None when idle); the service
        #: stops petting the systemd watchdog when one message takes too long
        self.busy_since: float | None = None

    # -- compatibility views ---------------------------------------------------------------
    @property
    def transfers(self) -> dict[str, Transfer]:
        """Open transfers by record hash (for tools and tests; the ingest keys by device)."""
        return {h: t for (_, h), t in self.reassembly.transfers.items()}

    def refresh_registry(self) -> None:
        self.admission.refresh_registry()

    # -- entry point -----------------------------------------------------------------------
    def handle(self, topic: str, payload: bytes) -> list[Outgoing]:
        self.busy_since = self.clock()
        try:
            out = self._handle(topic, payload)
        finally:
            self.busy_since = None
        self.stats.quarantined = self.admission.quarantined
        self.stats.deferred = self.admission.deferred
        return out

    def _handle(self, topic: str, payload: bytes) -> list[Outgoing]:
        device = "?"
        try:
            t = m.parse_topic(topic)
            device = t.device
            if t.direction == "status":
                return []
            if t.direction != "up":
                raise wire.WireError("not an upstream topic", topic)
            if t.kind == wire.UP_CHUNK:
                return self._on_chunk(device, wire.unpack_chunk(payload, topic))
            if t.kind == wire.UP_INIT:
                out = self._on_init(device, m.parse_init(payload, topic))
                return out + self._release_successors(device)
            if t.kind == wire.UP_FIN:
                out = self._on_fin(device, m.parse_fin(payload, topic))
                return out + self._release_successors(device)
            if t.kind == wire.UP_QUERY:
                q = m.parse_query(payload, topic, max_records=self.limits.query_hashes)
                return self._on_query(device, q)
            return self._on_hello(device, m.parse_hello(payload, topic))
        except wire.WireError as exc:
            self.stats.ignored += 1
            self.logs.log(
                logging.WARNING,
                device,
                "ignored",
                "ignored message on %s (%d bytes): %s",
                m.escape(topic[:200]),
                len(payload),
                m.escape(exc.reason[:300]),
            )
        except Exception as exc:  # keep serving: one bad message must not stop the service
            self._log_failure(device, topic, exc)
        return []

    def _log_failure(self, device: str, topic: str, exc: Exception) -> None:
        if disk_full(exc):
            # Nothing of the message was receipted; the device resends it. One line, for all
            # devices together (a full disk is the dock's problem, not the device's).
            self.logs.log(
                logging.ERROR,
                "*",
                "disk full",
                "receiver storage is full: a message of %s was not stored (it is not receipted;"
                " the device resends it once space is freed): %s",
                device,
                exc,
            )
        elif isinstance(exc, ReceiverError):
            self.logs.log(
                logging.ERROR,
                device,
                "error",
                "could not process message on %s: %s",
                m.escape(topic[:200]),
                exc,
            )
        else:
            self.logs.log(
                logging.ERROR,
                device,
                "bug",
                "unexpected error on %s",
                m.escape(topic[:200]),
                exc_info=True,
            )

    # -- hello / clock ---------------------------------------------------------------------
    def _on_hello(self, device: str, hello: m.Hello) -> list[Outgoing]:
        self.refresh_registry()
        dev = self.registry.get(device)
        if dev is None or dev.revoked:
            self.logs.log(
                logging.WARNING,
                device,
                "hello",
                "hello from %s device %s ignored",
                "revoked" if dev else "unknown",
                device,
            )
            return []
        now = datetime.now(UTC)
        offset_s = (hello.device_time - now).total_seconds() if hello.device_time else None
        self.registry.seen(
            device,
            clock_offset_s=offset_s,
            pending_segments=hello.pending_segments,
            oldest_pending_utc=hello.oldest_pending_utc,
            report=True,
        )
        # the window this device may keep in flight: the broker's queue shared by the devices
        # docked now (seen within the transfer timeout)
        seen = self.clock()
        self.docked[device] = seen
        horizon = seen - self.limits.transfer_timeout_s
        for other in [d for d, t in self.docked.items() if t < horizon]:
            del self.docked[other]
        if hello.chain_head is not None:  # custody: anchor the chain's tail
            refused = accept_chain_head(self.conn, device, dev.public_key, hello.chain_head)
            if refused:
                log.warning("chain head from %s refused: %s", device, m.escape(refused))
        window_bytes, window_messages = grant_window(self.limits, len(self.docked))
        reply = {
            "v": wire.PROTOCOL_VERSION,
            "receiver_utc": format_utc(now),
            "echo_device_utc": hello.device_utc,
            "receiver": self.receiver_id,
            "window_bytes": window_bytes,
            "window_messages": window_messages,
        }
        return [Outgoing(wire.down_topic(device, wire.DOWN_CLOCK), wire.encode_json(reply))]

    # -- init ------------------------------------------------------------------------------
    def _on_init(self, device: str, init: m.Init) -> list[Outgoing]:
        record, record_hash = init.record, init.record_hash
        if record.device != device:
            raise wire.WireError(f"record of device {record.device!r} published by {device!r}")
        stored = self._stored_receipt(record_hash, device)
        if stored is not None:
            self.stats.duplicates += 1
            return [stored]
        if record_hash in self.parked.get(device, {}):
            return []  # already verified, waiting for its predecessor
        self.refresh_registry()
        if self.registry.get(device) is None:
            # enrolment may simply come later (docked before the clerk registered it)
            return [self.admission.defer(record, record_hash, f"device {device} is not registered")]
        problem = self.admission.problem(record)
        if problem is not None:
            return [self.admission.quarantine(record, record_hash, problem)]
        if record.type != RecordType.SEGMENT:
            return self._continue_or_park(Parked(record, record_hash))
        tr = self.reassembly.get(device, record_hash)
        if tr is not None:
            tr.last_activity = self.clock()
            return []
        return self._open_transfer(record, record_hash)

    def _open_transfer(self, record: Record, record_hash: str) -> list[Outgoing]:
        body = record.body
        file_name = m.segment_file_name(body)
        if file_name is None:
            reason = (
                f"segment file name {m.escape(str(body.get('file')))[:80]!r} is not a safe name"
            )
            return [self.admission.quarantine(record, record_hash, reason)]
        try:
            digest = FileDigest.from_dict(body.get("stored") or body.get("media"))
        except (KeyError, TypeError, ValueError, EvidenceError) as exc:
            reason = f"malformed segment body: {str(exc)[:160]}"
            return [self.admission.quarantine(record, record_hash, reason)]
        # from here on the record is authentic and the refusals are about its media only
        if digest.size > self.limits.max_segment_bytes:
            reason = f"segment of {digest.size} bytes exceeds the limit"
            return [self.admission.quarantine(record, record_hash, reason, media_only=True)]
        if not wire.MIN_CHUNK_SIZE_BYTES <= digest.chunk_size <= wire.MAX_CHUNK_SIZE_BYTES:
            reason = f"chunk size {digest.chunk_size} outside the wire limits"
            return [self.admission.quarantine(record, record_hash, reason, media_only=True)]
        if body.get("encryption") is not None and self.encryption_key is None:
            reason = "media are encrypted but this receiver has no encryption_key configured"
            return [self.admission.defer(record, record_hash, reason)]
        problem = self._encryption_problem(body)
        if problem is not None:
            media_only = not problem.startswith("malformed")
            return [self.admission.quarantine(record, record_hash, problem, media_only=media_only)]
        if self.store.has_object(digest.sha256):
            # same bytes already stored (re-sent after a crash between object and metadata)
            return self._continue_or_park(Parked(record, record_hash, file_name, digest, None))
        refusal = self.reassembly.refusal(record.device, digest.size)
        if refusal is not None:
            return [self.admission.defer(record, record_hash, f"receiver busy: {refusal}")]
        try:
            self.reassembly.open(
                record, record_hash, digest, file_name, self.store.temp_path(record_hash)
            )
        except OSError as exc:
            reason = f"receiver cannot store it now: {exc.strerror or exc}"
            return [self.admission.defer(record, record_hash, reason)]
        log.debug("transfer of %s seq %d opened", record.device, record.seq)
        return []

    def abandon(self, record_hash: str, device: str | None = None) -> None:
        """Forget an unfinished transfer and its temp file (nothing of it is kept)."""
        for (dev, h), tr in list(self.reassembly.transfers.items()):
            if h == record_hash and (device is None or dev == device):
                self.reassembly.drop(tr)

    def expire(self) -> int:
        """Drop transfers idle for longer than the timeout, and records waiting that long for
        their predecessor (their temp files go too; the devices still hold them)."""
        dropped = self.reassembly.expire_idle()
        limit = self.clock() - self.limits.transfer_timeout_s
        for device, mine in list(self.parked.items()):
            for h, item in list(mine.items()):
                if item.since < limit:
                    del mine[h]
                    self._discard(item)
                    dropped += 1
            if not mine:
                del self.parked[device]
        return dropped

    # -- chunk -----------------------------------------------------------------------------
    def _on_chunk(self, device: str, chunk: wire.Chunk) -> list[Outgoing]:
        tr = self.reassembly.get(device, chunk.record)
        if tr is None:
            return []  # unknown, finished or another device's transfer: nothing to do
        tr.last_activity = self.clock()
        try:
            tr.accept(chunk)
        except OSError as exc:  # e.g. disk full: the device resends the whole segment later
            self.reassembly.drop(tr)
            reason = f"receiver cannot store it now: {exc.strerror or exc}"
            return [self.admission.defer(tr.record, tr.record_hash, reason)]
        self.stats.chunks += 1
        return []

    # -- fin -------------------------------------------------------------------------------
    def _on_fin(self, device: str, fin: m.Fin) -> list[Outgoing]:
        record_hash = fin.record
        known = self._known_receipt(record_hash, device)
        if known is not None:
            return [known]
        if record_hash in self.parked.get(device, {}):
            return []
        tr = self.reassembly.get(device, record_hash)
        if tr is None:
            waiting = self.table.waiting_reason(record_hash, device)
            if waiting is not None:  # its init was just answered "later": say so again
                return [need(device, record_hash, NEED_LATER, [], waiting)]
            return [need(device, record_hash, wire.NEED_ALL, [], "no transfer in progress")]
        tr.last_activity = self.clock()
        d = tr.digest
        if tr.problem is None and (
            fin.size != d.size or fin.sha256 != d.sha256 or fin.chunks != len(d.chunks)
        ):
            tr.problem = "fin does not describe the signed file"
        if tr.problem is not None:
            return [self._quarantine_transfer(tr, tr.problem)]
        missing = tr.missing(wire.MAX_NEED_CHUNKS)
        if missing:
            return [need(device, record_hash, wire.NEED_CHUNKS, missing, "gaps")]
        sha, size = tr.whole_file()
        if sha != d.sha256 or size != d.size:
            return [self._quarantine_transfer(tr, "assembled file does not match its signed hash")]
        self.refresh_registry()
        dev = self.registry.get(device)
        if dev is not None and dev.revoked:  # revoked while its media were in flight
            return [self._quarantine_transfer(tr, dev.revocation)]
        self.reassembly.detach(tr)  # its temp bytes stay held until stored or dropped
        return self._continue_or_park(Parked(tr.record, record_hash, tr.file_name, d, tr.temp))

    # -- chain continuity ------------------------------------------------------------------
    def _continue_or_park(self, item: Parked) -> list[Outgoing]:
        record = item.record
        if self.admission.chain_state(record) == CONTINUES:
            out = [self._store_item(item)]
            return out + self._release_successors(record.device)
        mine = self.parked.setdefault(record.device, {})
        if len(mine) >= self.limits.device_waiting_records:
            self._discard(item)
            reason = (
                f"waiting for seq {record.seq - 1}: {len(mine)} records of this device are"
                " already waiting"
            )
            return [self.admission.defer(record, item.record_hash, reason)]
        item.since = self.clock()
        mine[item.record_hash] = item
        log.debug("%s seq %d waits for seq %d", record.device, record.seq, record.seq - 1)
        return []

    def _waiting_answer(self, item: Parked) -> Outgoing:
        """What a device asking about a waiting record hears: nothing to resend, keep waiting
        (a ``need`` of no chunks). Never "later": the device uploads marked sessions first, so
        a record often waits for an earlier one still on its way, and "later" would pause the
        device's whole upload, that earlier record included."""
        reason = f"waiting for seq {item.record.seq - 1} of this device"
        return need(item.record.device, item.record_hash, wire.NEED_CHUNKS, [], reason)

    def _release_successors(self, device: str) -> list[Outgoing]:
        """Store (or quarantine as forks) the waiting records the chain now reaches."""
        out: list[Outgoing] = []
        mine = self.parked.get(device, {})
        progress = True
        while progress and mine:
            progress = False
            for h, item in list(mine.items()):
                if self.table.hash_at(device, item.record.seq - 1) is None:
                    continue
                del mine[h]
                progress = True
                problem = self.admission.chain_problem(item.record)
                if problem is not None:
                    out.append(self.admission.quarantine(item.record, h, problem, media=item.temp))
                    self._release_temp(item)
                else:
                    out.append(self._store_item(item))
        if not mine:
            self.parked.pop(device, None)
        return out

    def _store_item(self, item: Parked) -> Outgoing:
        record, h = item.record, item.record_hash
        cleanup = (item.temp, self.store.plain_temp_path(h)) if item.temp else ()
        try:
            if item.digest is None:
                return self._or_defer(record, h, lambda: self._commit(record, h, None))
            digest, name = item.digest, item.file_name
            assert name is not None
            return self._or_defer(
                record,
                h,
                lambda: self._store_segment(record, h, name, digest, item.temp),
                cleanup=tuple(p for p in cleanup if p is not None),
            )
        finally:
            self._release_temp(item)

    def _release_temp(self, item: Parked) -> None:
        if item.temp is not None and item.digest is not None:
            self.reassembly.release(item.record.device, item.digest.size)

    def _discard(self, item: Parked) -> None:
        if item.temp is not None:
            with contextlib.suppress(FileNotFoundError):
                item.temp.unlink()
        self._release_temp(item)

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
            return f"media encrypted with unknown scheme {m.escape(str(enc.get('scheme')))[:40]!r}"
        if enc.get("recipient") != self.recipient:
            return (
                f"media encrypted to {m.escape(str(enc.get('recipient')))[:80]}, not to this"
                f" receiver's key {self.recipient}"
            )
        return None

    def _decrypt(self, record: Record, record_hash: str, cipher: Path) -> FileDigest | str:
        """Decrypt ``cipher`` into tmp/<hash>.plain and check it; the plaintext digest, or why
        not (then no plaintext file is left). A local I/O failure is not a verdict on the
        media: the OSError propagates."""
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
                return self.admission.quarantine(
                    record, record_hash, checked, media=temp, media_only=True
                )
            plain = checked
        if temp is not None:
            self.store.commit_object(temp, digest.sha256)
        if plain is not None:
            self.store.commit_object(self.store.plain_temp_path(record_hash), plain.sha256)
        media = MediaRef(
            file_name,
            digest.sha256,
            digest.size,
            plain.sha256 if plain else None,
            plain.size if plain else None,
        )
        return self._commit(record, record_hash, media)

    # -- query -----------------------------------------------------------------------------
    def _on_query(self, device: str, query: m.Query) -> list[Outgoing]:
        out: list[Outgoing] = []
        parked = self.parked.get(device, {})
        waiting: list[Parked] = []
        for record_hash in query.records:
            known = self._known_receipt(record_hash, device)
            if known is not None:
                out.append(known)
                continue
            item = parked.get(record_hash)
            if item is not None:
                waiting.append(item)
                continue
            tr = self.reassembly.get(device, record_hash)
            if tr is not None and tr.problem is None:
                missing = tr.missing(wire.MAX_NEED_CHUNKS)
                out.append(need(device, record_hash, wire.NEED_CHUNKS, missing, "query"))
            else:
                out.append(need(device, record_hash, wire.NEED_ALL, [], "unknown"))
        out += [self._waiting_answer(item) for item in waiting]
        log.debug("query of %s for %d record(s) answered", device, len(query.records))
        return out

    # -- commit and receipts ---------------------------------------------------------------
    def _commit(self, record: Record, record_hash: str, media: MediaRef | None) -> Outgoing:
        data = record.canonical()
        if media is not None:
            conflict = self.store.media_conflict(record.device, media.file, media.sha256)
            if conflict is not None:
                return self.admission.quarantine(record, record_hash, conflict, media_only=True)
        try:
            self.store.write_record(record.device, record.seq, data)
            if media is not None:
                self.store.link_media(record.device, media.file, media.sha256)
        except ConflictError as exc:
            return self.admission.quarantine(record, record_hash, str(exc))

        def file_session() -> None:
            record_event(  # custody: commits with the row it describes
                self.conn,
                "ingest",
                actor=f"device:{record.device}",
                device=record.device,
                seq=record.seq,
                session=record.session,
                record=record_hash,
                type=str(record.type),
                media=media.sha256 if media else None,
            )
            if record.type == RecordType.SESSION_OPEN:
                case = self.cases.file_on_open(record.session, record.device, record.body)
                log.info(
                    "session %s of %s %s",
                    m.escape(record.session),
                    record.device,
                    f"filed to case {case}" if case else "put in the unfiled inbox",
                )

        self.table.store(record, record_hash, media, in_transaction=file_session)
        self.registry.seen(record.device)
        self.stats.stored += 1
        if media is not None:
            self.stats.bytes_stored += media.size
        log.debug("stored %s seq %d (%s)", record.device, record.seq, record.type)
        return self.admission.receipt(
            record.device,
            record_hash,
            record.seq,
            record.type,
            STATUS_STORED,
            None,
            media.sha256 if media else None,
            media.size if media else None,
        )

    def _quarantine_transfer(self, tr: Transfer, reason: str) -> Outgoing:
        self.reassembly.detach(tr)
        self.reassembly.release(tr.device, tr.digest.size)
        media_only = not reason.startswith("device revoked")
        return self.admission.quarantine(
            tr.record, tr.record_hash, reason, media=tr.temp, media_only=media_only
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
            return self.admission.defer(
                record, record_hash, f"receiver cannot store it now: {detail}"
            )

    def _stored_receipt(self, record_hash: str, device: str) -> Outgoing | None:
        # only ever about the asking device's own records: no device learns of another's
        row = self.table.stored(record_hash, device)
        if row is None:
            return None
        return self.admission.receipt(
            row.device,
            record_hash,
            row.seq,
            row.type,
            STATUS_STORED,
            None,
            row.media_sha256,
            row.media_size,
        )

    def _known_receipt(self, record_hash: str, device: str) -> Outgoing | None:
        """The receipt for a record already decided on (stored or quarantined), if any."""
        stored = self._stored_receipt(record_hash, device)
        if stored is not None:
            return stored
        if self.reassembly.get(device, record_hash) is not None:
            return None
        row = self.table.quarantined(record_hash, device)
        if row is None:
            return None
        return self.admission.receipt(
            row.device, record_hash, row.seq or 0, row.record_type, STATUS_QUARANTINED, row.reason
        )

    def close(self) -> None:
        self.reassembly.close()
