"""paho-mqtt client construction for the receiver (MQTT 5, persistent session, TLS from config).

Incoming packets are read straight into one buffer of their announced size and PUBLISH packets
are decoded through memoryviews (:class:`_DirectReadClient`): paho copies each received payload
about six times (a fresh ``bytes`` per TLS record, the growing packet, then ``struct.unpack``
and property slicing over the whole rest of the packet), which was the largest cost on the
receiver's network thread.

Failure posture: missing mutual-TLS settings (without an explicit ``allow_insecure``) or a TLS
file that cannot be loaded raise :class:`ReceiverConfigError` before connecting;
connection loss is handled by paho's reconnect loop and logged, never fatal. A malformed
incoming packet is a protocol error (paho drops the connection), as with paho's own reader.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.exception import MalformedPacket, MQTTException
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from evidence.mqttclient import ViewWriteClient
from receiver.config import BrokerConfig
from receiver.errors import ReceiverConfigError

_PROPERTY_ERRORS = (struct.error, IndexError, KeyError, ValueError, MQTTException)
#: socket reads per call before the loop gets a turn to write (paho reads at most 100 too)
_MAX_READS = 100
#: paho methods the direct reader relies on; if an upgrade renames one, paho's reader is used
_INTERNALS = (
    "_sock_recv",
    "_packet_handle",
    "_handle_on_message",
    "_send_puback",
    "_call_socket_register_write",
)


def _fresh_packet() -> Any:  # paho's _InPacket
    return {
        "command": 0,
        "have_remaining": 0,
        "remaining_count": [],
        "remaining_mult": 1,
        "remaining_length": 0,
        "packet": bytearray(),
        "to_process": 0,
        "pos": 0,
    }


class _DirectReadClient(ViewWriteClient):
    """paho's client with a reader that does not copy payloads (see the module docstring).

    Measured before (paho 2.2, 256 KiB chunks over TLS): ~11 % of the receiver's CPU in
    ``memmove`` on this thread, plus page faults from a fresh 256 KiB allocation per TLS read.
    """

    _direct = all(hasattr(mqtt.Client, name) for name in _INTERNALS)

    def _packet_read(self) -> mqtt.MQTTErrorCode:
        sock = getattr(self, "_sock", None)
        if not self._direct or not isinstance(sock, (socket.socket, ssl.SSLSocket)):
            return super()._packet_read()
        pkt: Any = self._in_packet
        header_read = False
        if pkt["have_remaining"] == 0:
            early = self._read_fixed_header(pkt)
            if early is not None:
                return early
            header_read = True  # a header-only packet (PINGRESP) is bytes received too
        packet, start, need = pkt["packet"], pkt["pos"], pkt["remaining_length"]
        got, stalled = start, False
        with memoryview(packet) as view:
            for _ in range(_MAX_READS):
                if got >= need:
                    break
                try:
                    n = self._recv_into(sock, view[got:])
                except BlockingIOError:
                    stalled = True
                    break
                except OSError:
                    return mqtt.MQTTErrorCode.MQTT_ERR_CONN_LOST
                if n == 0:
                    return mqtt.MQTTErrorCode.MQTT_ERR_CONN_LOST
                got += n
        if header_read or got > start:  # the keepalive counts bytes received, as paho does
            with self._msgtime_mutex:
                self._last_bytes_received = time.monotonic()
        if stalled or got < need:
            pkt["pos"] = got
            return mqtt.MQTTErrorCode.MQTT_ERR_AGAIN
        pkt["pos"] = 0
        pkt["to_process"] = 0
        try:
            rc: mqtt.MQTTErrorCode = self._packet_handle()
        except MalformedPacket:
            rc = mqtt.MQTTErrorCode.MQTT_ERR_PROTOCOL
        self._in_packet = _fresh_packet()
        return rc

    def _read_fixed_header(self, pkt: dict[str, Any]) -> mqtt.MQTTErrorCode | None:
        """Read the command byte and the remaining length (both resumable byte by byte);
        None once the body's buffer is allocated."""
        while True:
            try:
                byte = self._sock_recv(1)
            except BlockingIOError:
                return mqtt.MQTTErrorCode.MQTT_ERR_AGAIN
            except OSError:
                return mqtt.MQTTErrorCode.MQTT_ERR_CONN_LOST
            if not byte:
                return mqtt.MQTTErrorCode.MQTT_ERR_CONN_LOST
            if pkt["command"] == 0:
                pkt["command"] = byte[0]
                continue
            pkt["remaining_count"].append(byte[0])
            if len(pkt["remaining_count"]) > 4:
                return mqtt.MQTTErrorCode.MQTT_ERR_PROTOCOL
            pkt["remaining_length"] += (byte[0] & 127) * pkt["remaining_mult"]
            pkt["remaining_mult"] *= 128
            if byte[0] & 128 == 0:
                break
        pkt["have_remaining"] = 1
        # the broker bounds packet sizes (message_size_limit); paho grows to the same size
        pkt["packet"] = bytearray(pkt["remaining_length"])
        pkt["pos"] = 0
        return None

    def _recv_into(self, sock: socket.socket, view: memoryview) -> int:
        try:
            return sock.recv_into(view)
        except ssl.SSLWantReadError as err:
            raise BlockingIOError from err
        except ssl.SSLWantWriteError as err:
            self._call_socket_register_write()
            raise BlockingIOError from err

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        if not self._direct or self._protocol != mqtt.MQTTv5 or qos == 2:
            return super()._handle_publish()
        message = _decode_publish(header, self._in_packet["packet"])
        message.timestamp = time.monotonic()
        self._handle_on_message(message)
        if qos == 0 or self._manual_ack:
            return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        rc: mqtt.MQTTErrorCode = self._send_puback(message.mid)
        return rc


