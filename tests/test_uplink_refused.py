"""A publish the broker refuses (MQTT 5 'not authorized' in the PUBACK) is an error, not success.

The broker runs the configuration ``bodycam-provision broker-config`` generates (mutual TLS,
certificate CN as username, per-device ACL patterns); device A uploads device B's spool through
the real uplink code path, with A's own certificate.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.dock import Dock
from tests.support.spool import build_spool


def test_device_a_publishing_into_device_b_topics_is_refused_and_nothing_is_freed(
    dock: Dock, mpegts_clips: list[Path], tmp_path: Path
) -> None:
    a = build_spool(tmp_path / "a", mpegts_clips[:1], device="BC-000A")
    b = build_spool(tmp_path / "b", mpegts_clips[:1], device="BC-000B")
    dock.register(a)
    dock.register(b)

    result = dock.upload(b, as_device=a.device, timeout_s=3)

    assert result.refused_publishes >= 1
    assert any("not authorized" in e.lower() for e in result.errors), result.errors
    assert result.receipted == 0
    assert result.pending == len(b.records)
    assert all(b.media_path(s).exists() for s in b.segments())
    assert not list((b.root / "state" / "receipts").glob("*.json"))
    assert dock.stored_records() == 0
    # the same broker and receiver serve both devices normally with their own certificates
    ok_b = dock.upload(b)
    assert ok_b.pending == 0
    assert ok_b.refused_publishes == 0
    assert ok_b.receipted == len(b.records)
    ok_a = dock.upload(a)
    assert ok_a.pending == 0
    assert ok_a.refused_publishes == 0
    assert dock.stored_records() == len(a.records) + len(b.records)
