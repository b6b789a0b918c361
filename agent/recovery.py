"""Crash and power-loss recovery of the spool, run on start before anything else.

What a crash can leave behind, and what we do:

- ``state/parts/X.part`` with no record: the interrupted segment. It is trimmed to whole 188-byte
  MPEG-TS packets (a cut-off TS still plays), its frames and duration are read back with PyAV,
  and it is sealed with ``recovered: true``.
- an *encrypted* ``X.part`` (the spool encrypts to the receiver's key): the device cannot
  decrypt it, so it keeps the crash-safe prefix (header + whole authenticated-length frames,
  :func:`evidence.encryption.readable_prefix_bytes`), takes frames and media time from the
  part's progress lines (``X.part.progress``, written at every flush) and seals it with
  ``recovered: true``, ``media: null`` and ``stored`` = the digest of that prefix. The receiver
  or verifier decrypts it in recovered-prefix mode, which reports it as truncated by the crash.
  A plaintext part found while encryption is configured is encrypted when sealed.
- ``X.part`` whose ``segment`` record already exists (crash between record and rename): the
  digest is checked and the rename completed.
- ``state/session.json`` of a session that was never closed: a ``gap`` record (cause
  ``power-loss`` when the boot id changed since the session opened, else ``crash``) and a
  ``session-close`` with reason ``crash-recovery``. The gap follows the recovered segment in the
  chain and describes the lost interval: from the end of the last sealed media (the recovered
  segment's end, else the last sealed segment's, else the session's opening) to the restart,
  never empty. The session-close counts are re-derived from the session's records (the
  records are the truth; ``session.json`` may lag them by one seal).
- a recovered segment's ``video``/``audio`` parameters come from what the part itself says
  (plaintext: PyAV), completed from the device's newest sealed segment, or from the
  ``media_params`` the caller passes (the capture configuration); §3 requires them.

:func:`seal_orphan_parts` does the same for the parts a full card left unsealed during a
session that is still open, so they are sealed in it before its gap and close.

Failure posture: recovery never deletes media (an empty part holds no media and is removed).
A part that cannot be read is sealed as it is, with zero frames, rather than dropped; only a
failure to write the spool itself raises (:class:`~agent.errors.RecoveryError`), since the
agent must not start recording on a chain it cannot extend.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.errors import RecoveryError, SealError
from agent.media.base import SegmentStats
from agent.spool import (
    PART_SUFFIX,
    RecordingSpool,
    SessionState,
    parse_segment_file_name,
    read_progress,
    remove_progress,
)
from evidence import layout
from evidence.bodies import GapBody, SegmentBody
from evidence.encryption import HEADER_SIZE_BYTES, is_encrypted_file, readable_prefix_bytes
from evidence.errors import RecordFormatError
from evidence.fsutil import fsync_dir
from evidence.media import digest_file
from evidence.records import Record, RecordType, format_utc, parse_utc

log = logging.getLogger(__name__)

TS_PACKET_BYTES = 188
# How far back to look for a sealed segment whose video/audio parameters a recovered one reuses.
PARAMS_LOOKBACK_RECORDS = 500
# A crash gap is never empty: when the restart clock is not after the last media end, the gap
# gets this minimal length and its detail says why.
MIN_GAP = timedelta(microseconds=1)


@dataclass(frozen=True)
class MediaParams:
    """Video and audio parameters for a recovered segment's body (§3)."""

    video: dict[str, Any]
    audio: dict[str, Any] | None


@dataclass(frozen=True)
class TsProbe:
    frames: int
    first_pts_us: int | None
    duration_us: int
    video: dict[str, Any]
    audio: dict[str, Any] | None


@dataclass
class RecoveryResult:
    sessions_closed: list[str] = field(default_factory=list)
    recovered_segments: list[Record] = field(default_factory=list)
    completed_renames: list[str] = field(default_factory=list)
    gaps: list[Record] = field(default_factory=list)
    trimmed_bytes: int = 0

    @property
    def anything(self) -> bool:
        return bool(self.sessions_closed or self.recovered_segments or self.completed_renames)


def trim_to_packets(path: Path) -> int:
    """Cut a partial trailing TS packet; returns the bytes removed."""
    size = path.stat().st_size
    keep = size - size % TS_PACKET_BYTES
    if keep != size:
        with path.open("rb+") as fh:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
    return size - keep


