"""Offline verification of an evidence tree: a device spool or an exported case file.

Failure posture: fail closed and never stop at the first problem. Every record and every media
file is examined and each problem is reported as a :class:`Violation` of its own kind; only an
unusable root (missing or unreadable) raises :class:`TreeError`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evidence import layout
from evidence.canonical import parse_json
from evidence.errors import EvidenceError, KeyFileError, RecordFormatError
from evidence.keys import KeyRing, load_public_key
from evidence.media import FileDigest, StreamingDigest
from evidence.records import Record, RecordType
from evidence.tracker import ChainTracker
from evidence.violations import Violation
from evidence.violations import ViolationKind as K

log = logging.getLogger(__name__)

# Turns a stored (encrypted) media file into plaintext blocks for digesting; None = no key.
# The dict is the segment's ``encryption`` plus ``"recovered_prefix": True`` for a segment cut by
# a crash (its stream has no last chunk; only then may the decryptor accept that).
MediaDecryptor = Callable[[Path, dict[str, Any]], "Any"]


class TreeError(EvidenceError):
    """The tree cannot be examined at all (missing, not a directory, unreadable)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass
class DeviceSummary:
    device: str
    records: int = 0
    sessions: int = 0
    segments: int = 0
    media_bytes: int = 0
    released: int = 0  # segments whose media was freed against a valid receipt
    first_seq: int | None = None
    last_seq: int | None = None
    open_session: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Report:
    root: Path
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    devices: dict[str, DeviceSummary] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def kinds(self) -> set[str]:
        return {str(v.kind) for v in self.violations}

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "ok": self.ok,
            "violations": [v.to_dict() for v in self.violations],
            "notes": self.notes,
            "devices": {d: s.to_dict() for d, s in self.devices.items()},
        }


@dataclass(frozen=True)
class Scope:
    """Which seq ranges of a device the tree claims to hold (a case file is an excerpt)."""

    ranges: tuple[tuple[int, int], ...] | None  # None: the whole chain from seq 0

    def boundary(self, seq: int) -> bool:
        return self.ranges is not None and any(seq == lo for lo, _ in self.ranges)

    def missing_allowed(self, seq: int) -> bool:
        return self.ranges is not None and not any(lo <= seq <= hi for lo, hi in self.ranges)


def verify_tree(
    root: Path,
    keyring: KeyRing | None = None,
    *,
    decryptor: MediaDecryptor | None = None,
    receiver_keys: KeyRing | None = None,
) -> Report:
    """Verify every device chain and media file under ``root``.

    ``keyring`` is the set of trusted device keys; without one, the keys found in the tree
    itself are used, which proves integrity but not origin (a note says so). On a device spool,
    media freed after the receiver receipted it is accepted when ``state/receipts`` holds the
    receipt; ``receiver_keys`` are the receiver keys its signature must verify with.
    """
    root = Path(root)
    if not root.exists():
        raise TreeError(root, "no such file or directory")
    if not root.is_dir():
        raise TreeError(root, "not a directory")
    if not os.access(root, os.R_OK | os.X_OK):
        raise TreeError(root, "directory is not readable")
    report = Report(root)
    scopes = _read_manifest(root, report)
    try:
        devices = list(layout.iter_devices(root))
    except OSError as exc:
        raise TreeError(root, f"cannot list devices: {exc.strerror or exc}") from exc
    if not devices:
        report.violations.append(
            Violation(
                K.NO_EVIDENCE,
                None,
                None,
                None,
                f"no {layout.DEVICES}/ with any device "
                "under this directory: nothing here to verify",
            )
        )
        return report
    if keyring is None:
        report.notes.append(
            "no trusted keys given: using the public keys stored in the tree itself; this proves "
            "the evidence is intact and consistent, not who made it (pass --key to check origin)"
        )
    for device in devices:
        scope = scopes.get(device, Scope(None))
        ring = keyring if keyring is not None else _keys_from_tree(root, device, report)
        verifier = _DeviceVerifier(root, device, ring, scope, decryptor, report)
        verifier.receiver_keys = receiver_keys
        verifier.run()
    return report


def _keys_from_tree(root: Path, device: str, report: Report) -> KeyRing:
    """The device's own ``device.pub``; the tree's ``keys/*.pub`` only if it has none."""
    ring = KeyRing()
    own = layout.device_dir(root, device) / layout.DEVICE_PUBLIC_KEY
    keys_dir = root / "keys"
    candidates = [own] if own.exists() else sorted(keys_dir.glob("*.pub"))
    for path in candidates:
        try:
            ring.add(load_public_key(path))
        except KeyFileError as exc:
            report.notes.append(f"ignored key file: {exc}")
    return ring


