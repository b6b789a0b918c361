"""Offline verification of an evidence tree: a device spool or an exported case file.

Failure posture: fail closed and never stop at the first problem. Every record and every media
file is examined and each problem is reported as a :class:`Violation` of its own kind; only an
unusable root (missing or unreadable) raises :class:`TreeError`. The tree is read through
:class:`evidence.safeio.Tree`: nothing outside it is ever opened (no links followed, no FIFOs or
devices, bounded reads), and anything that tries is an ``unsafe-path`` violation.

Speed: every record is canonicalised once (its hash, signed bytes and the canonical-file check
share it); media files are hashed in a thread pool (``hashlib`` releases the GIL, so the files
are hashed on every core) with at most :data:`FILES_IN_FLIGHT` per thread submitted at a time
and one read block per thread in memory. A file is hashed once, whole: only a file that does
not match its record is read again for its per-chunk digests, which say where it differs
(:mod:`evidence.digests`). Findings are reported in seq order, never in completion order.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evidence import layout
from evidence.bodies import SegmentBody
from evidence.canonical import parse_json
from evidence.digests import digest_blocks, digest_stream, sha256_blocks, sha256_stream
from evidence.errors import (
    EvidenceError,
    InvalidTimeError,
    KeyFileError,
    RecordFormatError,
    UnsafePathError,
)
from evidence.keys import KeyRing, public_key_from_pem
from evidence.media import FileDigest
from evidence.records import MAX_RECORD_BYTES, Record, RecordType
from evidence.safeio import Tree
from evidence.tracker import ChainTracker
from evidence.values import is_device_id, is_safe_int, is_safe_name
from evidence.violations import Violation
from evidence.violations import ViolationKind as K

log = logging.getLogger(__name__)

# Turns a stored (encrypted) media file into plaintext blocks for digesting; None = no key.
# It is given the open file (or, from older callers, a path) and the segment's ``encryption``
# plus ``"recovered_prefix": True`` for a segment cut by a crash (its stream has no last chunk;
# only then may the decryptor accept that).
MediaDecryptor = Callable[[Any, dict[str, Any]], Any]

MAX_MANIFEST_BYTES = 4 << 20
MAX_KEY_FILE_BYTES = 64 << 10
MAX_RECEIPT_FILE_BYTES = 64 << 10
MAX_RANGES_PER_DEVICE = 100_000
#: Media files submitted to the hashing pool and not yet finished, per hashing thread.
FILES_IN_FLIGHT = 4


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
    #: SHA-256 and size of every media file hashed, by path below the root (not reported;
    #: the case-file check reuses them instead of hashing the media a second time)
    media_digests: dict[str, tuple[str, int]] = field(default_factory=dict, repr=False)

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
    workers: int | None = None,
) -> Report:
    """Verify every device chain and media file under ``root``.

    ``keyring`` is the set of trusted device keys; without one, the keys found in the tree
    itself are used, which proves integrity but not origin (a note says so). Media a device
    freed after the receiver receipted it is excused only by a receipt in ``state/receipts``
    that verifies with one of ``receiver_keys``; without those keys such media is reported as
    ``unverified-receipt``. ``workers``: hashing threads (default: one per CPU).
    """
    root = Path(root)
    if not root.exists():
        raise TreeError(root, "no such file or directory")
    if not root.is_dir():
        raise TreeError(root, "not a directory")
    if not os.access(root, os.R_OK | os.X_OK):
        raise TreeError(root, "directory is not readable")
    report = Report(root)
    try:
        tree = Tree(root)
    except OSError as exc:
        raise TreeError(root, f"cannot open: {exc.strerror or exc}") from exc
    threads = workers or len(os.sched_getaffinity(0)) or 1
    with tree, ThreadPoolExecutor(max_workers=threads, thread_name_prefix="verify") as executor:
        pool = _HashPool(executor, threads * FILES_IN_FLIGHT)
        pending: list[_DeviceVerifier] = []
        scopes = _read_manifest(tree, report)
        devices = _list_devices(tree, report)
        if scopes is not None:
            for device in sorted(set(scopes) - set(devices)):
                report.violations.append(
                    Violation(
                        K.MISSING_DEVICE,
                        device,
                        None,
                        layout.MANIFEST,
                        "the manifest declares this device but the tree has no chain for it",
                    )
                )
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
                "no trusted keys given: using the public keys stored in the tree itself; this "
                "proves the evidence is intact and consistent, not who made it (pass --key to "
                "check origin)"
            )
        for device in devices:
            scope = (scopes or {}).get(device, Scope(None))
            ring = keyring if keyring is not None else _keys_from_tree(tree, device, report)
            verifier = _DeviceVerifier(tree, device, ring, scope, report, pool)
            verifier.decryptor, verifier.receiver_keys = decryptor, receiver_keys
            verifier.run()
            pending.append(verifier)
        for verifier in pending:
            verifier.collect()
    return report


def _list_devices(tree: Tree, report: Report) -> list[str]:
    try:
        if not tree.is_dir([layout.DEVICES]):
            return []
        entries = tree.list_dir([layout.DEVICES])
    except UnsafePathError as exc:
        report.violations.append(Violation(K.UNSAFE_PATH, None, None, exc.path, exc.reason))
        return []
    except OSError as exc:
        raise TreeError(tree.root, f"cannot list devices: {exc.strerror or exc}") from exc
    devices = []
    for entry in entries:
        rel = f"{layout.DEVICES}/{entry.name}"
        if entry.kind == "file":
            report.notes.append(f"{rel}: a file, not a device directory: ignored")
        elif entry.kind != "dir":
            report.violations.append(
                Violation(
                    K.UNSAFE_PATH, None, None, rel, f"is {entry.kind}, not a device directory"
                )
            )
        elif not is_device_id(entry.name):
            report.violations.append(
                Violation(K.UNSAFE_PATH, None, None, rel, "directory name is not a device id")
            )
        else:
            devices.append(entry.name)
    return devices


def _keys_from_tree(tree: Tree, device: str, report: Report) -> KeyRing:
    """The device's own ``device.pub``; the tree's ``keys/*.pub`` only if it has none."""
    ring = KeyRing()
    own = [layout.DEVICES, device, layout.DEVICE_PUBLIC_KEY]
    try:
        if tree.exists(own):
            candidates = [own]
        else:
            candidates = [
                ["keys", e.name] for e in tree.list_dir(["keys"]) if e.name.endswith(".pub")
            ]
    except (UnsafePathError, OSError) as exc:
        report.notes.append(f"ignored key files: {exc}")
        return ring
    for parts in candidates:
        where = "/".join(parts)
        try:
            ring.add(public_key_from_pem(tree.read_file(parts, MAX_KEY_FILE_BYTES), Path(where)))
        except (KeyFileError, UnsafePathError, OSError) as exc:
            report.notes.append(f"ignored key file {where}: {exc}")
    return ring


def _read_manifest(tree: Tree, report: Report) -> dict[str, Scope] | None:
    """The manifest's device scopes; None without a manifest (whole chains from seq 0)."""
    if not tree.exists([layout.MANIFEST]):
        return None
    try:
        return parse_manifest(tree.read_file([layout.MANIFEST], MAX_MANIFEST_BYTES))
    except (OSError, EvidenceError) as exc:
        report.violations.append(
            Violation(K.BAD_MANIFEST, None, None, layout.MANIFEST, f"unusable manifest: {exc}")
        )
        return {}


def parse_manifest(data: bytes) -> dict[str, Scope]:
    """``{"devices": {"<device>": {"ranges": [[first, last], ...]}}}``; other members ignored.

    Ranges must be sorted, disjoint and ``first <= last``; raises RecordFormatError otherwise.
    """
    value = parse_json(data)
    devices = value.get("devices") if isinstance(value, dict) else None
    if not isinstance(devices, dict):
        raise RecordFormatError("manifest has no 'devices' object")
    scopes: dict[str, Scope] = {}
    for device, entry in devices.items():
        if not is_device_id(device):
            raise RecordFormatError(f"manifest names an invalid device id {device[:80]!r}")
        ranges = entry.get("ranges") if isinstance(entry, dict) else None
        if not isinstance(ranges, list) or not 0 < len(ranges) <= MAX_RANGES_PER_DEVICE:
            raise RecordFormatError(f"device {device}: 'ranges' is not a non-empty list")
        out: list[tuple[int, int]] = []
        for pair in ranges:
            if not (
                isinstance(pair, list)
                and len(pair) == 2
                and all(is_safe_int(x, 0) for x in pair)
                and pair[0] <= pair[1]
            ):
                raise RecordFormatError(f"device {device}: range {str(pair)[:60]} is not [lo, hi]")
            if out and pair[0] <= out[-1][1]:
                raise RecordFormatError(f"device {device}: ranges overlap or are not sorted")
            out.append((pair[0], pair[1]))
        scopes[device] = Scope(tuple(out))
    return scopes


@dataclass
class _MediaJob:
    seq: int
    rel: str
    parts: list[str]
    want: FileDigest
    body: SegmentBody


@dataclass
class _Outcome:
    """What hashing one media file found; ``whole`` is the (sha256, size) read, if any."""

    violations: list[Violation]
    notes: list[str]
    whole: tuple[str, int] | None


class _Slot:
    """One submitted media file: its future until it is settled, then only its outcome."""

    def __init__(self, job: _MediaJob, future: Future[_Outcome]) -> None:
        self.job = job
        self.future: Future[_Outcome] | None = future
        self.outcome: _Outcome | None = None

    def settle(self) -> _Outcome:
        if self.future is not None:
            self.outcome = self.future.result()  # a job returns its failures; never raises
            self.future = None
        assert self.outcome is not None
        return self.outcome


class _HashPool:
    """The hashing threads, with a bound on files submitted and not yet settled (oldest first),
    so a tree of any number of segments keeps a bounded number of futures and open files."""

    def __init__(self, executor: ThreadPoolExecutor, window: int) -> None:
        self.executor = executor
        self.window = max(1, window)
        self.unsettled: deque[_Slot] = deque()

    def submit(self, job: _MediaJob, fn: Callable[[_MediaJob], _Outcome]) -> _Slot:
        slot = _Slot(job, self.executor.submit(fn, job))
        self.unsettled.append(slot)
        while len(self.unsettled) > self.window:
            self.unsettled.popleft().settle()
        return slot


class _DeviceVerifier:
    def __init__(
        self,
        tree: Tree,
        device: str,
        keyring: KeyRing,
        scope: Scope,
        report: Report,
        pool: _HashPool,
    ) -> None:
        self.tree, self.device, self.scope = tree, device, scope
        self.report = report
        self.pool = pool
        self.decryptor: MediaDecryptor | None = None
        self.receiver_keys: KeyRing | None = None
        self.summary = report.devices.setdefault(device, DeviceSummary(device))
        self.tracker = ChainTracker(device, keyring)
        self.referenced: set[str] = set()
        self.jobs: list[_Slot] = []
        self.base = [layout.DEVICES, device]

    def violation(self, kind: K, seq: int | None, file: str | None, detail: str) -> None:
        self.report.violations.append(Violation(kind, self.device, seq, file, detail))

    def rel(self, *parts: str) -> str:
        return "/".join([*self.base, *parts])

    def run(self) -> None:
        records = self._load_records()
        for record in records:
            self.tracker.file_names[record.seq] = self.rel(
                layout.RECORDS, layout.record_name(record.seq)
            )
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
            body = self.tracker.bodies.get(record.seq)
            if isinstance(body, SegmentBody):
                self._check_media(record, body)
            elif record.type == RecordType.SEGMENT and is_safe_name(record.body.get("file")):
                # malformed (already reported): its media is not "extra" on top of that
                self.referenced.add(record.body["file"])
        self._check_ranges_present(records)
        self._check_unreferenced_media()
        self._summarise(records)

    def collect(self) -> None:
        """Wait for this device's media hashing and report what it found, in seq order."""
        for slot in self.jobs:
            outcome = slot.settle()
            self.report.violations.extend(outcome.violations)
            self.report.notes.extend(outcome.notes)
            if outcome.whole is not None:
                self.report.media_digests[slot.job.rel] = outcome.whole
            if not any(v.kind == K.UNSAFE_PATH for v in outcome.violations):
                self.summary.media_bytes += slot.job.want.size

    def _v(self, kind: K, seq: int | None, file: str | None, detail: str) -> Violation:
        return Violation(kind, self.device, seq, file, detail)

    # -- records ---------------------------------------------------------------------------
    def _load_records(self) -> list[Record]:
        loaded: list[tuple[str, Record]] = []
        try:
            entries = self.tree.list_dir([*self.base, layout.RECORDS])
        except UnsafePathError as exc:
            self.violation(K.UNSAFE_PATH, None, exc.path, exc.reason)
            return []
        except OSError as exc:
            self.violation(
                K.UNREADABLE_RECORD, None, self.rel(layout.RECORDS), f"cannot list: {exc}"
            )
            return []
        for entry in entries:
            rel = self.rel(layout.RECORDS, entry.name)
            if entry.name.startswith("."):
                self.report.notes.append(f"{rel}: temporary file ignored (interrupted write)")
                continue
            named = layout.seq_from_name(Path(entry.name))
            if entry.kind != "file":
                self.violation(K.UNSAFE_PATH, named, rel, f"is {entry.kind}, not a record file")
                continue
            record = self._load_one(entry.name, rel, named)
            if record is not None:
                loaded.append((entry.name, record))
        self._check_names(loaded)
        by_seq: dict[int, Record] = {}
        for name, record in loaded:
            if record.seq in by_seq:
                if by_seq[record.seq].hash() != record.hash():
                    self.violation(
                        K.DUPLICATE_SEQ,
                        record.seq,
                        self.rel(layout.RECORDS, name),
                        f"a second, different record claims seq {record.seq}",
                    )
                continue
            by_seq[record.seq] = record
        return [by_seq[s] for s in sorted(by_seq)]

    def _load_one(self, name: str, rel: str, named: int | None) -> Record | None:
        try:
            data = self.tree.read_file([*self.base, layout.RECORDS, name], MAX_RECORD_BYTES)
            record = Record.parse(data)
        except UnsafePathError as exc:
            self.violation(K.UNREADABLE_RECORD, named, rel, exc.reason)
            return None
        except OSError as exc:
            self.violation(K.UNREADABLE_RECORD, named, rel, f"cannot read: {exc.strerror or exc}")
            return None
        except InvalidTimeError as exc:
            self.violation(K.INVALID_TIME, named, rel, exc.reason)
            return None
        except RecordFormatError as exc:
            self.violation(K.UNREADABLE_RECORD, named, rel, exc.reason)
            return None
        if data != record.canonical():
            self.violation(
                K.NON_CANONICAL,
                record.seq,
                rel,
                "record file is not byte-for-byte its RFC 8785 canonical form "
                "(its sha256sum is not the record hash)",
            )
        return record

    def _check_names(self, loaded: list[tuple[str, Record]]) -> None:
        names = {layout.seq_from_name(Path(n)): r.seq for n, r in loaded}
        for name, record in loaded:
            named = layout.seq_from_name(Path(name))
            if named == record.seq:
                continue
            rel = self.rel(layout.RECORDS, name)
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

    def _check_ranges_present(self, records: list[Record]) -> None:
        """Every record inside a declared range must be present, to its last seq."""
        if self.scope.ranges is None:
            return
        present = {r.seq for r in records}
        for lo, hi in self.scope.ranges:
            if lo not in present:
                self.violation(
                    K.MISSING_SEQ,
                    lo,
                    None,
                    f"the manifest's range {lo}..{hi} lacks its first record",
                )
            if hi not in present and hi != lo:
                self.violation(
                    K.MISSING_SEQ,
                    hi,
                    None,
                    f"the manifest's range {lo}..{hi} lacks its last record (tail cut off)",
                )

    # -- media -----------------------------------------------------------------------------
    def _check_media(self, record: Record, body: SegmentBody) -> None:
        name = body.file
        self.referenced.add(name)
        parts = [*self.base, layout.MEDIA, name]
        rel = self.rel(layout.MEDIA, name)
        job = _MediaJob(record.seq, rel, parts, body.on_disk, body)
        try:
            present = self.tree.exists(parts)
        except OSError as exc:
            self.violation(K.MEDIA_UNREADABLE, record.seq, rel, f"cannot look up: {exc}")
            return
        if not present:
            if self.scope.missing_allowed(record.seq):
                return
            self._released(record, body, rel)
            return
        self.jobs.append(self.pool.submit(job, self._hash_job))

    def _hash_job(self, job: _MediaJob) -> _Outcome:
        """Runs in the pool: hash (and decrypt, with a key) one media file; failures to read
        it are returned as violations, in the outcome, not raised."""
        try:
            return self._hash_media(job)
        except UnsafePathError as exc:
            return _Outcome([self._v(K.UNSAFE_PATH, job.seq, job.rel, exc.reason)], [], None)
        except OSError as exc:
            detail = f"cannot read: {exc.strerror or exc}"
            return _Outcome([self._v(K.MEDIA_UNREADABLE, job.seq, job.rel, detail)], [], None)

    def _hash_media(self, job: _MediaJob) -> _Outcome:
        with self.tree.open_file(job.parts) as f:
            whole = sha256_stream(f)
        out: list[Violation] = []
        if whole != (job.want.sha256, job.want.size):
            # only a file that differs is read again, for the chunks that say where; the
            # second reading is reported (and kept) whole, so the findings agree with each other
            with self.tree.open_file(job.parts) as f:
                got = digest_stream(f, job.want.chunk_size)
            whole = (got.sha256, got.size)
            out = self._compare(job.seq, job.rel, job.want, got)
        notes: list[str] = []
        body = job.body
        if body.stored is None or self.decryptor is None:
            return _Outcome(out, notes, whole)
        info: dict[str, Any] = body.encryption.to_dict() if body.encryption else {}
        if body.recovered_prefix:
            info["recovered_prefix"] = True
        try:
            if body.recovered_prefix:
                plain = self._decrypted_size(job, info)
                notes.append(
                    f"device {self.device} seq {job.seq}: {job.rel} was cut by a crash and "
                    f"sealed as recovered: its {plain} plaintext bytes decrypt and "
                    "authenticate (no plaintext digest was recorded; the stream is "
                    "truncated by the crash)"
                )
            elif body.media is not None:
                out += self._check_plaintext(job, info, body.media)
        except (EvidenceError, ValueError, OSError) as exc:
            out.append(self._v(K.MEDIA_UNREADABLE, job.seq, job.rel, f"cannot decrypt: {exc}"))
        return _Outcome(out, notes, whole)

    def _decrypted_size(self, job: _MediaJob, info: dict[str, Any]) -> int:
        assert self.decryptor is not None
        with self.tree.open_file(job.parts) as f:
            blocks: Iterable[bytes] = self.decryptor(f, info)
            return sum(len(block) for block in blocks)

    def _check_plaintext(
        self, job: _MediaJob, info: dict[str, Any], want: FileDigest
    ) -> list[Violation]:
        """Decrypt and hash the plaintext whole; decrypt again for its chunks only if it differs."""
        assert self.decryptor is not None
        with self.tree.open_file(job.parts) as f:
            if sha256_blocks(self.decryptor(f, info)) == (want.sha256, want.size):
                return []
        with self.tree.open_file(job.parts) as f:
            decrypted = digest_blocks(self.decryptor(f, info), want.chunk_size)
        return self._compare(job.seq, job.rel + " (decrypted)", want, decrypted)

    def _released(self, record: Record, body: SegmentBody, rel: str) -> None:
        """Absent media is excused only by a receipt that verifies with a trusted receiver key."""
        receipt_parts = [layout.STATE, "receipts", f"{record.hash()}.json"]
        problem = self._receipt_problem(record, body, receipt_parts)
        if problem is None:
            self.summary.released += 1
        elif problem[0] == K.UNVERIFIED_RECEIPT:
            self.violation(K.UNVERIFIED_RECEIPT, record.seq, rel, problem[1])
        else:
            self.violation(K.MISSING_MEDIA, record.seq, rel, problem[1])

    def _receipt_problem(
        self, record: Record, body: SegmentBody, parts: list[str]
    ) -> tuple[K, str] | None:
        from evidence.receipt import Receipt

        try:
            if not self.tree.exists(parts):
                return K.MISSING_MEDIA, "media file of this segment is missing (and no receipt)"
            receipt = Receipt.parse(self.tree.read_file(parts, MAX_RECEIPT_FILE_BYTES))
        except (OSError, EvidenceError) as exc:
            return K.MISSING_MEDIA, f"media missing; its receipt is unusable: {exc}"
        if receipt.status != "stored" or receipt.media_sha256 != body.on_disk.sha256:
            return K.MISSING_MEDIA, "media missing; its receipt does not acknowledge these bytes"
        if self.receiver_keys is None:
            return (
                K.UNVERIFIED_RECEIPT,
                "media missing; a receipt claims it was stored, but no trusted receiver key was "
                "given (--receiver-key), so it cannot excuse the absence",
            )
        public = self.receiver_keys.get(receipt.key)
        if public is None:
            return (
                K.MISSING_MEDIA,
                f"media missing; its receipt is signed by untrusted key {receipt.key}",
            )
        try:
            reason = receipt.verify(public, record_hash=record.hash(), device=self.device)
        except EvidenceError as exc:  # e.g. a string that cannot be canonicalised
            reason = str(exc)
        if reason is not None:
            return K.MISSING_MEDIA, f"media missing; its receipt is not valid: {reason}"
        return None

    def _compare(self, seq: int, rel: str, want: FileDigest, got: FileDigest) -> list[Violation]:
        if got.sha256 == want.sha256 and got.size == want.size:
            return []
        out = []
        if got.size != want.size:
            out.append(
                self._v(
                    K.MEDIA_SIZE_MISMATCH,
                    seq,
                    rel,
                    f"{got.size} bytes on disk, {want.size} recorded (truncated or extended)",
                )
            )
        bad = [i for i, (a, b) in enumerate(zip(got.chunks, want.chunks, strict=False)) if a != b]
        if bad:
            shown = ", ".join(str(i) for i in bad[:10]) + (" ..." if len(bad) > 10 else "")
            out.append(
                self._v(
                    K.CHUNK_HASH_MISMATCH,
                    seq,
                    rel,
                    f"{len(bad)} chunk(s) of {want.chunk_size} bytes differ: {shown}",
                )
            )
        out.append(
            self._v(
                K.MEDIA_HASH_MISMATCH,
                seq,
                rel,
                f"SHA-256 {got.sha256} on disk, {want.sha256} recorded",
            )
        )
        return out

    def _check_unreferenced_media(self) -> None:
        try:
            entries = self.tree.list_dir([*self.base, layout.MEDIA])
        except UnsafePathError as exc:
            self.violation(K.UNSAFE_PATH, None, exc.path, exc.reason)
            return
        except OSError as exc:
            self.violation(K.MEDIA_UNREADABLE, None, self.rel(layout.MEDIA), f"cannot list: {exc}")
            return
        for entry in entries:
            rel = self.rel(layout.MEDIA, entry.name)
            if entry.kind != "file":
                self.violation(K.UNSAFE_PATH, None, rel, f"is {entry.kind}, not a media file")
            elif entry.name in self.referenced:
                continue
            elif entry.name.endswith(".part") or entry.name.startswith("."):
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
