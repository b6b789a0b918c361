"""``bodycam-receiver import SPOOL``: file a spool copy (e.g. from a card) like a dock upload.

A clerk gets spools that never reach the dock over MQTT: a device that cannot dock, a card taken
out of a broken recorder. :func:`import_spool` feeds every record of the copy, in seq order, and
each segment's media as chunks and fin, through :meth:`receiver.ingest.Ingest.handle`: the very
messages and checks of an MQTT upload, so a revoked or unregistered device, a bad signature,
tampered or undecryptable media are refused and quarantined exactly as they would be there. What
the receiver cannot take *yet* (device not registered, no ``encryption_key``, disk full) is
reported as ``waiting``: import the copy again once that is fixed.

Failure posture: the spool copy is only read, never changed (no receipts are written into it:
the device learns what the receiver has when it next docks). The copy is walked without ever
leaving it: directories and files are opened with ``O_NOFOLLOW`` relative to their parent
(a symlink, a ``..`` link or a FIFO/device node is refused and reported, never followed or
read; opening never blocks). A record that cannot be read or parsed, or a segment whose media
is missing or refused, is reported per record and the import goes on: one bad record never
stops it half-way. Nothing is stored that did not pass the ingest's checks. Safe while the
service runs (SQLite and the store serialise the writes; the same record arriving both ways is
stored once).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evidence import layout
from evidence import transfer as wire
from evidence.errors import EvidenceError
from evidence.media import FileDigest
from evidence.receipt import Receipt
from evidence.records import MAX_RECORD_BYTES, Record
from receiver.errors import InvalidInputError, ReceiverError
from receiver.ingest import NEED_LATER, Ingest, Outgoing
from receiver.ingest.messages import MAX_DEPTH, depth, escape

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


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK


class Refused(ReceiverError):
    """An entry of the copy that is not a regular file or directory inside it."""


def _open_dir(parent_fd: int | None, name: str | Path) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        raise Refused(f"{name}: not a directory inside the copy ({exc.strerror})") from None


def _open_file(dir_fd: int, name: str) -> int:
    """A regular file in ``dir_fd`` (never a symlink, FIFO or device; never blocks)."""
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise Refused(f"{name}: cannot be opened inside the copy ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Refused(f"{name}: not a regular file")
    os.set_blocking(fd, True)
    return fd


def _read_file(dir_fd: int, name: str, limit: int) -> bytes:
    fd = _open_file(dir_fd, name)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise Refused(f"{name}: larger than {limit} bytes")
    return data


def _entries(dir_fd: int) -> list[str]:
    """Names in a directory, sorted; only plain names (no separators, no dot entries)."""
    return sorted(n for n in os.listdir(dir_fd) if n not in (".", "..") and "/" not in n)


def _send_media(
    ingest: Ingest, device: str, record_hash: str, media_fd: int, name: str
) -> list[Outgoing]:
    transfer = ingest.transfers[record_hash]
    d: FileDigest = transfer.digest
    replies: list[Outgoing] = []
    with os.fdopen(_open_file(media_fd, name), "rb") as f:
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


def _import_record(
    ingest: Ingest, device: str, records_fd: int, media_fd: int | None, name: str
) -> ImportedRecord:
    rel = f"{layout.DEVICES}/{device}/{layout.RECORDS}/{name}"
    try:
        data = _read_file(records_fd, name, MAX_RECORD_BYTES)
        record = Record.parse(data)
        if depth(record.body) > MAX_DEPTH:
            raise Refused(f"body nested deeper than {MAX_DEPTH}")
    except (OSError, EvidenceError, Refused, ValueError, RecursionError) as exc:
        return ImportedRecord(device, None, None, rel, UNREADABLE, str(exc)[:300])
    record_hash = record.hash()
    duplicates = ingest.stats.duplicates
    init = {"v": wire.PROTOCOL_VERSION, "record": record.to_dict()}
    replies = ingest.handle(wire.up_topic(device, wire.UP_INIT), wire.encode_json(init))
    if record_hash in ingest.transfers:
        file_name = str(record.body.get("file"))
        try:
            if media_fd is None:
                raise Refused(f"{layout.MEDIA}/ is missing or not a directory inside the copy")
            replies = _send_media(ingest, device, record_hash, media_fd, file_name)
        except (OSError, Refused) as exc:
            replies = []
            reason = f"media {file_name} cannot be read: {exc}"
        else:
            reason = "media incomplete: not every chunk arrived"
        if record_hash in ingest.transfers:  # the media never completed: nothing is kept
            ingest.abandon(record_hash, device)
            return ImportedRecord(device, record.seq, record.type, rel, INCOMPLETE, reason)
    receipt = _receipt(replies)
    waiting = _deferral(replies)
    if receipt is None and waiting is not None:
        return ImportedRecord(device, record.seq, record.type, rel, WAITING, waiting)
    if receipt is None and replies == [] and record_hash not in ingest.transfers:
        # verified, waiting for its predecessor (a later record of this copy may store it)
        return ImportedRecord(
            device, record.seq, record.type, rel, WAITING, "its predecessor is not stored"
        )
    if receipt is None:
        # the ingest ignored it (e.g. a record of another device in this device's directory)
        return ImportedRecord(
            device, record.seq, record.type, rel, UNREADABLE, "refused as malformed (see log)"
        )
    if receipt.status != "stored":
        return ImportedRecord(device, record.seq, record.type, rel, QUARANTINED, receipt.reason)
    outcome = DUPLICATE if ingest.stats.duplicates > duplicates else STORED
    return ImportedRecord(device, record.seq, record.type, rel, outcome)


def _import_device(ingest: Ingest, device: str, dev_fd: int) -> list[ImportedRecord]:
    results: list[ImportedRecord] = []
    try:
        records_fd = _open_dir(dev_fd, layout.RECORDS)
    except Refused as exc:
        return [ImportedRecord(device, None, None, layout.RECORDS, UNREADABLE, str(exc))]
    media_fd: int | None = None
    with contextlib.suppress(Refused):
        media_fd = _open_dir(dev_fd, layout.MEDIA)
    try:
        for name in _entries(records_fd):
            try:
                result = _import_record(ingest, device, records_fd, media_fd, name)
            except Exception as exc:  # never stop half-way on one bad record
                log.exception("import of %s %s failed", escape(device), escape(name))
                result = ImportedRecord(device, None, None, name, UNREADABLE, str(exc)[:300])
            results.append(result)
    finally:
        os.close(records_fd)
        if media_fd is not None:
            os.close(media_fd)
    return results


def import_spool(ingest: Ingest, root: Path) -> list[ImportedRecord]:
    """Import every device's records under ``root`` (an evidence tree: a spool or its copy)."""
    root = Path(root)
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise InvalidInputError("spool", f"{root}: {exc.strerror or exc}") from None
    try:
        devices_fd = _open_dir(root_fd, layout.DEVICES)
    except Refused:
        os.close(root_fd)
        raise InvalidInputError("spool", f"{root} has no {layout.DEVICES}/ directory") from None
    results: list[ImportedRecord] = []
    try:
        for device in _entries(devices_fd):
            try:
                dev_fd = _open_dir(devices_fd, device)
            except Refused as exc:
                results.append(ImportedRecord(device, None, None, device, UNREADABLE, str(exc)))
                continue
            try:
                device_results = _import_device(ingest, device, dev_fd)
            finally:
                os.close(dev_fd)
            for result in device_results:
                log.log(
                    logging.INFO if result.outcome in (STORED, DUPLICATE) else logging.WARNING,
                    "import %s seq %s: %s%s",
                    escape(device),
                    result.seq,
                    result.outcome,
                    f" ({escape(result.reason)})" if result.reason else "",
                )
            results.extend(device_results)
    finally:
        os.close(devices_fd)
        os.close(root_fd)
    return results
