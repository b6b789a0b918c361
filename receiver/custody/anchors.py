"""Anchored chain heads: the newest seq each device says (signed) its chain has reached.

When a device docks it announces its chain head in its ``hello`` message (optional member
``chain_head``: a :class:`evidence.casefile.ChainHead` signed with the device key). The receiver
keeps the highest one per device, logs it to the custody log and includes all of them as
``anchors`` in every signed tree head and in exports, so deleting a device's last records (a
whole last session, or only its ``session-close``) is detectable by the audit and by anyone
holding a tree head.

Failure posture: a head that is malformed, from another device, signed with another key or not
newer than the one kept is refused with a reason (returned, logged at warning by the caller);
nothing is stored for it.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from evidence.casefile import ChainHead
from evidence.errors import EvidenceError
from evidence.keys import key_id
from receiver.custody import now_utc, record_event
from receiver.store.custody import CustodySQL


def accept_chain_head(
    conn: sqlite3.Connection, device: str, public_key: Ed25519PublicKey, value: Any
) -> str | None:
    """Keep ``value`` as ``device``'s chain head; returns None when kept, else why not."""
    try:
        head = ChainHead.from_dict(value)
    except EvidenceError as exc:
        return f"malformed chain head: {exc}"
    if head.device != device:
        return f"chain head names device {head.device!r}, sent by {device!r}"
    if head.key != key_id(public_key) or not head.signature_valid(public_key):
        return "chain head signature does not verify with the device key"
    sql = CustodySQL(conn)
    current = sql.chain_head(device)
    if current is not None and current["seq"] >= head.seq:
        return (
            None
            if current["hash"] == head.hash or current["seq"] > head.seq
            else (f"chain head seq {head.seq} conflicts with the one kept")
        )
    text = head.canonical().decode("utf-8")
    conn.execute("BEGIN IMMEDIATE")
    try:
        sql.put_chain_head(device, head.seq, head.hash, head.utc, text, now_utc())
        record_event(
            conn,
            "chain-head",
            actor=f"device:{device}",
            device=device,
            seq=head.seq,
            record=head.hash,
            device_utc=head.utc,
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return None
