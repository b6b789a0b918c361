"""The device spool: an evidence tree plus agent-private state, and segment sealing.

Layout (``docs/interfaces.md``)::

    ROOT/devices/<id>/records/<seq>.json   signed records (evidence.chain.DeviceChain)
    ROOT/devices/<id>/media/<file>         sealed segments, named by their record
    ROOT/state/device.key                  dev/simulated signing key (provisioned devices: config)
    ROOT/state/device-id                   simulated device id
    ROOT/state/parts/<file>.part           segments being written (never under a final name)
    ROOT/state/session.json                the open session (what crash recovery needs)
    ROOT/state/receipts/                   receiver receipts (written by the uplink)

Sealing a segment: the pipeline has written, flushed and fsynced ``<file>.part``; we fsync it
again, hash it (:func:`evidence.media.digest_file`), turn it into its stored form
(:func:`to_stored_form`, the seam for encryption at rest; identity today), append the signed
``segment`` record, rename it to ``media/<file>`` and fsync both directories. A crash at any
point leaves either a ``.part`` (recovered on the next start) or a sealed file.

Failure posture: nothing here ever deletes media. Sealing problems raise
:class:`~agent.errors.SealError` and leave the ``.part`` in place for crash recovery; records
are appended under one lock so record times never go backwards in ``seq`` order.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.clock import Clock
from agent.errors import SealError, SigningKeyError, SpoolError
from agent.media.base import SegmentStats
from evidence import layout
from evidence.chain import DeviceChain
from evidence.errors import EvidenceError
from evidence.fsutil import atomic_write, fsync_dir
from evidence.keys import generate_signing_key, load_signing_key, save_signing_key
from evidence.media import FileDigest, digest_file
from evidence.records import Record, RecordTime, RecordType, format_utc

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"
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
    """The file to rename into ``media/`` (the plaintext itself while there is no encryption)."""
    stored: FileDigest | None
    encryption: dict[str, Any] | None


def to_stored_form(plain: Path) -> StoredForm:
    """Turn a sealed plaintext segment into the bytes kept on the card.

    Identity for now. Encryption at rest replaces this: write the ciphertext beside ``plain``,
    return its path with ``stored`` = its digest and ``encryption`` = {"scheme", "recipient"}
    (the signed ``media`` digest stays over the plaintext, so verification needs no device).
    """
    return StoredForm(plain, None, None)


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


class Spool:
    """One device's spool: appends records, seals segments, keeps session state."""

    def __init__(
        self,
        root: Path,
        device_id: str,
        key: Ed25519PrivateKey,
        clock: Clock,
        *,
        synced: Callable[[], bool] = lambda: False,
    ) -> None:
        self.root = Path(root)
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
            record = self.chain.append(type, session, body, self.record_time())
        log.info("record seq=%d %s session=%s", record.seq, type, session)
        return record

    # parts

    def part_path(self, session: str, index: int) -> Path:
        return self.parts_dir / (segment_file_name(session, index) + PART_SUFFIX)

    def open_part(self, session: str, index: int) -> BinaryIO:
        path = self.part_path(session, index)
        try:
            fh = path.open("xb")
            fsync_dir(self.parts_dir)
        except OSError as exc:
            raise SealError(path, f"cannot create part file: {exc}") from exc
        return fh

    def seal(
        self,
        part: Path,
        session: str,
        index: int,
        stats: SegmentStats,
        *,
        recovered: bool = False,
    ) -> Record:
        """Seal ``part`` as segment ``index`` of ``session``; returns the segment record."""
        name = segment_file_name(session, index)
        final = layout.media_path(self.root, self.device_id, name)
        if final.exists():
            raise SealError(part, f"{final.name} already exists; refusing to overwrite")
        try:
            with part.open("rb+") as fh:
                os.fsync(fh.fileno())
            digest = digest_file(part)
            stored = to_stored_form(part)
        except OSError as exc:
            raise SealError(part, str(exc)) from exc
        body = segment_body(name, index, digest, stored, stats, recovered=recovered)
        record = self.append(RecordType.SEGMENT, session, body)
        try:
            os.replace(stored.path, final)
            fsync_dir(self.media_dir)
            fsync_dir(part.parent)
        except OSError as exc:
            # The record is durable; recovery finds the .part and completes the rename.
            raise SealError(part, f"sealed as seq {record.seq} but rename failed: {exc}") from exc
        log.info(
            "sealed %s (%d bytes, %d frames%s)",
            name,
            digest.size,
            stats.frames,
            ", recovered" if recovered else "",
        )
        return record

    # session state

    @property
    def session_state_path(self) -> Path:
        return self.state_dir / "session.json"

    def save_session(self, state: SessionState) -> None:
        atomic_write(self.session_state_path, json.dumps(state.to_dict(), indent=1).encode())

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
    digest: FileDigest,
    stored: StoredForm,
    stats: SegmentStats,
    *,
    recovered: bool,
) -> dict[str, Any]:
    return {
        "index": index,
        "file": name,
        "media": digest.to_dict(),
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


class SessionSink:
    """The :class:`~agent.media.base.SegmentSink` of one recording within a session.

    Segment indices from the pipeline restart at 0 for each recording; the session index is
    ``state.recording_index0 + index``. ``on_sealed(record, stats)`` is called after each seal
    and ``on_error(exc)`` when sealing failed (the part stays for crash recovery).
    """

    def __init__(
        self,
        spool: Spool,
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
        if fh is not None:
            fh.close()
        session_index = self.state.recording_index0 + index
        part = self.spool.part_path(self.state.session, session_index)
        try:
            record = self.spool.seal(part, self.state.session, session_index, stats)
        except Exception as exc:
            log.error("segment %d not sealed (kept for recovery): %s", session_index, exc)
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
