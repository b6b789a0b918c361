"""The paho-mqtt client both ends of the dock link build on (agent uplink and receiver).

paho sends ``packet[pos:]`` after every partial socket write: with ``bytes`` that is a copy of
the rest of a 256 KiB chunk each time; with a memoryview it is a view. :class:`ViewWriteClient`
queues every outgoing packet as a memoryview.

Failure posture: no behaviour of its own beyond paho's; errors are paho's return codes.
"""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode


class ViewWriteClient(mqtt.Client):
    """paho's client sending each queued packet through a memoryview (see the module)."""

    def _packet_queue(
        self,
        command: int,
        packet: bytes | bytearray,
        mid: int,
        qos: int,
        info: mqtt.MQTTMessageInfo | None = None,
    ) -> MQTTErrorCode:
        view: Any = memoryview(packet)
        rc: MQTTErrorCode = super()._packet_queue(command, view, mid, qos, info)
        return rc