def probe_ts(path: Path) -> TsProbe:
    """Count video frames and measure the media span of a (possibly cut-off) TS file."""
    import av

    video: dict[str, Any] = {"codec": "h264"}
    audio: dict[str, Any] | None = None
    frames = 0
    first: int | None = None
    last_end: int | None = None
    try:
        with av.open(str(path), format="mpegts") as container:
            if not container.streams.video:
                return TsProbe(0, None, 0, video, None)
            vstream = container.streams.video[0]
            ctx = vstream.codec_context
            rate = vstream.average_rate or vstream.guessed_rate
            video = {
                "codec": ctx.name,
                "width": ctx.width,
                "height": ctx.height,
                "fps": round(float(rate)) if rate else None,
            }
            if container.streams.audio:
                actx = container.streams.audio[0].codec_context
                audio = {
                    "codec": actx.name,
                    "sample_rate": actx.sample_rate,
                    "channels": actx.channels,
                }
            tb = vstream.time_base
            frame_us = int(1e6 / float(rate)) if rate else 0
            for packet in container.demux(vstream):
                if packet.pts is None or tb is None:
                    continue
                frames += 1
                start = int(packet.pts * tb * 1_000_000)
                dur = int(packet.duration * tb * 1_000_000) if packet.duration else frame_us
                first = start if first is None else min(first, start)
                end = start + dur
                last_end = end if last_end is None else max(last_end, end)
    except (av.error.FFmpegError, OSError) as exc:
        log.warning("recovered part %s only partly readable: %s", path, exc)
    duration = (last_end - first) if first is not None and last_end is not None else 0
    return TsProbe(frames, first, duration, video, audio)


def _session_records(spool: RecordingSpool, session: str) -> list[Record]:
    """Records of ``session``, read backwards from the head until its session-open."""
    found: list[Record] = []
    for path in sorted(layout.iter_record_files(spool.root, spool.device_id), reverse=True):
        try:
            record = Record.load(path)
        except Exception:
            continue
        if record.session == session:
            found.append(record)
            if record.type == RecordType.SESSION_OPEN:
                break
    found.reverse()
    return found


def recover(spool: RecordingSpool, *, media_params: MediaParams | None = None) -> RecoveryResult:
    """Bring the spool back to a consistent, closed state after a crash or power loss.

    ``media_params``: the capture configuration's video/audio parameters, used for a recovered
    segment when neither the part nor an earlier sealed segment gives them.
    """
    result = RecoveryResult()
    known = _latest_params(spool) or media_params
    try:
        state = spool.load_session()
    except Exception as exc:
        log.error("session state unreadable, closing from records only: %s", exc)
        state = None
    parts = sorted(spool.parts_dir.glob("*" + PART_SUFFIX))
    sessions: dict[str, list[tuple[int, Path]]] = {}
    for part in parts:
        parsed = parse_segment_file_name(part.name)
        if parsed is None:
            log.warning("leaving unrecognised file %s alone", part)
            continue
        sessions.setdefault(parsed[0], []).append((parsed[1], part))
    if state is not None:
        sessions.setdefault(state.session, [])
    for session, session_parts in sessions.items():
        st = state if state is not None and state.session == session else None
        try:
            _recover_session(spool, session, sorted(session_parts), st, result, known)
        except (OSError, SealError) as exc:
            raise RecoveryError(spool.parts_dir, f"session {session}: {exc}") from exc
    if state is not None:
        spool.clear_session()
    if result.anything:
        log.warning(
            "crash recovery: closed %s, recovered %d segment(s), trimmed %d bytes",
            result.sessions_closed,
            len(result.recovered_segments),
            result.trimmed_bytes,
        )
    return result


def _recover_session(
    spool: RecordingSpool,
    session: str,
    parts: list[tuple[int, Path]],
    state: SessionState | None,
    result: RecoveryResult,
    known: MediaParams | None,
) -> None:
    records = _session_records(spool, session)
    opened = any(r.type == RecordType.SESSION_OPEN for r in records)
    closed = any(r.type == RecordType.SESSION_CLOSE for r in records)
    by_file = {r.body.get("file"): r for r in records if r.type == RecordType.SEGMENT}
    state = _merge_state(state, _state_from_records(session, records, spool))
    for index, part in parts:
        name = part.name[: -len(PART_SUFFIX)]
        existing = by_file.get(name)
        if existing is not None:
            _complete_rename(spool, part, name, existing, result)
            continue
        if not opened or closed:
            log.error(
                "part %s belongs to no open session; sealing it would break the chain; "
                "left in place",
                part,
            )
            continue
        _seal_recovered(spool, part, session, index, state, result, known)
    if not opened or closed:
        return
    gap = spool.append(RecordType.GAP, session, _crash_gap(spool, state, result).to_dict())
    result.gaps.append(gap)
    state.gaps += 1
    spool.append(RecordType.SESSION_CLOSE, session, state.close_body("crash-recovery"))
    result.sessions_closed.append(session)


