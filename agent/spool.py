"""The device spool: an evidence tree plus agent-private state, and segment sealing.

Layout (``docs/interfaces.md``)::

    ROOT/devices/<id>/records/<seq>.json   signed records (evidence.chain.DeviceChain)
    ROOT/devices/<id>/media/<file>         sealed segments, named by their record
    ROOT/state/device.key                  dev/simulated signing key (provisioned devices: config)
    ROOT/state/device-id                   simulated device id
    ROOT/state/parts/<file>.part           segments being written (never under a final name)
    ROOT/state/session.json                the open session (what crash recovery needs)
    ROOT/state/receipts/                   receiver receipts (written by the uplink)
    ROOT/state/reserve                     space held back for the records of a full card

Sealing a segment: the pipeline has written, flushed and fsynced ``<file>.part``; we fsync it
again, hash it (:func:`evidence.media.digest_file`), turn it into its stored form
(:func:`to_stored_form`), append the signed ``segment`` record, rename it to ``media/<file>``
and fsync both directories. A crash at any point leaves either a ``.part`` (recovered on the
next start) or a sealed file.

Encryption at rest (``[device] encryption_key_file``, the receiver's X25519 public key): the
pipeline gets an :class:`EncryptedPart` instead of the bare file, so plaintext never reaches the
card. It digests the plaintext on the way in (the record's ``media``), encrypts it with
:class:`evidence.encryption.EncryptingWriter` (each ``flush`` seals what was written so far as
whole chunks, so the pipeline's once-a-second flush + fsync bounds what a crash loses) and keeps
``<file>.part.progress`` beside the part: one JSON line per flush with the bytes and the frames
and media time so far, which is all crash recovery can know of a file the device cannot decrypt.
Without a key the spool stays plaintext and says so (a WARNING at start; ``check`` warns).

A full card: the spool keeps ``state/reserve`` (:data:`RESERVE_BYTES` of real blocks). When a
record or the session state cannot be written for lack of space (``ENOSPC``), the reserve is
released and the write retried once, so the seal of the segment that was being written and the
``gap`` record that explains the interruption always reach the card;
:meth:`RecordingSpool.keep_reserve` takes it back once space is free again.

Failure posture: nothing here ever deletes media. Sealing problems raise
:class:`~agent.errors.SealError` and leave the ``.part`` in place for crash recovery; records
are appended under one lock so record times never go backwards in ``seq`` order.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from agent.clock import Clock
from agent.errors import SealError, SigningKeyError, SpoolError
from agent.media.base import SegmentStats
from evidence import layout
from evidence.chain import DeviceChain
from evidence.encryption import (
    EncryptingWriter,
    encrypt_for_spool,
    is_encrypted_file,
    read_header,
)
from evidence.errors import EvidenceError
from evidence.fsutil import atomic_write, fsync_dir
from evidence.keys import generate_signing_key, load_signing_key, save_signing_key
from evidence.media import CHUNK_SIZE, FileDigest, StreamingDigest, digest_file
from evidence.records import Record, RecordTime, RecordType, format_utc

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"
RESERVE_NAME = "reserve"
RESERVE_BYTES = 1024 * 1024
"""Held back on the card for the records that explain a full card (a seal, a gap, a close and
the session state are a few KiB each)."""
PROGRESS_SUFFIX = ".progress"
MEDIA_SUFFIX = ".ts"


# --- identity and key ---------------------------------------------------------------------------


def simulated_device_id(state_dir: Path) -> str:
    """``SIM-<hostname>``, remembered in ``state/device-id`` so later runs use the same chain."""
    path = state_dir / "device-id"
    if path.exists():
        return path.read_text(encoding="ascii").strip()
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
    device_id = f"SIM-{host or 'host'}"[:64]
    atomic_write(path, device_id.encode("ascii") + b"\n")
    return device_id


def load_key(path: Path) -> Ed25519PrivateKey:
    if not path.exists():
        raise SigningKeyError(path, "missing (provision the device: bodycam-provision)")
    try:
        return load_signing_key(path)
    except EvidenceError as exc:
        raise SigningKeyError(path, str(exc)) from exc


def ensure_dev_key(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """Load the key at ``path`` or create a development key there; returns (key, created)."""
    if path.exists():
        return load_key(path), False
    key = generate_signing_key()
    save_signing_key(path, key)
    return key, True


def is_disk_full(exc: BaseException) -> bool:
    """``exc``, or an error it was raised from, is a full filesystem or quota."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def new_session_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def segment_file_name(session: str, index: int) -> str:
    return f"{session}-{index:04d}{MEDIA_SUFFIX}"


