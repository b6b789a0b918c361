"""Read-only views of the receiver's store for the CLI: devices, sessions, cases, quarantine,
and re-verification of the whole store against its records.

Every view returns plain JSON-able dicts; :func:`table` renders them for a terminal. Failure
posture: views never modify anything; a record file that cannot be read shows up as a
verification problem in the view, not as an exception.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from wcwidth import wcswidth, wcwidth

from evidence import layout
from evidence.errors import RecordFormatError
from evidence.keys import KeyRing
from evidence.records import Record
from evidence.tracker import ChainTracker
from evidence.verify import MediaDecryptor, verify_tree
from evidence.violations import Violation, ViolationKind
from receiver.cases import CaseBook
from receiver.errors import NotFoundError
from receiver.registry import DeviceRegistry
from receiver.store import EvidenceStore, sha256_file
from receiver.text import escape


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes: 2 per CJK character (wcwidth), 0 for combining marks."""
    width = wcswidth(text)
    # control characters have no defined width: count them as one column each
    return width if width >= 0 else sum(max(wcwidth(ch), 1) for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - display_width(text))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain aligned text table (no colours, so it reads the same in logs and terminals),
    aligned by display width so Chinese titles and names line up."""
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [
        max([len(c)] + [display_width(row[i]) for row in cells]) for i, c in enumerate(columns)
    ]
    lines = ["  ".join(_pad(c.upper(), w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(_pad(v, w) for v, w in zip(row, widths, strict=True)) for row in cells]
    if not rows:
        lines.append("(none)")
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:+.3f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    return escape(str(value))  # device text: no escape sequences, no forged lines


def devices_view(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    counts = {
        r["device"]: (r["n"], r["last_seq"])
        for r in conn.execute(
            "SELECT device, COUNT(*) AS n, MAX(seq) AS last_seq FROM records GROUP BY device"
        )
    }
    out = []
    for d in DeviceRegistry(conn).all():
        n, last_seq = counts.get(d.id, (0, None))
        out.append(
            {
                "device": d.id,
                "key_id": d.key_id,
                "revoked": d.revoked,
                "revoked_utc": d.revoked_utc,
                "revoke_reason": d.revoke_reason,
                "source": d.source,
                "last_seen": d.last_seen_utc,
                "clock_offset_s": d.clock_offset_s,
                "pending_segments": d.pending_segments,
                "oldest_pending": d.oldest_pending_utc,
                "records": n,
                "last_seq": last_seq,
            }
        )
    return out


def _session_rows(conn: sqlite3.Connection, where: str = "", args: tuple[Any, ...] = ()) -> list:
    return conn.execute(
        "SELECT session, device, MIN(seq) AS first_seq, MAX(seq) AS last_seq, "
        "MIN(utc) AS start_utc, MAX(utc) AS end_utc, "
        "SUM(type = 'segment') AS segments, SUM(type = 'marker') AS markers, "
        "SUM(type = 'gap') AS gaps, SUM(type = 'session-close') AS closed, "
        "SUM(COALESCE(media_size, 0)) AS media_bytes "
        f"FROM records {where} GROUP BY session, device ORDER BY MIN(utc)",
        args,
    ).fetchall()


def sessions_view(conn: sqlite3.Connection, *, inbox_only: bool = False) -> list[dict[str, Any]]:
    book = CaseBook(conn)
    quarantined = {
        (r[0], r[1]): r[2]
        for r in conn.execute(
            "SELECT device, session, COUNT(*) FROM quarantine WHERE session IS NOT NULL "
            "GROUP BY device, session"
        )
    }
    out = []
    for r in _session_rows(conn, "WHERE type NOT IN ('check', 'clock')"):
        filing = book.filing(r["session"], r["device"])
        if inbox_only and filing is not None:
            continue
        out.append(
            {
                "session": r["session"],
                "device": r["device"],
                "start": r["start_utc"],
                "end": r["end_utc"],
                "segments": r["segments"],
                "markers": r["markers"],
                "gaps": r["gaps"],
                "closed": bool(r["closed"]),
                "media_bytes": r["media_bytes"],
                "quarantined": quarantined.get((r["device"], r["session"]), 0),
                "case": filing[0] if filing else "UNFILED",
                "filed_by": filing[1] if filing else None,
            }
        )
    return out


def cases_view(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    counts = dict(
        conn.execute("SELECT case_number, COUNT(*) FROM filings GROUP BY case_number").fetchall()
    )
    return [{**c.to_dict(), "sessions": counts.get(c.number, 0)} for c in CaseBook(conn).all()]


def quarantine_view(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [
        {
            "id": r["id"],
            "device": r["device"],
            "seq": r["seq"],
            "type": r["record_type"],
            "session": r["session"],
            "record": r["record_hash"][:16] if r["record_hash"] else None,
            "status": "quarantined",
            "reason": r["reason"],
            "when": r["utc"],
            "path": r["path"],
        }
        for r in conn.execute("SELECT * FROM quarantine ORDER BY id")
    ]


def waiting_view(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Records refused for a cause that can be fixed (device not registered yet, no decryption
    key, local storage failure): the device keeps them and resends; stored once fixed."""
    return [
        {
            "id": None,
            "device": r["device"],
            "seq": r["seq"],
            "type": r["record_type"],
            "session": r["session"],
            "record": r["record_hash"][:16],
            "status": "waiting",
            "reason": r["reason"],
            "when": r["last_utc"],
            "first": r["first_utc"],
            "attempts": r["attempts"],
            "path": None,
        }
        for r in conn.execute("SELECT * FROM waiting ORDER BY first_utc, device, seq")
    ]


