"""The receiver's side of the transfer protocol (:mod:`evidence.transfer`), without MQTT.

:class:`Ingest` takes one incoming message (topic + payload) at a time and returns the messages
to publish in reply (receipts, resend requests, the clock); it does no network I/O and reads
time from an injected clock. It parses each message once into a typed value
(:mod:`receiver.ingest.messages`), reassembles segments (:mod:`receiver.ingest.reassembly`),
decides on each record (:mod:`receiver.ingest.admission`) and leaves all SQL to
:mod:`receiver.store`. Only after the media object, the record file and the metadata are
durably committed does it sign a *stored* receipt. With ``group_commit`` (the service), verified
segments that continue the chain wait in a group for :meth:`Ingest.flush`, which stores them
together (:mod:`receiver.ingest.group`: fsyncs side by side, one SQLite transaction).

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
from receiver.ingest.grants import Grants
from receiver.ingest.group import GroupSync
from receiver.ingest.limits import Clock, Limits, LogLimiter
from receiver.ingest.reassembly import Reassembly, Transfer
from receiver.store import EvidenceStore
from receiver.store.records import MediaRef

log = logging.getLogger(__name__)

NEED_LATER = wire.NEED_LATER

# Local failures while storing: retryable, never a verdict on the evidence.
_LOCAL_FAILURES = (OSError, StoreError, sqlite3.OperationalError)

#: group commit: completed segments held for one commit, at most this many / bytes (kept
#: well under a device's window so its upload never stalls waiting for these receipts)
GROUP_MAX_SEGMENTS = 4
GROUP_MAX_BYTES = 8 * 1024**2
#: ... and for at most this long (other devices' messages may keep the queue from emptying)
GROUP_MAX_WAIT_S = 0.1


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
    released: bool = False
    """Its temp bytes were given back to the device's allowance (once only)."""


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
        group_commit: bool = False,
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
        #: send windows: the broker's queue budget in fixed slots (flow control, many devices)
        self.grants = Grants(self.limits, clock)
        #: clock time the message being processed arrived (None when idle); the service
        #: stops petting the systemd watchdog when one message takes too long
        self.busy_since: float | None = None
        #: group commit (the service turns it on): verified segments whose storing waits for
        #: :meth:`flush`, which the caller runs when no message is waiting or the group is full
        self.group_commit = group_commit
        self.group: list[Parked] = []
        self.group_since = 0.0
        self.group_sync = GroupSync(store)
        #: replies of a flush forced while handling a message; they precede its own replies
        self._early: list[Outgoing] = []

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
            if self._early:
                out, self._early = self._early + out, []
            out += self.grants.poll()
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
            self.grants.touch(device)
            if t.direction == "status":
                return self._on_status(device, payload, topic)
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
        now = datetime.now(UTC)
        if dev is None or dev.revoked:
            # Still answered (clock and window): the broker let its certificate in, and what it
            # sends must reach quarantine (revoked) or be deferred (not yet registered) rather
            # than wait on the device for a window that never comes. Its figures and its chain
            # head are not taken in.
            self.logs.log(
                logging.WARNING,
                device,
                "hello",
                "hello from %s device %s: its records will be %s",
                "revoked" if dev else "unknown",
                device,
                "quarantined" if dev else "deferred until it is registered",
            )
            return self._clock_reply(device, hello, now)
        offset_s = (hello.device_time - now).total_seconds() if hello.device_time else None
        self.registry.seen(
            device,
            clock_offset_s=offset_s,
            pending_segments=hello.pending_segments,
            oldest_pending_utc=hello.oldest_pending_utc,
            report=True,
        )
        if hello.chain_head is not None:  # custody: anchor the chain's tail
            refused = accept_chain_head(self.conn, device, dev.public_key, hello.chain_head)
            if refused:
                log.warning("chain head from %s refused: %s", device, m.escape(refused))
        return self._clock_reply(device, hello, now)

    def _clock_reply(self, device: str, hello: m.Hello, now: datetime) -> list[Outgoing]:
        """The clock reply, with the window this device may keep in flight (0: wait for a
        slot; see ingest.grants), and the grants its hello hands to other devices."""
        others = self.grants.hello(device, idle=hello.idle)
        grant = self.grants.window(device)
        reply = {
            "v": wire.PROTOCOL_VERSION,
            "receiver_utc": format_utc(now),
            "echo_device_utc": hello.device_utc,
            "receiver": self.receiver_id,
            "window_bytes": grant.window_bytes,
            "window_messages": grant.window_messages,
        }
        clock = Outgoing(wire.down_topic(device, wire.DOWN_CLOCK), wire.encode_json(reply))
        return [clock, *others]

    def _on_status(self, device: str, payload: bytes, topic: str) -> list[Outgoing]:
        """A device going offline (goodbye or last will) hands its window on."""
        if wire.Status.parse(payload, topic).state == "online":
            return []
        return self.grants.leave(device)

    def tick(self) -> list[Outgoing]:
        """Periodic work while no message comes: windows of idle devices handed on."""
        return self.grants.poll()

    # -- init ------------------------------------------------------------------------------
    def _on_init(self, device: str, init: m.Init) -> list[Outgoing]:
        record, record_hash = init.record, init.record_hash
        if record.device != device:
            raise wire.WireError(f"record of device {record.device!r} published by {device!r}")
        stored = self._stored_receipt(record_hash, device)
        if stored is not None:
            self.stats.duplicates += 1
            return [stored]
        if record_hash in self.parked.get(device, {}) or self._grouped(device, record_hash):
            return []  # already verified, waiting for its predecessor or the group commit
        self.refresh_registry()
        if self.registry.get(device) is None:
            # enrolment may simply come later (docked before the clerk registered it)
            return [self.admission.defer(record, record_hash, f"device {device} is not registered")]
        problem = self.admission.problem(record)
        if problem is not None:
            return [self._quarantine(record, record_hash, problem)]
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
            return [self._quarantine(record, record_hash, reason)]
        try:
            digest = FileDigest.from_dict(body.get("stored") or body.get("media"))
        except (KeyError, TypeError, ValueError, EvidenceError) as exc:
            reason = f"malformed segment body: {str(exc)[:160]}"
            return [self._quarantine(record, record_hash, reason)]
        # from here on the record is authentic and the refusals are about its media only
        if digest.size > self.limits.max_segment_bytes:
            reason = f"segment of {digest.size} bytes exceeds the limit"
            return [self._quarantine(record, record_hash, reason, media_only=True)]
        if not wire.MIN_CHUNK_SIZE_BYTES <= digest.chunk_size <= wire.MAX_CHUNK_SIZE_BYTES:
            reason = f"chunk size {digest.chunk_size} outside the wire limits"
            return [self._quarantine(record, record_hash, reason, media_only=True)]
        if body.get("encryption") is not None and self.encryption_key is None:
            reason = "media are encrypted but this receiver has no encryption_key configured"
            return [self.admission.defer(record, record_hash, reason)]
        problem = self._encryption_problem(body)
        if problem is not None:
            media_only = not problem.startswith("malformed")
            return [self._quarantine(record, record_hash, problem, media_only=media_only)]
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
            if not chunk.intact:  # garbage for no transfer: say so (in a transfer it is judged)
                raise wire.WireError(f"chunk {chunk.index} does not match the hash in its header")
            return []  # unknown, finished or another device's transfer: nothing to do
        tr.last_activity = self.clock()
        try:
            tr.accept(chunk)
        except OSError as exc:  # e.g. disk full: the device resends the whole segment later
            self.reassembly.drop(tr)
            reason = f"receiver cannot store it now: {exc.strerror or exc}"
            return [self.admission.defer(tr.record, tr.record_hash, reason)]
        self.stats.chunks += 1
        if tr.fin_seen and (tr.problem is not None or not tr.missing(1)):
            # the last (or a bad) chunk of a transfer whose fin overtook it
            return self._finish(tr) + self._release_successors(device)
        return []

    # -- fin -------------------------------------------------------------------------------
    def _on_fin(self, device: str, fin: m.Fin) -> list[Outgoing]:
        record_hash = fin.record
        known = self._known_receipt(record_hash, device)
        if known is not None:
            return [known]
        if record_hash in self.parked.get(device, {}) or self._grouped(device, record_hash):
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
        if tr.missing(1):
            # Not a resend request yet: MQTT orders messages per topic only, so chunks may still
            # be on their way behind this fin (asking now would have them sent twice). The
            # transfer completes with its last chunk; chunks really lost are named when the
            # device asks about the record (its receipt time-out follows its backlog).
            tr.fin_seen = True
            log.debug("fin of %s seq %d before all its chunks", device, tr.record.seq)
            return []
        return self._finish(tr)

    def _finish(self, tr: Transfer) -> list[Outgoing]:
        """Store (or park, or quarantine) a transfer whose chunks have all arrived."""
        device, record_hash, d = tr.device, tr.record_hash, tr.digest
        if tr.problem is not None:  # a bad chunk that came after the fin
            return [self._quarantine_transfer(tr, tr.problem)]
        sha, size = tr.whole_file()
        if sha != d.sha256 or size != d.size:
            return [self._quarantine_transfer(tr, "assembled file does not match its signed hash")]
        self.refresh_registry()
        dev = self.registry.get(device)
        if dev is not None and dev.revoked:  # revoked while its media were in flight
            return [self._quarantine_transfer(tr, dev.revocation)]
        self.reassembly.detach(tr)  # its temp bytes stay held until stored or dropped
        item = Parked(tr.record, record_hash, tr.file_name, d, tr.temp)
        if self._joins_group(item):
            if not self.group:
                self.group_since = self.clock()
            self.group.append(item)
            size = sum(g.digest.size for g in self.group if g.digest is not None)
            full = len(self.group) >= GROUP_MAX_SEGMENTS or size >= GROUP_MAX_BYTES
            return self.flush() if full else []
        return self._continue_or_park(item)

    # -- chain continuity ------------------------------------------------------------------
    def _continue_or_park(self, item: Parked) -> list[Outgoing]:
        record = item.record
        # The usual path judges a record against the stored chain: while records of its device
        # are grouped (not yet stored), a fork or a name clash would be judged against a chain
        # that is not the one about to be stored. Store the group first.
        out = self.flush() if self._has_grouped(item.record_hash, record.device) else []
        problem = self.admission.chain_problem(record)  # the chain may have moved since init
        if problem is not None:
            out.append(
                self.admission.quarantine(record, item.record_hash, problem, media=item.temp)
            )
            self._release_temp(item)
            return out
        if self.admission.chain_state(record) == CONTINUES:
            out.append(self._store_item(item))
            return out + self._release_successors(record.device)
        mine = self.parked.setdefault(record.device, {})
        if len(mine) >= self.limits.device_waiting_records:
            self._discard(item)
            reason = (
                f"waiting for seq {record.seq - 1}: {len(mine)} records of this device are"
                " already waiting"
            )
            return [*out, self.admission.defer(record, item.record_hash, reason)]
        item.since = self.clock()
        mine[item.record_hash] = item
        log.debug("%s seq %d waits for seq %d", record.device, record.seq, record.seq - 1)
        return out

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
        if item.temp is not None and item.digest is not None and not item.released:
            item.released = True
            self.reassembly.release(item.record.device, item.digest.size)

    def _discard(self, item: Parked) -> None:
        if item.temp is not None:
            with contextlib.suppress(FileNotFoundError):
                item.temp.unlink()
        self._release_temp(item)

    # -- group commit ----------------------------------------------------------------------
    def _has_grouped(self, record_hash: str, device: str) -> bool:
        """Whether ``device`` has records in the group (other than ``record_hash``)."""
        return any(g.record.device == device and g.record_hash != record_hash for g in self.group)

    def _grouped(self, device: str, record_hash: str) -> Parked | None:
        for item in self.group:
            if item.record_hash == record_hash and item.record.device == device:
                return item
        return None

    def _quarantine(
        self,
        record: Record,
        record_hash: str,
        reason: str,
        media: Path | None = None,
        *,
        media_only: bool = False,
    ) -> Outgoing:
        """:meth:`Admission.quarantine` once the device's grouped segments are stored: whether
        a media-only quarantine stays a link of the chain depends on its predecessor being
        stored. Their receipts go out first (see :meth:`handle`)."""
        if any(g.record.device == record.device for g in self.group):
            self._early += self.flush()
        return self.admission.quarantine(record, record_hash, reason, media, media_only=media_only)

    def _joins_group(self, item: Parked) -> bool:
        """Whether a verified segment can wait for the group commit: it continues the stored
        chain, or the group's last record of its device; anything else takes the usual path."""
        if not self.group_commit or item.temp is None:
            return False
        record = item.record
        if self.admission.chain_problem(record) is not None:
            return False
        mine = [g for g in self.group if g.record.device == record.device]
        if any(g.file_name == item.file_name for g in mine):
            return False  # a name clash: the usual path quarantines it once the group is stored
        if mine:
            last = mine[-1]
            return last.record.seq == record.seq - 1 and last.record_hash == record.prev
        return self.admission.chain_state(record) == CONTINUES

    def flush_due(self) -> bool:
        """The group has waited long enough: the caller should :meth:`flush` now."""
        return bool(self.group) and self.clock() - self.group_since >= GROUP_MAX_WAIT_S

    def flush(self) -> list[Outgoing]:
        """Store the group: files made durable side by side, all rows in one transaction,
        then the receipts; then the records that were waiting for them."""
        group, self.group = self.group, []
        if not group:
            return []
        busy_since, self.busy_since = self.busy_since, self.clock()
        try:
            out, rest = self._store_group(group)
            for item in rest:  # the usual path, in order, for what the group could not take
                out += self._continue_or_park(item)
            for device in dict.fromkeys(item.record.device for item in group):
                out += self._release_successors(device)
        except Exception as exc:  # keep serving; the devices resend what was not receipted
            self._log_failure("*", "group commit", exc)
            for item in group:  # what is waiting in self.parked keeps its temp file
                if item.record_hash not in self.parked.get(item.record.device, {}):
                    self._discard(item)
            return []
        finally:
            # a flush inside handle() must not end the watchdog's view of that message
            self.busy_since = busy_since
        return out

    def _store_group(self, group: list[Parked]) -> tuple[list[Outgoing], list[Parked]]:
        """(receipts, items left for the usual path). Decryption and conflicts are checked
        first; a device with a problem leaves the group from that record on."""
        ready: list[tuple[Parked, MediaRef]] = []
        rest: list[Parked] = []
        blocked: set[str] = set()  # devices whose later records must follow the usual path
        for item in group:
            media = None if item.record.device in blocked else self._group_media(item)
            if media is None:
                blocked.add(item.record.device)
                rest.append(item)
            else:
                ready.append((item, media))
        if not ready:
            return [], rest
        objects = [(item.temp, media.sha256) for item, media in ready if item.temp is not None]
        objects += [
            (self.store.plain_temp_path(item.record_hash), media.plain_sha256)
            for item, media in ready
            if media.plain_sha256 is not None
        ]
        try:
            self.group_sync.commit_objects(objects)
        except _LOCAL_FAILURES as exc:
            return self._defer_group(ready, exc), rest
        # the objects are in the store now: what leaves the group continues without temp files
        files = [
            (i.record.device, i.record.seq, i.record.canonical(), media.file, media.sha256)
            for i, media in ready
        ]
        errors = self.group_sync.write_files(files)
        out: list[Outgoing] = []
        rows = []
        failed: set[str] = set()  # (ready records come before any of their device's in rest)
        for (item, media), error in zip(ready, errors, strict=True):
            self._release_temp(item)
            if error is None and item.record.device not in failed:
                rows.append((item.record, item.record_hash, media))
                continue
            failed.add(item.record.device)
            left = Parked(item.record, item.record_hash, item.file_name, item.digest, None)
            if isinstance(error, ConflictError):
                out.append(self.admission.quarantine(item.record, item.record_hash, str(error)))
            elif error is not None and not isinstance(error, _LOCAL_FAILURES):
                raise error
            else:
                rest.append(left)
        try:
            self.table.store_many([(r, h, md, self._filing(r, h, md)) for r, h, md in rows])
        except _LOCAL_FAILURES as exc:
            detail = exc.reason if isinstance(exc, StoreError) else (str(exc) or repr(exc))
            reason = f"receiver cannot store it now: {detail}"
            return out + [self.admission.defer(r, h, reason) for r, h, _ in rows], rest
        return out + [self._stored(r, h, md) for r, h, md in rows], rest

    def _group_media(self, item: Parked) -> MediaRef | None:
        """The media reference of a grouped segment (decrypted and checked when encrypted), or
        None when it must take the usual path (which then finds the same problem)."""
        record, digest, name = item.record, item.digest, item.file_name
        assert digest is not None
        assert name is not None
        if self.store.media_conflict(record.device, name, digest.sha256) is not None:
            return None
        if record.body.get("encryption") is None:
            return MediaRef(name, digest.sha256, digest.size)
        assert item.temp is not None
        try:
            plain = self._decrypt(record, item.record_hash, item.temp)
        except OSError:
            return None
        if isinstance(plain, str):
            return None
        return MediaRef(name, digest.sha256, digest.size, plain.sha256, plain.size)

    def _defer_group(self, ready: list[tuple[Parked, MediaRef]], exc: Exception) -> list[Outgoing]:
        """A local failure making the group's files durable: nothing is receipted, temp files
        go, the devices resend later (objects already committed are found again by hash)."""
        detail = exc.reason if isinstance(exc, StoreError) else (str(exc) or repr(exc))
        out = []
        for item, _ in ready:
            for path in (item.temp, self.store.plain_temp_path(item.record_hash)):
                with contextlib.suppress(OSError):
                    if path is not None:
                        path.unlink()
            self._release_temp(item)
            reason = f"receiver cannot store it now: {detail}"
            out.append(self.admission.defer(item.record, item.record_hash, reason))
        return out

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
                return self._quarantine(record, record_hash, checked, media=temp, media_only=True)
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
        if any(self._grouped(device, h) for h in query.records):
            self._early += self.flush()  # the device is waiting for these receipts: now
        out: list[Outgoing] = []
        parked = self.parked.get(device, {})
        waiting: list[Parked] = []
        for record_hash in query.records:
            known = self._known_receipt(record_hash, device)
            if known is not None:
                out.append(known)
                continue
            item = parked.get(record_hash) or self._grouped(device, record_hash)
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
                return self._quarantine(record, record_hash, conflict, media_only=True)
        try:
            self.store.write_record(record.device, record.seq, data)
            if media is not None:
                self.store.link_media(record.device, media.file, media.sha256)
        except ConflictError as exc:
            return self._quarantine(record, record_hash, str(exc))
        session = self._filing(record, record_hash, media)
        self.table.store(record, record_hash, media, in_transaction=session)
        return self._stored(record, record_hash, media)

    def _filing(
        self, record: Record, record_hash: str, media: MediaRef | None
    ) -> Callable[[], None]:
        """What commits with the record's row: its custody event, the device's last-seen time
        (in the same transaction: one WAL sync per commit, not two) and, for a session-open,
        the filing to a case."""

        def file_session() -> None:
            self.registry.seen(record.device)
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

        return file_session

    def _stored(self, record: Record, record_hash: str, media: MediaRef | None) -> Outgoing:
        """The signed *stored* receipt (call only once the record's row is committed)."""
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
        return self._quarantine(
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
        self.group_sync.close()