def parse_segment_file_name(name: str) -> tuple[str, int] | None:
    """``(session, index)`` of a (part or final) segment file name, or None."""
    if name.endswith(PART_SUFFIX):
        name = name[: -len(PART_SUFFIX)]
    if not name.endswith(MEDIA_SUFFIX):
        return None
    stem = name[: -len(MEDIA_SUFFIX)]
    session, _, index = stem.rpartition("-")
    if not session or not index.isdigit():
        return None
    return session, int(index)


# --- encryption-at-rest seam --------------------------------------------------------------------


@dataclass(frozen=True)
class StoredForm:
    path: Path
    """The file to rename into ``media/``."""
    media: FileDigest | None
    """Digest of the plaintext; None only for an encrypted part recovered after a crash."""
    stored: FileDigest | None
    """Digest of the file as stored when it is encrypted (else None: ``media`` covers it)."""
    encryption: dict[str, Any] | None


def to_stored_form(
    part: Path,
    recipient: X25519PublicKey | None = None,
    *,
    plaintext: FileDigest | None = None,
    encryption: dict[str, Any] | None = None,
    stored: FileDigest | None = None,
) -> StoredForm:
    """The bytes kept on the card for ``part`` and the digests the segment record signs.

    - plaintext part, no recipient: the part itself (``media`` = its digest);
    - part written through :class:`EncryptedPart` (``plaintext`` and ``encryption`` given):
      the part itself, ``stored`` = its digest (taken as it was written when ``stored`` is given
      and the part has its size, else read back), ``media`` = the plaintext digest;
    - encrypted part with no ``plaintext`` digest (recovered after a crash): ``media`` None;
    - plaintext part and a recipient (a part from before encryption was configured, recovered):
      encrypted and swapped in under the part's name, so the plaintext does not stay on the
      card.
    """
    if encryption is not None or is_encrypted_file(part):
        if encryption is None:
            encryption = _encryption_of(part)
        if stored is None or stored.size != part.stat().st_size:
            stored = digest_file(part)
        return StoredForm(part, plaintext, stored, encryption)
    if recipient is None:
        return StoredForm(part, digest_file(part), None, None)
    # Encrypted beside the part, then swapped in under the part's own name: a crash leaves the
    # part either all plaintext or all ciphertext, never both or neither.
    enc_path = part.with_name(f".{part.name}.enc")
    result = encrypt_for_spool(part, enc_path, recipient)
    os.replace(enc_path, part)
    fsync_dir(part.parent)
    return StoredForm(part, result.media, result.stored, result.encryption)


