"""The receiver's protocol handler on its own (no broker): edge cases of init/chunk/fin/query."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evidence import transfer as wire
from evidence.chain import DeviceChain
from evidence.keys import generate_signing_key
from evidence.media import digest_file
from evidence.receipt import Receipt
from evidence.records import Record, RecordType
from evidence.testing import SteppingClock, marker_body, segment_body
from receiver.identity import load_receipt_key
from receiver.ingest import Ingest, Outgoing
from receiver.store import EvidenceStore, connect

DEV = "BC-1"


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.key = generate_signing_key()
        self.root = tmp / "spool"
        self.chain = DeviceChain(self.root, DEV, self.key)
        self.clock = SteppingClock()
        store = EvidenceStore(tmp / "rdata")
        self.now = 0.0  # the ingest's clock, stepped by tests
        self.ingest = Ingest(
            store,
            connect(store.db_path),
            load_receipt_key(tmp / "rdata" / "r.key"),
            clock=lambda: self.now,
        )
        self.ingest.registry.add_key(DEV, self.key.public_key())

    def segment(self, name: str, data: bytes, *, file: str | None = None) -> Record:
        path = self.root / "devices" / DEV / "media" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        body = segment_body(file or name, digest_file(path, 1024).to_dict())
        return self.chain.append(RecordType.SEGMENT, "s1", body, self.clock.tick(1))

    def send(self, kind: str, payload: bytes) -> list[Outgoing]:
        return self.ingest.handle(wire.up_topic(DEV, kind), payload)

    def init(self, record: Record) -> list[Outgoing]:
        return self.send("init", wire.encode_json({"v": 1, "record": record.to_dict()}))

    def chunk(self, record: Record, index: int, data: bytes) -> list[Outgoing]:
        return self.send("chunk", wire.pack_chunk(record.hash(), index, index * 1024, data))

    def fin(self, record: Record) -> list[Outgoing]:
        m = record.body["media"]
        msg = {
            "v": 1,
            "record": record.hash(),
            "size": m["size"],
            "sha256": m["sha256"],
            "chunks": len(m["chunks"]),
        }
        return self.send("fin", wire.encode_json(msg))

    def upload(self, record: Record, data: bytes) -> list[Outgoing]:
        out = self.init(record)
        for i in range(0, len(data), 1024):
            out += self.chunk(record, i // 1024, data[i : i + 1024])
        return out + self.fin(record)


def _kinds(out: list[Outgoing]) -> list[str]:
    return [o.topic.rsplit("/", 1)[1] for o in out]


def _receipt(out: list[Outgoing]) -> Receipt:
    (r,) = [Receipt.parse(o.payload) for o in out if o.topic.endswith("/receipt")]
    return r


def test_out_of_order_and_missing_chunks_are_requested_then_completed(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    data = bytes(range(256)) * 20  # 5120 bytes: 5 chunks
    rec = rig.segment("a.ts", data)
    rig.init(rec)
    for i in (4, 2, 0):
        rig.chunk(rec, i, data[i * 1024 : (i + 1) * 1024])
    # a fin ahead of chunks asks for nothing (MQTT orders per topic only: they may be on their
    # way, and asking would have them sent twice) ...
    assert rig.fin(rec) == []
    # ... the device's query (after its receipt time-out) names the gaps; an unknown record
    # needs everything
    out = rig.send("query", wire.encode_json({"v": 1, "records": [rec.hash(), "0" * 64]}))
    assert [json.loads(o.payload)["what"] for o in out] == ["chunks", "all"]
    assert json.loads(out[0].payload)["chunks"] == [1, 3]
    assert rig.chunk(rec, 3, data[3 * 1024 : 4 * 1024]) == []
    # the last chunk completes the transfer whose fin came first
    assert _receipt(rig.chunk(rec, 1, data[1024:2048])).status == "stored"
    assert _receipt(rig.fin(rec)).status == "stored"  # a late fin: the same receipt
    stored = rig.ingest.store.object_path(rec.body["media"]["sha256"]).read_bytes()
    assert stored == data


def test_unsafe_name_name_clash_and_fork_are_quarantined(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    first = rig.segment("a.ts", b"x" * 2000)
    assert _receipt(rig.upload(first, b"x" * 2000)).status == "stored"
    clash = rig.segment("b.ts", b"y" * 2000, file="a.ts")  # other bytes under the same name
    r = _receipt(rig.upload(clash, b"y" * 2000))
    assert r.status == "quarantined"
    assert "already holds other media" in (r.reason or "")
    unsafe = rig.segment("c.ts", b"z" * 10, file="../../etc/passwd")
    r = _receipt(rig.init(unsafe))
    assert r.status == "quarantined"
    assert "not a safe name" in (r.reason or "")
    # a second, differently signed record for an already stored seq (a fork of the chain)
    fork = Record.create(
        type=RecordType.MARKER,
        device=DEV,
        session="s1",
        seq=first.seq,
        prev=first.prev,
        time=rig.clock.tick(1),
        public_key=rig.key.public_key(),
        body=marker_body("x"),
    ).sign(rig.key)
    r = _receipt(rig.init(fork))
    assert r.status == "quarantined"
    assert "already stored" in (r.reason or "")
    # the same bad evidence again: answered, but kept once
    rig.init(fork)
    rows = rig.ingest.conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
    assert rows == 3


def test_idle_transfers_expire_and_leave_no_temp_files(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rec = rig.segment("a.ts", b"q" * 3000)
    rig.init(rec)
    rig.chunk(rec, 0, b"q" * 1024)
    assert list(rig.ingest.store.tmp.iterdir())
    rig.now += rig.ingest.limits.transfer_timeout_s + 1
    assert rig.ingest.expire() == 1
    assert not list(rig.ingest.store.tmp.iterdir())
    assert _kinds(rig.fin(rec)) == ["need"]  # unknown now: the device resends everything


def test_a_device_learns_nothing_about_another_devices_records(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rec = rig.segment("a.ts", b"x" * 1500)
    assert _receipt(rig.upload(rec, b"x" * 1500)).status == "stored"
    other = generate_signing_key()
    rig.ingest.registry.add_key("BC-2", other.public_key())
    query = wire.encode_json({"v": 1, "records": [rec.hash()]})
    (out,) = rig.ingest.handle(wire.up_topic("BC-2", "query"), query)
    assert out.topic == wire.down_topic("BC-2", "need")
    assert json.loads(out.payload)["what"] == "all"


def _need(out: list[Outgoing]) -> dict[str, object]:
    """The one distinct need answer of an upload (init and fin both say "later")."""
    needs = {o.payload for o in out if o.topic.endswith("/need")}
    assert len(needs) == 1, needs
    return dict(json.loads(needs.pop()))


def test_full_disk_while_storing_asks_the_device_to_resend_later_not_quarantine(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    data = b"d" * 3000
    rec = rig.segment("a.ts", data)
    sha = rec.body["media"]["sha256"]
    # the object's directory cannot be created (stands in for a full or failing disk)
    blocker = rig.ingest.store.objects / sha[:2]
    blocker.write_bytes(b"")

    out = rig.upload(rec, data)

    assert not [o for o in out if o.topic.endswith("/receipt")], "no verdict on the evidence"
    need = _need(out)
    assert need["what"] == "later"
    assert "cannot store it now" in str(need["reason"])
    conn = rig.ingest.conn
    assert conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM waiting").fetchone()[0] == 1
    assert not list(rig.ingest.store.tmp.iterdir()), "nothing half-kept"

    blocker.unlink()  # the administrator frees the disk; the device resends
    assert _receipt(rig.upload(rec, data)).status == "stored"
    assert conn.execute("SELECT COUNT(*) FROM waiting").fetchone()[0] == 0
    assert rig.ingest.store.object_path(sha).read_bytes() == data


def test_decrypt_path_io_failure_and_missing_key_are_retried_not_quarantined(
    tmp_path: Path, mpegts_clips: list[Path]
) -> None:
    from evidence.encryption import encrypt_for_spool, generate_encryption_key

    rig = Rig(tmp_path)
    media_key = generate_encryption_key()
    media = rig.root / "devices" / DEV / "media" / "e.ts"
    media.parent.mkdir(parents=True, exist_ok=True)
    enc = encrypt_for_spool(mpegts_clips[0], media, media_key.public_key())
    body: dict[str, Any] = segment_body(
        "e.ts",
        enc.media.to_dict(),
        stored=digest_file(media, 1024).to_dict(),
        encryption=enc.encryption,
    )
    rec = rig.chain.append(RecordType.SEGMENT, "s1", body, rig.clock.tick(1))
    data = media.read_bytes()
    stored = body["stored"]

    def upload() -> list[Outgoing]:
        out = rig.init(rec)
        for i in range(0, len(data), 1024):
            out += rig.chunk(rec, i // 1024, data[i : i + 1024])
        fin = {
            "v": 1,
            "record": rec.hash(),
            "size": stored["size"],
            "sha256": stored["sha256"],
            "chunks": len(stored["chunks"]),
        }
        return out + rig.send("fin", wire.encode_json(fin))

    # no decryption key configured yet: waiting, not quarantined
    out = upload()
    assert _need(out)["what"] == "later"
    assert "no encryption_key" in str(_need(out)["reason"])
    # key configured, but the plaintext cannot be written (local I/O failure)
    rig.ingest.encryption_key = media_key
    rig.ingest.recipient = enc.encryption["recipient"]
    rig.ingest.store.plain_temp_path(rec.hash()).mkdir()
    out = upload()
    assert _need(out)["what"] == "later"
    assert "cannot store it now" in str(_need(out)["reason"])
    assert rig.ingest.conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0] == 0

    rig.ingest.store.plain_temp_path(rec.hash()).rmdir()
    receipt = _receipt(upload())
    assert receipt.status == "stored"
    plain = rig.ingest.store.object_path(enc.media.sha256).read_bytes()
    assert plain == mpegts_clips[0].read_bytes()


def _hello(rig: Rig, device: str, **extra: Any) -> list[Outgoing]:
    msg = {"v": 1, "device_utc": "2026-01-01T00:00:00.000000Z", "pending_segments": 1, **extra}
    return rig.ingest.handle(wire.up_topic(device, wire.UP_HELLO), wire.encode_json(msg))


def _window_of(out: list[Outgoing], device: str) -> int:
    (clock,) = [o for o in out if o.topic == wire.down_topic(device, wire.DOWN_CLOCK)]
    return int(json.loads(clock.payload)["window_bytes"])


def test_a_revoked_or_unknown_device_is_answered_so_its_records_are_not_stranded(
    tmp_path: Path,
) -> None:
    """Issue 14: a device that vanished without its goodbye is told "wait" once idle (queued in
    its persistent session). Revoked since, its next hello must still be answered with a window,
    or its records would wait on the device for ever instead of reaching quarantine; an unknown
    device (enrolled, not yet in the receiver's registry) is answered too. Neither's figures are
    taken in."""
    rig = Rig(tmp_path)
    assert _window_of(_hello(rig, DEV), DEV) > 0
    rig.now += rig.ingest.limits.grant_idle_s + 1  # no goodbye came: the slot is taken back
    (told,) = rig.ingest.tick()
    assert told.topic == wire.down_topic(DEV, wire.DOWN_WINDOW)
    assert wire.Grant.parse(told.payload, told.topic).wait
    rig.ingest.registry.revoke(DEV, "stolen")
    seen_before = rig.ingest.registry.get(DEV)

    assert _window_of(_hello(rig, DEV, pending_segments=7), DEV) > 0
    assert rig.ingest.registry.get(DEV) == seen_before  # its hello figures are not stored
    assert _window_of(_hello(rig, "BC-unknown"), "BC-unknown") > 0
    assert rig.ingest.registry.get("BC-unknown") is None