def _decode_publish(header: int, packet: bytearray) -> mqtt.MQTTMessage:
    """An MQTT 5 PUBLISH of QoS 0/1 decoded with one copy of the payload."""
    with memoryview(packet) as view:
        end = len(view)
        if end < 2:
            raise MalformedPacket("PUBLISH shorter than its topic length")
        (topic_len,) = struct.unpack_from("!H", view, 0)
        pos = 2 + topic_len
        topic = bytes(view[2:pos])
        mid = 0
        if header & 0x06:
            if pos + 2 > end:
                raise MalformedPacket("PUBLISH shorter than its packet id")
            (mid,) = struct.unpack_from("!H", view, pos)
            pos += 2
        props_len, vbi_len = _variable_int(view, pos)
        props_end = pos + vbi_len + props_len
        if props_end > end:
            raise MalformedPacket("PUBLISH properties run past the packet")
        properties = Properties(PacketTypes.PUBLISH)
        try:
            properties.unpack(bytes(view[pos:props_end]))  # properties are small
        except _PROPERTY_ERRORS as exc:  # what paho's own decoder turns into MalformedPacket
            raise MalformedPacket(f"PUBLISH properties: {exc}") from exc
        message = mqtt.MQTTMessage(mid=mid, topic=topic)
        message.payload = bytes(view[props_end:])
    message.dup = bool(header & 0x08)
    message.qos = (header & 0x06) >> 1
    message.retain = bool(header & 0x01)
    message.properties = properties
    return message


def _variable_int(view: memoryview, pos: int) -> tuple[int, int]:
    """An MQTT variable byte integer at ``pos``: (value, bytes used)."""
    value, mult = 0, 1
    for used in range(1, 5):
        if pos + used > len(view):
            raise MalformedPacket("variable byte integer runs past the packet")
        byte = view[pos + used - 1]
        value += (byte & 127) * mult
        if byte & 128 == 0:
            return value, used
        mult *= 128
    raise MalformedPacket("variable byte integer longer than 4 bytes")


def make_client(cfg: BrokerConfig, *, manual_ack: bool = False) -> mqtt.Client:
    """``manual_ack``: incoming QoS 1 messages are acknowledged by the caller (``ack``) once
    handled, not by paho when the callback returns."""
    cfg.check_tls()
    client = _DirectReadClient(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=cfg.client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if cfg.ca_file is not None:
        try:
            client.tls_set(
                ca_certs=str(cfg.ca_file),
                certfile=str(cfg.cert_file) if cfg.cert_file else None,
                keyfile=str(cfg.key_file) if cfg.key_file else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ReceiverConfigError(cfg.ca_file, f"cannot load TLS material: {exc}") from exc
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    return client


#: Control messages (hello, query, status) that may be in flight beyond the windows granted.
RECEIVE_MARGIN = 256


def receive_maximum(window_messages_total: int) -> int:
    """The MQTT 5 Receive Maximum the receiver asks for: what the windows granted allow in
    flight (``broker_queue_messages``) plus control messages. Without it Mosquitto keeps 20 in
    flight and queues the rest, and a message arriving as a slot frees goes out ahead of those
    queued (measured: inits and fins overtaking their chunks across topics, costing resends)."""
    return max(20, min(65535, window_messages_total + RECEIVE_MARGIN))


def connect_properties(session_expiry_s: int, receive_max: int | None = None) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_s
    if receive_max is not None:
        props.ReceiveMaximum = receive_max
    return props
