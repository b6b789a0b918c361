"""Record-by-record checks of one device's chain, usable offline and by a live receiver.

:class:`ChainTracker` is fed a device's records in ``seq`` order and returns, for each, every
violation it shows: signature, key, device, ``seq`` continuity, ``prev`` link, time order, session
structure and unexplained gaps between segments. It never raises on bad evidence; it reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from evidence.bodies import Body, GapBody, SegmentBody, SessionCloseBody
from evidence.errors import InvalidTimeError, RecordFormatError
from evidence.keys import KeyRing
from evidence.records import GENESIS_PREV, Record, RecordType
from evidence.violations import Violation
from evidence.violations import ViolationKind as K

# Wall-clock hole between consecutive segments that still counts as continuous.
GAP_TOLERANCE_S = 2.0
# Media-timeline discontinuity between consecutive segments that still counts as continuous.
MEDIA_TOLERANCE_US = 200_000
# How far a gap record's interval is widened at each end when it must cover a hole: a fault is
# noticed by a no-data watchdog (2 s) and capture needs a moment to restart.
COVER_TOLERANCE_S = 5.0
DEVICE_LEVEL_TYPES = frozenset({RecordType.CHECK, RecordType.CLOCK})


@dataclass
class _Session:
    id: str
    open_seq: int
    complete: bool = True  # False when the excerpt starts inside the session (counts unknown)
    segments: int = 0
    gaps: int = 0
    frames: int = 0
    dropped_frames: int = 0
    duration_us: int = 0
    last: SegmentBody | None = None
    pending_gaps: list[GapBody] = field(default_factory=list)
    closed: bool = False


def typed_body(record: Record) -> tuple[Body | None, Violation | None]:
    """The record's typed body, or the violation its body is (malformed-body / invalid-time)."""
    try:
        return record.typed_body(), None
    except InvalidTimeError as exc:
        kind, reason = K.INVALID_TIME, exc.reason
    except RecordFormatError as exc:
        kind, reason = K.MALFORMED_BODY, exc.reason
    return None, Violation(kind, record.device, record.seq, None, reason)


def uncovered_seconds(gaps: list[GapBody], start: datetime, end: datetime) -> float:
    """Seconds of [start, end] covered by no gap interval (each widened by the tolerance)."""
    widen = timedelta(seconds=COVER_TOLERANCE_S)
    cursor, missing = start, 0.0
    for g in sorted(gaps, key=lambda g: g.start_utc):
        lo, hi = g.start_utc - widen, g.end_utc + widen
        if hi <= cursor:
            continue
        if lo > cursor:
            missing += (min(lo, end) - cursor).total_seconds()
        cursor = max(cursor, hi)
        if cursor >= end:
            break
    if cursor < end:
        missing += (end - cursor).total_seconds()
    return max(missing, 0.0)


