"""The insider audit (Art. 23; issue "hostile insider"): the database is a cache of signed facts.

It re-derives what the database says from what cannot be edited unnoticed, and names every
difference:

- **records**: every signed record file in the evidence tree (signature checked with the
  device's registered key) against its ``records`` row: missing row, changed hash, body, time,
  session, type, ``prev``, ``media_sha256`` or ``plain_sha256``; rows with no signed record;
- **objects**: every object a row names exists and hashes to its name (deleted ciphertext,
  deleted plaintext, replaced object);
- **custody log**: each entry's leaf hash is its entry's hash and indexes are contiguous; every
  signed tree head (files under ``custody/heads`` and the database) is consistent with the log
  (a truncated or rewritten log is named); the log's ``ingest`` events still have their records
  (an erased session), its ``quarantine`` events their quarantine rows and directories (wiped
  quarantine), and its ``filing``/``move`` events replayed give the ``filings`` table (a moved or
  deleted filing);
- **anchors**: a device's stored chain reaches the highest seq the device announced (signed).

A clean store audits clean. After a clean audit a new tree head is signed, so the next audit has
a fresh anchor. Failure posture: read-only apart from that head; unreadable files are findings,
never exceptions; a head file larger than 1 MiB or not JSON is a finding.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

from evidence import layout
from evidence.canonical import parse_json
from evidence.errors import EvidenceError
from evidence.merkle import MerkleError, MerkleTree, TreeHead, leaf_hash
from evidence.records import Record
from receiver.config import ReceiverConfig
from receiver.custody import CustodyLog
from receiver.identity import load_receipt_key
from receiver.registry import DeviceRegistry
from receiver.store import EvidenceStore, sha256_file
from receiver.store import custody as evq
from receiver.store.custody import CustodySQL

log = logging.getLogger(__name__)
MAX_HEAD_FILE = 1 << 20


class Findings:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []
        self.checked: dict[str, int] = {}

    def add(self, kind: str, where: str, detail: str) -> None:
        self.items.append({"kind": kind, "where": where, "detail": detail})

    def count(self, what: str, n: int = 1) -> None:
        self.checked[what] = self.checked.get(what, 0) + n


def audit(config: ReceiverConfig, store: EvidenceStore, conn: sqlite3.Connection) -> dict[str, Any]:
    f = Findings()
    key = load_receipt_key(config.receipt_key_path)
    custody = CustodyLog(conn, store.data_dir, key)
    _audit_records(store, conn, f)
    _audit_objects(store, conn, f)
    heads = _audit_log(custody, f)
    _audit_events(store, conn, f)
    _audit_anchors(conn, heads, f)
    ok = not f.items
    if ok:
        custody.issue_head()
    return {"ok": ok, "checked": f.checked, "findings": f.items}


# -- records --------------------------------------------------------------------------------
def _expected_row(record: Record) -> dict[str, Any]:
    body = record.body
    media = stored = plain = None
    if record.type == "segment" and isinstance(body.get("media"), dict):
        media = body["media"].get("sha256")
        enc = body.get("encryption") is not None and isinstance(body.get("stored"), dict)
        stored = body["stored"].get("sha256") if enc else media
        plain = media if enc else None
    return {
        "hash": record.hash(),
        "session": record.session,
        "type": str(record.type),
        "prev": record.prev,
        "utc": record.time.utc,
        "media_sha256": stored,
        "plain_sha256": plain,
    }


def _audit_records(store: EvidenceStore, conn: sqlite3.Connection, f: Findings) -> None:
    registry = DeviceRegistry(conn)
    devices = set(layout.iter_devices(store.evidence_root))
    devices |= {r["device"] for r in conn.execute("SELECT DISTINCT device FROM records")}
    for device in sorted(devices):
        rows = {r["seq"]: r for r in evq.device_records(conn, device)}
        dev = registry.get(device)
        seen: set[int] = set()
        for path in layout.iter_record_files(store.evidence_root, device):
            f.count("record files")
            where = f"device {device} {path.name}"
            try:
                record = Record.load(path)
            except (EvidenceError, OSError, RecursionError) as exc:
                f.add("record-file-unreadable", where, str(exc))
                continue
            if dev is None or not record.signature_valid(dev.public_key):
                f.add("record-file-forged", where, "signature does not verify with the device key")
                continue
            seen.add(record.seq)
            row = rows.get(record.seq)
            where = f"device {device} seq {record.seq} ({record.type})"
            if row is None:
                f.add("record-row-deleted", where, "signed record stored, its database row is gone")
                continue
            _compare_row(record, row, where, f)
        for seq, row in sorted(rows.items()):
            if seq not in seen:
                f.add(
                    "record-file-missing",
                    f"device {device} seq {seq} ({row['type']})",
                    "a database row without the signed record it claims to index",
                )


def _compare_row(record: Record, row: sqlite3.Row, where: str, f: Findings) -> None:
    want = _expected_row(record)
    for column, kind in (
        ("hash", "record-hash-altered"),
        ("session", "record-session-altered"),
        ("type", "record-type-altered"),
        ("prev", "record-prev-altered"),
        ("utc", "record-time-altered"),
        ("media_sha256", "media-hash-altered"),
        ("plain_sha256", "plaintext-redirected"),
    ):
        if row[column] != want[column]:
            f.add(kind, where, f"database {column} {row[column]!r}, signed record {want[column]!r}")
    try:
        body = json.loads(row["body"])
    except ValueError:
        body = None
    if body != record.body:
        changed = sorted(
            k
            for k in set(record.body) | set(body or {})
            if not isinstance(body, dict) or body.get(k) != record.body.get(k)
        )
        f.add("record-body-altered", where, f"database body differs in {', '.join(changed)}")


# -- objects --------------------------------------------------------------------------------
def _audit_objects(store: EvidenceStore, conn: sqlite3.Connection, f: Findings) -> None:
    checked: dict[str, bool] = {}
    for row in conn.execute(
        "SELECT device, seq, media_sha256, plain_sha256 FROM records "
        "WHERE media_sha256 IS NOT NULL ORDER BY device, seq"
    ):
        for column, what in (("media_sha256", "stored media"), ("plain_sha256", "plaintext")):
            sha = row[column]
            if sha is None or sha in checked:
                continue
            where = f"device {row['device']} seq {row['seq']} {what} object {sha[:16]}"
            f.count("objects")
            try:
                path = store.object_path(sha)
            except ValueError:
                checked[sha] = False
                f.add("media-hash-altered", where, f"{sha!r} is not a SHA-256")
                continue
            if not path.is_file():
                checked[sha] = False
                f.add("object-deleted", where, f"{path.relative_to(store.data_dir)} is missing")
                continue
            actual, _ = sha256_file(path)
            checked[sha] = actual == sha
            if actual != sha:
                f.add("object-replaced", where, f"its bytes now hash to {actual}")


# -- custody log ------------------------------------------------------------------------------
def _audit_log(custody: CustodyLog, f: Findings) -> list[TreeHead]:
    """Check the log against itself and its signed heads; returns the heads that verify."""
    good: list[TreeHead] = []
    leaves: list[bytes] = []
    for i, row in enumerate(custody.sql.entries()):
        f.count("custody entries")
        if row["idx"] != i:
            f.add("custody-entry-missing", f"custody entry {i}", f"next entry is {row['idx']}")
        computed = leaf_hash(row["entry"].encode("utf-8"))
        if computed.hex() != row["leaf_hash"]:
            f.add("custody-entry-altered", f"custody entry {row['idx']}", "entry text changed")
        leaves.append(computed)
    public = custody.key.public_key()
    tree = MerkleTree(leaves)
    for source, head in _heads(custody, f):
        f.count("tree heads")
        if not head.verify(public):
            f.add("tree-head-forged", source, "signature does not verify with the receiver key")
            continue
        good.append(head)
        if head.tree_size > len(leaves):
            f.add(
                "custody-log-truncated",
                source,
                f"signed head covers {head.tree_size} entries, the log holds {len(leaves)}",
            )
        elif tree.root(head.tree_size).hex() != head.root:
            f.add(
                "custody-log-rewritten",
                source,
                f"the first {head.tree_size} entries no longer hash to the signed root",
            )
    return good


def _heads(custody: CustodyLog, f: Findings) -> list[tuple[str, TreeHead]]:
    out: list[tuple[str, TreeHead]] = []
    files = sorted(custody.heads_dir.glob("*.json")) if custody.heads_dir.is_dir() else []
    for path in files:
        source = f"tree head file {path.name}"
        try:
            if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_HEAD_FILE:
                raise MerkleError("not a regular file of at most 1 MiB")
            out.append((source, TreeHead.from_dict(parse_json(path.read_bytes()))))
        except (EvidenceError, OSError, RecursionError) as exc:
            f.add("tree-head-unreadable", source, str(exc))
    for row in custody.sql.heads():
        try:
            out.append(
                (
                    f"tree head {row['tree_size']} in the database",
                    TreeHead.from_dict(json.loads(row["head"])),
                )
            )
        except (EvidenceError, ValueError, RecursionError) as exc:
            f.add("tree-head-unreadable", f"database head {row['tree_size']}", str(exc))
    return out


def _audit_events(store: EvidenceStore, conn: sqlite3.Connection, f: Findings) -> None:
    stored = {
        (r["device"], r["seq"]): r["hash"]
        for r in conn.execute("SELECT device, seq, hash FROM records")
    }
    quarantined = {
        (r["record_hash"], r["reason"])
        for r in conn.execute("SELECT record_hash, reason FROM quarantine")
    }
    expected_filing: dict[tuple[str, str], tuple[str, int]] = {}
    registered: dict[str, tuple[str, int]] = {}
    for row in CustodySQL(conn).entries():
        try:
            event = json.loads(row["entry"])
        except ValueError:
            continue  # named by _audit_log
        kind, idx = event.get("kind"), row["idx"]
        if kind == "ingest":
            f.count("ingest events")
            key = (event.get("device"), event.get("seq"))
            if stored.get(key) != event.get("record"):
                f.add(
                    "record-erased",
                    f"device {key[0]} seq {key[1]}",
                    f"custody entry {idx} logged its storage; the database "
                    + ("holds another record" if key in stored else "no longer has it"),
                )
            path = layout.record_path(store.evidence_root, str(key[0]), int(key[1] or 0))
            if not path.is_file():
                f.add(
                    "record-erased",
                    f"device {key[0]} seq {key[1]}",
                    f"custody entry {idx} logged its storage; the signed record file is gone",
                )
        elif kind == "quarantine":
            f.count("quarantine events")
            where = f"device {event.get('device')} seq {event.get('seq')}"
            if (event.get("record"), event.get("detail")) not in quarantined:
                f.add("quarantine-wiped", where, f"custody entry {idx}: its quarantine row is gone")
            qpath = event.get("path")
            if isinstance(qpath, str) and not (store.data_dir / qpath).is_dir():
                f.add("quarantine-wiped", where, f"custody entry {idx}: {qpath} is gone")
        elif kind == "device-registration" and isinstance(event.get("key"), str):
            registered[str(event.get("device"))] = (event["key"], idx)
        elif kind in ("filing", "move"):
            session, case = event.get("session"), event.get("case")
            if isinstance(session, str) and isinstance(case, str):
                expected_filing[(str(event.get("device")), session)] = (case, idx)
    _compare_filings(conn, expected_filing, f)
    keys = {r["id"]: r["key_id"] for r in conn.execute("SELECT id, key_id FROM devices")}
    for device, (kid, idx) in sorted(registered.items()):
        if keys.get(device) != kid:
            f.add(
                "device-key-altered",
                f"device {device}",
                f"registered with key {kid} (custody entry {idx}); the database says "
                f"{keys.get(device)}",
            )


def _compare_filings(
    conn: sqlite3.Connection, expected: dict[tuple[str, str], tuple[str, int]], f: Findings
) -> None:
    """Filings keyed by (device, session), as the custody events name them."""
    actual = {
        (r["device"], r["session"]): r["case_number"]
        for r in conn.execute("SELECT device, session, case_number FROM filings")
    }
    f.count("filings", len(actual))
    for (device, session), (case, idx) in sorted(expected.items()):
        have = actual.get((device, session))
        where = f"session {session} of {device}"
        if have is None:
            f.add("filing-deleted", where, f"custody entry {idx} filed it to case {case}; gone")
        elif have != case:
            f.add(
                "filing-moved-unlogged",
                where,
                f"filed to case {have}; the custody log (entry {idx}) says case {case}",
            )
    for device, session in sorted(set(actual) - set(expected)):
        f.add(
            "filing-unlogged",
            f"session {session} of {device}",
            f"filed to case {actual[(device, session)]} with no custody entry",
        )


def _audit_anchors(conn: sqlite3.Connection, heads: list[TreeHead], f: Findings) -> None:
    """Each device's stored chain must reach the highest seq it announced (signed), taken from
    the database and from every signed tree head (which the database cannot take back)."""
    announced: dict[str, int] = {r["device"]: r["seq"] for r in CustodySQL(conn).chain_heads()}
    for head in heads:
        for anchor in head.anchors:
            device, seq = anchor.get("device"), anchor.get("seq")
            if isinstance(device, str) and isinstance(seq, int):
                announced[device] = max(seq, announced.get(device, -1))
    for device, seq in sorted(announced.items()):
        f.count("chain anchors")
        top = conn.execute("SELECT MAX(seq) FROM records WHERE device = ?", (device,)).fetchone()[0]
        if top is None or top < seq:
            f.add(
                "chain-tail-missing",
                f"device {device}",
                f"the device announced (signed) its chain reached seq {seq}; stored up to {top} "
                "(records cut off, or not uploaded yet)",
            )


def head_files(data_dir: Path) -> list[Path]:
    d = Path(data_dir) / "custody" / "heads"
    return sorted(d.glob("*.json")) if d.is_dir() else []
