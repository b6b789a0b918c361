"""Typed record bodies (§3 of docs/evidence-format.md), parsed and validated once.

``parse_body(type, body)`` turns a record's ``body`` object into a frozen dataclass of its type
(:class:`SessionOpenBody`, :class:`SegmentBody`, :class:`MarkerBody`, :class:`GapBody`,
:class:`CheckBody`, :class:`SessionCloseBody`; :class:`OpaqueBody` for ``clock`` and for types
this version does not know). Each body's ``to_dict()`` gives the JSON object back; bodies may
carry members this version does not know, which are kept in ``to_dict()`` of the raw record but
ignored here (forward compatibility inside format version 1).

Failure posture: parsing raises :class:`~evidence.errors.BodyError` naming the member and the
rule it breaks, or :class:`~evidence.errors.InvalidTimeError` for a time that is malformed or
impossible; it never returns a partly checked body. Every integer is range-checked, every
string length-bounded, every name matched in full.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from evidence.errors import BodyError, InvalidTimeError, RecordFormatError
from evidence.media import FileDigest
from evidence.values import (
    MAX_SAFE_INT,
    RECIPIENT_RE,
    format_utc,
    is_safe_int,
    is_safe_name,
    parse_utc,
    require_text,
    require_token,
)

SCHEME_ENCRYPTION = "x25519-chacha20poly1305-stream/2"
MAX_OFFICERS = 64
MAX_DIMENSION = 65_535
MAX_FPS = 1_000
MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 32
MAX_DIGEST_CHUNK_BYTES = 64 << 20


# -- member readers: each raises BodyError naming the member ---------------------------------
def _obj(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BodyError(f"{where} is not an object")
    return value


def _member(d: dict[str, Any], name: str, where: str) -> Any:
    if name not in d:
        raise BodyError(f"{where} lacks required member {name!r}")
    return d[name]


def _int(d: dict[str, Any], name: str, where: str, *, lo: int = 0, hi: int = MAX_SAFE_INT) -> int:
    value = _member(d, name, where)
    if not is_safe_int(value, lo, hi):
        raise BodyError(f"{where}.{name} is not an integer in {lo}..{hi}")
    return int(value)


def _opt_int(d: dict[str, Any], name: str, where: str, *, lo: int = 0, hi: int) -> int | None:
    value = _member(d, name, where)
    if value is None:
        return None
    if not is_safe_int(value, lo, hi):
        raise BodyError(f"{where}.{name} is not null or an integer in {lo}..{hi}")
    return int(value)


def _bool(d: dict[str, Any], name: str, where: str) -> bool:
    value = _member(d, name, where)
    if not isinstance(value, bool):
        raise BodyError(f"{where}.{name} is not a boolean")
    return value


def _text(d: dict[str, Any], name: str, where: str) -> str:
    try:
        return require_text(_member(d, name, where), f"{where}.{name}")
    except BodyError:
        raise
    except RecordFormatError as exc:
        raise BodyError(exc.reason) from exc


def _token(d: dict[str, Any], name: str, where: str) -> str:
    try:
        return require_token(_member(d, name, where), f"{where}.{name}")
    except BodyError:
        raise
    except RecordFormatError as exc:
        raise BodyError(exc.reason) from exc


def _time(d: dict[str, Any], name: str, where: str) -> datetime:
    value = _member(d, name, where)
    try:
        return parse_utc(value)
    except InvalidTimeError as exc:
        raise InvalidTimeError(f"{where}.{name}: {exc.reason}") from exc


def _digest(value: object, where: str) -> FileDigest:
    try:
        digest = FileDigest.from_dict(value)
    except RecordFormatError as exc:
        raise BodyError(f"{where}: {exc.reason}") from exc
    if digest.chunk_size > MAX_DIGEST_CHUNK_BYTES:
        # a verifier reads whole chunks at a time: bound what a record can make it allocate
        raise BodyError(f"{where}.chunk_size exceeds {MAX_DIGEST_CHUNK_BYTES} bytes")
    return digest


# -- session-open ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Assignment:
    case: str | None
    officers: tuple[str, ...]
    place: str
    reason: str
    target: str
    stage: str

    @classmethod
    def parse(cls, value: object, where: str = "assignment") -> Assignment:
        d = _obj(value, where)
        case = _member(d, "case", where)
        if case is not None:
            case = _text(d, "case", where)
        officers = _member(d, "officers", where)
        if not isinstance(officers, list) or len(officers) > MAX_OFFICERS:
            raise BodyError(f"{where}.officers is not a list of at most {MAX_OFFICERS} names")
        names = tuple(require_text(o, f"{where}.officers[]", max_chars=256) for o in officers)
        return cls(
            case,
            names,
            *(_text(d, n, where) for n in ("place", "reason", "target", "stage")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "officers": list(self.officers),
            "place": self.place,
            "reason": self.reason,
            "target": self.target,
            "stage": self.stage,
        }


@dataclass(frozen=True)
class Preamble:
    text: str
    lang: str
    voice: str

    @classmethod
    def parse(cls, value: object, where: str = "preamble") -> Preamble:
        d = _obj(value, where)
        return cls(_text(d, "text", where), _text(d, "lang", where), _text(d, "voice", where))

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "lang": self.lang, "voice": self.voice}


@dataclass(frozen=True)
class SessionOpenBody:
    assignment: Assignment
    checks: dict[str, Any]  # the Art. 11 report: an object whose shape the device defines
    preamble: Preamble
    pre_event_us: int

    @classmethod
    def parse(cls, d: dict[str, Any]) -> SessionOpenBody:
        w = "session-open body"
        return cls(
            Assignment.parse(_member(d, "assignment", w), f"{w}.assignment"),
            _obj(_member(d, "checks", w), f"{w}.checks"),
            Preamble.parse(_member(d, "preamble", w), f"{w}.preamble"),
            _int(d, "pre_event_us", w),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "assignment": self.assignment.to_dict(),
            "checks": self.checks,
            "preamble": self.preamble.to_dict(),
            "pre_event_us": self.pre_event_us,
        }


# -- segment -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoParams:
    codec: str
    width: int | None  # null only in a recovered segment whose parameters could not be read
    height: int | None
    fps: int | None

    @classmethod
    def parse(cls, value: object, where: str, *, recovered: bool) -> VideoParams:
        d = _obj(value, where)
        out = cls(
            _token(d, "codec", where),
            _opt_int(d, "width", where, lo=1, hi=MAX_DIMENSION),
            _opt_int(d, "height", where, lo=1, hi=MAX_DIMENSION),
            _opt_int(d, "fps", where, lo=1, hi=MAX_FPS),
        )
        if not recovered and None in (out.width, out.height, out.fps):
            raise BodyError(f"{where}: width, height and fps are required (not recovered)")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"codec": self.codec, "width": self.width, "height": self.height, "fps": self.fps}


@dataclass(frozen=True)
class AudioParams:
    codec: str
    sample_rate: int | None  # null only in a recovered segment whose parameters are unknown
    channels: int | None

    @classmethod
    def parse(cls, value: object, where: str, *, recovered: bool) -> AudioParams:
        d = _obj(value, where)
        out = cls(
            _token(d, "codec", where),
            _opt_int(d, "sample_rate", where, lo=1, hi=MAX_SAMPLE_RATE),
            _opt_int(d, "channels", where, lo=1, hi=MAX_CHANNELS),
        )
        if not recovered and None in (out.sample_rate, out.channels):
            raise BodyError(f"{where}: sample_rate and channels are required (not recovered)")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"codec": self.codec, "sample_rate": self.sample_rate, "channels": self.channels}


@dataclass(frozen=True)
class EncryptionInfo:
    scheme: str
    recipient: str  # "x25519:" + 32 lowercase hex digits

    @classmethod
    def parse(cls, value: object, where: str) -> EncryptionInfo:
        d = _obj(value, where)
        scheme = _token(d, "scheme", where)
        recipient = _member(d, "recipient", where)
        if not isinstance(recipient, str) or RECIPIENT_RE.fullmatch(recipient) is None:
            raise BodyError(f"{where}.recipient is not 'x25519:' and 32 lowercase hex digits")
        return cls(scheme, recipient)

    def to_dict(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "recipient": self.recipient}


@dataclass(frozen=True)
class SegmentBody:
    index: int
    file: str
    media: FileDigest | None
    stored: FileDigest | None
    encryption: EncryptionInfo | None
    utc_start: datetime
    utc_end: datetime
    media_start_us: int
    media_end_us: int
    frames: int
    dropped_frames: int
    video: VideoParams
    audio: AudioParams | None
    pre_event_us: int
    recovered: bool

    @classmethod
    def parse(cls, d: dict[str, Any]) -> SegmentBody:
        w = "segment body"
        recovered = _bool(d, "recovered", w)
        name = _member(d, "file", w)
        if not is_safe_name(name):
            raise BodyError(f"{w}.file is not a safe file name ([A-Za-z0-9][A-Za-z0-9._-]*)")
        media_raw, stored_raw = _member(d, "media", w), _member(d, "stored", w)
        enc_raw = _member(d, "encryption", w)
        encryption = None if enc_raw is None else EncryptionInfo.parse(enc_raw, f"{w}.encryption")
        stored = None if stored_raw is None else _digest(stored_raw, f"{w}.stored")
        if (stored is None) != (encryption is None):
            raise BodyError(f"{w}: 'stored' and 'encryption' must both be null or both be set")
        if media_raw is None and not (recovered and encryption is not None):
            raise BodyError(f"{w}: 'media' is null but the segment is not recovered and encrypted")
        media = None if media_raw is None else _digest(media_raw, f"{w}.media")
        audio_raw = _member(d, "audio", w)
        body = cls(
            index=_int(d, "index", w),
            file=name,
            media=media,
            stored=stored,
            encryption=encryption,
            utc_start=_time(d, "utc_start", w),
            utc_end=_time(d, "utc_end", w),
            media_start_us=_int(d, "media_start_us", w, lo=-MAX_SAFE_INT),
            media_end_us=_int(d, "media_end_us", w, lo=-MAX_SAFE_INT),
            frames=_int(d, "frames", w),
            dropped_frames=_int(d, "dropped_frames", w),
            video=VideoParams.parse(_member(d, "video", w), f"{w}.video", recovered=recovered),
            audio=None
            if audio_raw is None
            else AudioParams.parse(audio_raw, f"{w}.audio", recovered=recovered),
            pre_event_us=_int(d, "pre_event_us", w),
            recovered=recovered,
        )
        if body.utc_end < body.utc_start:
            raise BodyError(f"{w}: utc_end is before utc_start")
        if body.media_end_us < body.media_start_us:
            raise BodyError(f"{w}: media_end_us is before media_start_us")
        return body

    @property
    def on_disk(self) -> FileDigest:
        """The digest of the file as stored (``stored`` when encrypted, else ``media``)."""
        digest = self.stored if self.stored is not None else self.media
        assert digest is not None  # parse() guarantees one of them
        return digest

    @property
    def recovered_prefix(self) -> bool:
        """An encrypted segment cut by a crash: only its stored bytes are signed."""
        return self.media is None

    @property
    def duration_us(self) -> int:
        return self.media_end_us - self.media_start_us

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "file": self.file,
            "media": self.media.to_dict() if self.media is not None else None,
            "stored": self.stored.to_dict() if self.stored is not None else None,
            "encryption": self.encryption.to_dict() if self.encryption is not None else None,
            "utc_start": format_utc(self.utc_start),
            "utc_end": format_utc(self.utc_end),
            "media_start_us": self.media_start_us,
            "media_end_us": self.media_end_us,
            "frames": self.frames,
            "dropped_frames": self.dropped_frames,
            "video": self.video.to_dict(),
            "audio": self.audio.to_dict() if self.audio is not None else None,
            "pre_event_us": self.pre_event_us,
            "recovered": self.recovered,
        }


# -- marker, gap, check, session-close --------------------------------------------------------
@dataclass(frozen=True)
class MarkerBody:
    kind: str
    utc: datetime
    media_us: int | None
    note: str

    @classmethod
    def parse(cls, d: dict[str, Any]) -> MarkerBody:
        w = "marker body"
        return cls(
            _token(d, "kind", w),
            _time(d, "utc", w),
            _opt_int(d, "media_us", w, lo=-MAX_SAFE_INT, hi=MAX_SAFE_INT),
            _text(d, "note", w),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "utc": format_utc(self.utc),
            "media_us": self.media_us,
            "note": self.note,
        }


@dataclass(frozen=True)
class GapBody:
    cause: str
    start_utc: datetime
    end_utc: datetime
    spoken_reason: bool
    detail: str

    @classmethod
    def parse(cls, d: dict[str, Any]) -> GapBody:
        w = "gap body"
        body = cls(
            _token(d, "cause", w),
            _time(d, "start_utc", w),
            _time(d, "end_utc", w),
            _bool(d, "spoken_reason", w),
            _text(d, "detail", w),
        )
        if body.end_utc < body.start_utc:
            raise BodyError(f"{w}: end_utc is before start_utc")
        return body

    def to_dict(self) -> dict[str, Any]:
        return {
            "cause": self.cause,
            "start_utc": format_utc(self.start_utc),
            "end_utc": format_utc(self.end_utc),
            "spoken_reason": self.spoken_reason,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class CheckBody:
    checks: dict[str, Any]
    refused: bool

    @classmethod
    def parse(cls, d: dict[str, Any]) -> CheckBody:
        w = "check body"
        return cls(_obj(_member(d, "checks", w), f"{w}.checks"), _bool(d, "refused", w))

    def to_dict(self) -> dict[str, Any]:
        return {"checks": self.checks, "refused": self.refused}


@dataclass(frozen=True)
class SessionCloseBody:
    reason: str
    duration_us: int
    segments: int
    frames: int
    dropped_frames: int
    gaps: int

    @classmethod
    def parse(cls, d: dict[str, Any]) -> SessionCloseBody:
        w = "session-close body"
        return cls(
            _token(d, "reason", w),
            *(
                _int(d, n, w)
                for n in ("duration_us", "segments", "frames", "dropped_frames", "gaps")
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "duration_us": self.duration_us,
            "segments": self.segments,
            "frames": self.frames,
            "dropped_frames": self.dropped_frames,
            "gaps": self.gaps,
        }


@dataclass(frozen=True)
class OpaqueBody:
    """The body of a ``clock`` record or of a type this version does not know."""

    raw: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.raw)


Body = (
    SessionOpenBody | SegmentBody | MarkerBody | GapBody | CheckBody | SessionCloseBody | OpaqueBody
)

_PARSERS: dict[str, Any] = {
    "session-open": SessionOpenBody.parse,
    "segment": SegmentBody.parse,
    "marker": MarkerBody.parse,
    "gap": GapBody.parse,
    "check": CheckBody.parse,
    "session-close": SessionCloseBody.parse,
}


def parse_body(record_type: str, body: object) -> Body:
    """The typed body of a record of ``record_type`` (see the module docstring)."""
    d = _obj(body, "body")
    parser = _PARSERS.get(record_type)
    if parser is None:
        return OpaqueBody(d)
    try:
        result: Body = parser(d)
    except (BodyError, InvalidTimeError):
        raise
    except RecordFormatError as exc:  # a bounded-text rule of evidence.values
        raise BodyError(exc.reason) from exc
    return result