def _encryption_of(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        head = read_header(fh, path=path)
    return {"scheme": head["scheme"], "recipient": head["recipient"]}


class _TsProgress:
    """Counts video frames and their PTS span in the MPEG-TS passing through (no decoding).

    An encrypted part cannot be read back by the device, so this is how crash recovery learns
    how much media a cut-off segment holds.
    """

    def __init__(self) -> None:
        self._carry = b""
        self.frames = 0
        self.first_pts: int | None = None
        self.last_pts: int | None = None
        self.frame_ticks = 0
        self.audio = False

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        start = 0
        if self._carry:  # complete the packet cut at the end of the previous block
            need = TS_PACKET_BYTES - len(self._carry)
            if len(view) < need:
                self._carry += bytes(view)
                return
            self._packet(self._carry + bytes(view[:need]))
            start = need
        end = start + (len(view) - start) // TS_PACKET_BYTES * TS_PACKET_BYTES
        if end > start:
            # Only packets that start a PES matter (one per frame): find them with one strided
            # slice of every packet's second byte instead of a Python step per packet.
            flags = view[start + 1 : end : TS_PACKET_BYTES].tobytes().translate(_PUSI_TABLE)
            i = flags.find(1)
            while i >= 0:
                off = start + i * TS_PACKET_BYTES
                self._packet(view[off : off + TS_PACKET_BYTES])
                i = flags.find(1, i + 1)
        self._carry = bytes(view[end:])

    def _packet(self, pkt: bytes | memoryview) -> None:
        """One 188-byte packet with the payload-unit-start flag set."""
        if pkt[0] != 0x47:
            return
        control = (pkt[3] >> 4) & 3
        pes = 4 + (1 + pkt[4] if control & 2 else 0)
        if not control & 1 or pes + 14 > TS_PACKET_BYTES or pkt[pes : pes + 3] != b"\0\0\1":
            return
        stream_id = pkt[pes + 3]
        if 0xC0 <= stream_id <= 0xDF:
            self.audio = True
        elif 0xE0 <= stream_id <= 0xEF and pkt[pes + 7] & 0x80:
            self._video_pts(_pes_pts(pkt[pes + 9 : pes + 14]))

    def _video_pts(self, pts: int) -> None:
        self.frames += 1
        if self.last_pts is not None and pts > self.last_pts:
            self.frame_ticks = pts - self.last_pts
        self.first_pts = pts if self.first_pts is None else min(self.first_pts, pts)
        self.last_pts = pts if self.last_pts is None else max(self.last_pts, pts)

    def duration_us(self) -> int:
        if self.first_pts is None or self.last_pts is None:
            return 0
        return (self.last_pts - self.first_pts + self.frame_ticks) * 1_000_000 // 90_000


TS_PACKET_BYTES = 188
#: byte -> 1 if the payload-unit-start bit (0x40 of a packet's second byte) is set, else 0
_PUSI_TABLE = bytes(1 if b & 0x40 else 0 for b in range(256))


def _pes_pts(b: bytes | memoryview) -> int:
    return ((b[0] >> 1) & 0x07) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


PENDING_BLOCK_BYTES = 1024 * 1024
"""Plaintext an :class:`EncryptedPart` collects before it digests and encrypts it (bounds
memory between flushes)."""


_POOL: list[ThreadPoolExecutor] = []
_POOL_LOCK = threading.Lock()


def _digest_pool() -> ThreadPoolExecutor:
    with _POOL_LOCK:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(max_workers=2, thread_name_prefix="spool-digest"))
        return _POOL[0]


class _DigestingSink:
    """The part file, digesting exactly the bytes written to it (the record's ``stored``), so
    sealing need not read the part back."""

    def __init__(self, fh: BinaryIO, digest: StreamingDigest) -> None:
        self._fh = fh
        self._digest = digest

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        return self._fh.write(data)

    def flush(self) -> None:
        self._fh.flush()

    def fileno(self) -> int:
        return self._fh.fileno()


