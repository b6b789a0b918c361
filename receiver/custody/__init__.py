"""The custody log (Art. 5 "traceable", Art. 23): every act on evidence, as an append-only
Merkle log with the structure of RFC 9162 (Certificate Transparency v2).

An event is a JSON object ``{"v": 1, "kind": ..., "utc": ..., ...fields}``; its RFC 8785
canonical bytes are the Merkle leaf. :func:`record_event` is the one entry point every part of
the receiver calls (ingest, filing, access, export); :class:`CustodyLog` builds signed tree heads
(the receiver's receipt key), inclusion proofs and consistency proofs; the proofs are verified by
:mod:`evidence.merkle`, which is what ``bodycam-verify`` uses offline.

Every signed tree head is also written to ``<data_dir>/custody/heads/`` so that a log truncated
in the database is detected against heads the database does not hold (and against heads given
out in exports). Failure posture: an unknown event kind or a field that is not JSON-able raises
:class:`CustodyError` (a programming error, loudly); SQLite errors propagate so the change the
event describes rolls back with it. Tree-head files are written atomically.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from evidence.canonical import canonical_bytes
from evidence.errors import EvidenceError
from evidence.fsutil import atomic_write
from evidence.merkle import MerkleError, MerkleTree, TreeHead, leaf_hash, verify_consistency
from evidence.records import format_utc
from receiver.errors import ReceiverError
from receiver.store.custody import CustodySQL

log = logging.getLogger(__name__)

#: every kind of custody event (Art. 23: what happens to evidence after the dock)
KINDS = frozenset(
    {
        "ingest",  # a record stored (with its receipt)
        "receipt",  # a receipt sent for a record decided earlier
        "quarantine",
        "filing",
        "move",
        "assignment",
        "unassignment",
        "view",
        "playback",
        "export",
        "approval-request",
        "approval-grant",
        "approval-refusal",
        "access-refused",
        "deletion-refused",
        "device-registration",
        "device-revocation",
        "user-change",
        "gap-annotation",
        # compliance facts a clerk or supervisor adds (receiver.store.compliance)
        "case-profile",
        "case-concluded",
        "case-file-formed",
        "inspection-times",
        "assignment-schedule",
        "chain-head",
        "case-created",
        "audit",
    }
)
#: how old the newest tree head may get before :func:`issue_head_if_due` signs a new one
HEAD_INTERVAL = timedelta(hours=1)


class CustodyError(ReceiverError):
    """An event that cannot be logged, or a proof that cannot be given; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def now_utc() -> str:
    return format_utc(datetime.now(UTC))


def record_event(conn: sqlite3.Connection, kind: str, **fields: Any) -> int:
    """Append one event to the custody log; returns its index (the Merkle leaf number).

    Conventional fields (all optional): ``actor`` (user name, or "device:<id>" / "receiver"),
    ``case``, ``session``, ``device``, ``record`` (record hash), ``seq``, ``detail`` (free text)
    and anything else JSON-able without floats. Inside a transaction the caller holds, the event
    commits with it; otherwise it commits on its own.
    """
    if kind not in KINDS:
        raise CustodyError(f"unknown custody event kind {kind!r}")
    event = {"v": 1, "kind": kind, "utc": fields.pop("utc", None) or now_utc()}
    event.update({k: v for k, v in fields.items() if v is not None})
    try:
        data = canonical_bytes(event)
    except EvidenceError as exc:
        raise CustodyError(f"custody event {kind} cannot be encoded: {exc}") from exc
    return CustodySQL(conn).append(data.decode("utf-8"), leaf_hash(data).hex(), event)


@dataclass(frozen=True)
class Inclusion:
    index: int
    tree_size: int
    entry: dict[str, Any]
    leaf_hash: str
    proof: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "tree_size": self.tree_size,
            "entry": self.entry,
            "leaf_hash": self.leaf_hash,
            "proof": self.proof,
        }


