"""``bodycam-receiver import SPOOL``: file a spool copy (e.g. from a card) like a dock upload.

A clerk gets spools that never reach the dock over MQTT: a device that cannot dock, a card taken
out of a broken recorder. :func:`import_spool` feeds every record of the copy, in seq order, and
each segment's media as chunks and fin, through :meth:`receiver.ingest.Ingest.handle`: the very
messages and checks of an MQTT upload, so a revoked or unregistered device, a bad signature,
tampered or undecryptable media are refused and quarantined exactly as they would be there. What
the receiver cannot take *yet* (device not registered, no ``encryption_key``, disk full) is
reported as ``waiting``: import the copy again once that is fixed.

Failure posture: the spool copy is only read, never changed (no receipts are written into it:
the device learns what the receiver has when it next docks). A record that cannot be parsed or
a segment whose media is missing is reported per record and the import goes on; nothing is
stored that did not pass the ingest's checks. Safe while the service runs (SQLite and the store
serialise the writes; the same record arriving both ways is stored once).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evidence import layout
from evidence import transfer as wire
from evidence.errors import EvidenceError
from evidence.media import FileDigest
from evidence.receipt import Receipt
from evidence.records import Record
from receiver.ingest import NEED_LATER, Ingest, Outgoing

log = logging.getLogger(__name__)

STORED = "stored"
DUPLICATE = "already-stored"
QUARANTINED = "quarantined"
INCOMPLETE = "incomplete"
WAITING = "waiting"
UNREADABLE = "unreadable"


@dataclass(frozen=True)
class ImportedRecord:
    device: str
    seq: int | None
    type: str | None
    file: str
    outcome: str
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _receipt(replies: list[Outgoing]) -> Receipt | None:
    for out in replies:
        if out.topic.endswith("/" + wire.DOWN_RECEIPT):
            return Receipt.parse(out.payload)
    return None


def _deferral(replies: list[Outgoing]) -> str | None:
    """The reason of a "resend later" answer among ``replies``, if any."""
    for out in replies:
        if out.topic.endswith("/" + wire.DOWN_NEED):
            need = wire.parse_json(out.payload, wire.NEED, out.topic)
            if need["what"] == NEED_LATER:
                return str(need["reason"])
    return None


def _send_media(ingest: Ingest, device: str, record_hash: str, path: Path) -> list[Outgoing]:
    transfer = ingest.transfers[record_hash]
    d: FileDigest = transfer.digest
    replies: list[Outgoing] = []
    with open(path, "rb") as f:
        for index in range(len(d.chunks)):
            data = f.read(d.chunk_size)
            frame = wire.pack_chunk(record_hash, index, index * d.chunk_size, data)
            replies += ingest.handle(wire.up_topic(device, wire.UP_CHUNK), frame)
    fin = {
        "v": wire.PROTOCOL_VERSION,
        "record": record_hash,
        "size": d.size,
        "sha256": d.sha256,
        "chunks": len(d.chunks),
    }
    return replies + ingest.handle(wire.up_topic(device, wire.UP_FIN), wire.encode_json(fin))


def _import_record(ingest: Ingest, root: Path, device: str, path: Path) -> ImportedRecord:
    rel = str(path.relative_to(root))
    try:
        record = Record.parse(path.read_bytes())
    except (OSError, EvidenceError) as exc:
        return ImportedRecord(device, None, None, rel, UNREADABLE, str(exc))
    record_hash = record.hash()
    duplicates = ingest.stats.duplicates
    init = {"v": wire.PROTOCOL_VERSION, "record": record.to_dict()}
    replies = ingest.handle(wire.up_topic(device, wire.UP_INIT), wire.encode_json(init))
    if record_hash in ingest.transfers:
        media = layout.media_path(root, device, str(record.body.get("file")))
        try:
            replies = _send_media(ingest, device, record_hash, media)
        except OSError as exc:
            replies = []
            reason = f"media {media.name} cannot be read: {exc.strerror or exc}"
        else:
            reason = "media incomplete: not every chunk arrived"
        tr = ingest.transfers.get(record_hash)
        if tr is not None:  # the media never completed: nothing of it is kept
            ingest.abandon(record_hash)
            return ImportedRecord(device, record.seq, record.type, rel, INCOMPLETE, reason)
    receipt = _receipt(replies)
    waiting = _deferral(replies)
    if receipt is None and waiting is not None:
        return ImportedRecord(device, record.seq, record.type, rel, WAITING, waiting)
    if receipt is None:
        # the ingest ignored it (e.g. a record of another device in this device's directory)
        return ImportedRecord(
            device, record.seq, record.type, rel, UNREADABLE, "refused as malformed (see log)"
        )
    if receipt.status != "stored":
        return ImportedRecord(device, record.seq, record.type, rel, QUARANTINED, receipt.reason)
    outcome = DUPLICATE if ingest.stats.duplicates > duplicates else STORED
    return ImportedRecord(device, record.seq, record.type, rel, outcome)


def import_spool(ingest: Ingest, root: Path) -> list[ImportedRecord]:
    """Import every device's records under ``root`` (an evidence tree: a spool or its copy)."""
    root = Path(root)
    if not (root / layout.DEVICES).is_dir():
        from receiver.errors import InvalidInputError

        raise InvalidInputError("spool", f"{root} has no {layout.DEVICES}/ directory")
    results: list[ImportedRecord] = []
    for device in layout.iter_devices(root):
        for path in layout.iter_record_files(root, device):
            result = _import_record(ingest, root, device, path)
            log.log(
                logging.INFO if result.outcome in (STORED, DUPLICATE) else logging.WARNING,
                "import %s seq %s: %s%s",
                device,
                result.seq,
                result.outcome,
                f" ({result.reason})" if result.reason else "",
            )
            results.append(result)
    return results