class EncryptedPart:
    """The file object the pipeline writes a segment into when the spool encrypts.

    Behaves like the ``.part`` file (``write``/``flush``/``fileno``/``tell``/``close``) but what
    reaches the file is ciphertext; see the module docstring for ``flush`` and progress.
    """

    def __init__(self, path: Path, fh: BinaryIO, recipient: X25519PublicKey, clock: Clock) -> None:
        self.path = path
        self._fh = fh
        self._clock = clock
        self._stored = StreamingDigest(CHUNK_SIZE)
        self._writer = EncryptingWriter(_DigestingSink(fh, self._stored), recipient)
        self._plain = StreamingDigest(CHUNK_SIZE)
        self._ts = _TsProgress()
        self._pending = bytearray()
        self._written = 0
        self._progress = path.with_name(path.name + PROGRESS_SUFFIX).open("ab")
        self.plaintext: FileDigest | None = None
        """The plaintext digest (the record's ``media``), once :meth:`close` succeeded."""
        self.stored: FileDigest | None = None
        """The digest of the bytes written to the part (the record's ``stored``), after close."""
        self.encryption: dict[str, Any] = {
            "scheme": self._writer.info()["scheme"],
            "recipient": self._writer.recipient,
        }

    def write(self, data: bytes | bytearray | memoryview) -> int:
        # Collected and processed a block at a time (digest, TS accounting, encryption), at
        # flush or when the block is full: per-write Python work stays one append.
        before = len(self._pending)
        self._pending += data
        size = len(self._pending) - before
        self._written += size
        if len(self._pending) >= PENDING_BLOCK_BYTES:
            self._process()
        return size

    def _process(self) -> None:
        if not self._pending:
            return
        block, self._pending = self._pending, bytearray()
        # The plaintext digest (two SHA-256 passes; hashlib releases the GIL) runs on a helper
        # thread while this one encrypts and digests the ciphertext: on a multi-core device the
        # four hash passes and the cipher overlap instead of adding up.
        plain = _digest_pool().submit(self._plain.update, block) if len(block) > 65536 else None
        if plain is None:
            self._plain.update(block)
        self._ts.feed(block)
        try:
            self._writer.write(block)
        finally:
            if plain is not None:
                plain.result()

    def flush(self) -> None:
        if self._fh.closed:
            return
        self._process()
        self._writer.flush()
        self._write_progress()

    def _write_progress(self) -> None:
        ts = self._ts
        line = {
            "plaintext_bytes": self._writer.plaintext_bytes,
            "stored_bytes": self._writer.stored_bytes,
            "frames": ts.frames,
            "duration_us": ts.duration_us(),
            "audio": ts.audio,
            "utc": format_utc(self._clock.utc_now()),
        }
        # Written before the caller fsyncs the part, not fsynced itself: after a process crash
        # (SIGKILL) the page cache still holds every line; after a power cut the file may lag
        # the part, and recovery then uses the last line the durable part covers (it reports
        # less media than the part holds, never more, and the part's bytes are all signed).
        self._progress.write(json.dumps(line).encode() + b"\n")
        self._progress.flush()

    def fileno(self) -> int:
        return self._fh.fileno()

    def tell(self) -> int:
        return self._written

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def close(self) -> None:
        if self._fh.closed:
            return
        try:
            self._process()
            self._writer.close()
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self.plaintext = self._plain.finish()
            self.stored = self._stored.finish()
        finally:
            self._fh.close()
            self._progress.close()


def read_progress(part: Path, stored_limit_bytes: int) -> dict[str, Any] | None:
    """The last progress line of ``part`` whose bytes the part really holds, or None."""
    path = part.with_name(part.name + PROGRESS_SUFFIX)
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return None
    best: dict[str, Any] | None = None
    for raw in lines:
        try:
            entry = json.loads(raw)
            if int(entry["stored_bytes"]) <= stored_limit_bytes:
                best = entry
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by the crash
    return best


def remove_progress(part: Path, *, sync: bool = True) -> None:
    """Delete the part's progress file (``sync``: and fsync the directory)."""
    path = part.with_name(part.name + PROGRESS_SUFFIX)
    try:
        path.unlink()
    except FileNotFoundError:
        return
    if sync:
        fsync_dir(path.parent)


# --- session state ------------------------------------------------------------------------------


@dataclass
class SessionState:
    """What crash recovery needs to close a session the agent did not close itself."""

    session: str
    boot_id: str
    opened_utc: str
    segments: int = 0
    frames: int = 0
    dropped_frames: int = 0
    gaps: int = 0
    duration_us: int = 0
    next_index: int = 0
    recording_index0: int = 0
    """Session index of the current recording's segment 0 (recordings restart after gaps)."""
    last_media_end_us: int | None = None
    last_utc_end: str | None = None
    pre_event_us: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionState:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})

    def close_body(self, reason: str) -> dict[str, Any]:
        return {
            "reason": reason,
            "duration_us": self.duration_us,
            "segments": self.segments,
            "frames": self.frames,
            "dropped_frames": self.dropped_frames,
            "gaps": self.gaps,
        }


