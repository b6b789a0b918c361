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
``bodycam/v1/<dev>/down/window``    rcv → dev  JSON :data:`WINDOW`: a new send window (flow control)
``bodycam/v1/<dev>/down/assignment`` rcv → dev retained JSON assignment (case, officers, ...)
``bodycam/v1/receiver/status``      rcv → all  retained JSON :data:`STATUS` of the receiver
==================================  =========  =====================================================

Every record travels as ``init``; a ``segment`` record is followed by its media file as
offset-addressed chunks (each carrying its SHA-256, checked against the signed record) and a
``fin``. Records of one session go in ``seq`` order; the receiver accepts any order and tracks
chain continuity itself. The device frees space only on a signed receipt, never on a PUBACK.

Flow control: the receiver grants each device a window (bytes and messages it may keep
unreceipted in flight), in the ``clock`` reply to ``hello`` (optional fields ``window_bytes`` /
``window_messages``) and, whenever it changes, in a ``window`` message (:class:`Grant`). A window
of 0 bytes means "wait": send nothing new until a grant arrives (what is in flight stays in
flight, its receipts still come). The receiver keeps the sum of the windows it has granted
within the broker's queue limits. A device with nothing left to send says so (optional
``"idle": true`` in a ``hello``): its window goes to a device waiting, and it asks again with a
plain ``hello`` when it has more. A device that does not know ``window`` ignores it (an unknown
topic) and a zero window in the clock reply, and keeps its configured window.

Typed messages: :class:`Hello`, :class:`Init`, :class:`Fin`, :class:`Query`, :class:`Need`,
:class:`ClockSync`, :class:`Grant` and :class:`Status` parse a payload once
(``X.parse(payload, topic)``) with every bound checked — sizes, integer ranges, hex digests,
RFC 3339 times that are real dates — and encode themselves (``x.encode()``); the schema
dictionaries and :func:`parse_json` stay for callers that still work with dictionaries.

Failure posture: every ``parse_*``/``unpack_*`` function and every ``X.parse`` raises
:class:`WireError` (carrying the topic and a reason) for anything malformed — including JSON
nested too deep, integers of thousands of digits and impossible dates; none of them ever returns
partial data. A chunk frame whose data does not match the hash in its own header is not
malformed: :func:`unpack_chunk` returns it with ``intact`` False and the hash of the data, for
the receiver to judge against the signed record (a device sends the signed hash, not one of the
bytes it holds now).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from evidence.canonical import parse_json as _parse_json_strict
from evidence.errors import EvidenceError, RecordFormatError
from evidence.values import DEVICE_ID_RE as DEVICE_ID_RE  # re-exported; ends in \Z
from evidence.values import (
    HEX64_RE,
    MAX_SAFE_INT,
    format_utc,
    has_control,
    is_device_id,
    is_hex64,
    is_safe_int,
    parse_utc,
)

PROTOCOL_VERSION = 1
PREFIX = "bodycam/v1"
RECEIVER_STATUS_TOPIC = f"{PREFIX}/receiver/status"


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
DOWN_WINDOW = "window"
DOWN_KINDS = frozenset({DOWN_RECEIPT, DOWN_NEED, DOWN_CLOCK, DOWN_ASSIGNMENT, DOWN_WINDOW})

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
#: optional hello field: True when the device has nothing left to send (its window may go on)
HELLO_IDLE = "idle"
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
WINDOW: dict[str, type | tuple[type, ...]] = {
    "v": int,
    "window_bytes": int,  # unreceipted bytes the device may keep in flight; 0: wait
    "window_messages": int,  # unreceipted messages likewise
}
#: largest window a receiver may grant (a bound for parsing, far above any real broker queue)
MAX_WINDOW_BYTES = 1 << 40
MAX_WINDOW_MESSAGES = 1 << 24

NEED_ALL = "all"
NEED_CHUNKS = "chunks"
#: "not now: resend this record after a back-off" (a refusal whose cause can be fixed at the
#: receiver, e.g. a device not registered yet or a full disk); the device keeps its copy.
NEED_LATER = "later"
#: The retained assignment message of a device the receiver unassigned.
ASSIGNMENT_CLEARED: dict[str, object] = {"cleared": True}

MAX_REASON_CHARS = 1024
_HEX64 = HEX64_RE  # kept for callers that still match digests themselves (ends in \Z)
MAX_LABEL_CHARS = 128


class WireError(EvidenceError, ValueError):
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
    if not is_device_id(device):
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
        value = _parse_json_strict(payload)
    except RecordFormatError as exc:  # not UTF-8/JSON, duplicate keys, too deep, huge integers
        raise WireError(f"not JSON: {exc.reason}", topic) from exc
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
        if isinstance(value.get(name), str) and not is_hex64(value[name]):
            raise WireError(f"field {name!r} is not a SHA-256 hex digest", topic)
    return value