@dataclass
class ChainTracker:
    """Checks one device's records as they come, in ``seq`` order.

    ``keyring`` holds the keys trusted for this device. ``start_seq`` is the first seq expected
    (0 for a whole chain). Set ``boundary=True`` before feeding the first record of a declared
    excerpt range, so its ``prev`` and any preceding gap are not held against it. Each record's
    body is parsed once (:func:`typed_body`); a body that breaks §3 is reported here.
    """

    device: str
    keyring: KeyRing
    start_seq: int = 0
    file_names: dict[int, str] = field(default_factory=dict)
    device_key: str | None = None  # the key this device's chain is signed with (first valid)
    last: Record | None = None
    last_valid_sig: bool = True
    last_time: Record | None = None
    session: _Session | None = None
    records: int = 0
    segments: int = 0
    sessions: int = 0
    session_ids: dict[str, int] = field(default_factory=dict)
    bodies: dict[int, Body] = field(default_factory=dict)

    def _v(self, kind: K, record: Record | None, detail: str, seq: int | None = None) -> Violation:
        s = seq if seq is not None else (record.seq if record else None)
        return Violation(
            kind, self.device, s, self.file_names.get(s) if s is not None else None, detail
        )

    def feed(self, record: Record, *, boundary: bool = False) -> list[Violation]:
        out: list[Violation] = []
        valid_sig = self._check_signature(record, out)
        if record.device != self.device:
            out.append(
                self._v(
                    K.FOREIGN_DEVICE,
                    record,
                    f"record of device {record.device!r} in the chain of {self.device!r}",
                )
            )
        if not self._check_sequence(record, valid_sig, boundary, out):
            return out  # duplicate or out-of-order: nothing more to learn from it
        self._check_time(record, out)
        body, problem = typed_body(record)
        if problem is not None:
            out.append(self._v(problem.kind, record, problem.detail))
        else:
            assert body is not None
            self.bodies[record.seq] = body
        self._check_session(record, body, boundary, out)
        self.last, self.last_valid_sig = record, valid_sig
        self.records += 1
        return out

    def _check_signature(self, record: Record, out: list[Violation]) -> bool:
        public = self.keyring.get(record.key)
        if public is None:
            out.append(self._v(K.UNKNOWN_KEY, record, f"signed with untrusted key {record.key}"))
            return False
        if not record.signature_valid(public):
            out.append(self._v(K.BAD_SIGNATURE, record, "signature does not verify"))
            return False
        if self.device_key is None:
            self.device_key = record.key
        elif record.key != self.device_key:
            # Trusting a set of keys must not let one device's key vouch for another's chain.
            out.append(
                self._v(
                    K.KEY_CHANGED,
                    record,
                    f"signed with {record.key}; the rest of this "
                    f"device's chain is signed with {self.device_key}",
                )
            )
            return False
        return True

    def _check_sequence(
        self, record: Record, valid_sig: bool, boundary: bool, out: list[Violation]
    ) -> bool:
        last = self.last
        if last is None:
            expected = self.start_seq
            if record.seq > expected and not boundary:
                out.append(self._missing(expected, record.seq - 1))
            elif record.seq == 0 and record.prev != GENESIS_PREV:
                out.append(self._v(K.BROKEN_PREV, record, "first record's prev is not zero"))
            return True
        if record.seq == last.seq:
            out.append(self._v(K.DUPLICATE_SEQ, record, f"seq {record.seq} appears twice"))
            return False
        if record.seq < last.seq:
            out.append(self._v(K.REORDERED, record, f"seq {record.seq} after seq {last.seq}"))
            return False
        if record.seq > last.seq + 1:
            if not boundary:
                out.append(self._missing(last.seq + 1, record.seq - 1))
            return True
        if record.prev != last.hash():
            if not self.last_valid_sig:
                out.append(
                    self._v(
                        K.RECORD_HASH_MISMATCH,
                        last,
                        "record was altered: its hash differs "
                        f"from the one seq {record.seq} commits to",
                        seq=last.seq,
                    )
                )
            else:
                out.append(
                    self._v(
                        K.BROKEN_PREV, record, f"prev does not match the hash of seq {last.seq}"
                    )
                )
        return True

    def _missing(self, first: int, last: int) -> Violation:
        what = f"seq {first}" if first == last else f"seqs {first}..{last} ({last - first + 1})"
        return Violation(K.MISSING_SEQ, self.device, first, None, f"{what} missing from the chain")

    def _check_time(self, record: Record, out: list[Violation]) -> None:
        prev = self.last_time
        self.last_time = record
        if prev is None:
            return
        if record.time.utc < prev.time.utc:
            out.append(
                self._v(
                    K.TIME_BACKWARDS,
                    record,
                    f"time {record.time.utc} is before {prev.time.utc} of seq {prev.seq}",
                )
            )
        elif record.time.boot_id == prev.time.boot_id and record.time.mono_ns < prev.time.mono_ns:
            out.append(
                self._v(K.TIME_BACKWARDS, record, "monotonic clock went backwards within one boot")
            )

    def _check_session(
        self, record: Record, body: Body | None, boundary: bool, out: list[Violation]
    ) -> None:
        kind = record.type
        if kind in DEVICE_LEVEL_TYPES:
            return
        s = self.session
        if kind == RecordType.SESSION_OPEN:
            if s is not None and not s.closed:
                out.append(
                    self._v(
                        K.SESSION_STRUCTURE,
                        record,
                        f"session {s.id} (opened at seq {s.open_seq}) was never closed",
                    )
                )
            first = self.session_ids.setdefault(record.session, record.seq)
            if first != record.seq:
                out.append(
                    self._v(
                        K.DUPLICATE_SESSION,
                        record,
                        f"session id {record.session} was already opened at seq {first}",
                    )
                )
            self.session = _Session(record.session, record.seq)
            self.sessions += 1
            return
        if s is None or s.closed or s.id != record.session:
            if boundary and s is None:
                s = self.session = _Session(record.session, record.seq, complete=False)
            else:
                out.append(
                    self._v(
                        K.SESSION_STRUCTURE,
                        record,
                        f"{kind} record of session {record.session} outside an open session",
                    )
                )
                return
        if kind == RecordType.GAP:
            s.gaps += 1
            if isinstance(body, GapBody):
                s.pending_gaps.append(body)
        elif kind == RecordType.SEGMENT:
            self.segments += 1
            s.segments += 1
            if isinstance(body, SegmentBody):
                self._check_segment(record, body, s, out)
            else:
                s.complete = False  # its counts can no longer be checked
        elif kind == RecordType.SESSION_CLOSE:
            s.closed = True
            if isinstance(body, SessionCloseBody) and s.complete:
                self._check_close(record, body, s, out)

    def _check_segment(
        self, record: Record, seg: SegmentBody, s: _Session, out: list[Violation]
    ) -> None:
        s.frames += seg.frames
        s.dropped_frames += seg.dropped_frames
        s.duration_us += seg.duration_us
        last = s.last
        if last is not None:
            hole_s = (seg.utc_start - last.utc_end).total_seconds()
            jump_us = seg.media_start_us - last.media_end_us
            broken = (
                seg.index != last.index + 1
                or hole_s > GAP_TOLERANCE_S
                or abs(jump_us) > MEDIA_TOLERANCE_US
            )
            what = (
                f"segment {seg.index} follows segment {last.index} after {hole_s:.3f} s wall "
                f"clock / {jump_us / 1e6:.3f} s media time"
            )
            if broken and not s.pending_gaps:
                out.append(self._v(K.UNEXPLAINED_GAP, record, f"{what} with no gap record"))
            elif broken and hole_s > GAP_TOLERANCE_S:
                missing = uncovered_seconds(s.pending_gaps, last.utc_end, seg.utc_start)
                if missing > 0:
                    out.append(
                        self._v(
                            K.UNEXPLAINED_GAP,
                            record,
                            f"{what}: the gap record(s) before it leave {missing:.3f} s of the "
                            "hole uncovered",
                        )
                    )
        s.last = seg
        s.pending_gaps = []

    def _check_close(
        self, record: Record, close: SessionCloseBody, s: _Session, out: list[Violation]
    ) -> None:
        pairs = (
            ("segments", close.segments, s.segments),
            ("gaps", close.gaps, s.gaps),
            ("frames", close.frames, s.frames),
            ("dropped_frames", close.dropped_frames, s.dropped_frames),
            ("duration_us", close.duration_us, s.duration_us),
        )
        wrong = [
            f"{name} {said} (records show {seen})" for name, said, seen in pairs if said != seen
        ]
        if wrong:
            out.append(
                self._v(
                    K.SESSION_CLOSE_MISMATCH,
                    record,
                    f"session-close of session {s.id} says " + ", ".join(wrong),
                )
            )

    def open_session(self) -> str | None:
        """The id of a session still open after the last record fed, if any."""
        s = self.session
        return s.id if s is not None and not s.closed else None