# --- the spool ----------------------------------------------------------------------------------


_SPOOL_LOCKS: dict[Path, int] = {}
SPOOL_LOCK_NAME = "agent.lock"


def _lock_spool(state_dir: Path) -> None:
    """Hold an exclusive lock on the spool for the life of this process.

    Two recorder processes on one spool would race for the same sequence numbers; the second one
    is refused here with a clear error instead. Repeated opens within one process share the lock.
    """
    path = (state_dir / SPOOL_LOCK_NAME).resolve()
    if path in _SPOOL_LOCKS:
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise SpoolError(
            state_dir.parent, "another agent process is using this spool (its lock is held)"
        ) from exc
    _SPOOL_LOCKS[path] = fd


class RecordingSpool:
    """One device's spool: appends records, seals segments, keeps session state."""

    def __init__(
        self,
        root: Path,
        device_id: str,
        key: Ed25519PrivateKey,
        clock: Clock,
        *,
        synced: Callable[[], bool] = lambda: False,
        recipient: X25519PublicKey | None = None,
    ) -> None:
        self.root = Path(root)
        self.recipient = recipient
        """The receiver's encryption key; None: media stay plaintext (development only)."""
        self.device_id = device_id
        self.clock = clock
        self.synced = synced
        self.state_dir = self.root / layout.STATE
        self.parts_dir = self.state_dir / "parts"
        self.receipts_dir = self.state_dir / "receipts"
        self.media_dir = layout.media_dir(self.root, device_id)
        try:
            for d in (
                self.parts_dir,
                self.receipts_dir,
                self.media_dir,
                layout.records_dir(self.root, device_id),
            ):
                d.mkdir(parents=True, exist_ok=True)
            _lock_spool(self.state_dir)
            self.chain = DeviceChain(self.root, device_id, key)
        except OSError as exc:
            raise SpoolError(self.root, f"cannot prepare spool: {exc}") from exc
        except EvidenceError as exc:
            raise SpoolError(self.root, f"device chain unusable: {exc}") from exc
        self._lock = threading.Lock()

    # records

    def record_time(self) -> RecordTime:
        return RecordTime.from_datetime(
            self.clock.utc_now(), self.clock.monotonic_ns(), self.clock.boot_id, self.synced()
        )

    def append(self, type: str, session: str, body: dict[str, Any]) -> Record:
        # Time is read under the lock so record times never go backwards in seq order.
        with self._lock:
            head = self.chain.head_seq
            try:
                record = self.chain.append(type, session, body, self.record_time())
            except OSError as exc:
                # retried only if nothing was appended: a record is never written twice
                if self.chain.head_seq != head or not self._release_reserve(exc):
                    raise
                record = self.chain.append(type, session, body, self.record_time())
        log.info("record seq=%d %s session=%s", record.seq, type, session)
        return record

    # the reserve for a full card

    @property
    def reserve_path(self) -> Path:
        return self.state_dir / RESERVE_NAME

    def keep_reserve(self) -> bool:
        """Hold :data:`RESERVE_BYTES` on the card (True), unless there is not that much free."""
        path = self.reserve_path
        try:
            if path.stat().st_size >= RESERVE_BYTES:
                return True
        except FileNotFoundError:
            pass
        try:
            with path.open("wb") as fh:  # written, not sparse: the blocks are really taken
                fh.write(bytes(RESERVE_BYTES))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            path.unlink(missing_ok=True)
            log.warning("cannot keep the %d-byte storage reserve: %s", RESERVE_BYTES, exc)
            return False
        log.info("storage reserve of %d bytes held", RESERVE_BYTES)
        return True

    def _release_reserve(self, exc: BaseException) -> bool:
        """After ``exc``: if the card is full and the reserve held, free it (True: retry)."""
        if not is_disk_full(exc):
            return False
        try:
            self.reserve_path.unlink()
        except FileNotFoundError:
            return False
        log.error("storage full: released the storage reserve so the evidence records fit")
        return True

    # parts

    def part_path(self, session: str, index: int) -> Path:
        return self.parts_dir / (segment_file_name(session, index) + PART_SUFFIX)

    def open_part(self, session: str, index: int) -> BinaryIO:
        """The file the pipeline writes segment ``index`` into (EncryptedPart if encrypting)."""
        path = self.part_path(session, index)
        try:
            fh = path.open("xb")
        except OSError as exc:
            raise SealError(path, f"cannot create part file: {exc}") from exc
        try:
            if self.recipient is not None:
                part = EncryptedPart(path, fh, self.recipient, self.clock)
                part.flush()  # the header is on disk before any media: recovery can read it
            fsync_dir(self.parts_dir)
        except OSError as exc:
            # Nothing of the segment was written yet: remove the part so that the pipeline's
            # retry (the next keyframe) can create it again once there is space.
            with contextlib.suppress(OSError):
                fh.close()
            path.unlink(missing_ok=True)
            remove_progress(path, sync=False)
            raise SealError(path, f"cannot create part file: {exc}") from exc
        if self.recipient is not None:
            return part  # type: ignore[return-value]  # a BinaryIO for every use the pipeline makes
        return fh

    def seal(
        self,
        part: Path,
        session: str,
        index: int,
        stats: SegmentStats,
        *,
        recovered: bool = False,
        plaintext: FileDigest | None = None,
        encryption: dict[str, Any] | None = None,
        stored: FileDigest | None = None,
    ) -> Record:
        """Seal ``part`` as segment ``index`` of ``session``; returns the segment record.

        ``plaintext``, ``encryption`` and ``stored`` come from the :class:`EncryptedPart` the
        part was written through; an encrypted part without them must be ``recovered``.
        """
        name = segment_file_name(session, index)
        final = layout.media_path(self.root, self.device_id, name)
        if final.exists():
            raise SealError(part, f"{final.name} already exists; refusing to overwrite")
        try:
            with part.open("rb+") as fh:
                os.fsync(fh.fileno())
            form = to_stored_form(
                part, self.recipient, plaintext=plaintext, encryption=encryption, stored=stored
            )
        except (OSError, EvidenceError) as exc:
            raise SealError(part, str(exc)) from exc
        if form.media is None and not recovered:
            raise SealError(part, "encrypted part without its plaintext digest; left for recovery")
        body = segment_body(name, index, form.media, form, stats, recovered=recovered)
        record = self.append(RecordType.SEGMENT, session, body)
        try:
            os.replace(form.path, final)
            fsync_dir(self.media_dir)
            # the progress file goes with the part: one fsync of the parts directory for both
            remove_progress(part, sync=False)
            fsync_dir(part.parent)
        except OSError as exc:
            # The record is durable; recovery finds the .part and completes the rename.
            raise SealError(part, f"sealed as seq {record.seq} but rename failed: {exc}") from exc
        kept = form.stored or form.media
        log.info(
            "sealed %s (%d bytes%s, %d frames%s)",
            name,
            kept.size if kept is not None else 0,
            ", encrypted" if form.encryption else "",
            stats.frames,
            ", recovered" if recovered else "",
        )
        return record

    # session state

    @property
    def session_state_path(self) -> Path:
        return self.state_dir / "session.json"

    def save_session(self, state: SessionState) -> None:
        data = json.dumps(state.to_dict(), indent=1).encode()
        try:
            atomic_write(self.session_state_path, data)
        except OSError as exc:
            if not self._release_reserve(exc):
                raise
            atomic_write(self.session_state_path, data)

    def load_session(self) -> SessionState | None:
        path = self.session_state_path
        if not path.exists():
            return None
        try:
            return SessionState.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise SpoolError(path, f"unreadable session state: {exc}") from exc

    def clear_session(self) -> None:
        try:
            self.session_state_path.unlink()
            fsync_dir(self.state_dir)
        except FileNotFoundError:
            pass


