"""Group commit in the ingest (receiver.ingest.core / group): completed segments are stored
together, and no receipt leaves before its files and row are committed."""

from __future__ import annotations

import json
from pathlib import Path

from evidence import transfer as wire
from evidence.receipt import Receipt
from evidence.records import Record, RecordType
from evidence.testing import marker_body, session_open_body
from receiver.ingest import Outgoing
from receiver.ingest.core import GROUP_MAX_SEGMENTS
from tests.test_receiver_ingest import Rig


def _grouping(tmp: Path) -> Rig:
    rig = Rig(tmp)
    rig.ingest.group_commit = True
    return rig


def _receipts(out: list[Outgoing]) -> list[Receipt]:
    return [Receipt.parse(o.payload) for o in out if o.topic.endswith("/receipt")]


def _rows(rig: Rig) -> int:
    return int(rig.ingest.conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])


def test_segments_are_receipted_only_once_the_group_is_committed(tmp_path: Path) -> None:
    rig = _grouping(tmp_path)
    datas = [bytes([i]) * 3000 for i in range(GROUP_MAX_SEGMENTS - 1)]
    recs = [rig.segment(f"{i}.ts", d) for i, d in enumerate(datas)]
    for rec, data in zip(recs, datas, strict=True):
        assert not _receipts(rig.upload(rec, data))
    assert _rows(rig) == 0, "nothing is committed before the flush"
    # a repeated fin or init changes nothing
    assert rig.fin(recs[1]) == []
    assert rig.init(recs[1]) == []

    receipts = _receipts(rig.ingest.flush())

    assert [r.status for r in receipts] == ["stored"] * len(recs)
    assert [r.record for r in receipts] == [rec.hash() for rec in recs]
    assert _rows(rig) == len(recs)
    store = rig.ingest.store
    for rec, data in zip(recs, datas, strict=True):
        assert store.object_path(rec.body["media"]["sha256"]).read_bytes() == data
        assert (store.evidence_root / "devices" / rec.device / "media" / rec.body["file"]).exists()
    assert not list(store.tmp.iterdir())
    assert rig.ingest.flush() == []


def test_a_full_group_is_committed_without_waiting_for_a_flush(tmp_path: Path) -> None:
    rig = _grouping(tmp_path)
    recs = [rig.segment(f"{i}.ts", bytes([i]) * 2000) for i in range(GROUP_MAX_SEGMENTS)]
    out: list[Outgoing] = []
    for i, rec in enumerate(recs):
        out += rig.upload(rec, bytes([i]) * 2000)
    assert [r.status for r in _receipts(out)] == ["stored"] * GROUP_MAX_SEGMENTS


def test_a_record_that_cannot_join_the_group_has_the_group_stored_first(tmp_path: Path) -> None:
    rig = _grouping(tmp_path)
    seg = rig.segment("a.ts", b"a" * 2000)
    marker = rig.chain.append(RecordType.SESSION_OPEN, "s2", session_open_body(), rig.clock.tick(1))
    assert not _receipts(rig.upload(seg, b"a" * 2000))
    receipts = _receipts(rig.init(marker))
    # judged against the chain as the group leaves it, never against the chain before it
    assert [(r.record, r.status) for r in receipts] == [
        (seg.hash(), "stored"),
        (marker.hash(), "stored"),
    ]
    assert rig.ingest.flush() == []


def _evidence_files(rig: Rig) -> list[str]:
    root = rig.ingest.store.evidence_root / "devices"
    return sorted(p.name for p in root.rglob("*.json"))


def test_a_name_clash_inside_one_group_quarantines_the_later_segment(tmp_path: Path) -> None:
    rig = _grouping(tmp_path)
    first = rig.segment("a.ts", b"x" * 2000)
    clash = rig.segment("b.ts", b"y" * 2000, file="a.ts")  # same name, other bytes, next seq
    after = rig.segment("c.ts", b"z" * 2000)
    out = rig.upload(first, b"x" * 2000) + rig.upload(clash, b"y" * 2000)
    out += rig.upload(after, b"z" * 2000) + rig.ingest.flush()

    receipts = {r.record: r.status for r in _receipts(out)}
    # the first-come segment keeps its name; the clash stays a link of the chain
    assert receipts == {
        first.hash(): "stored",
        clash.hash(): "quarantined",
        after.hash(): "stored",
    }
    assert _rows(rig) == 2
    assert len(_evidence_files(rig)) == _rows(rig), "no record file without its row"