def chain_violations(
    store: EvidenceStore, conn: sqlite3.Connection, device: str
) -> list[Violation]:
    """Feed the device's stored records, in seq order, to the evidence chain tracker."""
    ring = KeyRing()
    dev = DeviceRegistry(conn).get(device)
    if dev is not None:
        ring.add(dev.public_key)
    tracker = ChainTracker(device, ring)
    out: list[Violation] = []
    for path in layout.iter_record_files(store.evidence_root, device):
        try:
            record = Record.load(path)
        except RecordFormatError as exc:
            out.append(
                Violation(ViolationKind.UNREADABLE_RECORD, device, None, path.name, str(exc))
            )
            continue
        out += tracker.feed(record)
    return out


def case_view(store: EvidenceStore, conn: sqlite3.Connection, number: str) -> dict[str, Any]:
    case = CaseBook(conn).get(number)
    if case is None:
        raise NotFoundError("case", number)
    sessions = [s for s in sessions_view(conn) if s["case"] == number]
    per_device: dict[str, list[Violation]] = {}
    for s in sessions:
        if s["device"] not in per_device:
            per_device[s["device"]] = chain_violations(store, conn, s["device"])
    quarantined = defaultdict(list)
    stored = {r[0][:16] for r in conn.execute("SELECT hash FROM records")}
    for q in quarantine_view(conn):
        # a record quarantined once and stored since (a good re-import) is no longer a problem
        if q["session"] and q["record"] not in stored:
            quarantined[(q["device"], q["session"])].append(q)
    for s in sessions:
        rows = conn.execute(
            "SELECT seq, type, body FROM records WHERE session = ? AND device = ? ORDER BY seq",
            (s["session"], s["device"]),
        ).fetchall()
        seqs = [r["seq"] for r in rows]
        lo, hi = min(seqs), max(seqs)
        problems = [
            str(v) for v in per_device[s["device"]] if v.seq is not None and lo <= v.seq <= hi + 1
        ]
        problems += [
            f"quarantined seq {q['seq']}: {q['reason']}"
            for q in quarantined[(s["device"], s["session"])]
        ]
        close = [json.loads(r["body"]) for r in rows if r["type"] == "session-close"]
        if close and close[0].get("segments") != s["segments"]:
            problems.append(
                f"session-close declares {close[0].get('segments')} segments, "
                f"{s['segments']} stored"
            )
        if not s["closed"]:
            problems.append("no session-close received (session still open or not uploaded)")
        problems += _media_problems(store, conn, s["session"], s["device"])
        s["markers_list"] = [
            {"seq": r["seq"], **{k: json.loads(r["body"]).get(k) for k in ("kind", "utc", "note")}}
            for r in rows
            if r["type"] == "marker"
        ]
        s["gaps_list"] = [
            {
                "seq": r["seq"],
                **{k: json.loads(r["body"]).get(k) for k in ("cause", "start_utc", "end_utc")},
            }
            for r in rows
            if r["type"] == "gap"
        ]
        s["problems"] = problems
        s["verification"] = "verified" if not problems else "PROBLEMS"
    verified = bool(sessions) and all(s["verification"] == "verified" for s in sessions)
    return {
        **case.to_dict(),
        "sessions": sessions,
        "verification": "verified" if verified else ("no sessions" if not sessions else "PROBLEMS"),
    }


