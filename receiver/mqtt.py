"""paho-mqtt client construction for the receiver (MQTT 5, persistent session, TLS from config).

Failure posture: missing mutual-TLS settings (without an explicit ``allow_insecure``) or a TLS
file that cannot be loaded raise :class:`ConfigError` before connecting;
connection loss is handled by paho's reconnect loop and logged, never fatal.
"""

from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from receiver.config import BrokerConfig
from receiver.errors import ConfigError


def make_client(cfg: BrokerConfig, *, manual_ack: bool = False) -> mqtt.Client:
    """``manual_ack``: incoming QoS 1 messages are acknowledged by the caller (``ack``) once
    handled, not by paho when the callback returns."""
    cfg.check_tls()
    client = mqtt.Client(
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
            raise ConfigError(cfg.ca_file, f"cannot load TLS material: {exc}") from exc
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    return client


def connect_properties(session_expiry_s: int) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_s
    return props