class CustodyLog:
    """Tree heads and proofs over the log in ``conn``; heads signed with ``key``."""

    def __init__(self, conn: sqlite3.Connection, data_dir: Path, key: Ed25519PrivateKey) -> None:
        self.conn = conn
        self.sql = CustodySQL(conn)
        self.key = key
        self.heads_dir = Path(data_dir) / "custody" / "heads"

    def leaves(self, size: int | None = None) -> list[bytes]:
        return [bytes.fromhex(h) for h in self.sql.leaf_hashes(size)]

    def tree(self, size: int | None = None) -> MerkleTree:
        """The Merkle tree of the first ``size`` entries (all by default), built once."""
        return MerkleTree(self.leaves(size))

    def issue_head(self) -> TreeHead:
        """Sign the current tree head (with the devices' newest chain heads as anchors),
        keep it in the database and as a file, log nothing (a head is about the log)."""
        tree = self.tree()
        anchors = [json.loads(r["head"]) for r in self.sql.chain_heads()]
        head = TreeHead.create(self.key, tree.size, tree.root(), now_utc(), anchors)
        text = head.canonical()
        self.sql.add_head(head.tree_size, head.root, head.utc, text.decode("utf-8"))
        stamp = head.utc.replace(":", "").replace("-", "")
        self.heads_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.heads_dir / f"{head.tree_size:012d}-{stamp}.json", text, mode=0o444)
        log.info("custody tree head %d %s signed", head.tree_size, head.root[:16])
        return head

    def current_head(self) -> TreeHead:
        """The newest signed head if it covers the whole log, else a freshly signed one."""
        row = self.sql.latest_head()
        if row is not None and row["tree_size"] == self.sql.size():
            return TreeHead.from_dict(json.loads(row["head"]))
        return self.issue_head()

    def inclusion(
        self, index: int, tree_size: int | None = None, tree: MerkleTree | None = None
    ) -> Inclusion:
        """Entry ``index`` with its audit path in the tree of ``tree_size`` entries (pass the
        ``tree`` when proving many entries: it is built once)."""
        tree = tree if tree is not None else self.tree(tree_size)
        size = tree.size if tree_size is None else tree_size
        if not 0 <= index < size:
            raise CustodyError(f"no custody entry {index} in a log of {size}")
        row = self.sql.entry(index)
        assert row is not None
        proof = tree.inclusion(index, size)
        return Inclusion(
            index, size, json.loads(row["entry"]), row["leaf_hash"], [p.hex() for p in proof]
        )

    def consistency(self, old_size: int) -> tuple[TreeHead, list[str]]:
        """The current head and the proof that the tree of ``old_size`` is its prefix."""
        head = self.current_head()
        try:
            proof = self.tree(head.tree_size).consistency(old_size)
        except MerkleError as exc:
            raise CustodyError(exc.reason) from exc
        return head, [p.hex() for p in proof]

    def check_older_head(self, old: TreeHead) -> tuple[bool, str]:
        """Is ``old`` (a head given out earlier) signed by this receiver and a prefix of the
        current log? Returns (ok, explanation)."""
        if not old.verify(self.key.public_key()):
            return False, "the older tree head's signature does not verify with this receiver key"
        head = self.current_head()
        if old.tree_size > head.tree_size:
            return False, (
                f"the older head has {old.tree_size} entries, the log now {head.tree_size}: "
                "the log was truncated"
            )
        head, proof = self.consistency(old.tree_size)
        ok = verify_consistency(
            old.tree_size,
            head.tree_size,
            old.root_bytes(),
            head.root_bytes(),
            [bytes.fromhex(p) for p in proof],
        )
        if not ok:
            return False, (
                f"tree of {old.tree_size} with root {old.root[:16]}… is NOT a prefix of the "
                f"current tree of {head.tree_size}: the log was rewritten or the head is forged"
            )
        return True, f"tree of {old.tree_size} is a prefix of the current tree of {head.tree_size}"


def issue_head_if_due(log_: CustodyLog, interval: timedelta = HEAD_INTERVAL) -> TreeHead | None:
    """For the service's periodic tick: sign a new head when the log grew and the newest head
    is older than ``interval``."""
    row = log_.sql.latest_head()
    size = log_.sql.size()
    if row is not None and row["tree_size"] == size:
        return None
    if row is not None:
        from evidence.records import parse_utc

        if datetime.now(UTC) - parse_utc(row["utc"]) < interval:
            return None
    return log_.issue_head()
