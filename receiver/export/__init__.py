"""Case-file export (Art. 21, 22): a self-contained directory or zip a court can verify offline.

The layout and what ``bodycam-verify`` checks are in :mod:`evidence.casefile`. Steps: copy the
case's signed records and media (stored form, plus the plaintext of encrypted segments for
playback), the device keys, fresh receipts signed by the receiver; log the ``export`` custody
event and sign a tree head; add the case's custody entries with inclusion proofs; verify the
result with the same verifier a reviewer runs (``report.json``); write ``index.html``; sign the
manifest (every file's SHA-256) with the receiver key.

Approval is checked by :mod:`receiver.operations` (the only caller). Failure posture: everything
is built in a hidden sibling directory and renamed into place (or zipped) only when complete; on
any error the partial output is removed; an existing destination is never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import logging
import os
import shutil
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from evidence import layout
from evidence.canonical import canonical_bytes
from evidence.casefile import (
    CASE_FILE_TYPE,
    ENTRIES_FILE,
    MANIFEST,
    RECEIVER_KEY_FILE,
    TREE_HEAD_FILE,
    sign_manifest,
    verify_case_file,
)
from evidence.keys import KeyRing, public_pem
from evidence.receipt import STATUS_STORED, Receipt
from receiver.cases import CaseBook
from receiver.config import ReceiverConfig
from receiver.custody import CustodyLog, now_utc, record_event
from receiver.errors import ConflictError, InvalidInputError, StoreError
from receiver.identity import load_receipt_key
from receiver.registry import DeviceRegistry
from receiver.store import EvidenceStore
from receiver.store import custody as evq

log = logging.getLogger(__name__)


def export_case(
    config: ReceiverConfig,
    store: EvidenceStore,
    conn: sqlite3.Connection,
    case: str,
    dest: Path,
    *,
    actor: str,
    approval: int,
    as_zip: bool = False,
) -> dict[str, Any]:
    dest = Path(dest)
    if dest.exists() or dest.is_symlink():
        raise ConflictError(f"{dest} already exists; name a new directory")
    work = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    key = load_receipt_key(config.receipt_key_path)
    try:
        work.mkdir(parents=True)
        result = _build(config, store, conn, case, work, key, actor=actor, approval=approval)
        if as_zip:
            _zip(work, dest)
        else:
            os.replace(work, dest)
    except OSError as exc:
        raise StoreError(dest, f"cannot write the case file: {exc.strerror or exc}") from exc
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    log.info("case %s exported to %s by %s", case, dest, actor)
    return {**result, "path": str(dest)}


def _put(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _copy(src: Path, root: Path, rel: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, path)


def _ranges(seqs: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


def _build(
    config: ReceiverConfig,
    store: EvidenceStore,
    conn: sqlite3.Connection,
    number: str,
    root: Path,
    key: Ed25519PrivateKey,
    *,
    actor: str,
    approval: int,
) -> dict[str, Any]:
    case = CaseBook(conn).require(number)
    rows = evq.case_records(conn, number)
    if not rows:
        raise InvalidInputError(
            "case", f"{number} has no recordings filed to it: nothing to export"
        )
    for row in rows:
        for sha in (row["media_sha256"], row["plain_sha256"]):
            if sha is not None and not store.object_path(sha).is_file():
                raise StoreError(
                    store.object_path(sha),
                    f"stored media of {row['device']} seq {row['seq']} is missing: the export "
                    "is refused (run `bodycam-receiver audit`)",
                )
    registry = DeviceRegistry(conn)
    per_device: dict[str, list[sqlite3.Row]] = {}
    for row in rows:
        per_device.setdefault(row["device"], []).append(row)
    _put(root, RECEIVER_KEY_FILE, public_pem(key.public_key()))
    ring = KeyRing()
    for device, drows in per_device.items():
        dev = registry.get(device)
        if dev is not None:
            ring.add(dev.public_key)
            _put(root, f"devices/{device}/{layout.DEVICE_PUBLIC_KEY}", public_pem(dev.public_key))
        for row in drows:
            _copy_record(store, root, key, row)
    record_event(
        conn,
        "export",
        actor=actor,
        case=number,
        approval=approval,
        sessions=sorted({r["session"] for r in rows}),
        records=len(rows),
    )
    custody = CustodyLog(conn, store.data_dir, key)
    head = custody.issue_head()
    _put(root, TREE_HEAD_FILE, head.canonical())
    sessions = [s["session"] for s in evq.case_sessions(conn, number)]
    entries = []
    tree = custody.tree(head.tree_size)
    for entry in evq.CustodySQL(conn).for_case(number, sessions):
        proof = custody.inclusion(entry["idx"], head.tree_size, tree)
        entries.append({"index": proof.index, "entry": proof.entry, "proof": proof.proof})
    _put(root, ENTRIES_FILE, json.dumps(entries, ensure_ascii=False, indent=1).encode())
    devices = {
        device: {
            "ranges": _ranges([r["seq"] for r in drows]),
            "head": {"seq": drows[-1]["seq"], "hash": drows[-1]["hash"]},
            "key_id": _key_id(registry, device),
            "anchor": _anchor(conn, device),
        }
        for device, drows in per_device.items()
    }
    case_info = {**case.to_dict(), "concluded_date": evq.case_concluded(conn, number)}
    unsigned = {
        "v": 1,
        "type": CASE_FILE_TYPE,
        "case": case_info,
        "created_utc": now_utc(),
        "exported_by": actor,
        "approval": approval,
        "devices": devices,
        "tree_head": head.to_dict(),
        "certificates": "device certificates are held by provisioning, not the receiver; "
        "device public keys are in devices/<id>/device.pub",
    }
    # a first manifest lets the verifier run over the draft for the report
    files = _file_list(root)
    _put(root, MANIFEST, canonical_bytes(sign_manifest({**unsigned, "files": files}, key)))
    check = verify_case_file(root, receiver_keys=KeyRing([key.public_key()]), device_keys=ring)
    report = {**check.to_dict(), "root": "."}
    _put(root, "report.json", json.dumps(report, ensure_ascii=False, indent=1).encode())
    _put(root, "index.html", _index_html(case_info, rows, devices, head.to_dict(), report))
    files = _file_list(root)
    _put(root, MANIFEST, canonical_bytes(sign_manifest({**unsigned, "files": files}, key)))
    return {
        "case": number,
        "files": len(files) + 1,
        "sessions": len(sessions),
        "records": len(rows),
        "tree_size": head.tree_size,
        "tree_root": head.root,
        "verified_at_export": check.ok,
    }


def _copy_record(
    store: EvidenceStore, root: Path, key: Ed25519PrivateKey, row: sqlite3.Row
) -> None:
    device, seq = row["device"], row["seq"]
    src = layout.record_path(store.evidence_root, device, seq)
    _copy(src, root, f"devices/{device}/records/{layout.record_name(seq)}")
    if row["media_file"]:
        _copy(
            store.object_path(row["media_sha256"]),
            root,
            f"devices/{device}/media/{row['media_file']}",
        )
        if row["plain_sha256"]:
            _copy(
                store.object_path(row["plain_sha256"]), root, f"play/{device}/{row['media_file']}"
            )
    receipt = Receipt.create(
        device=device,
        record=row["hash"],
        seq=seq,
        record_type=row["type"],
        status=STATUS_STORED,
        receiver_key=key,
        media_sha256=row["media_sha256"],
        media_size=row["media_size"],
    )
    _put(root, f"receipts/{device}/{layout.record_name(seq)}", receipt.canonical())


def _key_id(registry: DeviceRegistry, device: str) -> str | None:
    dev = registry.get(device)
    return dev.key_id if dev else None


def _anchor(conn: sqlite3.Connection, device: str) -> Any:
    row = evq.CustodySQL(conn).chain_head(device)
    return json.loads(row["head"]) if row else None


def _file_list(root: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel != MANIFEST:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
            out[rel] = {"sha256": h.hexdigest(), "size": path.stat().st_size}
    return out


def _zip(work: Path, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.partial-{os.getpid()}.zip")
    try:
        with zipfile.ZipFile(tmp, "x", compression=zipfile.ZIP_STORED) as z:
            for path in sorted(work.rglob("*")):
                if path.is_file():
                    z.write(path, path.relative_to(work).as_posix())
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _index_html(
    case: dict[str, Any],
    rows: list[sqlite3.Row],
    devices: dict[str, Any],
    head: dict[str, Any],
    report: dict[str, Any],
) -> bytes:
    e = html.escape
    parts = [
        "<!doctype html><html lang='zh'><head><meta charset='utf-8'>",
        f"<title>Case file {e(case['number'])}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:.2em .5em;text-align:left}</style></head><body>",
        f"<h1>Case {e(case['number'])}: {e(case['title'])}</h1>",
        f"<p>Type {e(case['enforcement_type'])} (AV {e(case['av_level'])}), sensitivity "
        f"{e(case['sensitivity'])}, parties: {e(', '.join(case['parties']) or '-')}, "
        f"concluded: {e(case.get('concluded_date') or 'not yet')}</p>",
        "<p>Verification at export: "
        + ("<b>verified</b>" if report["ok"] else "<b>PROBLEMS</b>")
        + f". Check it yourself: <code>bodycam-verify THIS-DIRECTORY --receiver-key "
        f"RECEIVER.pub</code>. Custody tree head: size {head['tree_size']}, root "
        f"<code>{e(head['root'])}</code>.</p>",
    ]
    for p in report["problems"]:
        parts.append(f"<p>PROBLEM {e(p['kind'])}: {e(p['where'])}: {e(p['detail'])}</p>")
    sessions: dict[tuple[str, str], list[sqlite3.Row]] = {}
    for r in rows:
        sessions.setdefault((r["device"], r["session"]), []).append(r)
    for (device, session), srows in sessions.items():
        parts.append(
            f"<h2>Session {e(session)}</h2><p>Device {e(device)}, {e(srows[0]['utc'])} to "
            f"{e(srows[-1]['utc'])}, records seq {srows[0]['seq']}..{srows[-1]['seq']}</p>"
            "<table><tr><th>seq</th><th>type</th><th>time</th><th>what</th></tr>"
        )
        for r in srows:
            parts.append(
                f"<tr><td>{r['seq']}</td><td>{e(r['type'])}</td><td>{e(r['utc'])}</td>"
                f"<td>{_describe(device, r)}</td></tr>"
            )
        parts.append("</table>")
    parts.append("<h2>Devices</h2><ul>")
    for device, d in devices.items():
        parts.append(
            f"<li>{e(device)}: key {e(str(d['key_id']))}, ranges {e(str(d['ranges']))}, "
            f"head seq {d['head']['seq']}</li>"
        )
    parts.append("</ul></body></html>")
    return "\n".join(parts).encode("utf-8")


def _describe(device: str, r: sqlite3.Row) -> str:
    e = html.escape
    try:
        body = json.loads(r["body"])
    except ValueError:
        body = {}
    if r["type"] == "segment" and r["media_file"]:
        name = e(r["media_file"])
        where = (
            f"play/{e(device)}/{name}" if r["plain_sha256"] else f"devices/{e(device)}/media/{name}"
        )
        return f"<a href='{where}'>{name}</a> ({r['plain_size'] or r['media_size']} bytes)"
    if r["type"] == "marker":
        return f"marker {e(str(body.get('kind')))} at {e(str(body.get('utc')))}"
    if r["type"] == "gap":
        return (
            f"gap {e(str(body.get('start_utc')))} .. {e(str(body.get('end_utc')))}: cause "
            f"{e(str(body.get('cause')))}"
            + (f", explained: {e(str(body.get('reason')))}" if body.get("reason") else "")
        )
    return e(r["type"])
