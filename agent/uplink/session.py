"""The dock upload as an I/O-free session: events in, publishes out, time from an injected clock.

:class:`UplinkSession` holds every decision of the upload (what to send next, the window, resends,
queries, back-off, receipts) and nothing of the network: the paho adapter
(:mod:`agent.uplink.uploader`) feeds it :data:`Event` values and executes the :class:`Publish`
actions it returns; tests drive it the same way without a broker, stepping a :class:`ManualClock`.
It reads sealed records and media and writes its state files through the uplink's
:class:`~agent.uplink.spool.UploadSpool` (local files only).

Flow control: bytes (and messages) sent but not receipted stay under the window: the configured
``window_bytes``, or less if the receiver grants a smaller one (optional fields ``window_bytes``
/ ``window_messages`` in its ``down/clock`` reply to ``hello``, and a ``down/window`` message
whenever it changes; absent: the configured window). A granted window of 0 means "wait for your
turn": nothing new is sent (what is in flight stays in flight, its receipts still count) and,
while records wait, the device repeats its hello every ``WAIT_HELLO_S`` in case a grant was
lost. Once everything queued is sent, the device hands its window back (``idle`` in a hello)
and asks again when more records are queued. A record larger than the whole window is still
sent when nothing else is in flight.

A record without a receipt is queried after ``receipt_timeout_s`` *plus the time the backlog
ahead of it needs* at the receipt rate observed so far, so a slow, shared receiver does not
trigger resends of chunks that are still queued at the broker.

Failure posture: a refused or unqueued publish is counted as an error and its record stays
pending (sent again after ``retry_backoff_s``); a PUBACK proves nothing, only a signed receipt
for the record, by the configured receiver key, frees media; malformed messages are logged and
ignored; nothing here raises for anything a broker or receiver sends.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.uplink.config import RETENTION_DELETE, UplinkConfig
from agent.uplink.spool import Item, UploadSpool
from evidence import transfer as wire
from evidence.errors import EvidenceError
from evidence.receipt import STATUS_STORED, Receipt
from evidence.records import format_utc, parse_utc

log = logging.getLogger(__name__)

HELLO_INTERVAL_S = 60.0
#: hello interval while the receiver has the device wait for a window and records are queued
WAIT_HELLO_S = 5.0
NEED_LATER = wire.NEED_LATER
#: Receipt rate assumed before any receipt arrived (bytes/s): sets the first time-outs.
INITIAL_RATE_BPS = 2 * 1024 * 1024
#: Lowest rate the time-out ever assumes, so one stalled period cannot postpone queries forever.
MIN_RATE_BPS = 64 * 1024
_RATE_WEIGHT = 0.3


class Clock(Protocol):
    """What the session needs of time: a monotonic second count and the wall clock."""

    def monotonic(self) -> float: ...

    def utc_now(self) -> datetime: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def utc_now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told (tests and simulations)."""

    def __init__(self, start_utc: datetime | None = None) -> None:
        self.now_s = 1000.0
        self._utc0 = start_utc or datetime.now(UTC)
        self._mono0 = self.now_s

    def monotonic(self) -> float:
        return self.now_s

    def utc_now(self) -> datetime:
        return self._utc0 + timedelta(seconds=self.now_s - self._mono0)

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


# -- events (adapter -> session) ------------------------------------------------------------
@dataclass(frozen=True)
class Connected:
    session_present: bool


@dataclass(frozen=True)
class Disconnected:
    reason: str


@dataclass(frozen=True)
class ConnectFailed:
    """No CONNACK: broker unreachable, or it refused this device's certificate."""


@dataclass(frozen=True)
class BrokerRefusedConnection:
    reason: str


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes


@dataclass(frozen=True)
class PublishFailed:
    """The broker refused a publish (``refused``: reason code >= 0x80, an error) or the client
    could not queue it (not refused: sent again after the back-off)."""

    owner: str | None
    reason: str
    refused: bool = True


