"""Dock upload over MQTT 5: the paho adapter around :class:`~agent.uplink.session.UplinkSession`.

:class:`Uploader` connects with a persistent session (explicit session-expiry interval), a
retained ``status`` topic and a last will "offline". paho's network thread only turns callbacks
into session events on a queue; the upload thread feeds them to the session, calls its
``tick`` and publishes what it returns. Every upload decision (window, resends, queries,
back-off, receipts; see :mod:`agent.uplink.session`) lives in the session, which has no network.

Failure posture: a PUBACK proves nothing and a refused publish (MQTT 5 reason code >= 0x80) is
counted as an error and the record stays pending; receipts that do not verify are logged and
ignored; broker loss is retried forever until ``stop`` is set. The recorder never waits on this:
it runs in its own thread or process and only reads sealed files.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.uplink.config import UplinkConfig
from agent.uplink.errors import UplinkConfigError
from agent.uplink.session import (
    BrokerRefusedConnection,
    Clock,
    Connected,
    ConnectFailed,
    Disconnected,
    Event,
    Message,
    Publish,
    PublishFailed,
    UplinkSession,
    UploadResult,
)
from agent.uplink.spool import UploadSpool
from evidence import transfer as wire
from evidence.errors import EvidenceError
from evidence.keys import load_public_key
from evidence.mqttclient import ViewWriteClient

log = logging.getLogger(__name__)

LOOP_INTERVAL_S = 0.05
PROGRESS_INTERVAL_S = 1.0

__all__ = ["ProgressCallback", "UploadResult", "Uploader", "run_dock_upload"]

ProgressCallback = Callable[[UploadResult, int], None]


@dataclass(frozen=True)
class _PubAck:
    """paho's on_publish, handed to the upload thread (which alone owns ``mid_owner``)."""

    mid: int
    failure: str | None


def load_receiver_key(spool_root: Path, config: UplinkConfig) -> Ed25519PublicKey:
    try:
        return load_public_key(config.receiver_key_path(Path(spool_root)))
    except EvidenceError as exc:
        raise UplinkConfigError(
            "receiver_key_file", f"receipts cannot be checked without it: {exc}"
        ) from exc


class Uploader:
    def __init__(
        self,
        spool_root: Path,
        device: str,
        config: UplinkConfig,
        *,
        progress: ProgressCallback | None = None,
        clock: Clock | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.device = device
        self.session = UplinkSession(
            UploadSpool(spool_root, device), config, load_receiver_key(spool_root, config), clock
        )
        self.clock = self.session.clock
        self.progress = progress
        self.events: queue.Queue[Event | _PubAck] = queue.Queue()
        self.mid_owner: dict[int, str | None] = {}
        self._connected = threading.Event()
        self.client = self._make_client()

    @property
    def result(self) -> UploadResult:
        return self.session.result

    # -- MQTT setup ------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        client = ViewWriteClient(
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
        status = self.session.status("offline")
        client.will_set(wire.status_topic(self.device), status, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=5)
        # bounds the TCP connect and the TLS handshake (paho's own default is a fixed 5 s):
        # a link that died during the handshake is given up at this time-out, then retried
        client.connect_timeout = cfg.connect_timeout_s
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    # paho network thread: only hand events over to the upload thread
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            self.events.put(BrokerRefusedConnection(str(reason)))
            return
        client.subscribe(wire.down_subscription(self.device), qos=1)
        client.subscribe(wire.RECEIVER_STATUS_TOPIC, qos=1)
        self._connected.set()
        self.events.put(Connected(bool(flags.session_present)))

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if not self._connected.is_set():
            # dropped before the CONNACK: with TLS 1.3 that is how a refused client certificate
            # shows (the server checks it after the handshake)
            self.events.put(ConnectFailed())
            return
        self._connected.clear()
        self.events.put(Disconnected(str(reason)))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.events.put(ConnectFailed())

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.events.put(Message(msg.topic, bytes(msg.payload)))

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any
    ) -> None:
        failed = getattr(reason, "is_failure", False)
        self.events.put(_PubAck(mid, str(reason) if failed else None))

    # -- the upload thread -----------------------------------------------------------------
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
        start = self.clock.monotonic()
        last_progress = float("-inf")
        try:
            self.session.start()
            while not stop.is_set():
                now = self.clock.monotonic()
                if timeout_s is not None and now - start > timeout_s:
                    self.result.errors.append(f"timed out after {timeout_s}s")
                    break
                self._drain_events(timeout_s=LOOP_INTERVAL_S)
                self._execute(self.session.tick())
                if self.progress is not None and now - last_progress >= PROGRESS_INTERVAL_S:
                    last_progress = now
                    self.progress(self.result, self.session.backlog())
                if until_done and self.session.done():
                    break
        finally:
            result = self.session.finish()
            if self.progress is not None:
                self.progress(result, result.pending)
            self._shutdown()
        return result

    def _drain_events(self, timeout_s: float) -> None:
        try:
            event = self.events.get(timeout=timeout_s)
        except queue.Empty:
            return
        while True:
            if isinstance(event, _PubAck):
                owner = self.mid_owner.pop(event.mid, None)
                if event.failure is not None:
                    self._execute(self.session.handle(PublishFailed(owner, event.failure)))
            else:
                self._execute(self.session.handle(event))
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return

    def _execute(self, actions: list[Publish]) -> None:
        failed: set[str | None] = set()
        for action in actions:
            if action.owner is not None and action.owner in failed:
                continue  # the rest of a record whose message could not be queued
            info = self.client.publish(action.topic, action.payload, qos=1, retain=action.retain)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                # its PUBACK is handled by this thread too, after this line: no race
                self.mid_owner[info.mid] = action.owner
                continue
            failed.add(action.owner)
            reason = f"rc {info.rc} on {action.topic}"
            self._execute(self.session.handle(PublishFailed(action.owner, reason, refused=False)))

    def _shutdown(self) -> None:
        goodbye = self.session.goodbye()
        for action in goodbye:
            info = self.client.publish(action.topic, action.payload, qos=1, retain=action.retain)
            if action is goodbye[-1]:
                with contextlib.suppress(RuntimeError, ValueError):
                    info.wait_for_publish(timeout=2)
        if goodbye:
            self.client.disconnect()
        self.client.loop_stop()


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
