"""Several devices docking at once (issue 14.3): windows handed out in turns, real dock.

Four devices upload together through Mosquitto to a receiver whose broker queue budget fits
two windows. A monitor client reads every window the receiver grants (clock replies and window
messages) and every device status: the windows held at any moment never add up to more than
the budget, devices beyond the two slots are told to wait, and every record arrives once, with
no chunk sent twice.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.uplink import UploadResult
from evidence import transfer as wire
from tests.support.dock import running_dock
from tests.support.spool import BuiltSpool, build_spool

MONITOR = "grant-monitor"
DEVICES = 4


class GrantLog:
    """What the monitor saw: the window each device holds now, and the largest sum."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[str, int] = {}
        #: offline devices: a reply to their goodbye hello may still come, and grants nothing
        self.gone: set[str] = set()
        self.max_sum = 0
        self.waited: set[str] = set()
        self.grants = 0

    def on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        t = wire.parse_topic(msg.topic)
        with self.lock:
            if t.direction == "status":
                if json.loads(msg.payload)["state"] != "online":
                    self.held.pop(t.device, None)  # gone: nothing of it left in flight
                    self.gone.add(t.device)
                else:
                    self.gone.discard(t.device)
                return
            if t.kind not in (wire.DOWN_CLOCK, wire.DOWN_WINDOW) or t.device in self.gone:
                return
            window = int(json.loads(msg.payload)["window_bytes"])
            self.grants += 1
            self.held[t.device] = window
            if window == 0:
                self.waited.add(t.device)
            self.max_sum = max(self.max_sum, sum(self.held.values()))


def test_devices_docking_at_once_share_the_broker_queue_without_duplicates(
    tmp_path: Path, mpegts_clips: list[Path]
) -> None:
    spools: list[BuiltSpool] = [
        build_spool(tmp_path / f"spool{i}", mpegts_clips, device=f"BC-{i:04d}", sessions=1)
        for i in range(DEVICES)
    ]
    largest = max(s.body["media"]["size"] for sp in spools for s in sp.segments())
    window = largest + 64 * 1024
    budget = 2 * window
    with running_dock(
        tmp_path / "dock", extra_acl=[f"user {MONITOR}", "topic read #"], receiver=False
    ) as dock:
        with dock.receiver_config.open("a", encoding="utf-8") as f:
            f.write(f"\n[limits]\nbroker_queue_bytes = {budget}\ndevice_window_bytes = {window}\n")
        dock.rx.start()
        for sp in spools:
            dock.register(sp)
        dock.create_case()
        grants = GrantLog()
        monitor = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=MONITOR,
            protocol=mqtt.MQTTv5,
        )
        cert, key = dock.client_identity(MONITOR)
        monitor.tls_set(ca_certs=str(dock.pki.paths.ca_cert), certfile=str(cert), keyfile=str(key))
        monitor.on_message = grants.on_message
        monitor.connect(dock.broker.host, dock.broker.port)
        subscribed = threading.Event()
        monitor.on_subscribe = lambda *_a: subscribed.set()
        monitor.subscribe([(f"{wire.PREFIX}/+/down/#", 1), (f"{wire.PREFIX}/+/status", 1)])
        monitor.loop_start()
        try:
            assert subscribed.wait(10), "the monitor did not subscribe"
            results: dict[str, UploadResult] = {}

            def upload(sp: BuiltSpool) -> None:
                results[sp.device] = dock.upload(sp, timeout_s=60.0)

            threads = [threading.Thread(target=upload, args=(sp,)) for sp in spools]
            for t in threads:
                t.start()
            for t in threads:
                t.join(90)
        finally:
            monitor.loop_stop()
            monitor.disconnect()
        assert len(results) == DEVICES
        for sp in spools:
            r = results[sp.device]
            media = sum(s.body["media"]["size"] for s in sp.segments())
            assert r.pending == 0, (sp.device, r.errors)
            assert r.receipted == len(sp.records)
            # no chunk sent twice (a query under load may still be answered "waiting for its
            # predecessor", which the device counts as a resend but which sends nothing)
            assert r.bytes_sent == media
        assert dock.stored_records() == sum(len(sp.records) for sp in spools)  # none twice
        assert grants.grants >= DEVICES
        assert 0 < grants.max_sum <= budget
        assert grants.waited  # more devices than slots: some waited their turn
