"""Dock upload over MQTT 5: records in order, segments as init / chunks / fin, freed on receipts.

:class:`Uploader` connects with a persistent session (explicit session-expiry interval), a
retained ``status`` topic and a last will "offline"; it sends pending records while the bytes
sent but not receipted stay under ``window_bytes``; it resends what the receiver reports
missing (``need``) and asks (``query``) about records with no receipt after
``receipt_timeout_s`` or when the receiver restarts. A ``need`` of kind :data:`NEED_LATER` means
the receiver cannot take the record *yet* (device not registered, its disk full, no decryption
key): the record stays pending and is sent again after ``retry_backoff_s``. A segment's media is
freed only for a receipt signed by the receiver key it was given, for that record, with status
``stored``; a ``quarantined`` receipt (a final refusal) stops resending but keeps the media.

Failure posture: a PUBACK proves nothing and a refused publish (MQTT 5 reason code >= 0x80) is
counted as an error and the record stays pending; receipts that do not verify are logged and
ignored; broker loss is retried forever until ``stop`` is set. The recorder never waits on this:
it runs in its own thread or process and only reads sealed files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.uplink.config import RETENTION_DELETE, UplinkConfig
from agent.uplink.errors import UplinkConfigError
from agent.uplink.spool import Item, Spool
from evidence import transfer as wire
from evidence.errors import EvidenceError
from evidence.keys import load_public_key
from evidence.receipt import STATUS_STORED, Receipt
from evidence.records import format_utc, parse_utc

log = logging.getLogger(__name__)

LOOP_INTERVAL_S = 0.05
PROGRESS_INTERVAL_S = 1.0
HELLO_INTERVAL_S = 60.0
NEED_LATER = wire.NEED_LATER


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
    pending: int = 0
    clock_offset_s: float | None = None
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _InFlight:
    item: Item
    last_sent: float
    mids: set[int] = field(default_factory=set)


ProgressCallback = Callable[[UploadResult, int], None]


class Uploader:
    def __init__(
        self,
        spool_root: Path,
        device: str,
        config: UplinkConfig,
        *,
        progress: ProgressCallback | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.spool = Spool(spool_root, device)
        self.device = device
        key_path = config.receiver_key_path(Path(spool_root))
        try:
            self.receiver_key: Ed25519PublicKey = load_public_key(key_path)
        except EvidenceError as exc:
            raise UplinkConfigError(
                "receiver_key_file", f"receipts cannot be checked without it: {exc}"
            ) from exc
        self.result = UploadResult(device)
        self.progress = progress
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.inflight: dict[str, _InFlight] = {}
        self.inflight_bytes = 0
        self.mid_owner: dict[int, str] = {}
        self.receiver_instance: str | None = None
        #: from the receiver's retained status (brokers whose ACL hides it: always False)
        self.receiver_offline = False
        self.connected_at: float | None = None
        self.last_hello = 0.0
        self.dirty = True  # something changed since the last spool scan
        self.retry_after: dict[str, float] = {}  # record hash -> monotonic time to retry
        # the receiver said "later": send nothing new until then (doubling while it persists)
        self.hold_until = 0.0
        self.later_streak = 0
        # Start-up probe: before sending anything, ask the receiver about every pending record,
        # so a restart resends only what it lacks (receipted: nothing; partial: the missing
        # chunks). Replies that name chunks are kept here until the record is sent.
        self.probing: set[str] = set()
        self.probe_deadline = 0.0
        self.probed = False
        self.resume_chunks: dict[str, list[int]] = {}
        self.connected = threading.Event()
        self.client = self._make_client()

    # -- MQTT setup ------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id or f"bodycam-{self.device}",
            protocol=mqtt.MQTTv5,
        )
        if cfg.ca_file:
            try:
                client.tls_set(
                    ca_certs=cfg.ca_file,
                    certfile=cfg.cert_file,
                    keyfile=cfg.key_file,
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (OSError, ssl.SSLError) as exc:
                raise UplinkConfigError("ca_file", f"cannot load TLS material: {exc}") from exc
        client.will_set(wire.status_topic(self.device), self._status("offline"), qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=5)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    def _status(self, state: str) -> bytes:
        return wire.encode_json(
            {
                "v": wire.PROTOCOL_VERSION,
                "state": state,
                "instance": self.device,
                "utc": format_utc(datetime.now(UTC)),
            }
        )

    # paho network thread: only hand events over to the main loop
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            self.events.put(("error", f"broker refused the connection: {reason}"))
            return
        client.subscribe(wire.down_subscription(self.device), qos=1)
        client.subscribe(wire.RECEIVER_STATUS_TOPIC, qos=1)
        self.connected.set()
        self.events.put(("connected", bool(flags.session_present)))

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if not self.connected.is_set():
            # dropped before any CONNACK: with TLS 1.3 that is how a refused client certificate
            # shows (the server checks it after the handshake)
            self.events.put(("connect-failed", None))
            return
        self.connected.clear()
        self.events.put(("disconnected", str(reason)))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.events.put(("connect-failed", None))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.events.put(("message", (msg.topic, bytes(msg.payload))))

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any
    ) -> None:
        if getattr(reason, "is_failure", False):
            self.events.put(("refused", (mid, str(reason))))

    # -- main loop -------------------------------------------------------------------------
    def run(
        self, stop: threading.Event, *, until_done: bool = False, timeout_s: float | None = None
    ) -> UploadResult:
        """Upload until ``stop`` is set (dock mode) or, with ``until_done``, until nothing is
        pending (or ``timeout_s`` passes). Returns the figures of this run."""
        cfg = self.config
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = cfg.session_expiry_s
        self.client.connect_async(
            cfg.broker_host,
            cfg.broker_port,
            keepalive=cfg.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()
        deadline = time.monotonic() + timeout_s if timeout_s is not None else None
        last_scan = last_progress = 0.0
        queue_: list[Item] = []
        try:
            self.result.bytes_freed += self.spool.sweep(min_age_s=self._min_age())
            while not stop.is_set():
                now = time.monotonic()
                if deadline is not None and now > deadline:
                    self.result.errors.append(f"timed out after {timeout_s}s")
                    break
                self._drain_events(timeout_s=LOOP_INTERVAL_S)
                if now - last_scan >= cfg.rescan_interval_s or (not queue_ and self.dirty):
                    queue_ = self._eligible(now)
                    last_scan, self.dirty = now, False
                if self.connected.is_set() and not self._probing(now):
                    queue_ = self._send_window(queue_)
                    self._check_timeouts(now)
                    if now - self.last_hello >= HELLO_INTERVAL_S:
                        self._hello()  # keeps the receiver's pending figures current
                if self.progress is not None and now - last_progress >= PROGRESS_INTERVAL_S:
                    last_progress = now
                    self.progress(self.result, len(queue_) + len(self.inflight))
                if until_done and not queue_ and not self.inflight and self._docked(now):
                    queue_ = self._eligible(now)
                    if not queue_:
                        break  # what is left (if anything) failed this run; pending says so
        finally:
            self.result.pending = len(self.spool.pending())
            if self.progress is not None:
                self.progress(self.result, self.result.pending)
            self._shutdown()
        return self.result

    def _eligible(self, now: float) -> list[Item]:
        """Pending records to send now: not in flight, not backing off after a failure."""
        return [
            i
            for i in self.spool.pending()
            if i.hash not in self.inflight and self.retry_after.get(i.hash, 0.0) <= now
        ]

    def _probing(self, now: float) -> bool:
        if self.probing and now > self.probe_deadline:
            log.info("%d record(s) unanswered by the start-up query", len(self.probing))
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

    def _shutdown(self) -> None:
        if self.connected.is_set():
            self._hello()  # leave the receiver with up-to-date pending figures
            info = self.client.publish(
                wire.status_topic(self.device), self._status("offline"), qos=1, retain=True
            )
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2)
            self.client.disconnect()
        self.client.loop_stop()

    def _drain_events(self, timeout_s: float) -> None:
        try:
            kind, data = self.events.get(timeout=timeout_s)
        except queue.Empty:
            return
        while True:
            self._event(kind, data)
            try:
                kind, data = self.events.get_nowait()
            except queue.Empty:
                return

    def _event(self, kind: str, data: Any) -> None:
        if kind == "connected":
            self.connected_at = time.monotonic()
            log.info(
                "connected to broker %s:%d (session present: %s)",
                self.config.broker_host,
                self.config.broker_port,
                data,
            )
            self._publish(wire.status_topic(self.device), self._status("online"), retain=True)
            self._hello()
            self._query(list(self.inflight))
            if not self.probed:
                self.probed = True
                self.probing = {i.hash for i in self.spool.pending()}
                self.probe_deadline = time.monotonic() + self.config.probe_timeout_s
                self._query(sorted(self.probing))
        elif kind == "disconnected":
            log.warning("disconnected from broker: %s", data)
        elif kind == "error":
            log.error("%s", data)
            self.result.errors.append(str(data))
        elif kind == "connect-failed":
            cfg = self.config
            msg = (
                f"cannot connect to the broker {cfg.broker_host}:{cfg.broker_port}: unreachable,"
                " or it refused this device's certificate (revoked, expired or another dock's)"
            )
            if msg not in self.result.errors:  # paho retries every few seconds
                log.error("%s", msg)
                self.result.errors.append(msg)
        elif kind == "refused":
            mid, reason = data
            owner = self.mid_owner.pop(mid, None)
            self.result.refused_publishes += 1
            msg = f"broker refused a publish ({reason})" + (
                f" of record {owner[:16]}" if owner else ""
            )
            log.error("%s", msg)
            self.result.errors.append(msg)
            if owner in self.inflight:
                self._release(owner)  # not sent after all: stays pending, retried later
                self.retry_after[owner] = time.monotonic() + self.config.retry_backoff_s
        elif kind == "message":
            topic, payload = data
            try:
                self._message(topic, payload)
            except (wire.WireError, EvidenceError) as exc:
                log.warning("ignored message on %s: %s", topic, exc)

    # -- sending ---------------------------------------------------------------------------
    def _publish(
        self, topic: str, payload: bytes, *, retain: bool = False, owner: str | None = None
    ) -> bool:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.warning("publish on %s not queued: rc %s", topic, info.rc)
            return False
        if owner is not None:
            self.mid_owner[info.mid] = owner
            if owner in self.inflight:
                self.inflight[owner].mids.add(info.mid)
        return True

    def _hello(self) -> None:
        self.last_hello = time.monotonic()
        summary = self.spool.summary()
        msg = {"v": wire.PROTOCOL_VERSION, "device_utc": format_utc(datetime.now(UTC)), **summary}
        self._publish(wire.up_topic(self.device, wire.UP_HELLO), wire.encode_json(msg))

    def _query(self, hashes: list[str]) -> None:
        for start in range(0, len(hashes), wire.MAX_QUERY_RECORDS):
            batch = hashes[start : start + wire.MAX_QUERY_RECORDS]
            msg = {"v": wire.PROTOCOL_VERSION, "records": batch}
            self._publish(wire.up_topic(self.device, wire.UP_QUERY), wire.encode_json(msg))
            self.result.queries += 1
            for h in batch:
                if h in self.inflight:
                    self.inflight[h].last_sent = time.monotonic()

    def _send_window(self, queue_: list[Item]) -> list[Item]:
        if time.monotonic() < self.hold_until:
            return queue_
        while queue_:
            item = queue_[0]
            if self.inflight and self.inflight_bytes + item.wire_bytes > self.config.window_bytes:
                break
            queue_.pop(0)
            if item.hash in self.inflight or self.spool.has_receipt(item.hash):
                continue
            self.inflight[item.hash] = _InFlight(item, time.monotonic())
            self.inflight_bytes += item.wire_bytes
            resume = self.resume_chunks.pop(item.hash, None)
            if resume is not None:
                log.info("resuming seq %d: %d chunk(s) missing", item.record.seq, len(resume))
            sent = self._send_item(item, resume, init=resume is None)
            if not sent:
                self._release(item.hash)
                self.retry_after[item.hash] = time.monotonic() + self.config.retry_backoff_s
                break
            self.result.records_sent += 1
        return queue_

    def _send_item(self, item: Item, chunks: list[int] | None = None, *, init: bool = True) -> bool:
        """Send init (unless ``init`` is False), then the given chunks (default all) and fin."""
        if init:
            msg = {"v": wire.PROTOCOL_VERSION, "record": item.record.to_dict()}
            if not self._publish(
                wire.up_topic(self.device, wire.UP_INIT), wire.encode_json(msg), owner=item.hash
            ):
                return False
        if item.digest is None or item.media_path is None:
            return True
        d = item.digest
        indices = range(len(d.chunks)) if chunks is None else chunks
        try:
            with open(item.media_path, "rb") as f:
                for index in indices:
                    if not 0 <= index < len(d.chunks):
                        continue
                    f.seek(index * d.chunk_size)
                    data = f.read(d.chunk_size)
                    frame = wire.pack_chunk(item.hash, index, index * d.chunk_size, data)
                    if not self._publish(
                        wire.up_topic(self.device, wire.UP_CHUNK), frame, owner=item.hash
                    ):
                        return False
                    self.result.bytes_sent += len(data)
        except OSError as exc:
            msg_ = f"segment seq {item.record.seq}: media {item.media_path} unreadable: {exc}"
            log.error("%s", msg_)
            self.result.errors.append(msg_)
            return False
        fin = {
            "v": wire.PROTOCOL_VERSION,
            "record": item.hash,
            "size": d.size,
            "sha256": d.sha256,
            "chunks": len(d.chunks),
        }
        return self._publish(
            wire.up_topic(self.device, wire.UP_FIN), wire.encode_json(fin), owner=item.hash
        )

    def _release(self, record_hash: str) -> None:
        entry = self.inflight.pop(record_hash, None)
        if entry is None:
            return
        self.dirty = True
        self.inflight_bytes -= entry.item.wire_bytes
        for mid in entry.mids:
            self.mid_owner.pop(mid, None)

    def _check_timeouts(self, now: float) -> None:
        if self.receiver_offline:
            return  # queries would pile up in its session; it is asked when it comes back
        late = [
            h for h, e in self.inflight.items() if now - e.last_sent > self.config.receipt_timeout_s
        ]
        if late:
            log.info("no receipt for %d record(s) yet; asking the receiver", len(late))
            self._query(late)

    # -- receiving -------------------------------------------------------------------------
    def _message(self, topic: str, payload: bytes) -> None:
        if topic == wire.RECEIVER_STATUS_TOPIC:
            status = wire.parse_json(payload, wire.STATUS, topic)
            was_offline = self.receiver_offline
            self.receiver_offline = status["state"] != "online"
            if not self.receiver_offline and (
                was_offline or status["instance"] != self.receiver_instance
            ):
                if self.receiver_instance is not None:
                    log.info("receiver (re)started; asking what it lacks")
                    self._query(list(self.inflight))
                self.receiver_instance = status["instance"]
            elif self.receiver_offline and not was_offline:
                log.warning("receiver is offline; waiting for it before asking again")
            return
        t = wire.parse_topic(topic)
        if t.device != self.device or t.direction != "down":
            raise wire.WireError("not for this device", topic)
        if t.kind == wire.DOWN_RECEIPT:
            self._on_receipt(Receipt.parse(payload))
        elif t.kind == wire.DOWN_NEED:
            self._on_need(wire.parse_json(payload, wire.NEED, topic))
        elif t.kind == wire.DOWN_CLOCK:
            self._on_clock(wire.parse_json(payload, wire.CLOCK, topic))
        elif t.kind == wire.DOWN_ASSIGNMENT:
            self._on_assignment(payload, topic)

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
        self._release(receipt.record)
        if receipt.status == STATUS_STORED:
            self.later_streak = 0  # the receiver takes records again
            self.result.receipted += 1
            self.result.bytes_freed += self.spool.free_media(
                item, receipt, min_age_s=self._min_age()
            )
        else:
            self.result.quarantined += 1
            msg = f"receiver quarantined seq {item.record.seq}: {receipt.reason}"
            log.error("%s", msg)
            self.result.errors.append(msg)

    def _on_need(self, msg: dict[str, Any]) -> None:
        if msg["what"] == NEED_LATER:
            self._on_later(msg["record"], str(msg["reason"]))
            return
        entry = self.inflight.get(msg["record"])
        if entry is None:
            if msg["record"] in self.probing:
                self.probing.discard(msg["record"])
                if msg["what"] == wire.NEED_CHUNKS:
                    self.resume_chunks[msg["record"]] = [
                        c for c in msg["chunks"] if isinstance(c, int) and not isinstance(c, bool)
                    ]
            return  # already receipted, or from an earlier run: the next scan resends it
        entry.last_sent = time.monotonic()
        self.result.resends += 1
        chunks = [c for c in msg["chunks"] if isinstance(c, int) and not isinstance(c, bool)]
        if msg["what"] == wire.NEED_ALL:
            log.info("receiver needs all of seq %d (%s)", entry.item.record.seq, msg["reason"])
            self._send_item(entry.item)
        else:
            log.info("receiver needs %d chunk(s) of seq %d", len(chunks), entry.item.record.seq)
            self._send_item(entry.item, chunks, init=False)

    def _on_later(self, record_hash: str, reason: str) -> None:
        """The receiver cannot take this record yet: keep it pending, send it after a back-off."""
        if record_hash not in self.inflight and record_hash not in self.probing:
            return  # an echo of an earlier attempt (e.g. the answer to its fin)
        self.probing.discard(record_hash)
        self._release(record_hash)
        now = time.monotonic()
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
        now = datetime.now(UTC)
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


def run_dock_upload(
    spool: Path,
    config: UplinkConfig,
    stop_event: threading.Event,
    *,
    device: str | None = None,
    until_done: bool = False,
    timeout_s: float | None = None,
    progress: ProgressCallback | None = None,
) -> UploadResult:
    """Upload the spool at the dock until ``stop_event`` is set (or, with ``until_done``, until
    every record has a receipt). The agent calls this from its dock/upload command."""
    from agent.uplink.spool import find_device

    spool = Path(spool)
    device = device or find_device(spool)
    uploader = Uploader(spool, device, config, progress=progress)
    return uploader.run(stop_event, until_done=until_done, timeout_s=timeout_s)
