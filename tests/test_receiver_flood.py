"""Issue 9, findings 1, 2 and 8 against the real service and broker: a flooding device A cannot
stop device B, and retained messages on upload topics are never replayed.

The bound on B: its whole upload is receipted within the upload's own timeout (90 s, on a
loaded 2-core machine) while A floods. Receiver memory, disk and log growth are measured and
asserted against generous bounds (bytes, not time).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from evidence import transfer as wire
from tests.support.dock import Dock, running_dock
from tests.support.spool import build_spool

UPLOAD_BOUND_S = 90.0


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _du(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        with contextlib.suppress(FileNotFoundError):
            if p.is_file():
                total += p.stat().st_size
    return total


@contextlib.contextmanager
def _client(dock: Dock, device: str) -> Iterator[mqtt.Client]:
    ident = dock.identities[device]
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"{device}-attacker",
        protocol=mqtt.MQTTv5,
    )
    client.tls_set(ca_certs=str(ident.ca), certfile=str(ident.cert), keyfile=str(ident.key))
    client.max_queued_messages_set(0)
    client.connect(dock.broker.host, dock.broker.port)
    client.loop_start()
    try:
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


class Gauge:
    """Receiver RSS, data-dir bytes and log bytes before and after."""

    def __init__(self, dock: Dock) -> None:
        self.dock = dock
        self.before = self.read()

    def read(self) -> tuple[int, int, int]:
        rx = self.dock.rx
        assert rx.proc is not None
        return (_rss_bytes(rx.proc.pid), _du(rx.data_dir), rx.log_path.stat().st_size)

    def growth(self) -> tuple[int, int, int]:
        after = self.read()
        return (
            after[0] - self.before[0],
            after[1] - self.before[1],
            after[2] - self.before[2],
        )


def _flood(dock: Dock, device: str, messages: Iterator[tuple[str, bytes]]) -> threading.Thread:
    def run() -> None:
        with _client(dock, device) as client:
            infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
            for info in infos[-50:]:
                info.wait_for_publish(timeout=60)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_query_flood_of_one_device_does_not_stall_another(
    dock: Dock, mpegts_clips: list[Path], tmp_path: Path
) -> None:
    dock.enrol("BC-FLOOD")
    spool_b = build_spool(tmp_path / "b", mpegts_clips, device="BC-B", sessions=2)
    dock.register(spool_b)
    gauge = Gauge(dock)
    media = sum(spool_b.media_path(s).stat().st_size for s in spool_b.segments())
    topic = wire.up_topic("BC-FLOOD", wire.UP_QUERY)

    def queries() -> Iterator[tuple[str, bytes]]:
        for _ in range(1500):  # 1,500 × 1,024 unknown hashes (~100 MB of queries)
            hashes = [os.urandom(32).hex() for _ in range(wire.MAX_QUERY_RECORDS)]
            yield topic, wire.encode_json({"v": 1, "records": hashes})

    flood = _flood(dock, "BC-FLOOD", queries())
    result = dock.upload(spool_b, timeout_s=UPLOAD_BOUND_S)
    flood.join(120)

    assert result.pending == 0, result.errors
    assert result.receipted == len(spool_b.records), result.errors
    rss, disk, log = gauge.growth()
    assert rss < 200 * 1024**2, f"receiver memory grew by {rss} bytes"
    assert disk < 4 * media + 16 * 1024**2, f"receiver data grew by {disk} bytes"
    assert log < 256 * 1024, f"receiver log grew by {log} bytes"
    assert "query hash rate" in dock.rx.log_text()


def test_quarantine_flood_is_bounded_and_another_device_uploads(
    dock: Dock, mpegts_clips: list[Path], tmp_path: Path
) -> None:
    spool_a = build_spool(tmp_path / "a", mpegts_clips[:1], device="BC-A")
    dock.register(spool_a)
    spool_b = build_spool(tmp_path / "b", mpegts_clips, device="BC-B", sessions=2)
    dock.register(spool_b)
    gauge = Gauge(dock)
    media = sum(spool_b.media_path(s).stat().st_size for s in spool_b.segments())
    template = spool_a.records[0].to_dict()
    topic = wire.up_topic("BC-A", wire.UP_INIT)

    def bad_inits() -> Iterator[tuple[str, bytes]]:
        for seq in range(400):  # distinct seqs, bad signatures, ~200 KiB each (~80 MB)
            record = {**template, "seq": seq + 1}
            record["body"] = {**template["body"], "filler": "x" * (200 * 1024)}
            yield topic, wire.encode_json({"v": 1, "record": record})

    flood = _flood(dock, "BC-A", bad_inits())
    result = dock.upload(spool_b, timeout_s=UPLOAD_BOUND_S)
    flood.join(120)

    assert result.pending == 0, result.errors
    assert result.receipted == len(spool_b.records), result.errors
    _rss, disk, log = gauge.growth()
    # A keeps at most its quota (200 items of ~200 KiB = ~40 MiB), B its media (+ objects)
    assert disk < 4 * media + 48 * 1024**2, f"receiver data grew by {disk} bytes"
    assert log < 256 * 1024, f"receiver log grew by {log} bytes"
    quarantined = dock.cli_json("quarantine")
    assert 0 < len([q for q in quarantined if q["device"] == "BC-A"]) <= 200


def test_retained_messages_on_upload_topics_are_never_processed(
    mpegts_clips: list[Path], tmp_path: Path
) -> None:
    with running_dock(tmp_path / "dock", receiver=False) as dock:
        spool_a = build_spool(tmp_path / "a", mpegts_clips[:1], device="BC-A")
        dock.register(spool_a)
        spool_b = build_spool(tmp_path / "b", mpegts_clips[:1], device="BC-B")
        dock.register(spool_b)
        opening = spool_a.records[0]
        init = wire.encode_json({"v": 1, "record": opening.to_dict()})
        with _client(dock, "BC-A") as client:
            info = client.publish(wire.up_topic("BC-A", wire.UP_INIT), init, qos=1, retain=True)
            info.wait_for_publish(timeout=10)
        dock.rx.start()  # subscribes: a broker would replay the retained init now
        # B's upload is served after anything delivered at subscription time
        result = dock.upload(spool_b)
        assert result.pending == 0
        stored = {(r["device"], r["seq"]) for r in _records(dock)}
        assert ("BC-A", 0) not in stored
        assert ("BC-B", 0) in stored


def _records(dock: Dock) -> list[dict[str, object]]:
    import sqlite3

    conn = sqlite3.connect(dock.data_dir / "receiver.db", timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT device, seq FROM records")]
    finally:
        conn.close()
