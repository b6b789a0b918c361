"""Malformed payloads are logged and ignored; the service keeps serving the next upload."""

from __future__ import annotations

import json
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from evidence import transfer as wire
from tests.support.dock import CASE, Dock
from tests.support.spool import build_spool


def _publish_all(dock: Dock, messages: list[tuple[str, bytes]]) -> None:
    """Publish each message with the certificate of the device whose topic it uses (a
    compromised device: the broker ACL lets nobody else write there)."""
    for topic, payload in messages:
        ident = dock.identities[topic.split("/")[2]]
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id="attacker",
            protocol=mqtt.MQTTv5,
        )
        client.tls_set(ca_certs=str(ident.ca), certfile=str(ident.cert), keyfile=str(ident.key))
        client.connect(dock.broker.host, dock.broker.port)
        client.loop_start()
        try:
            info = client.publish(topic, payload, qos=1)
            info.wait_for_publish(timeout=5)
            assert info.is_published()
        finally:
            client.disconnect()
            client.loop_stop()


def test_garbage_is_ignored_and_next_upload_is_served(
    dock: Dock, mpegts_clips: list[Path], tmp_path: Path
) -> None:
    spool = build_spool(tmp_path / "spool", mpegts_clips)
    dock.register(spool)
    dock.enrol("BC-0002")
    dock.create_case()
    dev = spool.device
    good_record = spool.records[0].to_dict()
    seg = spool.segments()[0]
    bad = [
        (wire.up_topic(dev, "init"), b"\x00\xff garbage \x80"),
        (wire.up_topic(dev, "init"), b'{"v": 1, "record": "not an object"}'),
        (wire.up_topic(dev, "init"), b'{"v": 1, "record": {"type": "segment"}}'),
        (wire.up_topic(dev, "fin"), b"[1, 2, 3]"),
        (wire.up_topic(dev, "hello"), json.dumps({"v": 1, "x": "y" * 1_200_000}).encode()),
        (wire.up_topic(dev, "chunk"), b"BCC1" + b"\x00" * 10),
        (wire.up_topic(dev, "chunk"), wire.pack_chunk(seg.hash(), 0, 0, b"x")[:-1] + b"y"),
        (f"{wire.PREFIX}/{dev}/up/bogus", b"{}"),
        # a valid record of BC-0001 published under another device's topic
        (wire.up_topic("BC-0002", "init"), json.dumps({"v": 1, "record": good_record}).encode()),
        (wire.up_topic(dev, "query"), b'{"v": 1, "records": ["../../etc"]}'),
    ]
    _publish_all(dock, bad)

    result = dock.upload(spool)

    assert result.pending == 0
    assert result.quarantined == 0
    assert dock.cli_json("case", "show", CASE)["verification"] == "verified"
    assert dock.rx.proc is not None, "service must keep running"
    assert dock.rx.proc.poll() is None, "service must keep running"
    log = dock.rx.log_text()
    assert log.count("ignored message") == len(bad)
    assert "published by 'BC-0002'" in log
    assert dock.cli_json("quarantine") == []
