"""Record-by-record checks of one device's chain, usable offline and by a live receiver.

:class:`ChainTracker` is fed a device's records in ``seq`` order and returns, for each, every
violation it shows: signature, key, device, ``seq`` continuity, ``prev`` link, time order, session
structure and unexplained gaps between segments. It never raises on bad evidence; it reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from evidence.errors import RecordFormatError
from evidence.keys import KeyRing
from evidence.records import GENESIS_PREV, Record, RecordType, parse_utc
from evidence.violations import Violation
from evidence.violations import ViolationKind as K

# Wall-clock hole between consecutive segments that still counts as continuous.
GAP_TOLERANCE_S = 2.0
# Media-timeline discontinuity between consecutive segments that still counts as continuous.
MEDIA_TOLERANCE_US = 200_000
DEVICE_LEVEL_TYPES = frozenset({RecordType.CHECK, RecordType.CLOCK})


@dataclass
class _Session:
    id: str
    open_seq: int
    segments: int = 0
    last_index: int | None = None
    last_end_utc: datetime | None = None
    last_end_us: int | None = None
    gap_since_segment: bool = False
    closed: bool = False


@dataclass
class ChainTracker:
    """Checks one device's records as they come, in ``seq`` order.

    ``keyring`` holds the keys trusted for this device. ``start_seq`` is the first seq expected
    (0 for a whole chain). Set ``boundary=True`` before feeding the first record of a declared
    excerpt range, so its ``prev`` and any preceding gap are not held against it.
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
        self._check_session(record, boundary, out)
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

    def _check_session(self, record: Record, boundary: bool, out: list[Violation]) -> None:
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
            self.session = _Session(record.session, record.seq)
            self.sessions += 1
            return
        if s is None or s.closed or s.id != record.session:
            if boundary and s is None:
                s = self.session = _Session(record.session, record.seq)
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
            s.gap_since_segment = True
        elif kind == RecordType.SEGMENT:
            self._check_segment(record, s, out)
        elif kind == RecordType.SESSION_CLOSE:
            s.closed = True

    def _check_segment(self, record: Record, s: _Session, out: list[Violation]) -> None:
        self.segments += 1
        s.segments += 1
        body = record.body
        try:
            index = _int(body, "index")
            start_us, end_us = _int(body, "media_start_us"), _int(body, "media_end_us")
            start_utc, end_utc = parse_utc(body["utc_start"]), parse_utc(body["utc_end"])
        except (KeyError, RecordFormatError) as exc:
            out.append(self._v(K.MALFORMED_BODY, record, f"segment body: {exc}"))
            return
        if s.last_index is not None and s.last_end_utc is not None and s.last_end_us is not None:
            hole_s = (start_utc - s.last_end_utc).total_seconds()
            jump_us = start_us - s.last_end_us
            broken = (
                index != s.last_index + 1
                or hole_s > GAP_TOLERANCE_S
                or abs(jump_us) > MEDIA_TOLERANCE_US
            )
            if broken and not s.gap_since_segment:
                out.append(
                    self._v(
                        K.UNEXPLAINED_GAP,
                        record,
                        f"segment {index} follows segment "
                        f"{s.last_index} after {hole_s:.3f} s wall clock / "
                        f"{jump_us / 1e6:.3f} s media time with no gap record",
                    )
                )
        s.last_index, s.last_end_utc, s.last_end_us = index, end_utc, end_us
        s.gap_since_segment = False

    def open_session(self) -> str | None:
        """The id of a session still open after the last record fed, if any."""
        s = self.session
        return s.id if s is not None and not s.closed else None


def _int(body: dict[str, object], name: str) -> int:
    value = body[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise RecordFormatError(f"{name} is not an integer")
    return value
