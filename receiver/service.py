"""The receiver service: MQTT ingest loop, assignment publisher, systemd notify and watchdog.

One paho network thread feeds every message to :class:`receiver.ingest.Ingest` in arrival order
and publishes its replies (QoS 1). The main thread publishes new assignments (retained) and
cleared ones (a retained "cleared" message), expires
idle transfers and pets the systemd watchdog. Failure posture: bad input never stops the service
(see :mod:`receiver.ingest`); a lost broker connection is retried forever; on start, temp files of
transfers interrupted by a crash are deleted, because a partial segment is never stored. It
refuses to start (ConfigError) without mutual-TLS settings (unless ``allow_insecure``) or with an
unreadable encryption key.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt

from evidence import transfer as wire
from evidence.records import format_utc
from receiver import sdnotify
from receiver.cases import CaseBook
from receiver.config import ReceiverConfig
from receiver.custody import CustodyLog, issue_head_if_due
from receiver.identity import load_media_key, load_receipt_key
from receiver.ingest import Ingest, Outgoing
from receiver.mqtt import connect_properties, make_client
from receiver.store import EvidenceStore, connect

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL_S = 0.5
EXPIRE_INTERVAL_S = 30.0


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
            max_segment_bytes=lim.max_segment_bytes,
            max_transfers=lim.max_transfers,
            transfer_timeout_s=lim.transfer_timeout_s,
            dock_registry=config.dock_registry,
            encryption_key=encryption_key,
        )
        self.ingest.refresh_registry()
        self.instance = uuid.uuid4().hex
        self.connected = threading.Event()
        self.client = make_client(config.broker)
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
        log.info("connected to broker (session present: %s)", flags.session_present)
        client.subscribe(wire.UP_SUBSCRIPTION, qos=1)
        client.subscribe(f"{wire.PREFIX}/+/status", qos=1)
        client.publish(wire.RECEIVER_STATUS_TOPIC, self._status("online"), qos=1, retain=True)
        self.connected.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.connected.clear()
        log.warning("disconnected from broker: %s", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        for out in self.ingest.handle(msg.topic, bytes(msg.payload)):
            self._publish(out)

    def _publish(self, out: Outgoing) -> None:
        info = self.client.publish(out.topic, out.payload, qos=1, retain=out.retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            # the device will ask again (query on timeout); nothing is lost
            log.warning("could not queue reply on %s: rc %s", out.topic, info.rc)

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
        busy = self.ingest.busy_since
        return busy is None or time.monotonic() - busy < stuck_after_s

    def run(self, stop: threading.Event) -> None:
        bcfg = self.config.broker
        self.client.connect_async(
            bcfg.host,
            bcfg.port,
            keepalive=bcfg.keepalive_s,
            clean_start=False,
            properties=connect_properties(bcfg.session_expiry_s),
        )
        self.client.loop_start()
        watchdog_s = sdnotify.watchdog_ping_interval_s()
        sdnotify.notify("READY=1\nSTATUS=receiving")
        log.info(
            "receiver %s serving %s:%d, data in %s",
            self.ingest.receiver_id,
            bcfg.host,
            bcfg.port,
            self.config.data_dir,
        )
        last_expire = last_pet = time.monotonic()
        try:
            while not stop.wait(HOUSEKEEPING_INTERVAL_S):
                now = time.monotonic()
                try:
                    self.publish_assignments()
                except Exception:
                    log.exception("publishing assignments failed; will retry")
                if now - last_expire > EXPIRE_INTERVAL_S:
                    last_expire = now
                    self.ingest.expire()
                    try:  # custody hook: a signed tree head at least hourly while the log grows
                        issue_head_if_due(self.custody)
                    except Exception:
                        log.exception("signing a custody tree head failed; will retry")
                if (
                    watchdog_s is not None
                    and now - last_pet >= watchdog_s
                    and self.healthy(stuck_after_s=2 * watchdog_s)
                ):
                    last_pet = now
                    sdnotify.notify("WATCHDOG=1")
        finally:
            sdnotify.notify("STOPPING=1")
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