def test_a_fork_arriving_while_the_original_is_grouped_is_quarantined(tmp_path: Path) -> None:
    rig = _grouping(tmp_path)
    head = rig.segment("0.ts", b"0" * 2000)
    rig.upload(head, b"0" * 2000)
    rig.ingest.flush()
    a1 = rig.segment("1.ts", b"1" * 2000)
    a2 = rig.segment("2.ts", b"2" * 2000)
    assert not _receipts(rig.upload(a1, b"1" * 2000) + rig.upload(a2, b"2" * 2000))
    fork = Record.create(  # seq 1 again, signed by the device, continuing seq 0: a fork
        type=RecordType.MARKER,
        device=a1.device,
        session="s1",
        seq=a1.seq,
        prev=a1.prev,
        time=rig.clock.tick(1),
        public_key=rig.key.public_key(),
        body=marker_body("x"),
    ).sign(rig.key)

    receipts = {r.record: r.status for r in _receipts(rig.init(fork) + rig.ingest.flush())}

    # first come, first stored: the grouped originals, and the fork kept aside
    assert receipts == {a1.hash(): "stored", a2.hash(): "stored", fork.hash(): "quarantined"}
    prevs = rig.ingest.conn.execute("SELECT seq, hash FROM records ORDER BY seq").fetchall()
    assert [tuple(r) for r in prevs] == [(0, head.hash()), (1, a1.hash()), (2, a2.hash())]


def test_a_local_failure_in_the_group_asks_for_a_resend_and_keeps_nothing_half(
    tmp_path: Path,
) -> None:
    rig = _grouping(tmp_path)
    data = b"d" * 3000
    rec = rig.segment("a.ts", data)
    sha = rec.body["media"]["sha256"]
    blocker = rig.ingest.store.objects / sha[:2]  # its directory cannot be created
    blocker.write_bytes(b"")
    rig.upload(rec, data)

    out = rig.ingest.flush()

    assert not _receipts(out)
    assert [json.loads(o.payload)["what"] for o in out] == ["later"]
    assert _rows(rig) == 0
    assert not list(rig.ingest.store.tmp.iterdir())
    blocker.unlink()
    rig.upload(rec, data)
    assert [r.status for r in _receipts(rig.ingest.flush())] == ["stored"]


def test_a_name_clash_in_the_group_is_quarantined_and_the_rest_stored(tmp_path: Path) -> None:
    rig = _grouping(tmp_path)
    first = rig.segment("a.ts", b"x" * 2000)
    assert not _receipts(rig.upload(first, b"x" * 2000))
    rig.ingest.flush()
    clash = rig.segment("b.ts", b"y" * 2000, file="a.ts")  # other bytes under the same name
    after = rig.segment("c.ts", b"z" * 2000)
    rig.upload(clash, b"y" * 2000)
    rig.upload(after, b"z" * 2000)

    receipts = {r.record: r for r in _receipts(rig.ingest.flush())}

    assert receipts[clash.hash()].status == "quarantined"
    assert "already holds other media" in (receipts[clash.hash()].reason or "")
    assert receipts[after.hash()].status == "stored"


def test_a_tampered_segment_after_a_grouped_one_stays_a_chain_link(tmp_path: Path) -> None:
    rig = _grouping(tmp_path)
    first = rig.segment("a.ts", b"a" * 2000)
    tampered = rig.segment("b.ts", b"b" * 2000)
    after = rig.segment("c.ts", b"c" * 2000)
    assert not _receipts(rig.upload(first, b"a" * 2000))
    out = rig.upload(tampered, b"b" * 1000 + b"X" * 1000)  # what the card holds now

    # the grouped predecessor is stored first, so the quarantined record links the chain
    assert [(r.record, r.status) for r in _receipts(out)] == [
        (first.hash(), "stored"),
        (tampered.hash(), "quarantined"),
    ]
    rig.upload(after, b"c" * 2000)
    assert [(r.record, r.status) for r in _receipts(rig.ingest.flush())] == [
        (after.hash(), "stored")
    ]


def test_a_device_asking_about_a_grouped_record_gets_its_receipt_at_once(tmp_path: Path) -> None:
    rig = _grouping(tmp_path)
    rec = rig.segment("a.ts", b"a" * 2000)
    assert not _receipts(rig.upload(rec, b"a" * 2000))
    out = rig.send("query", wire.encode_json({"v": 1, "records": [rec.hash()]}))
    assert {(r.record, r.status) for r in _receipts(out)} == {(rec.hash(), "stored")}
    assert _rows(rig) == 1