def _crash_gap(spool: RecordingSpool, state: SessionState, result: RecoveryResult) -> GapBody:
    """The lost interval: from the end of the last sealed media to the restart, never empty."""
    start = parse_utc(state.last_utc_end) if state.last_utc_end else parse_utc(state.opened_utc)
    now = spool.clock.utc_now()
    power_loss = state.boot_id != spool.clock.boot_id
    detail = (
        f"agent restarted after {'a power loss (new boot)' if power_loss else 'a crash'}; "
        f"{len(result.recovered_segments)} interrupted segment(s) sealed as recovered; "
        "media from the end of the last sealed segment to the restart is lost"
    )
    end = now
    if end < start + MIN_GAP:
        end = start + MIN_GAP
        detail += f"; the restart clock reading {format_utc(now)} is not after that media end"
    cause = "power-loss" if power_loss else "crash"
    return GapBody(cause, start, end, False, detail)


def _merge_state(saved: SessionState | None, derived: SessionState) -> SessionState:
    """``session.json`` for what only it knows, the records for every count."""
    if saved is None:
        return derived
    for name in ("segments", "frames", "dropped_frames", "duration_us", "gaps", "next_index"):
        setattr(saved, name, getattr(derived, name))
    if derived.last_utc_end is not None and (
        saved.last_utc_end is None or derived.last_utc_end > saved.last_utc_end
    ):
        saved.last_utc_end = derived.last_utc_end
        saved.last_media_end_us = derived.last_media_end_us
    return saved


def _state_from_records(session: str, records: list[Record], spool: RecordingSpool) -> SessionState:
    opened_utc = records[0].time.utc if records else format_utc(spool.clock.utc_now())
    boot = records[-1].time.boot_id if records else ""
    state = SessionState(session=session, boot_id=boot, opened_utc=opened_utc)
    for r in records:
        try:
            body = r.typed_body()
        except RecordFormatError as exc:
            log.error("record seq %d of session %s unreadable body: %s", r.seq, session, exc)
            continue
        if isinstance(body, SegmentBody):
            state.segments += 1
            state.frames += body.frames
            state.dropped_frames += body.dropped_frames
            state.duration_us += body.duration_us
            state.last_media_end_us = body.media_end_us
            state.last_utc_end = format_utc(body.utc_end)
            state.next_index = body.index + 1
        elif isinstance(body, GapBody):
            state.gaps += 1
    return state


def _latest_params(spool: RecordingSpool) -> MediaParams | None:
    """Video/audio parameters of the device's newest sealed segment that has them all."""
    files = sorted(layout.iter_record_files(spool.root, spool.device_id), reverse=True)
    for path in files[:PARAMS_LOOKBACK_RECORDS]:
        try:
            record = Record.load(path)
            if record.type != RecordType.SEGMENT:
                continue
            body = record.typed_body()
        except RecordFormatError:
            continue
        if isinstance(body, SegmentBody) and None not in (
            body.video.width,
            body.video.height,
            body.video.fps,
        ):
            audio = body.audio.to_dict() if body.audio is not None else None
            return MediaParams(body.video.to_dict(), audio)
    return None


def _complete_params(probe: TsProbe, known: MediaParams | None) -> tuple[dict[str, Any], Any]:
    """The probe's parameters, each missing one taken from ``known`` (else null)."""
    video = {"codec": "h264", "width": None, "height": None, "fps": None}
    video.update({k: v for k, v in (known.video if known else {}).items() if k in video and v})
    video.update({k: v for k, v in probe.video.items() if k in video and v})
    if probe.audio is None:
        return video, None
    audio = {"codec": "aac", "sample_rate": None, "channels": None}
    template = known.audio if known is not None and known.audio is not None else {}
    audio.update({k: v for k, v in template.items() if k in audio and v})
    audio.update({k: v for k, v in probe.audio.items() if k in audio and v})
    return video, audio


def _complete_rename(
    spool: RecordingSpool, part: Path, name: str, record: Record, result: RecoveryResult
) -> None:
    final = layout.media_path(spool.root, spool.device_id, name)
    want = record.body.get("stored") or record.body.get("media") or {}
    digest = digest_file(part)
    if digest.sha256 != want.get("sha256"):
        log.error("part %s does not match its record seq %d; left in place", part, record.seq)
        return
    if final.exists():
        log.error("%s exists beside its part %s; left both in place", final, part)
        return
    os.replace(part, final)
    fsync_dir(final.parent)
    fsync_dir(part.parent)
    remove_progress(part)
    result.completed_renames.append(name)
    log.warning("completed the interrupted rename of %s (seq %d)", name, record.seq)


