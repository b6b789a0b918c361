"""The receiver service: MQTT ingest loop, assignment publisher, systemd notify and watchdog.

Three threads. paho's network thread only reads the socket and *enqueues* each upload message
(:class:`receiver.ingest.worker.FairQueue`: per-device rate and byte budgets, bounded queues),
so it keeps the socket drained and the keepalive alive whatever a device sends. The ingest
worker takes messages round-robin over devices, runs :class:`receiver.ingest.Ingest` (hashing,
decryption, fsync, SQLite) and publishes its replies (QoS 1); it also expires idle transfers.
Segments completed while more messages are waiting are stored as a group (group commit:
:meth:`Ingest.flush` once the queue is empty, the group is full or 0.1 s old); their receipts
leave only after the group's files and rows are durable.
The main thread publishes new assignments (retained) and cleared ones (a retained "cleared"
message) and pets the systemd watchdog while both other threads are alive and no message has
taken too long. Retained messages on upload topics are never processed (a device could
otherwise have them replayed at every reconnect): the subscription asks the broker not to send
them, and any that arrive anyway are dropped.

Failure posture: bad input never stops the service (see :mod:`receiver.ingest`); a lost broker
connection is retried forever; on start, temp files of transfers interrupted by a crash are
deleted, because a partial segment is never stored. It refuses to start (ReceiverConfigError)
without mutual-TLS settings (unless ``allow_insecure``) or with an unreadable encryption key.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from typing import Any, cast

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from evidence import transfer as wire
from evidence.records import format_utc
from receiver import sdnotify
from receiver.cases import CaseBook
from receiver.config import ReceiverConfig
from receiver.custody import CustodyLog, issue_head_if_due
from receiver.errors import disk_full
from receiver.identity import load_media_key, load_receipt_key
from receiver.ingest import Ingest, Outgoing
from receiver.ingest.limits import LogLimiter
from receiver.ingest.worker import FairQueue
from receiver.mqtt import connect_properties, make_client, receive_maximum
from receiver.store import EvidenceStore, connect

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL_S = 0.5
EXPIRE_INTERVAL_S = 30.0
#: MQTT 5 retain handling 2: the broker sends no retained messages when we subscribe
_NO_RETAINED = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)


class ReceiverService:
    def __init__(self, config: ReceiverConfig) -> None:
        self.config = config
        self.store = EvidenceStore(config.data_dir)
        removed = self.store.clear_temp()
        if removed:
            log.info("removed %d partial transfer file(s) left by an interrupted run", removed)
        self.receipt_key = load_receipt_key(config.receipt_key_path)
        encryption_key = load_media_key(config.encryption_key)
        config.broker.check_tls()
        self.ingest_conn = connect(self.store.db_path)
        self.main_conn = connect(self.store.db_path)
        self.custody = CustodyLog(self.main_conn, self.store.data_dir, self.receipt_key)
        lim = config.limits
        self.ingest = Ingest(
            self.store,
            self.ingest_conn,
            self.receipt_key,
            limits=lim,
            dock_registry=config.dock_registry,
            encryption_key=encryption_key,
            group_commit=True,
        )
        self.ingest.refresh_registry()
        self.queue = FairQueue(lim, time.monotonic)
        self.logs = LogLimiter(log, lim.log_lines_per_minute)
        self.worker: threading.Thread | None = None
        self.instance = uuid.uuid4().hex
        self.connected = threading.Event()
        self.client = make_client(config.broker, manual_ack=True)
        #: connection generation: a message is acknowledged only on the connection it came on
        #: (after a reconnect the broker resends it, and its mid may name another message)
        self.generation = 0
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.will_set(
            wire.RECEIVER_STATUS_TOPIC, self._status("offline"), qos=1, retain=True
        )

    def _status(self, state: str) -> bytes:
        return wire.encode_json(
            {
                "v": wire.PROTOCOL_VERSION,
                "state": state,
                "instance": self.instance,
                "receiver": self.ingest.receiver_id,
                "utc": format_utc_now(),
            }
        )

    # -- paho callbacks (network thread) ---------------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        self.generation += 1
        log.info("connected to broker (session present: %s)", flags.session_present)
        client.subscribe(wire.UP_SUBSCRIPTION, options=_NO_RETAINED)
        client.subscribe(f"{wire.PREFIX}/+/status", options=_NO_RETAINED)
        client.publish(wire.RECEIVER_STATUS_TOPIC, self._status("online"), qos=1, retain=True)
        self.connected.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.connected.clear()
        log.warning("disconnected from broker: %s", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # network thread: nothing here may block or take long (see the module docstring)
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            client.ack(msg.mid, msg.qos)
            return  # not a topic of ours (our ACL'd topics are ASCII)
        if msg.retain:
            client.ack(msg.mid, msg.qos)
            self.logs.log(
                logging.WARNING,
                topic[:80],
                "retained",
                "ignored a retained message on %s",
                topic[:200].encode("unicode_escape").decode("ascii"),
            )
            return
        tag = (self.generation, msg.mid, msg.qos)
        if not self.queue.offer(topic, bytes(msg.payload), tag):
            client.ack(msg.mid, msg.qos)  # dropped: the device resends when it asks again

    def _work(self, stop: threading.Event) -> None:
        """The ingest worker: messages round-robin over devices, replies published."""
        last_expire = time.monotonic()
        while not stop.is_set():
            item = self.queue.take(timeout_s=HOUSEKEEPING_INTERVAL_S)
            if item is not None:
                topic, payload, tag = item
                for out in self.ingest.handle(topic, payload):
                    self._publish(out)
                generation, mid, qos = cast(tuple[int, int, int], tag)
                if generation == self.generation:
                    self.client.ack(mid, qos)
            if item is None or self.queue.backlog() == 0 or self.ingest.flush_due():
                # group commit: segments completed while messages kept coming are stored
                # together once none is waiting (or when the group is full, inside handle)
                for out in self.ingest.flush():
                    self._publish(out)
            if item is None:  # quiet: windows of idle devices still go to those waiting
                for out in self.ingest.tick():
                    self._publish(out)
            now = time.monotonic()
            if now - last_expire > EXPIRE_INTERVAL_S:
                last_expire = now
                self.ingest.expire()
        for out in self.ingest.flush():  # what completed before the stop is stored too
            self._publish(out)

    def _publish(self, out: Outgoing) -> None:
        info = self.client.publish(out.topic, out.payload, qos=1, retain=out.retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            # the device will ask again (query on timeout); nothing is lost
            device = out.topic.split("/")[2] if out.topic.count("/") >= 2 else "?"
            self.logs.log(
                logging.WARNING,
                device,
                "reply",
                "could not queue reply on %s: rc %s",
                out.topic,
                info.rc,
            )

    # -- main thread -----------------------------------------------------------------------
    def publish_assignments(self) -> int:
        if not self.connected.is_set():
            return 0
        book = CaseBook(self.main_conn)
        count = 0
        for clear_id, device in book.unpublished_unassignments():
            # a retained "cleared" state rather than an empty message (which would only delete
            # the retained one): every later connection of the device, in whatever session,
            # learns that it has no assignment and drops its state/assignment.json
            topic = wire.down_topic(device, wire.DOWN_ASSIGNMENT)
            payload = json.dumps(wire.ASSIGNMENT_CLEARED).encode("utf-8")
            info = self.client.publish(topic, payload, qos=1, retain=True)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return count  # keep the order: nothing newer goes before this clear
            book.mark_unassignment_published(clear_id)
            log.info("assignment of %s cleared", device)
            count += 1
        for a in book.unpublished_assignments():
            topic = wire.down_topic(a.device, wire.DOWN_ASSIGNMENT)
            payload = json.dumps(a.wire(), ensure_ascii=False, sort_keys=True).encode("utf-8")
            info = self.client.publish(topic, payload, qos=1, retain=True)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                book.mark_published(a.id)
                log.info("assignment of %s to case %s published", a.device, a.case)
                count += 1
        return count

    def healthy(self, *, stuck_after_s: float) -> bool:
        """The MQTT thread is alive and not stuck on one message (what the watchdog guards)."""
        thread = getattr(self.client, "_thread", None)
        if thread is None or not thread.is_alive():
            return False
        if self.worker is None or not self.worker.is_alive():
            return False
        busy = self.ingest.busy_since
        return busy is None or time.monotonic() - busy < stuck_after_s

    def run(self, stop: threading.Event) -> None:
        bcfg = self.config.broker
        self.client.connect_async(
            bcfg.host,
            bcfg.port,
            keepalive=bcfg.keepalive_s,
            clean_start=False,
            properties=connect_properties(
                bcfg.session_expiry_s, receive_maximum(self.config.limits.broker_queue_messages)
            ),
        )
        self.client.loop_start()
        self.worker = threading.Thread(
            target=self._work, args=(stop,), name="ingest-worker", daemon=True
        )
        self.worker.start()
        watchdog_s = sdnotify.watchdog_ping_interval_s()
        sdnotify.notify("READY=1\nSTATUS=receiving")
        log.info(
            "receiver %s serving %s:%d, data in %s",
            self.ingest.receiver_id,
            bcfg.host,
            bcfg.port,
            self.config.data_dir,
        )
        last_pet = last_head = time.monotonic()
        try:
            while not stop.wait(HOUSEKEEPING_INTERVAL_S):
                now = time.monotonic()
                try:
                    self.publish_assignments()
                except Exception:
                    log.exception("publishing assignments failed; will retry")
                if now - last_head > EXPIRE_INTERVAL_S:
                    last_head = now
                    try:  # custody: a signed tree head at least hourly while the log grows
                        issue_head_if_due(self.custody)
                    except Exception as exc:
                        if not disk_full(exc):
                            log.exception("signing a custody tree head failed; will retry")
                        else:  # the operator's problem, not a bug: one line, no traceback
                            log.error("signing a custody tree head failed (will retry): %s", exc)
                if (
                    watchdog_s is not None
                    and now - last_pet >= watchdog_s
                    and self.healthy(stuck_after_s=2 * watchdog_s)
                ):
                    last_pet = now
                    sdnotify.notify("WATCHDOG=1")
        finally:
            sdnotify.notify("STOPPING=1")
            # the worker's last flush publishes receipts: stop it while still connected
            self.queue.close()
            if self.worker is not None:
                self.worker.join(timeout=30)
            if self.connected.is_set():
                self.client.publish(
                    wire.RECEIVER_STATUS_TOPIC, self._status("offline"), qos=1, retain=True
                ).wait_for_publish(timeout=2)
            self.client.disconnect()
            self.client.loop_stop()
            self.ingest.close()
            self.ingest_conn.close()
            self.main_conn.close()
            log.info("receiver stopped (pid %d)", os.getpid())


def format_utc_now() -> str:
    from datetime import UTC, datetime

    return format_utc(datetime.now(UTC))