# -- typed JSON messages -------------------------------------------------------------------
def _int(d: dict[str, Any], name: str, topic: str, *, lo: int = 0, hi: int = MAX_SAFE_INT) -> int:
    value = d[name]
    if not is_safe_int(value, lo, hi):
        raise WireError(f"field {name!r} is not an integer in {lo}..{hi}", topic)
    return int(value)


def _opt_int(d: dict[str, Any], name: str, topic: str) -> int | None:
    return None if d.get(name) is None else _int(d, name, topic)


def _time(d: dict[str, Any], name: str, topic: str) -> datetime:
    try:
        return parse_utc(d[name])
    except RecordFormatError as exc:
        raise WireError(f"field {name!r}: {exc.reason}", topic) from exc


def _label(d: dict[str, Any], name: str, topic: str, max_chars: int = MAX_LABEL_CHARS) -> str:
    value = d[name]
    if not isinstance(value, str) or len(value) > max_chars or has_control(value):
        raise WireError(f"field {name!r} is not text of at most {max_chars} characters", topic)
    return value


@dataclass(frozen=True)
class Hello:
    device_utc: datetime
    pending_segments: int
    oldest_pending_utc: datetime | None
    head_seq: int | None

    @classmethod
    def parse(cls, payload: bytes, topic: str = "") -> Hello:
        d = parse_json(payload, HELLO, topic)
        oldest = None if d["oldest_pending_utc"] is None else _time(d, "oldest_pending_utc", topic)
        return cls(
            _time(d, "device_utc", topic),
            _int(d, "pending_segments", topic),
            oldest,
            _opt_int(d, "head_seq", topic),
        )

    def encode(self) -> bytes:
        oldest = self.oldest_pending_utc
        return encode_json(
            {
                "v": PROTOCOL_VERSION,
                "device_utc": format_utc(self.device_utc),
                "pending_segments": self.pending_segments,
                "oldest_pending_utc": format_utc(oldest) if oldest is not None else None,
                "head_seq": self.head_seq,
            }
        )


@dataclass(frozen=True)
class Init:
    record: dict[str, Any]  # parse with evidence.records.Record.from_dict (signature, chain)

    @classmethod
    def parse(cls, payload: bytes, topic: str = "") -> Init:
        return cls(parse_json(payload, INIT, topic)["record"])

    def encode(self) -> bytes:
        return encode_json({"v": PROTOCOL_VERSION, "record": self.record})


@dataclass(frozen=True)
class Fin:
    record: str
    size: int
    sha256: str
    chunks: int

    @classmethod
    def parse(cls, payload: bytes, topic: str = "") -> Fin:
        d = parse_json(payload, FIN, topic)
        return cls(d["record"], _int(d, "size", topic), d["sha256"], _int(d, "chunks", topic))

    def encode(self) -> bytes:
        return encode_json(
            {
                "v": PROTOCOL_VERSION,
                "record": self.record,
                "size": self.size,
                "sha256": self.sha256,
                "chunks": self.chunks,
            }
        )


@dataclass(frozen=True)
class Query:
    records: tuple[str, ...]

    @classmethod
    def parse(cls, payload: bytes, topic: str = "") -> Query:
        d = parse_json(payload, QUERY, topic)
        hashes = d["records"]
        if len(hashes) > MAX_QUERY_RECORDS or not all(is_hex64(h) for h in hashes):
            raise WireError(
                f"'records' is not a list of at most {MAX_QUERY_RECORDS} SHA-256 hex digests",
                topic,
            )
        return cls(tuple(hashes))

    def encode(self) -> bytes:
        return encode_json({"v": PROTOCOL_VERSION, "records": list(self.records)})


@dataclass(frozen=True)
class Need:
    record: str
    what: str  # NEED_ALL, NEED_CHUNKS or NEED_LATER
    chunks: tuple[int, ...]
    reason: str

    @classmethod
    def parse(cls, payload: bytes, topic: str = "") -> Need:
        d = parse_json(payload, NEED, topic)
        if d["what"] not in (NEED_ALL, NEED_CHUNKS, NEED_LATER):
            raise WireError(f"unknown 'what' {str(d['what'])[:20]!r}", topic)
        chunks = d["chunks"]
        if len(chunks) > MAX_NEED_CHUNKS or not all(is_safe_int(c, 0) for c in chunks):
            raise WireError(f"'chunks' is not a list of at most {MAX_NEED_CHUNKS} indices", topic)
        return cls(d["record"], d["what"], tuple(chunks), _label(d, "reason", topic, 1024))

    def encode(self) -> bytes:
        return encode_json(
            {
                "v": PROTOCOL_VERSION,
                "record": self.record,
                "what": self.what,
                "chunks": list(self.chunks),
                "reason": self.reason,
            }
        )


