"""Between paho's network thread and the ingest: bounded, fair per-device queues.

The network thread only calls :meth:`FairQueue.offer` (a lookup, token buckets and
an append: no hashing, decryption, fsync or SQLite), so the socket keeps being drained and
the broker keepalive never stalls behind a slow or flooding device. A message is acknowledged
to the broker (PUBACK) only once the worker has handled it (or it was dropped): a receiver
killed with messages in its queue gets them again from its persistent session. The worker
thread takes messages round-robin over devices (:meth:`FairQueue.take`): one device's backlog
of thousands of messages delays another device's next message by at most one message per busy
device.

Per device: a message-rate and a byte-rate bucket, and a queue bounded in bytes; in total, a
byte bound. Neither bound is below what the windows the receiver grants can bring (a whole
window with its messages' framing per device, for every slot at once: :func:`queue_bounds`),
so the messages of devices that keep to their windows fit while the worker is busy. A message
beyond any bound is dropped (and counted, logged at most once per minute per device and cause):
every protocol message is idempotent and the device resends what the receiver reports missing,
so a dropped message costs only its sender time. Query hashes
have their own per-device rate, so a query flood cannot turn into a flood of replies.

Failure posture: never raises on input; everything here is bounded in memory.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from evidence import transfer as wire
from receiver.ingest.grants import slot_plan
from receiver.ingest.limits import Clock, Limits, LogLimiter, TokenBucket

log = logging.getLogger(__name__)

#: queue accounting of a message beyond its payload (topic, objects)
_OVERHEAD = 256
#: a query's cost in the hash bucket is estimated from its size (~67 bytes per hash)
_BYTES_PER_HASH = 67
#: queue accounting of one windowed message beyond its data: overhead, frame header, topic
_FRAMING = _OVERHEAD + wire.CHUNK_HEADER_BYTES + 128


def queue_bounds(limits: Limits) -> tuple[int, int]:
    """(bytes one device may have queued, bytes all may): ``device_queue_bytes`` and
    ``queue_bytes``, raised to hold a whole granted window with its messages' framing per
    device and per slot. Equal to the window, a full window overflowed the device's queue by
    the chunk headers, and windows above it were dropped while the worker was busy (each drop
    a receipt time-out on the device: 64 MiB windows ran at 8 MiB/s)."""
    plan = slot_plan(limits)
    device = max(limits.device_queue_bytes, plan.window_bytes + plan.window_messages * _FRAMING)
    return device, max(limits.queue_bytes, plan.slots * device)


@dataclass
class _DeviceQueue:
    messages: deque[tuple[str, bytes, object]] = field(default_factory=deque)
    bytes: int = 0
    rate: TokenBucket | None = None
    volume: TokenBucket | None = None
    hashes: TokenBucket | None = None
    dropped: int = 0


class FairQueue:
    def __init__(self, limits: Limits, clock: Clock) -> None:
        self.limits = limits
        self.clock = clock
        self.device_bytes, self.total_bytes = queue_bounds(limits)
        self.logs = LogLimiter(log, limits.log_lines_per_minute, clock)
        self._devices: OrderedDict[str, _DeviceQueue] = OrderedDict()
        self._bytes = 0
        self._cond = threading.Condition()
        self.dropped = 0
        self.accepted = 0
        self.closed = False

    def _queue(self, device: str) -> _DeviceQueue:
        q = self._devices.get(device)
        if q is None:
            lim = self.limits
            q = _DeviceQueue(
                rate=TokenBucket(lim.device_message_rate, lim.device_message_burst),
                volume=TokenBucket(lim.device_byte_rate, 4 * lim.device_byte_rate),
                hashes=TokenBucket(lim.device_query_hash_rate, 4 * lim.device_query_hash_rate),
            )
            self._devices[device] = q
        return q

    def offer(self, topic: str, payload: bytes, tag: object = None) -> bool:
        """Queue one message (network thread); False when it was dropped. ``tag`` comes back
        with it from :meth:`take` (the service acknowledges the message with it)."""
        device = _device_of(topic)
        size = len(payload) + len(topic) + _OVERHEAD
        with self._cond:
            if len(self._devices) > 100_000:  # bounded even against forged device ids
                self._forget_idle()
            q = self._queue(device)
            now = self.clock()
            cause = None
            assert q.rate is not None
            assert q.volume is not None
            assert q.hashes is not None
            if not q.rate.take(1, now):
                cause = "message rate"
            elif not q.volume.take(len(payload), now):
                cause = "byte rate"
            elif topic.endswith("/" + wire.UP_QUERY) and not q.hashes.take(
                len(payload) / _BYTES_PER_HASH, now
            ):
                cause = "query hash rate"
            elif q.bytes + size > self.device_bytes:
                cause = "device queue full"
            elif self._bytes + size > self.total_bytes:
                cause = "receiver queue full"
            if cause is not None:
                q.dropped += 1
                self.dropped += 1
                self.logs.log(
                    logging.WARNING,
                    device,
                    cause,
                    "dropped a message of device %s (%s; %d dropped so far): it is resent"
                    " when the device asks again",
                    device,
                    cause,
                    q.dropped,
                )
                return False
            q.messages.append((topic, payload, tag))
            q.bytes += size
            self._bytes += size
            self.accepted += 1
            self._cond.notify()
            return True

    def take(self, timeout_s: float) -> tuple[str, bytes, object] | None:
        """The next message, round-robin over devices (worker thread); None on timeout/close."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._bytes > 0 or self.closed, timeout_s):
                return None
            for device, q in self._devices.items():
                if q.messages:
                    topic, payload, tag = q.messages.popleft()
                    size = len(payload) + len(topic) + _OVERHEAD
                    q.bytes -= size
                    self._bytes -= size
                    self._devices.move_to_end(device)  # the next device goes first next time
                    return topic, payload, tag
            return None

    def backlog(self) -> int:
        with self._cond:
            return self._bytes

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def _forget_idle(self) -> None:
        for device in [d for d, q in self._devices.items() if not q.messages]:
            del self._devices[device]


def _device_of(topic: str) -> str:
    parts = topic.split("/", 3)
    return parts[2][:64] if len(parts) > 2 else "?"