Event = Connected | Disconnected | ConnectFailed | BrokerRefusedConnection | Message | PublishFailed


# -- actions (session -> adapter) -----------------------------------------------------------
@dataclass(frozen=True)
class Publish:
    topic: str
    payload: bytes | bytearray
    retain: bool = False
    owner: str | None = None
    """Hash of the record this message belongs to (so a refusal can be traced back to it)."""


@dataclass
class UploadResult:
    """What one run achieved; ``pending`` is what is still without a receipt."""

    device: str
    records_sent: int = 0
    receipted: int = 0
    quarantined: int = 0
    deferred: int = 0
    """Answers "cannot take it yet, resend later" (the record stays pending and is retried)."""
    refused_publishes: int = 0
    bytes_sent: int = 0
    bytes_freed: int = 0
    resends: int = 0
    queries: int = 0
    window_stalls: int = 0
    """Times a record was ready but the window was full (flow control at work)."""
    pending: int = 0
    clock_offset_s: float | None = None
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def error(self, message: str, *, once: bool = False) -> None:
        if once and message in self.errors:
            return
        log.error("%s", message)
        self.errors.append(message)


@dataclass
class _InFlight:
    item: Item
    last_sent: float


class UplinkSession:
    """The upload's state machine; see the module docstring. Not thread-safe: one owner."""

    def __init__(
        self,
        spool: UploadSpool,
        config: UplinkConfig,
        receiver_key: Ed25519PublicKey,
        clock: Clock | None = None,
    ) -> None:
        config.validate()
        self.spool = spool
        self.device = spool.device
        self.config = config
        self.receiver_key = receiver_key
        self.clock: Clock = clock or SystemClock()
        self.result = UploadResult(self.device)
        self.connected = False
        self.connected_at: float | None = None
        self.inflight: dict[str, _InFlight] = {}
        self.inflight_bytes = 0
        self.inflight_messages = 0
        #: the receiver's grant (None: it grants none; a window of 0 bytes: wait)
        self.grant: wire.Grant | None = None
        #: the receiver answered a hello of this connection: until then a window message is
        #: stale (queued in our persistent session while we were away), the reply decides
        self.clock_replied = False
        self.rate_bps = float(INITIAL_RATE_BPS)
        self._last_progress_at: float | None = None
        self.receiver_instance: str | None = None
        #: from the receiver's retained status (brokers whose ACL hides it: always False)
        self.receiver_offline = False
        self.last_hello = float("-inf")
        self.last_scan = float("-inf")
        self.dirty = True
        self.queue: list[Item] = []
        self.retry_after: dict[str, float] = {}
        # the receiver said "later": send nothing new until then (doubling while it persists)
        self.hold_until = float("-inf")
        self.later_streak = 0
        # Start-up probe: ask the receiver about every pending record before sending anything, so
        # a restart resends only what it lacks; replies naming chunks wait here for the send.
        self.probing: set[str] = set()
        self.probe_deadline = 0.0
        self.probed = False
        self.resume_chunks: dict[str, list[int]] = {}
        # Probes unanswered at the deadline: their answers, when they come, describe the
        # receiver before this run sent anything, so they must not trigger a resend.
        self.stale_probes: set[str] = set()

    # -- the adapter's entry points --------------------------------------------------------
    def start(self) -> None:
        """Before connecting: free media of receipted segments that retention now allows."""
        self.result.bytes_freed += self.spool.sweep(min_age_s=self._min_age())

    @property
    def window_bytes(self) -> int:
        if self.grant is None:
            return self.config.window_bytes
        return min(self.config.window_bytes, self.grant.window_bytes)

    @property
    def window_messages(self) -> int | None:
        return None if self.grant is None else self.grant.window_messages

    @property
    def waiting(self) -> bool:
        """The receiver has this device wait for a window (another device's turn)."""
        return self.grant is not None and self.grant.wait

    def handle(self, event: Event) -> list[Publish]:
        """Apply one event; returns what to publish now, in order."""
        out: list[Publish] = []
        if isinstance(event, Connected):
            self._on_connected(event, out)
        elif isinstance(event, Disconnected):
            self.connected = False
            log.warning("disconnected from broker: %s", event.reason)
        elif isinstance(event, BrokerRefusedConnection):
            self.result.error(f"broker refused the connection: {event.reason}")
        elif isinstance(event, ConnectFailed):
            cfg = self.config
            self.result.error(
                f"cannot connect to the broker {cfg.broker_host}:{cfg.broker_port}: unreachable,"
                " or it refused this device's certificate (revoked, expired or another dock's)",
                once=True,  # paho retries every few seconds
            )
        elif isinstance(event, PublishFailed):
            self._on_publish_failed(event)
        elif isinstance(event, Message):
            try:
                self._message(event.topic, event.payload, out)
            except (wire.WireError, EvidenceError) as exc:
                log.warning("ignored message on %s: %s", event.topic, exc)
        return out

    def tick(self) -> list[Publish]:
        """Periodic work: rescan the spool, fill the window, ask about late receipts, hello."""
        now = self.clock.monotonic()
        out: list[Publish] = []
        if now - self.last_scan >= self.config.rescan_interval_s or (not self.queue and self.dirty):
            self.queue = self._eligible(now)
            self.last_scan, self.dirty = now, False
        if self.connected and not self._probing(now):
            self._send_window(now, out)
            if not self.queue and self.grant is not None and not self.grant.wait:
                self._hello(out, idle=True)  # all sent: our window can serve another device
                self.grant = wire.Grant(0, 0)
            self._check_timeouts(now, out)
            interval = WAIT_HELLO_S if self.waiting and self.queue else HELLO_INTERVAL_S
            if now - self.last_hello >= interval:
                self._hello(out)  # keeps the receiver's pending figures (and our turn) current
        return out

    def backlog(self) -> int:
        """Records queued or in flight (for progress lines)."""
        return len(self.queue) + len(self.inflight)

    def done(self) -> bool:
        """Nothing left to send this run (what is left, if anything, failed; pending says so)."""
        if self.queue or self.inflight or not self._docked(self.clock.monotonic()):
            return False
        self.queue = self._eligible(self.clock.monotonic())
        return not self.queue

    def goodbye(self) -> list[Publish]:
        """What to publish before a clean disconnect."""
        out: list[Publish] = []
        if self.connected:
            # leave the receiver with up-to-date pending figures (and our window, if any)
            self._hello(out, idle=not self.queue)
            out.append(Publish(wire.status_topic(self.device), self.status("offline"), True))
        return out

    def finish(self) -> UploadResult:
        self.result.pending = len(self.spool.pending())
        return self.result

    def status(self, state: str) -> bytes:
        return wire.encode_json(
            {
                "v": wire.PROTOCOL_VERSION,
                "state": state,
                "instance": self.device,
                "utc": format_utc(self.clock.utc_now()),
            }
        )

    # -- connection ------------------------------------------------------------------------
    def _on_connected(self, event: Connected, out: list[Publish]) -> None:
        now = self.clock.monotonic()
        self.connected, self.connected_at = True, now
        self.clock_replied = False
        log.info("connected to broker (session present: %s)", event.session_present)
        out.append(Publish(wire.status_topic(self.device), self.status("online"), True))
        self._hello(out)
        self._query(list(self.inflight), out)
        if not self.probed:
            self.probed = True
            self.probing = {i.hash for i in self.spool.pending()}
            self.probe_deadline = now + self.config.probe_timeout_s
            self._query(sorted(self.probing), out)

    def _on_publish_failed(self, event: PublishFailed) -> None:
        owner = event.owner
        of = f" of record {owner[:16]}" if owner else ""
        if event.refused:
            self.result.refused_publishes += 1
            self.result.error(f"broker refused a publish ({event.reason}){of}")
        else:
            log.warning("publish%s not queued: %s", of, event.reason)
        if owner is not None and owner in self.inflight:
            self._release(owner)  # not sent after all: stays pending, retried later
            self.retry_after[owner] = self.clock.monotonic() + self.config.retry_backoff_s

    def _eligible(self, now: float) -> list[Item]:
        """Pending records to send now: not in flight, not backing off after a failure."""
        return [
            i
            for i in self.spool.pending()
            if i.hash not in self.inflight and self.retry_after.get(i.hash, float("-inf")) <= now
        ]

    def _probing(self, now: float) -> bool:
        if self.probing and now > self.probe_deadline:
            log.info("%d record(s) unanswered by the start-up query", len(self.probing))
            self.stale_probes |= self.probing
            self.probing.clear()
        return bool(self.probing)

    def _docked(self, now: float) -> bool:
        """Docking is done once the receiver's clock arrived (the retained assignment comes
        before it), or the receiver did not answer within the receipt timeout."""
        if self.connected_at is None:
            return False
        return (
            self.result.clock_offset_s is not None
            or now - self.connected_at > self.config.receipt_timeout_s
        )

    def _min_age(self) -> float:
        if self.config.retention != RETENTION_DELETE:
            return float("inf")
        return self.config.retention_min_age_s

    # -- sending ---------------------------------------------------------------------------
    def _hello(self, out: list[Publish], *, idle: bool = False) -> None:
        self.last_hello = self.clock.monotonic()
        msg = {
            "v": wire.PROTOCOL_VERSION,
            "device_utc": format_utc(self.clock.utc_now()),
            **self.spool.summary(),
        }
        if idle:
            msg[wire.HELLO_IDLE] = True
        head = self.spool.chain_head()
        if head is not None:  # anchors the chain's tail at the receiver (custody)
            msg["chain_head"] = head
        out.append(Publish(wire.up_topic(self.device, wire.UP_HELLO), wire.encode_json(msg)))

    def _query(self, hashes: list[str], out: list[Publish]) -> None:
        now = self.clock.monotonic()
        for start in range(0, len(hashes), wire.MAX_QUERY_RECORDS):
            batch = hashes[start : start + wire.MAX_QUERY_RECORDS]
            msg = {"v": wire.PROTOCOL_VERSION, "records": batch}
            out.append(Publish(wire.up_topic(self.device, wire.UP_QUERY), wire.encode_json(msg)))
            self.result.queries += 1
            for h in batch:
                if h in self.inflight:
                    self.inflight[h].last_sent = now

    def _send_window(self, now: float, out: list[Publish]) -> None:
        if now < self.hold_until:
            return
        if self.waiting:
            if self.queue:
                self.result.window_stalls += 1
            return
        limit = self.window_messages
        while self.queue:
            item = self.queue[0]
            count = _message_count(item)
            if self.inflight and (
                self.inflight_bytes + item.wire_bytes > self.window_bytes
                or (limit is not None and self.inflight_messages + count > limit)
            ):
                self.result.window_stalls += 1
                return
            self.queue.pop(0)
            if item.hash in self.inflight or self.spool.has_receipt(item.hash):
                continue
            if not self.inflight:
                self._last_progress_at = now  # the receipt rate is measured while busy
            self.inflight[item.hash] = _InFlight(item, now)
            self.inflight_bytes += item.wire_bytes
            self.inflight_messages += count
            resume = self.resume_chunks.pop(item.hash, None)
            if resume is not None:
                log.info("resuming seq %d: %d chunk(s) missing", item.record.seq, len(resume))
            messages = self._item_messages(item, resume, init=resume is None)
            if messages is None:
                self._release(item.hash)
                self.retry_after[item.hash] = now + self.config.retry_backoff_s
                return
            out.extend(messages)
            self.result.records_sent += 1

    def _item_messages(
        self, item: Item, chunks: list[int] | None = None, *, init: bool = True
    ) -> list[Publish] | None:
        """init (unless ``init`` is False), the given chunks (default all) and fin; None if the
        media cannot be read."""
        out: list[Publish] = []
        if init:
            msg = {"v": wire.PROTOCOL_VERSION, "record": item.record.to_dict()}
            topic = wire.up_topic(self.device, wire.UP_INIT)
            out.append(Publish(topic, wire.encode_json(msg), owner=item.hash))
        if item.digest is None or item.media_path is None:
            return out
        d = item.digest
        indices = range(len(d.chunks)) if chunks is None else chunks
        try:
            for frame in _read_frames(item, indices):
                topic = wire.up_topic(self.device, wire.UP_CHUNK)
                out.append(Publish(topic, frame, owner=item.hash))
                self.result.bytes_sent += len(frame) - wire.CHUNK_HEADER_BYTES
        except OSError as exc:
            self.result.error(
                f"segment seq {item.record.seq}: media {item.media_path} unreadable: {exc}"
            )
            return None
        fin = {
            "v": wire.PROTOCOL_VERSION,
            "record": item.hash,
            "size": d.size,
            "sha256": d.sha256,
            "chunks": len(d.chunks),
        }
        out.append(
            Publish(wire.up_topic(self.device, wire.UP_FIN), wire.encode_json(fin), owner=item.hash)
        )
        return out

    def _release(self, record_hash: str) -> None:
        self.stale_probes.discard(record_hash)
        entry = self.inflight.pop(record_hash, None)
        if entry is not None:
            self.dirty = True
            self.inflight_bytes -= entry.item.wire_bytes
            self.inflight_messages -= _message_count(entry.item)

    def receipt_timeout_s(self) -> float:
        """The configured time-out plus what the backlog in flight needs at the observed rate."""
        return self.config.receipt_timeout_s + self.inflight_bytes / self.rate_bps

    def _check_timeouts(self, now: float, out: list[Publish]) -> None:
        if self.receiver_offline:
            return  # queries would pile up in its session; it is asked when it comes back
        timeout_s = self.receipt_timeout_s()
        late = [h for h, e in self.inflight.items() if now - e.last_sent > timeout_s]
        if late:
            log.info(
                "no receipt for %d record(s) in %.1f s; asking the receiver", len(late), timeout_s
            )
            self._query(late, out)

    def _observe_rate(self, nbytes: int) -> None:
        now = self.clock.monotonic()
        if self._last_progress_at is not None and now > self._last_progress_at:
            sample = nbytes / (now - self._last_progress_at)
            rate = (1 - _RATE_WEIGHT) * self.rate_bps + _RATE_WEIGHT * sample
            self.rate_bps = max(MIN_RATE_BPS, rate)
        self._last_progress_at = now

    # -- receiving -------------------------------------------------------------------------
    def _message(self, topic: str, payload: bytes, out: list[Publish]) -> None:
        if topic == wire.RECEIVER_STATUS_TOPIC:
            self._on_receiver_status(wire.parse_json(payload, wire.STATUS, topic), out)
            return
        t = wire.parse_topic(topic)
        if t.device != self.device or t.direction != "down":
            raise wire.WireError("not for this device", topic)
        if t.kind == wire.DOWN_RECEIPT:
            self._on_receipt(Receipt.parse(payload))
        elif t.kind == wire.DOWN_NEED:
            self._on_need(wire.parse_json(payload, wire.NEED, topic), out)
        elif t.kind == wire.DOWN_CLOCK:
            self._on_clock(wire.parse_json(payload, wire.CLOCK, topic))
            self._on_grant(wire.ClockSync.parse(payload, topic).grant)
            self.clock_replied = True
        elif t.kind == wire.DOWN_WINDOW:
            grant = wire.Grant.parse(payload, topic)
            if self.clock_replied:
                self._on_grant(grant)
            else:
                log.debug("window from before this connection ignored: %s", grant)
        elif t.kind == wire.DOWN_ASSIGNMENT:
            self._on_assignment(payload, topic)

    def _on_receiver_status(self, status: dict[str, Any], out: list[Publish]) -> None:
        was_offline = self.receiver_offline
        self.receiver_offline = status["state"] != "online"
        if not self.receiver_offline and (
            was_offline or status["instance"] != self.receiver_instance
        ):
            if self.receiver_instance is not None:
                log.info("receiver (re)started; asking what it lacks")
                self._query(list(self.inflight), out)
                if self.grant is not None:
                    self._hello(out)  # its grants start afresh: ask for a window again
            self.receiver_instance = status["instance"]
        elif self.receiver_offline and not was_offline:
            log.warning("receiver is offline; waiting for it before asking again")

    def _on_receipt(self, receipt: Receipt) -> None:
        problem = receipt.verify(self.receiver_key, device=self.device)
        if problem is not None:
            log.warning("receipt for %s not accepted: %s", receipt.record[:16], problem)
            return
        self.probing.discard(receipt.record)
        entry = self.inflight.get(receipt.record)
        item = entry.item if entry else self.spool.find(receipt.record)
        if item is None or (
            entry is None
            and (self.spool.has_receipt(item.hash) or self.spool.is_rejected(item.hash))
        ):
            return  # duplicate receipt for something already done
        if receipt.seq != item.record.seq:
            log.warning(
                "receipt for %s names seq %d, not %d; ignored",
                receipt.record[:16],
                receipt.seq,
                item.record.seq,
            )
            return
        self.spool.save_receipt(receipt)
        if entry is not None:
            self._observe_rate(item.wire_bytes)
        self._release(receipt.record)
        if receipt.status == STATUS_STORED:
            self.later_streak = 0  # the receiver takes records again
            self.result.receipted += 1
            self.result.bytes_freed += self.spool.free_media(
                item, receipt, min_age_s=self._min_age()
            )
        else:
            self.result.quarantined += 1
            self.result.error(f"receiver quarantined seq {item.record.seq}: {receipt.reason}")

    def _on_need(self, msg: dict[str, Any], out: list[Publish]) -> None:
        if msg["record"] in self.stale_probes:
            # the late answer to the start-up probe (MQTT keeps order: the receiver read the
            # query before anything this run sent): not a request to resend
            self.stale_probes.discard(msg["record"])
            return
        if msg["what"] == NEED_LATER:
            self._on_later(msg["record"], str(msg["reason"]))
            return
        chunks = [c for c in msg["chunks"] if isinstance(c, int) and not isinstance(c, bool)]
        entry = self.inflight.get(msg["record"])
        if entry is None:
            if msg["record"] in self.probing:
                self.probing.discard(msg["record"])
                if msg["what"] == wire.NEED_CHUNKS:
                    self.resume_chunks[msg["record"]] = chunks
            return  # already receipted, or from an earlier run: the next scan resends it
        entry.last_sent = self.clock.monotonic()
        self.result.resends += 1
        if msg["what"] == wire.NEED_ALL:
            log.info("receiver needs all of seq %d (%s)", entry.item.record.seq, msg["reason"])
            messages = self._item_messages(entry.item)
        else:
            log.info("receiver needs %d chunk(s) of seq %d", len(chunks), entry.item.record.seq)
            messages = self._item_messages(entry.item, chunks, init=False)
        out.extend(messages or [])

    def _on_later(self, record_hash: str, reason: str) -> None:
        """The receiver cannot take this record yet: keep it pending, send it after a back-off."""
        if record_hash not in self.inflight and record_hash not in self.probing:
            return  # an echo of an earlier attempt (e.g. the answer to its fin)
        self.probing.discard(record_hash)
        self._release(record_hash)
        now = self.clock.monotonic()
        if now >= self.hold_until:  # the first "later" of this round sets the next pause
            cfg = self.config
            delay_s = min(cfg.retry_backoff_s * 2**self.later_streak, cfg.retry_backoff_max_s)
            self.later_streak += 1
            self.hold_until = now + delay_s
        self.retry_after[record_hash] = self.hold_until
        self.result.deferred += 1
        item = self.spool.find(record_hash)
        log.warning(
            "receiver cannot take seq %s yet (%s); resending in %.1f s",
            item.record.seq if item else record_hash[:16],
            reason,
            self.hold_until - now,
        )
        msg = f"receiver cannot take records yet: {reason} (kept, resent later)"
        if msg not in self.result.errors:
            self.result.errors.append(msg)

    def _on_clock(self, msg: dict[str, Any]) -> None:
        now = self.clock.utc_now()
        sent = parse_utc(msg["echo_device_utc"])
        receiver = parse_utc(msg["receiver_utc"])
        rtt_s = (now - sent).total_seconds()
        offset_s = (receiver - (sent + (now - sent) / 2)).total_seconds()
        self.result.clock_offset_s = offset_s
        self.spool.write_clock(
            {
                "receiver": msg["receiver"],
                "receiver_utc": msg["receiver_utc"],
                "synced_utc": format_utc(now),  # device clock at the sync (agent checks age)
                "offset_s": round(offset_s, 6),
                "rtt_s": round(rtt_s, 6),
            }
        )
        log.info("receiver clock offset %+.3f s (round trip %.3f s)", offset_s, rtt_s)

    def _on_grant(self, grant: wire.Grant | None) -> None:
        """A window from the receiver (None: it grants none). A smaller one only stops new
        sends until the records in flight are receipted; nothing sent is taken back."""
        if grant != self.grant:
            if grant is None:
                log.info("receiver grants no window; using the configured one")
            elif grant.wait:
                log.info("receiver has this device wait for a window")
            else:
                log.info(
                    "receiver grants a window of %d bytes, %d messages",
                    grant.window_bytes,
                    grant.window_messages,
                )
        self.grant = grant

    def _on_assignment(self, payload: bytes, topic: str) -> None:
        try:
            value = json.loads(payload.decode("utf-8")) if payload else wire.ASSIGNMENT_CLEARED
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise wire.WireError(f"assignment is not JSON: {exc}", topic) from exc
        if value == wire.ASSIGNMENT_CLEARED:
            # the receiver cleared the assignment: back to the configured defaults
            if self.spool.clear_assignment():
                log.info("assignment cleared by the receiver; using the configured defaults")
            return
        if not isinstance(value, dict) or not isinstance(value.get("officers"), list):
            raise wire.WireError("assignment lacks officers", topic)
        self.spool.write_assignment(value)
        log.info("assignment received: case %s, stage %s", value.get("case"), value.get("stage"))