def _media_problems(
    store: EvidenceStore, conn: sqlite3.Connection, session: str, device: str
) -> list[str]:
    """The session's rows checked against the signed record files (a forged body or time is not
    shown as verified) and its media objects against their names (a replaced or deleted object
    makes the case not verified, as ``reverify`` and ``audit`` say)."""
    problems = []
    for r in conn.execute(
        "SELECT seq, hash, utc, body, media_sha256, plain_sha256 FROM records "
        "WHERE session = ? AND device = ? ORDER BY seq",
        (session, device),
    ):
        try:
            signed = Record.load(layout.record_path(store.evidence_root, device, r["seq"]))
            same = (
                signed.hash() == r["hash"]
                and signed.time.utc == r["utc"]
                and signed.body == json.loads(r["body"])
            )
        except (RecordFormatError, OSError, ValueError):
            same = False
        if not same:
            problems.append(f"seq {r['seq']}: database row differs from the signed record")
        for sha in (r["media_sha256"], r["plain_sha256"]):
            if sha is None:
                continue
            try:
                path = store.object_path(sha)
                actual = sha256_file(path)[0] if path.is_file() else None
            except (ValueError, OSError):
                actual = None
            if actual != sha:
                what = "missing" if actual is None else "replaced (its bytes no longer match)"
                problems.append(f"seq {r['seq']}: stored media object {sha[:16]} {what}")
    return problems


def reverify(
    store: EvidenceStore, conn: sqlite3.Connection, *, decryptor: MediaDecryptor | None = None
) -> dict[str, Any]:
    """Re-check every stored record and media file: the evidence tree with the registered keys
    (and the plaintext of encrypted media when a ``decryptor`` is given), and every
    content-addressed object against its name."""
    ring = KeyRing(d.public_key for d in DeviceRegistry(conn).all())
    has_tree = any(layout.iter_devices(store.evidence_root))
    report = verify_tree(store.evidence_root, ring, decryptor=decryptor) if has_tree else None
    bad_objects = []
    objects = 0
    for sub in sorted(store.objects.iterdir()) if store.objects.is_dir() else []:
        for obj in sorted(sub.iterdir()):
            objects += 1
            sha, _ = sha256_file(obj)
            if sha != obj.name:
                bad_objects.append({"object": obj.name, "actual_sha256": sha})
    violations = [v.to_dict() for v in report.violations] if report else []
    return {
        "ok": not violations and not bad_objects,
        "records": conn.execute("SELECT COUNT(*) FROM records").fetchone()[0],
        "objects": objects,
        "violations": violations,
        "bad_objects": bad_objects,
        "quarantined": conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0],
        "notes": report.notes if report else [],
    }