@dataclass(frozen=True)
class ClockSync:
    receiver_utc: datetime
    echo_device_utc: str  # echoed verbatim: the device matches it to its own hello
    receiver: str
    #: the window granted with the reply (None: this receiver grants none, keep the configured)
    grant: Grant | None = None

    @classmethod
    def parse(cls, payload: bytes, topic: str = "") -> ClockSync:
        d = parse_json(payload, CLOCK, topic)
        grant = None
        if d.get("window_bytes") is not None:
            grant = Grant.from_dict(d, topic, default_messages=MAX_WINDOW_MESSAGES)
        return cls(
            _time(d, "receiver_utc", topic),
            _label(d, "echo_device_utc", topic),
            _label(d, "receiver", topic),
            grant,
        )

    def encode(self) -> bytes:
        body: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "receiver_utc": format_utc(self.receiver_utc),
            "echo_device_utc": self.echo_device_utc,
            "receiver": self.receiver,
        }
        if self.grant is not None:
            body["window_bytes"] = self.grant.window_bytes
            body["window_messages"] = self.grant.window_messages
        return encode_json(body)


@dataclass(frozen=True)
class Grant:
    """A send window: ``window_bytes`` of 0 means wait (nothing new until the next grant)."""

    window_bytes: int
    window_messages: int

    @property
    def wait(self) -> bool:
        return self.window_bytes == 0 or self.window_messages == 0

    @classmethod
    def from_dict(
        cls, d: dict[str, Any], topic: str = "", *, default_messages: int | None = None
    ) -> Grant:
        if default_messages is not None and d.get("window_messages") is None:
            d = {**d, "window_messages": default_messages}
        return cls(
            _int(d, "window_bytes", topic, hi=MAX_WINDOW_BYTES),
            _int(d, "window_messages", topic, hi=MAX_WINDOW_MESSAGES),
        )

    @classmethod
    def parse(cls, payload: bytes, topic: str = "") -> Grant:
        return cls.from_dict(parse_json(payload, WINDOW, topic), topic)

    def encode(self) -> bytes:
        return encode_json(
            {
                "v": PROTOCOL_VERSION,
                "window_bytes": self.window_bytes,
                "window_messages": self.window_messages,
            }
        )


@dataclass(frozen=True)
class Status:
    state: str
    instance: str

    @classmethod
    def parse(cls, payload: bytes, topic: str = "") -> Status:
        d = parse_json(payload, STATUS, topic)
        return cls(_label(d, "state", topic, 32), _label(d, "instance", topic))

    def encode(self) -> bytes:
        return encode_json({"v": PROTOCOL_VERSION, "state": self.state, "instance": self.instance})


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
    sha256: str  # hex SHA-256 of ``data``, computed on receipt
    claimed: str  # hex SHA-256 the frame's header gives for it
    data: memoryview  # a view into the frame (no copy of up to 256 KiB per chunk)

    @property
    def intact(self) -> bool:
        """Whether the data is what its own header says it is."""
        return self.sha256 == self.claimed


def pack_chunk(
    record: str, index: int, offset: int, data: bytes, signed_sha256: str | None = None
) -> bytes:
    """A chunk frame; ``signed_sha256`` is the chunk's hash from its signed record.

    A device passes the signed hash instead of hashing every byte again before sending (on a
    Pi that is a second SHA-256 pass over all its media): if the bytes no longer match it (a
    corrupted card), the receiver finds them not matching the signed record and quarantines
    the segment, as it would any chunk not matching its signed hash.
    """
    digest = (
        hashlib.sha256(data).digest() if signed_sha256 is None else bytes.fromhex(signed_sha256)
    )
    return _CHUNK_HEADER.pack(CHUNK_MAGIC, bytes.fromhex(record), index, offset, digest) + data


def chunk_frame(record: str, index: int, offset: int, size: int, signed_sha256: str) -> bytearray:
    """A chunk frame with its header filled and ``size`` bytes of room for the data after
    :data:`CHUNK_HEADER_BYTES`, for a sender to read the data straight into (no copy); the
    header carries the chunk's hash from its signed record (see :func:`pack_chunk`)."""
    frame = bytearray(CHUNK_HEADER_BYTES + size)
    digest = bytes.fromhex(signed_sha256)
    _CHUNK_HEADER.pack_into(frame, 0, CHUNK_MAGIC, bytes.fromhex(record), index, offset, digest)
    return frame


def unpack_chunk(payload: bytes, topic: str = "") -> Chunk:
    """Decode a chunk frame and hash its data (judging it is for the transfer it belongs to)."""
    if len(payload) < CHUNK_HEADER_BYTES:
        raise WireError("chunk frame shorter than its header", topic)
    if len(payload) > CHUNK_HEADER_BYTES + MAX_CHUNK_SIZE_BYTES:
        raise WireError(f"chunk frame of {len(payload)} bytes exceeds the limit", topic)
    magic, record, index, offset, claimed = _CHUNK_HEADER.unpack_from(payload)
    if magic != CHUNK_MAGIC:
        raise WireError("not a chunk frame (bad magic)", topic)
    data = memoryview(payload)[CHUNK_HEADER_BYTES:]
    actual = hashlib.sha256(data).hexdigest()
    return Chunk(record.hex(), index, offset, actual, claimed.hex(), data)