def _message_count(item: Item) -> int:
    """Messages one record takes on the wire: init, and for a segment its chunks and fin."""
    if item.digest is None or item.media_path is None:
        return 1
    return len(item.digest.chunks) + 2


def _read_frames(item: Item, indices: Any) -> Iterator[bytearray]:
    """Chunk frames of ``item``'s media, each read straight into its frame. Only the bytes the
    record signed are read: a file shorter than its record gives short (or empty) chunks, which
    the receiver finds wrong; bytes beyond the signed size are not sent."""
    assert item.digest is not None
    assert item.media_path is not None
    d = item.digest
    with open(item.media_path, "rb", buffering=0) as f:
        for index in indices:
            if not 0 <= index < len(d.chunks):
                continue  # a hostile or stale need: nothing to send for it
            offset = index * d.chunk_size
            size = max(0, min(d.chunk_size, d.size - offset))
            frame = wire.chunk_frame(item.hash, index, offset, size, d.chunks[index])
            got = 0
            with memoryview(frame)[wire.CHUNK_HEADER_BYTES :] as data:
                while got < size:
                    n = os.preadv(f.fileno(), [data[got:]], offset + got)
                    if n == 0:
                        break  # the file ends early
                    got += n
            del frame[wire.CHUNK_HEADER_BYTES + got :]  # the view is released: it may shrink
            yield frame
