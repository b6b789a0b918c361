"""The bounded queue between the receiver's network thread and its worker (I/O-free)."""

from __future__ import annotations

import hashlib

import pytest

from evidence import transfer as wire
from receiver.ingest.limits import Limits
from receiver.ingest.worker import FairQueue

DEVICE = "BC-0001"
CHUNK = 256 * 1024


def _window_of_chunks(window_bytes: int) -> list[tuple[str, bytes]]:
    record = hashlib.sha256(b"segment").hexdigest()
    topic = wire.up_topic(DEVICE, wire.UP_CHUNK)
    data = b"\x5a" * CHUNK
    return [
        (topic, wire.pack_chunk(record, i, i * CHUNK, data)) for i in range(window_bytes // CHUNK)
    ]


@pytest.mark.parametrize("window_mib", [4, 32, 64])
def test_a_device_keeping_to_its_window_is_never_dropped_while_the_worker_is_busy(
    window_mib: int,
) -> None:
    # the queue's own setting left at (or below) the window: a whole window still fits
    window = window_mib * 1024**2
    limits = Limits(
        device_window_bytes=window, broker_queue_bytes=3 * window, device_queue_bytes=window
    )
    queue = FairQueue(limits, clock=lambda: 0.0)
    messages = _window_of_chunks(window)
    accepted = [queue.offer(topic, payload) for topic, payload in messages]  # nothing taken
    assert all(accepted)
    assert queue.dropped == 0
    # and what goes beyond the window (a device ignoring it) is still bounded
    extra = 0
    while queue.offer(*messages[0]):
        extra += 1
    assert extra * CHUNK < 0.01 * window + CHUNK
    assert queue.dropped == 1


def test_every_slot_holder_keeping_to_its_window_fits_in_the_total() -> None:
    # 8 slots of 32 MiB (a 256 MiB broker budget) against a 64 MiB total queue setting
    window = 32 * 1024**2
    limits = Limits(
        device_window_bytes=window,
        broker_queue_bytes=8 * window,
        broker_queue_messages=8000,
        queue_bytes=64 * 1024**2,
    )
    queue = FairQueue(limits, clock=lambda: 0.0)
    record = hashlib.sha256(b"segment").hexdigest()
    frame = wire.pack_chunk(record, 0, 0, b"\x5a" * CHUNK)
    for n in range(8):
        topic = wire.up_topic(f"BC-{n:04d}", wire.UP_CHUNK)
        assert all(queue.offer(topic, frame) for _ in range(window // CHUNK))
    assert queue.dropped == 0