def segment_body(
    name: str,
    index: int,
    media: FileDigest | None,
    stored: StoredForm,
    stats: SegmentStats,
    *,
    recovered: bool,
) -> dict[str, Any]:
    """The ``segment`` record body; ``media`` None only for a recovered encrypted part."""
    return {
        "index": index,
        "file": name,
        "media": media.to_dict() if media is not None else None,
        "stored": stored.stored.to_dict() if stored.stored is not None else None,
        "encryption": stored.encryption,
        "utc_start": format_utc(stats.utc_start),
        "utc_end": format_utc(stats.utc_end),
        "media_start_us": stats.media_start_us,
        "media_end_us": stats.media_end_us,
        "frames": stats.frames,
        "dropped_frames": stats.dropped_frames,
        "video": stats.video,
        "audio": stats.audio,
        "pre_event_us": stats.pre_event_us,
        "recovered": recovered,
    }


def _close_part(fh: BinaryIO, index: int) -> None:
    """Close a part the pipeline wrote. A plaintext part whose last bytes did not fit (full
    card) is sealed as far as it got: its record signs exactly the bytes that reached it. An
    encrypted one cannot be (no plaintext digest): it raises and is sealed as recovered."""
    try:
        fh.close()
    except OSError as exc:
        if isinstance(fh, EncryptedPart) or not is_disk_full(exc):
            raise
        log.warning(
            "segment %d: its last bytes did not fit (%s); sealing what it holds", index, exc
        )


