"""MQTT wire schema between the device uplink and the dock receiver (both sides import this).

Topics (``<dev>`` is the device id; a device may only publish under its own ``up/`` and
``status`` topics, which the broker ACL enforces):

==================================  =========  =====================================================
topic                               direction  payload
==================================  =========  =====================================================
``bodycam/v1/<dev>/up/hello``       dev → rcv  JSON :data:`HELLO`: device clock, pending counts
``bodycam/v1/<dev>/up/init``        dev → rcv  JSON :data:`INIT`: one signed record (any type)
``bodycam/v1/<dev>/up/chunk``       dev → rcv  binary chunk frame (:func:`pack_chunk`)
``bodycam/v1/<dev>/up/fin``         dev → rcv  JSON :data:`FIN`: end of a segment's chunks
``bodycam/v1/<dev>/up/query``       dev → rcv  JSON :data:`QUERY`: "what do you have of these?"
``bodycam/v1/<dev>/status``         dev → all  retained JSON :data:`STATUS` (last will: offline)
``bodycam/v1/<dev>/down/receipt``   rcv → dev  JSON signed receipt (:mod:`evidence.receipt`)
``bodycam/v1/<dev>/down/need``      rcv → dev  JSON :data:`NEED`: chunks or records to resend
``bodycam/v1/<dev>/down/clock``     rcv → dev  JSON :data:`CLOCK`: receiver clock (reply to hello)
``bodycam/v1/<dev>/down/assignment`` rcv → dev retained JSON assignment (case, officers, ...)
``bodycam/v1/receiver/status``      rcv → all  retained JSON :data:`STATUS` of the receiver
==================================  =========  =====================================================

Every record travels as ``init``; a ``segment`` record is followed by its media file as
offset-addressed chunks (each carrying its SHA-256, checked against the signed record) and a
``fin``. Records of one session go in ``seq`` order; the receiver accepts any order and tracks
chain continuity itself. The device frees space only on a signed receipt, never on a PUBACK.

Failure posture: every ``parse_*``/``unpack_*`` function raises :class:`WireError` (carrying the
topic and a reason) for anything malformed; none of them ever returns partial data.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = 1
PREFIX = "bodycam/v1"
RECEIVER_STATUS_TOPIC = f"{PREFIX}/receiver/status"

#: Device ids as they may appear in topics (no MQTT wildcards or separators).
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# Message kinds per direction (the last topic level).
UP_HELLO = "hello"
UP_INIT = "init"
UP_CHUNK = "chunk"
UP_FIN = "fin"
UP_QUERY = "query"
UP_KINDS = frozenset({UP_HELLO, UP_INIT, UP_CHUNK, UP_FIN, UP_QUERY})
DOWN_RECEIPT = "receipt"
DOWN_NEED = "need"
DOWN_CLOCK = "clock"
DOWN_ASSIGNMENT = "assignment"
DOWN_KINDS = frozenset({DOWN_RECEIPT, DOWN_NEED, DOWN_CLOCK, DOWN_ASSIGNMENT})

# Limits. Chunks stay far below Mosquitto's default message_size_limit (256 MiB) and
# paho's memory use; JSON control messages are small.
DEFAULT_CHUNK_SIZE_BYTES = 256 * 1024
MAX_CHUNK_SIZE_BYTES = 1024 * 1024
MIN_CHUNK_SIZE_BYTES = 1024
# an init carries one record (evidence.records.MAX_RECORD_BYTES = 1 MiB) plus its envelope
MAX_JSON_MESSAGE_BYTES = 1024 * 1024 + 64 * 1024
MAX_QUERY_RECORDS = 1024
MAX_NEED_CHUNKS = 4096

#: Fields of the JSON messages (name → required type); documentation and validation in one.
HELLO: dict[str, type | tuple[type, ...]] = {
    "v": int,
    "device_utc": str,  # device wall clock when sent (RFC 3339, Z)
    "pending_segments": int,  # sealed segments without a receipt
    "oldest_pending_utc": (str, type(None)),
    "head_seq": (int, type(None)),
}
INIT: dict[str, type | tuple[type, ...]] = {"v": int, "record": dict}
FIN: dict[str, type | tuple[type, ...]] = {
    "v": int,
    "record": str,  # record hash (hex)
    "size": int,
    "sha256": str,
    "chunks": int,
}
QUERY: dict[str, type | tuple[type, ...]] = {"v": int, "records": list}
NEED: dict[str, type | tuple[type, ...]] = {
    "v": int,
    "record": str,
    # "all": resend init + every chunk + fin; "chunks": resend the listed chunk indices + fin
    "what": str,
    "chunks": list,
    "reason": str,
}
CLOCK: dict[str, type | tuple[type, ...]] = {
    "v": int,
    "receiver_utc": str,
    "echo_device_utc": str,  # the hello's device_utc, so the device can halve the round trip
    "receiver": str,  # receiver key id
}
STATUS: dict[str, type | tuple[type, ...]] = {"v": int, "state": str, "instance": str}

NEED_ALL = "all"
NEED_CHUNKS = "chunks"
#: "not now: resend this record after a back-off" (a refusal whose cause can be fixed at the
#: receiver, e.g. a device not registered yet or a full disk); the device keeps its copy.
NEED_LATER = "later"
#: The retained assignment message of a device the receiver unassigned.
ASSIGNMENT_CLEARED: dict[str, object] = {"cleared": True}

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class WireError(ValueError):
    """A message that does not follow this schema."""

    def __init__(self, reason: str, topic: str = "") -> None:
        super().__init__(f"{topic}: {reason}" if topic else reason)
        self.reason = reason
        self.topic = topic


# -- topics ------------------------------------------------------------------------------
def up_topic(device: str, kind: str) -> str:
    return f"{PREFIX}/{device}/up/{kind}"


def down_topic(device: str, kind: str) -> str:
    return f"{PREFIX}/{device}/down/{kind}"


def status_topic(device: str) -> str:
    return f"{PREFIX}/{device}/status"


UP_SUBSCRIPTION = f"{PREFIX}/+/up/#"


def down_subscription(device: str) -> str:
    return f"{PREFIX}/{device}/down/#"


@dataclass(frozen=True)
class Topic:
    device: str
    direction: str  # "up" | "down" | "status"
    kind: str


def parse_topic(topic: str) -> Topic:
    """Split a ``bodycam/v1/...`` topic; unknown shapes raise :class:`WireError`."""
    parts = topic.split("/")
    if len(parts) < 3 or f"{parts[0]}/{parts[1]}" != PREFIX:
        raise WireError("not a bodycam/v1 topic", topic)
    device = parts[2]
    if not DEVICE_ID_RE.match(device):
        raise WireError("bad device id in topic", topic)
    if len(parts) == 4 and parts[3] == "status":
        return Topic(device, "status", "status")
    if len(parts) == 5 and parts[3] == "up" and parts[4] in UP_KINDS:
        return Topic(device, "up", parts[4])
    if len(parts) == 5 and parts[3] == "down" and parts[4] in DOWN_KINDS:
        return Topic(device, "down", parts[4])
    raise WireError("unknown topic", topic)


# -- JSON messages -----------------------------------------------------------------------
def encode_json(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode(
        "utf-8"
    )


def parse_json(
    payload: bytes, schema: dict[str, type | tuple[type, ...]], topic: str = ""
) -> dict[str, Any]:
    """Decode a JSON control message and check it against ``schema`` (extra keys allowed)."""
    if len(payload) > MAX_JSON_MESSAGE_BYTES:
        raise WireError(f"message of {len(payload)} bytes exceeds the limit", topic)
    try:
        value = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"not JSON: {exc}", topic) from exc
    if not isinstance(value, dict):
        raise WireError("JSON message is not an object", topic)
    for name, typ in schema.items():
        if name not in value:
            raise WireError(f"missing field {name!r}", topic)
        field_value = value[name]
        # bool is an int in Python; a flag where a number belongs is still malformed
        if isinstance(field_value, bool) and typ is int:
            raise WireError(f"field {name!r} has the wrong type", topic)
        if not isinstance(field_value, typ):
            raise WireError(f"field {name!r} has the wrong type", topic)
    if value.get("v") != PROTOCOL_VERSION:
        raise WireError(f"unsupported protocol version {value.get('v')!r}", topic)
    for name in ("record", "sha256"):
        if isinstance(value.get(name), str) and not _HEX64.match(value[name]):
            raise WireError(f"field {name!r} is not a SHA-256 hex digest", topic)
    return value


# -- binary chunk frame ------------------------------------------------------------------
CHUNK_MAGIC = b"BCC1"
# magic, record hash (32 raw bytes), chunk index, offset, chunk sha256 (32 raw bytes)
_CHUNK_HEADER = struct.Struct(">4s32sIQ32s")
CHUNK_HEADER_BYTES = _CHUNK_HEADER.size


@dataclass(frozen=True)
class Chunk:
    record: str  # hex hash of the segment record this chunk belongs to
    index: int
    offset: int
    sha256: str  # hex
    data: bytes


def pack_chunk(record: str, index: int, offset: int, data: bytes) -> bytes:
    digest = hashlib.sha256(data).digest()
    return _CHUNK_HEADER.pack(CHUNK_MAGIC, bytes.fromhex(record), index, offset, digest) + data


def unpack_chunk(payload: bytes, topic: str = "") -> Chunk:
    """Decode a chunk frame and check the data against the hash in its own header."""
    if len(payload) < CHUNK_HEADER_BYTES:
        raise WireError("chunk frame shorter than its header", topic)
    if len(payload) > CHUNK_HEADER_BYTES + MAX_CHUNK_SIZE_BYTES:
        raise WireError(f"chunk frame of {len(payload)} bytes exceeds the limit", topic)
    magic, record, index, offset, digest = _CHUNK_HEADER.unpack_from(payload)
    if magic != CHUNK_MAGIC:
        raise WireError("not a chunk frame (bad magic)", topic)
    data = payload[CHUNK_HEADER_BYTES:]
    if hashlib.sha256(data).digest() != digest:
        raise WireError(f"chunk {index} does not match the hash in its header", topic)
    return Chunk(record.hex(), index, offset, digest.hex(), data)