def trim_to_frames(path: Path) -> int:
    """Cut an encrypted part back to its header and whole frames; returns the bytes removed."""
    size = path.stat().st_size
    keep = readable_prefix_bytes(path)
    if keep != size:
        with path.open("rb+") as fh:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
    return size - keep


def probe_encrypted(part: Path) -> tuple[TsProbe, datetime | None]:
    """What the part's progress lines say about the media in its (trimmed) encrypted prefix,
    and the spool clock's time of the last flush they cover (None without any line)."""
    progress = read_progress(part, part.stat().st_size) or {}
    probe = TsProbe(
        frames=int(progress.get("frames") or 0),
        first_pts_us=None,
        duration_us=int(progress.get("duration_us") or 0),
        video={"codec": "h264"},
        audio={"codec": "aac"} if progress.get("audio") else None,
    )
    try:
        flushed = parse_utc(progress["utc"]) if progress.get("utc") else None
    except ValueError:
        flushed = None
    return probe, flushed


def _seal_recovered(
    spool: RecordingSpool,
    part: Path,
    session: str,
    index: int,
    state: SessionState,
    result: RecoveryResult,
    known: MediaParams | None,
) -> Record | None:
    encrypted = part.stat().st_size > 0 and is_encrypted_file(part)
    if encrypted:
        result.trimmed_bytes += trim_to_frames(part)
    else:
        result.trimmed_bytes += trim_to_packets(part)
    size = part.stat().st_size
    if size == 0 or (encrypted and size <= HEADER_SIZE_BYTES):
        part.unlink()  # nothing (or only an encryption header) was written: no media to keep
        fsync_dir(part.parent)
        remove_progress(part)
        log.warning("removed part %s holding no media", part)
        return None
    if encrypted:
        probe, last_write = probe_encrypted(part)
    else:
        probe, last_write = probe_ts(part), None
    video, audio = _complete_params(probe, known)
    first_of_recording = index == state.recording_index0 or state.last_media_end_us is None
    media_start = 0 if first_of_recording else int(state.last_media_end_us or 0)
    if state.last_utc_end and not first_of_recording:
        utc_start = parse_utc(state.last_utc_end)
    else:
        # No sealed neighbour: the file's last write is the newest media, within the fsync cadence
        # (an encrypted part's progress says when, on the spool's own clock).
        if last_write is None:
            last_write = datetime.fromtimestamp(part.stat().st_mtime, UTC)
        utc_start = last_write - timedelta(microseconds=probe.duration_us)
    stats = SegmentStats(
        index=index,
        media_start_us=media_start,
        media_end_us=media_start + probe.duration_us,
        utc_start=utc_start,
        utc_end=utc_start + timedelta(microseconds=probe.duration_us),
        frames=probe.frames,
        dropped_frames=0,
        pre_event_us=state.pre_event_us if first_of_recording else 0,
        video=video,
        audio=audio,
    )
    record = spool.seal(part, session, index, stats, recovered=True)
    state.segments += 1
    state.frames += stats.frames
    state.duration_us += probe.duration_us
    state.last_media_end_us = stats.media_end_us
    state.last_utc_end = format_utc(stats.utc_end)
    result.recovered_segments.append(record)
    return record


def seal_orphan_parts(spool: RecordingSpool, state: SessionState) -> list[Record]:
    """Seal, as recovered, the parts of the open session ``state`` that the recording left
    unsealed (a full card cut them: an encrypted part without its plaintext digest, or a seal
    that did not fit), so they are sealed in the session they belong to, before its gap and its
    close, instead of waiting for a restart that would find the session closed.

    Call only while no recording writes (after ``stop_recording``). A part that still cannot
    be sealed stays for crash recovery and is logged.
    """
    sealed = {
        r.body.get("file") for r in _session_records(spool, state.session)
        if r.type == RecordType.SEGMENT
    }  # fmt: skip
    result = RecoveryResult()
    known = _latest_params(spool)
    for part in sorted(spool.parts_dir.glob(f"{state.session}-*{PART_SUFFIX}")):
        parsed = parse_segment_file_name(part.name)
        if parsed is None or parsed[0] != state.session:
            continue
        if part.name[: -len(PART_SUFFIX)] in sealed:
            continue  # its record exists: only the rename is missing (crash recovery's job)
        try:
            _seal_recovered(spool, part, state.session, parsed[1], state, result, known)
        except (OSError, SealError) as exc:
            log.error("part %s still not sealed (left for recovery): %s", part.name, exc)
    if result.recovered_segments:
        spool.save_session(state)
    return result.recovered_segments
