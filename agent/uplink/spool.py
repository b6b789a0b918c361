"""The uplink's view of the device spool: what to send, in which order, and its state files.

The spool is an evidence tree (``devices/<id>/records``, ``devices/<id>/media``) written by the
recorder; the uplink only reads sealed records and the media they name, and writes under
``state/``: ``receipts/<record-hash>.json`` (valid *stored* receipts), ``rejected/<hash>.json``
(quarantined receipts), ``assignment.json`` (deleted when the receiver clears the assignment with an
empty retained message) and ``clock.json`` (``synced_utc``: device clock at
the sync; ``offset_s``: receiver clock minus device clock, round trip halved; ``rtt_s``).

Upload order: seq order. The receiver stores a record only when it continues the device's stored
chain (issue 9), so a marked session sent ahead of older ones would only wait there (and fill
the window): the oldest goes first.
Failure posture: an unreadable record is logged and skipped (it stays pending, so ``status``
shows it); media are deleted only for records with a valid stored receipt whose media hash
matches the signed record, and only as the retention setting allows.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.uplink.errors import SpoolReadError
from evidence import layout
from evidence.errors import EvidenceError, RecordFormatError
from evidence.fsutil import atomic_write, fsync_dir
from evidence.media import FileDigest
from evidence.receipt import Receipt
from evidence.records import Record, RecordType, parse_utc

log = logging.getLogger(__name__)

STATE = "state"
RECEIPTS = "receipts"
REJECTED = "rejected"
ASSIGNMENT_FILE = "assignment.json"
CLOCK_FILE = "clock.json"
MAX_CHAIN_HEAD_BYTES = 4096
ASSIGNMENT_FIELDS = ("case", "officers", "place", "reason", "target", "stage")


@dataclass(frozen=True)
class Item:
    """One record to upload; for a segment also the media file and its signed digest."""

    record: Record
    hash: str
    media_path: Path | None
    digest: FileDigest | None

    @property
    def is_segment(self) -> bool:
        return self.digest is not None

    @property
    def wire_bytes(self) -> int:
        return 1024 + (self.digest.size if self.digest else 0)


def find_device(root: Path) -> str:
    devices = list(layout.iter_devices(root))
    if len(devices) != 1:
        raise SpoolReadError(
            f"{root} holds {len(devices)} devices ({', '.join(devices) or 'none'}); name one"
        )
    return devices[0]


class UploadSpool:
    def __init__(self, root: Path, device: str) -> None:
        self.root = Path(root)
        self.device = device
        self.state = self.root / STATE
        self.receipts = self.state / RECEIPTS
        self.rejected = self.state / REJECTED
        self._cache: dict[str, Item | None] = {}
        self.head_seq: int | None = None
        self._by_hash: dict[str, Item] = {}

    # -- reading ---------------------------------------------------------------------------
    def _load(self, path: Path) -> Item | None:
        cached = self._cache.get(path.name)
        if cached is not None or path.name in self._cache:
            return cached
        item: Item | None = None
        try:
            record = Record.parse(path.read_bytes())
            digest = media = None
            if record.type == RecordType.SEGMENT:
                body = record.body
                digest = FileDigest.from_dict(body.get("stored") or body.get("media"))
                media = layout.media_path(self.root, self.device, str(body.get("file")))
            item = Item(record, record.hash(), media, digest)
        except (OSError, RecordFormatError, ValueError) as exc:
            log.error("spool record %s cannot be read and is not uploaded: %s", path, exc)
        self._cache[path.name] = item
        return item

    def items(self) -> list[Item]:
        out = []
        for path in layout.iter_record_files(self.root, self.device):
            if layout.seq_from_name(path) is None:
                continue  # temp files of an append in progress
            item = self._load(path)
            if item is not None:
                out.append(item)
        if out:
            self.head_seq = max(i.record.seq for i in out)
        self._by_hash = {i.hash: i for i in out}
        return out

    def find(self, record_hash: str) -> Item | None:
        """The item with this record hash, as of the last scan."""
        return self._by_hash.get(record_hash)

    def pending(self) -> list[Item]:
        """Records without a stored or quarantined receipt, in upload order."""
        todo = [
            i for i in self.items() if not self.has_receipt(i.hash) and not self.is_rejected(i.hash)
        ]
        return sorted(todo, key=lambda i: i.record.seq)

    def has_receipt(self, record_hash: str) -> bool:
        return (self.receipts / f"{record_hash}.json").exists()

    def is_rejected(self, record_hash: str) -> bool:
        return (self.rejected / f"{record_hash}.json").exists()

    def chain_head(self) -> dict[str, Any] | None:
        """The device's signed chain head (``state/chain-head.json``, written by the chain at
        each append) for the hello message, or None when there is none or it is unreadable;
        the receiver checks its signature."""
        path = self.state / layout.CHAIN_HEAD_FILE
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            data = f.read(MAX_CHAIN_HEAD_BYTES + 1)
        try:
            head = json.loads(data) if len(data) <= MAX_CHAIN_HEAD_BYTES else None
        except ValueError:
            return None
        if not isinstance(head, dict) or head.get("device") != self.device:
            return None
        return head

    def summary(self) -> dict[str, Any]:
        """Figures for the hello message (and the agent's status)."""
        pending = [i for i in self.pending() if i.is_segment]
        oldest = min((i.record.time.utc for i in pending), default=None)
        return {
            "pending_segments": len(pending),
            "oldest_pending_utc": oldest,
            "head_seq": self.head_seq,
        }

    # -- writing state ---------------------------------------------------------------------
    def save_receipt(self, receipt: Receipt) -> None:
        target = self.receipts if receipt.status == "stored" else self.rejected
        atomic_write(target / f"{receipt.record}.json", receipt.canonical())

    def write_assignment(self, assignment: dict[str, Any]) -> None:
        clean = {k: assignment.get(k) for k in ASSIGNMENT_FIELDS}
        data = json.dumps(clean, ensure_ascii=False, indent=2, sort_keys=True).encode("utf-8")
        atomic_write(self.state / ASSIGNMENT_FILE, data + b"\n")

    def clear_assignment(self) -> bool:
        """Forget the pushed assignment (the receiver cleared it): the preamble falls back to
        the configured defaults. True if there was one."""
        path = self.state / ASSIGNMENT_FILE
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        with contextlib.suppress(OSError):
            fsync_dir(self.state)
        return True

    def write_clock(self, clock: dict[str, Any]) -> None:
        data = json.dumps(clock, indent=2, sort_keys=True).encode("utf-8")
        atomic_write(self.state / CLOCK_FILE, data + b"\n")

    # -- freeing space ---------------------------------------------------------------------
    def free_media(self, item: Item, receipt: Receipt, *, min_age_s: float) -> int:
        """Delete a segment's media after a valid stored receipt; returns bytes freed."""
        if item.media_path is None or item.digest is None or receipt.status != "stored":
            return 0
        if receipt.media_sha256 != item.digest.sha256 or receipt.media_size != item.digest.size:
            log.error("receipt for seq %d names other media; media kept", item.record.seq)
            return 0
        if min_age_s > 0:
            try:
                end = parse_utc(str(item.record.body.get("utc_end")))
            except RecordFormatError:
                end = item.record.time.datetime
            if (datetime.now(UTC) - end).total_seconds() < min_age_s:
                return 0
        try:
            size = item.media_path.stat().st_size
            item.media_path.unlink()
        except FileNotFoundError:
            return 0
        with contextlib.suppress(OSError):
            fsync_dir(item.media_path.parent)
        log.info("freed %d bytes of seq %d (receipted)", size, item.record.seq)
        return size

    def sweep(self, *, min_age_s: float) -> int:
        """Free media of already receipted segments that retention now allows to go."""
        freed = 0
        for item in self.items():
            if not item.is_segment or item.media_path is None or not item.media_path.exists():
                continue
            path = self.receipts / f"{item.hash}.json"
            if not path.exists():
                continue
            try:
                receipt = Receipt.parse(path.read_bytes())
            except (OSError, EvidenceError) as exc:
                log.error("receipt %s unreadable (%s); media kept", path, exc)
                continue
            freed += self.free_media(item, receipt, min_age_s=min_age_s)
        return freed


def media_chunk(path: Path, offset: int, size_bytes: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size_bytes)
