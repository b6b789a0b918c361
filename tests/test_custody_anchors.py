"""Anchored chain heads: a device's signed head, kept by the receiver, exposes a cut-off tail."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from evidence import transfer as wire
from evidence.casefile import ChainHead
from evidence.keys import generate_signing_key
from receiver.identity import load_receipt_key
from receiver.ingest import Ingest
from receiver.store import EvidenceStore, connect
from tests.support.seeded import seed


def _hello(ingest: Ingest, device: str, head: object) -> None:
    msg = {
        "v": 1,
        "device_utc": "2026-11-02T10:00:00.000000Z",
        "pending_segments": 0,
        "oldest_pending_utc": None,
        "head_seq": None,
        "chain_head": head,
    }
    ingest.handle(wire.up_topic(device, wire.UP_HELLO), wire.encode_json(msg))


def test_announced_head_is_kept_signed_in_tree_heads_and_a_cut_tail_is_named(
    tmp_path: Path, mpegts_clips: list[Path]
) -> None:
    s = seed(tmp_path, mpegts_clips)
    last = s.spool.records[-1]
    store = EvidenceStore(s.data)
    ingest = Ingest(store, connect(store.db_path), load_receipt_key(s.data / "receipt.key"))
    try:
        # refused: another device's key, another device's name, garbage
        stranger = ChainHead.create(generate_signing_key(), last.device, 99, last.hash(), "x")
        _hello(ingest, last.device, stranger.to_dict())
        _hello(ingest, last.device, {"v": 1, "type": "chain-head"})
        other = ChainHead.create(s.spool.key, "BC-9999", last.seq, last.hash(), "x")
        _hello(ingest, last.device, other.to_dict())
        conn = sqlite3.connect(s.data / "receiver.db")
        assert conn.execute("SELECT COUNT(*) FROM chain_heads").fetchone()[0] == 0
        head = ChainHead.create(
            s.spool.key, last.device, last.seq, last.hash(), "2026-11-02T10:00:00.000000Z"
        )
        _hello(ingest, last.device, head.to_dict())
    finally:
        ingest.close()
    assert conn.execute("SELECT seq FROM chain_heads").fetchone()[0] == last.seq
    tree_head = s.json("custody", "head", "--fresh", user="audrey")
    assert tree_head["anchors"] == [head.to_dict()]
    code, out, _ = s.run("audit", user="audrey")
    assert code == 0, out

    # the insider erases the last session and the anchor row: the signed tree head remembers
    close = last.seq
    rec = s.data / "evidence" / "devices" / last.device / "records" / f"{close:010d}.json"
    rec.unlink()
    conn.execute("DELETE FROM records WHERE seq = ?", (close,))
    conn.execute("DELETE FROM chain_heads")
    conn.commit()
    code, out, _ = s.run("audit", "--json", user="audrey")
    findings = json.loads(out)["findings"]
    assert code == 1
    assert any(f["kind"] == "chain-tail-missing" and str(close) in f["detail"] for f in findings)


def test_periodic_tree_heads_only_when_the_log_grew_and_the_interval_passed(
    tmp_path: Path,
) -> None:
    from datetime import timedelta

    from receiver.custody import CustodyLog, issue_head_if_due, record_event

    store = EvidenceStore(tmp_path / "d")
    conn = connect(store.db_path)
    log = CustodyLog(conn, store.data_dir, load_receipt_key(tmp_path / "d" / "receipt.key"))
    record_event(conn, "audit", actor="t")
    first = issue_head_if_due(log)
    assert first is not None
    assert first.tree_size == 1
    assert issue_head_if_due(log, timedelta(0)) is None  # nothing new
    record_event(conn, "audit", actor="t")
    assert issue_head_if_due(log) is None  # grew, but the last head is recent
    second = issue_head_if_due(log, timedelta(0))
    assert second is not None
    assert second.tree_size == 2
    assert len(list((store.data_dir / "custody" / "heads").iterdir())) == 2
    assert second.verify(log.key.public_key())