class SessionSink:
    """The :class:`~agent.media.base.SegmentSink` of one recording within a session.

    Segment indices from the pipeline restart at 0 for each recording; the session index is
    ``state.recording_index0 + index``. ``on_sealed(record, stats)`` is called after each seal
    and ``on_error(exc)`` when sealing failed (the part stays for crash recovery).
    """

    def __init__(
        self,
        spool: RecordingSpool,
        state: SessionState,
        *,
        on_sealed: Callable[[Record, SegmentStats], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self.spool = spool
        self.state = state
        self.on_sealed = on_sealed
        self.on_error = on_error
        self._files: dict[int, BinaryIO] = {}
        self._lock = threading.Lock()

    def open_segment(self, index: int) -> BinaryIO:
        session_index = self.state.recording_index0 + index
        fh = self.spool.open_part(self.state.session, session_index)
        with self._lock:
            self._files[index] = fh
            self.state.next_index = max(self.state.next_index, session_index + 1)
            self.spool.save_session(self.state)
        return fh

    def close_segment(self, index: int, stats: SegmentStats) -> None:
        with self._lock:
            fh = self._files.pop(index, None)
        session_index = self.state.recording_index0 + index
        part = self.spool.part_path(self.state.session, session_index)
        try:
            plaintext = encryption = stored = None
            if fh is not None:
                _close_part(fh, session_index)
            if isinstance(fh, EncryptedPart):
                plaintext, encryption, stored = fh.plaintext, fh.encryption, fh.stored
            record = self.spool.seal(
                part,
                self.state.session,
                session_index,
                stats,
                plaintext=plaintext,
                encryption=encryption,
                stored=stored,
            )
        except Exception as exc:
            log.error(
                "segment %d not sealed now (its part is kept and sealed as recovered): %s",
                session_index,
                exc,
            )
            if self.on_error is not None:
                self.on_error(exc)
            return
        with self._lock:
            st = self.state
            st.segments += 1
            st.frames += stats.frames
            st.dropped_frames += stats.dropped_frames
            st.duration_us += stats.media_end_us - stats.media_start_us
            st.last_media_end_us = stats.media_end_us
            st.last_utc_end = format_utc(stats.utc_end)
            self.spool.save_session(st)
        if self.on_sealed is not None:
            self.on_sealed(record, stats)