def _read_manifest(root: Path, report: Report) -> dict[str, Scope]:
    path = root / layout.MANIFEST
    if not path.exists():
        return {}
    try:
        data = parse_json(path.read_bytes())
        scopes = {}
        for device, entry in data["devices"].items():
            ranges = tuple((int(lo), int(hi)) for lo, hi in entry["ranges"])
            scopes[device] = Scope(ranges)
        return scopes
    except (OSError, RecordFormatError, KeyError, TypeError, ValueError, AttributeError) as exc:
        report.violations.append(
            Violation(K.BAD_MANIFEST, None, None, layout.MANIFEST, f"unusable manifest: {exc}")
        )
        return {}


class _DeviceVerifier:
    def __init__(
        self,
        root: Path,
        device: str,
        keyring: KeyRing,
        scope: Scope,
        decryptor: MediaDecryptor | None,
        report: Report,
    ) -> None:
        self.root, self.device, self.scope = root, device, scope
        self.decryptor = decryptor
        self.report = report
        self.summary = report.devices.setdefault(device, DeviceSummary(device))
        self.tracker = ChainTracker(device, keyring)
        self.referenced: set[str] = set()
        self.receiver_keys: KeyRing | None = None

    def violation(self, kind: K, seq: int | None, file: str | None, detail: str) -> None:
        self.report.violations.append(Violation(kind, self.device, seq, file, detail))

    def run(self) -> None:
        records = self._load_records()
        for record in records:
            path = layout.record_path(self.root, self.device, record.seq)
            self.tracker.file_names[record.seq] = self._rel(path)
        for record in records:
            boundary = self.scope.boundary(record.seq)
            for v in self.tracker.feed(record, boundary=boundary):
                if (
                    v.kind == K.MISSING_SEQ
                    and v.seq is not None
                    and self.scope.missing_allowed(v.seq)
                ):
                    continue
                self.report.violations.append(v)
            if record.type == RecordType.SEGMENT:
                self._check_media(record)
        self._check_unreferenced_media()
        self._summarise(records)

    def _load_records(self) -> list[Record]:
        loaded: list[tuple[Path, Record]] = []
        try:
            files = list(layout.iter_record_files(self.root, self.device))
        except OSError as exc:
            self.violation(K.UNREADABLE_RECORD, None, layout.RECORDS, f"cannot list records: {exc}")
            return []
        for path in files:
            rel = self._rel(path)
            if path.name.startswith("."):
                self.report.notes.append(f"{rel}: temporary file ignored (interrupted write)")
                continue
            try:
                loaded.append((path, Record.load(path)))
            except RecordFormatError as exc:
                self.violation(K.UNREADABLE_RECORD, layout.seq_from_name(path), rel, exc.reason)
        self._check_names(loaded)
        by_seq: dict[int, Record] = {}
        for path, record in loaded:
            if record.seq in by_seq:
                if by_seq[record.seq].hash() != record.hash():
                    self.violation(
                        K.DUPLICATE_SEQ,
                        record.seq,
                        self._rel(path),
                        f"a second, different record claims seq {record.seq}",
                    )
                continue
            by_seq[record.seq] = record
        return [by_seq[s] for s in sorted(by_seq)]

    def _check_names(self, loaded: list[tuple[Path, Record]]) -> None:
        names = {layout.seq_from_name(p): r.seq for p, r in loaded}
        for path, record in loaded:
            named = layout.seq_from_name(path)
            if named == record.seq:
                continue
            rel = self._rel(path)
            if named is not None and names.get(record.seq) == named:
                self.violation(
                    K.REORDERED,
                    record.seq,
                    rel,
                    f"file for seq {named} holds seq {record.seq}: records were swapped or moved",
                )
            else:
                self.violation(
                    K.MISNAMED_RECORD,
                    record.seq,
                    rel,
                    f"file name does not match the record's seq {record.seq}",
                )

    def _check_media(self, record: Record) -> None:
        body = record.body
        rel_record = layout.record_name(record.seq)
        try:
            name = body["file"]
            stored = FileDigest.from_dict(body["stored"]) if body.get("stored") else None
            # A segment recovered after a crash on an encrypting device has no plaintext digest
            # (the device cannot decrypt what it wrote); only its stored bytes are signed.
            recovered_prefix = body.get("media") is None and stored is not None
            if recovered_prefix and not (body.get("recovered") and body.get("encryption")):
                raise ValueError("'media' is null but the segment is not a recovered encrypted one")
            media = stored if recovered_prefix else FileDigest.from_dict(body["media"])
            assert media is not None
            path = layout.media_path(self.root, self.device, name)
        except (KeyError, RecordFormatError, ValueError, TypeError) as exc:
            self.violation(K.MALFORMED_BODY, record.seq, rel_record, f"segment body: {exc}")
            return
        self.referenced.add(name)
        rel = self._rel(path)
        if not path.exists():
            if self.scope.missing_allowed(record.seq):
                return
            problem = self._released(record, stored or media)
            if problem is not None:
                self.violation(K.MISSING_MEDIA, record.seq, rel, problem)
            return
        on_disk = stored or media
        self._compare(record.seq, rel, path, on_disk, _read_blocks(path))
        self.summary.media_bytes += on_disk.size
        if stored is None or self.decryptor is None:
            return
        info = dict(body.get("encryption") or {})
        if recovered_prefix:
            info["recovered_prefix"] = True
        try:
            blocks = self.decryptor(path, info)
            if recovered_prefix:
                plain = sum(len(block) for block in blocks)
                self.report.notes.append(
                    f"device {self.device} seq {record.seq}: {rel} was cut by a crash and sealed "
                    f"as recovered: its {plain} plaintext bytes decrypt and authenticate (no "
                    "plaintext digest was recorded; the stream is truncated by the crash)"
                )
            else:
                self._compare(record.seq, rel + " (decrypted)", path, media, blocks)
        except EvidenceError as exc:
            self.violation(K.MEDIA_UNREADABLE, record.seq, rel, f"cannot decrypt: {exc}")
        except OSError as exc:
            self.violation(K.MEDIA_UNREADABLE, record.seq, rel, f"cannot read: {exc}")

    def _released(self, record: Record, digest: FileDigest) -> str | None:
        """None when the media was freed against a valid receipt, else why it counts as missing."""
        path = self.root / layout.STATE / "receipts" / f"{record.hash()}.json"
        if not path.exists():
            return "media file of this segment is missing (and no receiver receipt for it)"
        from evidence.receipt import Receipt, ReceiptError

        try:
            receipt = Receipt.parse(path.read_bytes())
        except (OSError, ReceiptError) as exc:
            return f"media missing; its receipt is unusable: {exc}"
        if receipt.status != "stored" or receipt.media_sha256 != digest.sha256:
            return "media missing; its receipt does not acknowledge these bytes as stored"
        if self.receiver_keys is None:
            self.report.notes.append(
                f"device {self.device} seq {record.seq}: media freed after a receipt whose "
                "signature was not checked (pass --receiver-key)"
            )
            return None
        public = self.receiver_keys.get(receipt.key)
        if public is None:
            return f"media missing; its receipt is signed by untrusted key {receipt.key}"
        reason = receipt.verify(public, record_hash=record.hash(), device=self.device)
        if reason is not None:
            return f"media missing; its receipt is not valid: {reason}"
        self.summary.released += 1
        return None

    def _compare(self, seq: int, rel: str, path: Path, want: FileDigest, blocks: Any) -> None:
        digest = StreamingDigest(want.chunk_size)
        try:
            for block in blocks:
                digest.update(block)
        except OSError as exc:
            self.violation(K.MEDIA_UNREADABLE, seq, rel, f"cannot read: {exc.strerror or exc}")
            return
        got = digest.finish()
        if got.sha256 == want.sha256 and got.size == want.size:
            return
        if got.size != want.size:
            self.violation(
                K.MEDIA_SIZE_MISMATCH,
                seq,
                rel,
                f"{got.size} bytes on disk, {want.size} recorded (truncated or extended)",
            )
        bad = [i for i, (a, b) in enumerate(zip(got.chunks, want.chunks, strict=False)) if a != b]
        if bad:
            shown = ", ".join(str(i) for i in bad[:10]) + (" ..." if len(bad) > 10 else "")
            self.violation(
                K.CHUNK_HASH_MISMATCH,
                seq,
                rel,
                f"{len(bad)} chunk(s) of {want.chunk_size} bytes differ: {shown}",
            )
        self.violation(
            K.MEDIA_HASH_MISMATCH, seq, rel, f"SHA-256 {got.sha256} on disk, {want.sha256} recorded"
        )

    def _check_unreferenced_media(self) -> None:
        base = layout.media_dir(self.root, self.device)
        if not base.is_dir():
            return
        for path in sorted(base.iterdir()):
            if path.name in self.referenced:
                continue
            rel = self._rel(path)
            if path.name.endswith(".part") or path.name.startswith("."):
                self.report.notes.append(
                    f"{rel}: partial media not yet sealed (recording in progress or interrupted)"
                )
            else:
                self.violation(K.EXTRA_MEDIA, None, rel, "media file referenced by no record")

    def _summarise(self, records: list[Record]) -> None:
        t = self.tracker
        self.summary.records = len(records)
        self.summary.sessions, self.summary.segments = t.sessions, t.segments
        if records:
            self.summary.first_seq, self.summary.last_seq = records[0].seq, records[-1].seq
        self.summary.open_session = t.open_session()
        if self.summary.open_session:
            self.report.notes.append(
                f"device {self.device}: session {self.summary.open_session} has no session-close "
                "yet (recording in progress, or awaiting crash recovery)"
            )

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.root))


def _read_blocks(path: Path, block_bytes: int = 1 << 20) -> Any:
    with open(path, "rb") as f:
        while block := f.read(block_bytes):
            yield block
