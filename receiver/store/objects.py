"""The receiver's evidence store on disk: content-addressed, immutable, crash-safe.

Layout under the data directory::

    objects/<sha[:2]>/<sha256>                     media bytes, named by their SHA-256, mode 0444
                                                   (encrypted segments: the ciphertext as signed
                                                   and the checked plaintext, each by its hash)
    evidence/devices/<dev>/records/<seq>.json      every verified record (an evidence tree that
    evidence/devices/<dev>/media/<file>            bodycam-verify reads; media are hard links)
    quarantine/<utc>-<hash>/                       what failed verification, with REASON
    tmp/                                           transfers in progress (emptied at start)
    receiver.db                                    metadata (see receiver.store.schema)

A file is moved into ``objects/`` only after its full hash is checked, via fsync + rename +
directory fsync, so a crash leaves either nothing or the complete object. Failure posture: an
existing object or record with the same name and the same bytes is success (idempotent); the
same name with different bytes raises :class:`ConflictError` and nothing is overwritten; OS
errors become :class:`StoreError`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

from evidence import layout
from evidence.fsutil import atomic_write, fsync_dir
from receiver.errors import ConflictError, StoreError

log = logging.getLogger(__name__)

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
READ_ONLY = 0o444
HASH_BLOCK_BYTES = 1 << 20


def sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK_BYTES):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


class EvidenceStore:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.objects = self.data_dir / "objects"
        self.evidence_root = self.data_dir / "evidence"
        self.quarantine_dir = self.data_dir / "quarantine"
        self.tmp = self.data_dir / "tmp"
        self.db_path = self.data_dir / "receiver.db"
        for d in (self.objects, self.evidence_root, self.quarantine_dir, self.tmp):
            d.mkdir(parents=True, exist_ok=True)

    # -- temporary transfer files ----------------------------------------------------------
    def temp_path(self, record_hash: str) -> Path:
        if not _HEX64.match(record_hash):
            raise ValueError(f"not a record hash: {record_hash!r}")
        return self.tmp / f"{record_hash}.part"

    def plain_temp_path(self, record_hash: str) -> Path:
        """Where the decrypted plaintext of an encrypted segment is checked before commit."""
        return self.temp_path(record_hash).with_suffix(".plain")

    def clear_temp(self) -> int:
        """Remove leftovers of transfers interrupted by a crash; returns how many."""
        removed = 0
        for entry in self.tmp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                removed += 1
        return removed

    # -- objects ---------------------------------------------------------------------------
    def object_path(self, sha256: str) -> Path:
        if not _HEX64.match(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.objects / sha256[:2] / sha256

    def has_object(self, sha256: str) -> bool:
        return self.object_path(sha256).is_file()

    def commit_object(self, temp: Path, sha256: str) -> Path:
        """Move a fully written and hash-checked temp file into the store (idempotent)."""
        target = self.object_path(sha256)
        try:
            with open(temp, "rb+") as f:
                os.fsync(f.fileno())
            if target.exists():
                temp.unlink()
                return target
            target.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(temp, READ_ONLY)
            os.replace(temp, target)
            fsync_dir(target.parent)
        except OSError as exc:
            raise StoreError(target, f"cannot commit object: {exc.strerror or exc}") from exc
        return target

    # -- evidence tree ---------------------------------------------------------------------
    def write_record(self, device: str, seq: int, data: bytes) -> Path:
        path = layout.record_path(self.evidence_root, device, seq)
        if path.exists():
            if path.read_bytes() == data:
                return path
            raise ConflictError(f"{path} already holds a different record for seq {seq}")
        try:
            atomic_write(path, data, mode=READ_ONLY)
        except OSError as exc:
            raise StoreError(path, f"cannot write record: {exc.strerror or exc}") from exc
        return path

    def media_conflict(self, device: str, name: str, sha256: str) -> str | None:
        """Why the media name cannot take this object (another file holds it), or None."""
        path = layout.media_path(self.evidence_root, device, name)
        obj = self.object_path(sha256)
        if path.exists() and not (obj.exists() and obj.samefile(path)):
            return f"{path.name} already holds other media for device {device}"
        return None

    def link_media(self, device: str, name: str, sha256: str) -> Path:
        """Make the object visible in the evidence tree under the segment's file name."""
        obj = self.object_path(sha256)
        path = layout.media_path(self.evidence_root, device, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(obj, path)
        except FileExistsError:
            if obj.samefile(path):
                return path
            raise ConflictError(f"{path} already exists with other content") from None
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise StoreError(path, f"cannot link media: {exc.strerror or exc}") from exc
            shutil.copyfile(obj, path)
            os.chmod(path, READ_ONLY)
        fsync_dir(path.parent)
        return path

    # -- quarantine ------------------------------------------------------------------------
    def quarantine(
        self,
        *,
        device: str,
        record_hash: str | None,
        reason: str,
        record_bytes: bytes | None,
        media: Path | None = None,
    ) -> Path:
        """Keep what failed verification for inspection; never part of the evidence tree."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{stamp}-{(record_hash or 'norecord')[:16]}"
        qdir = self.quarantine_dir / device / name
        try:
            qdir.mkdir(parents=True, exist_ok=True)
            atomic_write(qdir / "REASON", (reason + "\n").encode("utf-8"), mode=READ_ONLY)
            if record_bytes is not None:
                atomic_write(qdir / "record.json", record_bytes, mode=READ_ONLY)
            if media is not None and media.exists():
                os.replace(media, qdir / "media")
                os.chmod(qdir / "media", READ_ONLY)
            fsync_dir(qdir)
        except OSError as exc:
            raise StoreError(qdir, f"cannot write quarantine: {exc.strerror or exc}") from exc
        return qdir
