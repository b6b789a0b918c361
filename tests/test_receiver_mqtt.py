"""The receiver's MQTT reader (receiver.mqtt): packets read into one buffer, PUBLISH decoded
without copies, against a real Mosquitto; malformed PUBLISH packets are protocol errors."""

from __future__ import annotations

import queue
import socket
import struct
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from receiver.config import BrokerConfig
from receiver.mqtt import _decode_publish, make_client
from tests.support.broker import BrokerSettings, MosquittoBroker

# around the varint boundaries, the 16 KiB TLS record size and several reads per packet
SIZES = (0, 1, 127, 128, 16_383, 16_384, 16_385, 300_000, 2_000_000)


def _publisher(broker: MosquittoBroker) -> mqtt.Client:
    tx = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id="tx", protocol=mqtt.MQTTv5
    )
    tx.connect(broker.host, broker.port)
    tx.loop_start()
    return tx


def _receiver(broker: MosquittoBroker, got: queue.Queue[Any]) -> mqtt.Client:
    cfg = BrokerConfig(host=broker.host, port=broker.port, client_id="rx", allow_insecure=True)
    rx = make_client(cfg)
    subscribed = threading.Event()

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        user = getattr(msg.properties, "UserProperty", None)
        got.put((msg.topic, msg.payload, msg.qos, msg.mid != 0, user))

    rx.on_message = on_message
    rx.on_connect = lambda client, *_: client.subscribe("t/#", qos=1)
    rx.on_subscribe = lambda *_: subscribed.set()
    rx.connect(broker.host, broker.port)
    rx.loop_start()
    assert subscribed.wait(15), "the receiver's subscription was not acknowledged"
    return rx


def test_reader_delivers_every_size_and_property(tmp_path: Path) -> None:
    settings = BrokerSettings(allow_anonymous=True, persistence=False)
    with MosquittoBroker(tmp_path / "broker", settings) as broker:
        got: queue.Queue[Any] = queue.Queue()
        rx = _receiver(broker, got)
        tx = _publisher(broker)
        try:
            sent = []
            for qos in (0, 1):
                for size in SIZES:
                    payload = bytes((i * 7 + size) & 0xFF for i in range(size))
                    props = Properties(PacketTypes.PUBLISH)
                    props.UserProperty = [("size", str(size))]
                    topic = f"t/{qos}/{size}"
                    tx.publish(topic, payload, qos=qos, properties=props).wait_for_publish(15)
                    sent.append((topic, payload, qos, qos > 0, [("size", str(size))]))
            received = [got.get(timeout=15) for _ in sent]
        finally:
            tx.disconnect()
            tx.loop_stop()
            rx.disconnect()
            rx.loop_stop()
        assert received == sent


def test_the_dock_link_client_turns_nagle_off(tmp_path: Path) -> None:
    # acknowledgements are small writes each side waits for: with Nagle on, one waits for
    # the peer's TCP ACK of the last one (one device's upload ran 25-30 % slower)
    settings = BrokerSettings(allow_anonymous=True, persistence=False)
    with MosquittoBroker(tmp_path / "broker", settings) as broker:
        rx = _receiver(broker, queue.Queue())
        plain = _publisher(broker)  # paho's own client, for contrast
        try:
            sock, other = rx.socket(), plain.socket()
            assert sock is not None
            assert other is not None
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert other.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        finally:
            for client in (rx, plain):
                client.disconnect()
                client.loop_stop()


def _publish_packet(topic: bytes, mid: int, props: bytes, payload: bytes) -> bytearray:
    return bytearray(
        struct.pack("!H", len(topic)) + topic + struct.pack("!H", mid) + props + payload
    )


def test_decode_matches_the_packet() -> None:
    packet = _publish_packet(b"a/b", 7, b"\x00", b"payload")
    msg = _decode_publish(0x32 | 0x01, packet)  # QoS 1, retained
    assert (msg.topic, msg.mid, msg.payload, msg.qos, msg.retain) == ("a/b", 7, b"payload", 1, True)


def test_every_truncation_is_a_malformed_packet_or_a_shorter_payload() -> None:
    props = b"\x07\x26\x00\x01k\x00\x01v"  # one user property (7 bytes)
    packet = _publish_packet(b"a/b", 7, props, b"xyz")
    body = 2 + 3 + 2 + len(props)
    for cut in range(len(packet)):
        if cut >= body:  # a shorter payload is still a well-formed packet
            assert _decode_publish(0x32, packet[:cut]).payload == b"xyz"[: cut - body]
            continue
        with pytest.raises(MalformedPacket):
            _decode_publish(0x32, packet[:cut])


def test_overlong_variable_integer_is_malformed() -> None:
    packet = _publish_packet(b"a", 1, b"\xff\xff\xff\xff\x01", b"")
    with pytest.raises(MalformedPacket):
        _decode_publish(0x32, packet)
