"""Per-device limits of the ingest, token buckets and rate-limited logging.

One device must never slow or fill the dock for the others (issue 9): every budget here is per
device, and exceeding it costs only that device (its messages are dropped or refused with a
reason it sees); no other device's transfer is ever evicted. Defaults are documented in
``receiver/README.md`` and set in the ``[limits]`` table of the receiver config.

Failure posture: pure bookkeeping, no I/O; time comes from the injected clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]


@dataclass
class Limits:
    #: largest signed segment accepted (bytes)
    max_segment_bytes: int = 2 * 1024**3
    #: transfers open at once over all devices; a new init beyond it is answered "later"
    max_transfers: int = 256
    #: transfers one device may have open at once
    device_transfers: int = 64
    #: temporary bytes (open and completed-but-waiting transfers) one device may hold
    device_temp_bytes: int = 1024**3
    #: idle transfers are dropped after this long (their temp files too)
    transfer_timeout_s: float = 900.0
    #: messages per second one device may send (chunks included), sustained, and its burst
    device_message_rate: float = 2000.0
    device_message_burst: int = 4000
    #: bytes per second one device may send, sustained (the burst is 4 s worth)
    device_byte_rate: float = 256 * 1024**2
    #: record hashes one query may ask about (the rest is not answered)
    query_hashes: int = 1024
    #: record hashes per second one device may ask about, sustained (burst: 4 s worth)
    device_query_hash_rate: float = 4096.0
    #: quarantine kept per device: items and bytes; beyond, refused and counted in one summary
    device_quarantine_count: int = 200
    device_quarantine_bytes: int = 1024**3
    #: records of one device held until their predecessor is stored (in memory / temp files)
    device_waiting_records: int = 256
    #: bytes queued between the network thread and the worker, per device and in total
    device_queue_bytes: int = 32 * 1024**2
    queue_bytes: int = 256 * 1024**2
    #: log lines per device and cause per minute (then one summary of what was suppressed)
    log_lines_per_minute: int = 10
    #: what the broker may queue for the receiver (keep well below Mosquitto's max_queued_bytes
    #: / max_queued_messages, 512 MiB / 10,000 as provisioned): cut into fixed windows granted
    #: to as many devices at once as fit (receiver.ingest.grants); the others wait their turn.
    #: Broker and receiver memory follow this, not the number of devices docked.
    broker_queue_bytes: int = 96 * 1024**2
    broker_queue_messages: int = 3000
    #: the window one device gets while it holds a slot
    device_window_bytes: int = 32 * 1024**2
    #: kept for old configs (no longer used: a window is granted whole or not at all)
    min_window_bytes: int = 1024**2
    #: a slot holder that sent nothing for this long gives its slot to the next in line
    grant_idle_s: float = 10.0


@dataclass
class TokenBucket:
    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float = 0.0

    def take(self, amount: float, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if amount > self.tokens:
            return False
        self.tokens -= amount
        return True


@dataclass
class _LogWindow:
    start: float
    lines: int = 0
    suppressed: int = 0


@dataclass
class LogLimiter:
    """At most ``per_minute`` lines per (device, cause) per minute; the rest is counted and
    reported in one line when the next window opens."""

    logger: logging.Logger
    per_minute: int
    clock: Clock = time.monotonic
    windows: dict[tuple[str, str], _LogWindow] = field(default_factory=dict)

    def log(
        self, level: int, device: str, cause: str, msg: str, *args: object, exc_info: bool = False
    ) -> None:
        now = self.clock()
        key = (device, cause)
        win = self.windows.get(key)
        if win is None or now - win.start >= 60.0:
            if win is not None and win.suppressed:
                self.logger.warning(
                    "%d more '%s' message(s) of device %s were not logged",
                    win.suppressed,
                    cause,
                    device,
                )
            if len(self.windows) > 10_000:  # bounded: forget old windows
                self.windows.clear()
            win = self.windows[key] = _LogWindow(now)
        if win.lines >= self.per_minute:
            win.suppressed += 1
            return
        win.lines += 1
        self.logger.log(level, msg, *args, exc_info=exc_info)
