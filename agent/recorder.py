"""The recorder state machine: buttons -> checks -> preamble -> continuous recording -> close.

States: ``idle`` (ready), ``recording``, ``suspended`` (in a session but not writing: storage
ran out; resumes by itself when space returns). Events come from the buttons, the capture
pipeline (faults, resumes, seals) and the daemon (shutdown) as typed values through one queue,
handled by :meth:`Recorder.step` on the main loop, which also pings the systemd watchdog, plays
the "still recording" cue every ``cue_interval_min`` and watches free storage. Callbacks from
other threads only enqueue.

One owner at a time for the session's records and state: while a recording runs, its
:class:`RecordingSink` on the pipeline's thread writes segment and ``gap`` records (the gap in
``note_resume``, which the pipeline calls with its lock held once the next segment's file is open
and before anything of it can be sealed); between recordings (after ``stop_recording`` returned)
the main loop does. Markers are appended by the main loop through the spool's own lock.

Ordering guarantees the verifier relies on: the ``session-open`` record is appended before the
recording starts; a ``gap`` record precedes the first segment after an interruption;
``session-close`` comes after the final segment, because ``stop_recording`` returns only once it
is sealed.

Failure posture: the recorder never raises into the main loop for a device problem. Failed
checks refuse the recording with a signal, spoken reasons and a signed ``check`` record;
capture faults become signed ``gap`` records and recording resumes by itself; a segment that
cannot be sealed is warned about and stays as a ``.part``, sealed as recovered when the
recording stops (a storage suspension or the session's end) or else by crash recovery. A full
card (a storage fault) suspends at once; the spool's reserve (``agent.spool``) keeps room for
the seal, gap and close records, and is taken back before recording resumes.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import BinaryIO

from agent.checks import (
    SPOKEN_ZH,
    CheckInputs,
    CheckReport,
    ClockSyncState,
    Outcome,
    check_encryption,
    recording_minutes,
    run_checks,
)
from agent.clock import Clock
from agent.config import AgentConfig
from agent.errors import SpeechError
from agent.hardware.battery import BatteryGauge
from agent.hardware.controls import ButtonEvent, Controls, Signal
from agent.hardware.storage import StorageGauge
from agent.media.base import CapturePipeline, FaultKind, MediaError, SegmentStats
from agent.notify import Notifier
from agent.preamble import (
    BATTERY_PROMPT,
    REFUSED_PROMPT,
    RESUME_PROMPT,
    Assignment,
    build_preamble,
    load_assignment,
)
from agent.recovery import seal_orphan_parts
from agent.reminders import REMINDER_ZH, ReminderSchedule, load_window
from agent.speaker import Speaker
from agent.spool import RecordingSpool, SessionSink, SessionState, new_session_id
from agent.tts import CUE_TONE, REFUSED_TONE, Speech, Synthesizer
from evidence.markers import MARKERS, GapCause, MarkerKind, next_expected
from evidence.records import Record, RecordType, format_utc, parse_utc

log = logging.getLogger(__name__)

STORAGE_POLL_S = 5.0
STORAGE_POLL_SUSPENDED_S = 1.0
"""While suspended for a full card, look for free space this often: every second waited is
media lost."""
PAUSE_CONFIRM_S = 3.0
PAUSE_ARM_ZH = "再按一次录像键暂停录像。"
PAUSED_ZH = "录像已暂停。按标记键选择中断原因，按录像键继续录像。"
#: what a mark press offers while paused, in order, with what the device says
PAUSE_CAUSES: dict[GapCause, str] = {
    GapCause.WEATHER: "天气",
    GapCause.OBSTRUCTION: "执法受阻",
    GapCause.OTHER: "其他",
}
HISTORY = 256


class State(StrEnum):
    IDLE = "idle"
    RECORDING = "recording"
    SUSPENDED = "suspended"
    PAUSED = "paused"
    """The officer paused (Art. 13: weather, obstruction, other); a signed gap on resume."""


@dataclass
class OpenGap:
    cause: str
    start: datetime
    detail: str


@dataclass
class SessionInfo:
    state: SessionState
    assignment: Assignment
    report: CheckReport
    sink: RecordingSink | None = None
    open_gap: OpenGap | None = None
    """An interruption between recordings (storage suspension); main loop only."""
    recording_origin_utc: datetime | None = None
    last_segment: Record | None = None


@dataclass(frozen=True)
class RecordPressed:
    """Record button pressed (start)."""


@dataclass(frozen=True)
class RecordHeld:
    """Record button held (stop)."""


@dataclass(frozen=True)
class MarkPressed:
    kind: str | None = None
    """None: the marker the session's stage expects next (evidence.markers.next_expected)."""
    note: str = ""


@dataclass(frozen=True)
class ResumeAfterCrash:
    """Start a new session at once: the previous one was cut by a crash."""


@dataclass(frozen=True)
class Wake:
    """Nothing to do but run the loop (e.g. a signal asked it to stop)."""


@dataclass(frozen=True)
class CaptureFaulted:
    kind: FaultKind
    when: datetime
    detail: str


@dataclass(frozen=True)
class CaptureResumed:
    kind: FaultKind
    when: datetime


@dataclass(frozen=True)
class GapRecorded:
    record: Record


@dataclass(frozen=True)
class SegmentSealed:
    record: Record
    stats: SegmentStats


@dataclass(frozen=True)
class SealFailed:
    detail: str


RecorderEvent = (
    RecordPressed
    | RecordHeld
    | MarkPressed
    | ResumeAfterCrash
    | Wake
    | CaptureFaulted
    | CaptureResumed
    | GapRecorded
    | SegmentSealed
    | SealFailed
)


_BUTTON_EVENTS: dict[ButtonEvent, RecorderEvent] = {
    ButtonEvent.RECORD_PRESS: RecordPressed(),
    ButtonEvent.RECORD_HOLD: RecordHeld(),
    ButtonEvent.MARK: MarkPressed(),
    ButtonEvent.MARK_HOLD: MarkPressed(MarkerKind.OBSTRUCTION.value),
}


def append_gap(
    spool: RecordingSpool,
    state: SessionState,
    gap: OpenGap,
    end: datetime,
    *,
    spoken: bool,
    note: str = "",
) -> Record:
    """Write the ``gap`` record for ``gap`` ending at ``end`` and count it in ``state``."""
    record = spool.append(
        RecordType.GAP,
        state.session,
        {
            "cause": gap.cause,
            "start_utc": format_utc(gap.start),
            "end_utc": format_utc(max(end, gap.start)),
            "spoken_reason": spoken,
            "detail": gap.detail
            + note
            + ("; resume prompt asked the officer to state the reason" if spoken else ""),
        },
    )
    state.gaps += 1
    spool.save_session(state)
    return record


class RecordingSink:
    """The sink of one recording: the spool's segments plus the interruptions between them.

    Runs on the pipeline's thread and is, while the recording runs, the only writer of the
    session's records and state (see the module docstring). Implements
    :class:`~agent.media.base.InterruptionSink`.
    """

    def __init__(
        self,
        inner: SessionSink,
        spool: RecordingSpool,
        *,
        spoken_reason: bool,
        events: Callable[[RecorderEvent], None],
        open_gap: OpenGap | None = None,
    ) -> None:
        self.inner = inner
        self.spool = spool
        self.spoken_reason = spoken_reason
        self._events = events
        self.open_gap = open_gap
        """An interruption whose end is not known yet (handed back after stop_recording)."""

    def open_segment(self, index: int) -> BinaryIO:
        return self.inner.open_segment(index)

    def close_segment(self, index: int, stats: SegmentStats) -> None:
        self.inner.close_segment(index, stats)

    def note_fault(self, kind: FaultKind, when: datetime, detail: str) -> None:
        if self.open_gap is None:
            self.open_gap = OpenGap(str(kind), when, detail)

    def note_resume(self, kind: FaultKind, when: datetime) -> None:
        gap, self.open_gap = self.open_gap, None
        if gap is None:
            return
        record = append_gap(self.spool, self.inner.state, gap, when, spoken=self.spoken_reason)
        self._events(GapRecorded(record))


class Recorder:
    """Drives one device. Construct, call :meth:`start`, then :meth:`step` in a loop."""

    def __init__(
        self,
        cfg: AgentConfig,
        *,
        spool: RecordingSpool,
        capture: CapturePipeline,
        clock: Clock,
        battery: BatteryGauge,
        storage: StorageGauge,
        clock_state: Callable[[], ClockSyncState],
        synthesizer: Synthesizer | None = None,
        controls: Controls | None = None,
        notifier: Notifier | None = None,
        session_ids: Callable[[datetime], str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.spool = spool
        self.capture = capture
        self.clock = clock
        self.battery = battery
        self.storage = storage
        self.clock_state = clock_state
        self.synthesizer = synthesizer if cfg.speech.enabled else None
        self.controls = controls
        self.notifier = notifier or Notifier({})
        self.session_ids = session_ids or new_session_id
        self.state = State.IDLE
        self.session: SessionInfo | None = None
        self.last_report: CheckReport | None = None
        self.clock_synced = False
        # Recent history for status and tests; bounded so a long shift does not grow memory.
        self.cues: deque[datetime] = deque(maxlen=HISTORY)
        self.gaps: deque[Record] = deque(maxlen=HISTORY)
        self.markers: deque[Record] = deque(maxlen=HISTORY)
        self.reminders: deque[datetime] = deque(maxlen=HISTORY)
        self._pause_armed_ns: int | None = None
        self._reminders = ReminderSchedule(cfg.recording.reminder_interval_s)
        self.refusals: deque[CheckReport] = deque(maxlen=HISTORY)
        self._events: queue.Queue[RecorderEvent] = queue.Queue()
        self._next_cue_ns: int | None = None
        self._next_storage_poll_ns = 0
        self._low_storage_warned = False
        self._low_battery_warned = False
        self._state_changed = threading.Condition()
        self._resume_speech: Speech | None = None
        self.speaker = Speaker(capture)
        spool.synced = lambda: self.clock_synced
        capture.on_fault = self._on_fault
        capture.on_resume = self._on_resume
        if controls is not None:
            controls.on_event = self._on_button

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        # Synthesize the resume prompt once, now: whether it exists goes into gap records.
        self._resume_speech = self._resume_prompt()
        self.spool.keep_reserve()
        try:
            self.capture.start()
        except MediaError as exc:
            # Keep serving: the checks will say "camera" and refuse, instead of a restart loop.
            log.error("capture did not start: %s", exc)
            self._signal(Signal.FAULT)
        else:
            self._signal(Signal.READY)
        self.notifier.ready(f"ready, device {self.spool.device_id}")

    def shutdown(self) -> None:
        """Clean stop (SIGTERM): seal the open segment, close the session, release devices."""
        self.notifier.stopping()
        if self.state != State.IDLE:
            self.stop_session("shutdown")
        self.speaker.close()
        self.capture.stop()
        self._signal(Signal.OFF)
        if self.controls is not None:
            self.controls.close()

    # --- thread-safe inputs ---------------------------------------------------------------------

    def press_record(self) -> None:
        self._events.put(RecordPressed())

    def hold_record(self) -> None:
        self._events.put(RecordHeld())

    def mark(self, kind: str | None = None, note: str = "") -> None:
        self._events.put(MarkPressed(kind, note))

    def resume_after_crash(self) -> None:
        """Start a new session at once because the previous one was cut by a crash."""
        self._events.put(ResumeAfterCrash())

    def wake(self) -> None:
        self._events.put(Wake())

    def _on_button(self, event: ButtonEvent) -> None:
        self._events.put(_BUTTON_EVENTS[event])

    def wait_state(self, state: State, timeout_s: float) -> bool:
        with self._state_changed:
            return self._state_changed.wait_for(lambda: self.state == state, timeout_s)

    def _set_state(self, state: State) -> None:
        with self._state_changed:
            self.state = state
            self._state_changed.notify_all()
        self.notifier.status(f"{state}")

    # --- main loop ------------------------------------------------------------------------------

    def step(self, timeout_s: float | None = None) -> None:
        """Handle queued events (waiting up to ``timeout_s`` for one), then periodic work."""
        wait = self.cfg.recording.loop_interval_s if timeout_s is None else timeout_s
        try:
            event: RecorderEvent | None = self._events.get(timeout=wait)
        except queue.Empty:
            event = None
        while event is not None:
            self._handle(event)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                event = None
        self._tick()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.step()
            except Exception:
                # The loop must survive its own bugs: a dead loop means no recording.
                log.exception("recorder step failed")

    def _handle(self, event: RecorderEvent) -> None:
        match event:
            case RecordPressed():
                if self.state == State.IDLE:
                    self.start_session()
                elif self.state == State.RECORDING:
                    self._pause_press()
                elif self.state == State.PAUSED:
                    self._resume_from_pause()
                else:
                    log.info("record press while %s: ignored (hold to stop)", self.state)
            case RecordHeld():
                if self.state != State.IDLE:
                    self.stop_session("stopped")
                else:
                    log.info("record hold while idle: ignored")
            case ResumeAfterCrash():
                if self.state == State.IDLE and self.start_session():
                    self._say_resume_prompt()
            case MarkPressed(kind, note):
                if self.state == State.PAUSED:
                    self._choose_pause_cause(kind)
                else:
                    self._add_marker(kind, note)
            case CaptureFaulted(kind):
                self._signal(Signal.FAULT)
                if kind == FaultKind.STORAGE:
                    # a full card: suspend now, before the freed reserve is filled with media
                    self._next_storage_poll_ns = 0
            case CaptureResumed():
                self._signal(Signal.RECORDING)
                self._say_resume_prompt()
            case GapRecorded(record):
                self.gaps.append(record)
            case SegmentSealed(record, stats):
                self._on_sealed(record, stats)
            case SealFailed():
                self._signal(Signal.WARNING)
            case Wake():
                pass

    def _say_resume_prompt(self) -> None:
        if self._resume_speech is not None:
            self.speaker.say(self._resume_speech)

    def _tick(self) -> None:
        # A hung capture thread withholds the ping too: systemd then restarts the agent.
        if self.notifier.watchdog_due() and not self.capture.liveness.stalled():
            self.notifier.ping_watchdog()
        now_ns = self.clock.monotonic_ns()
        if (
            self.state == State.RECORDING
            and self._next_cue_ns is not None
            and now_ns >= self._next_cue_ns
        ):
            self._play_cue()
            interval_ns = int(self.cfg.recording.cue_interval_min * 60e9)
            while self._next_cue_ns <= now_ns:
                self._next_cue_ns += interval_ns
        self._remind_if_due(now_ns)
        if self.state != State.IDLE and now_ns >= self._next_storage_poll_ns:
            self._next_storage_poll_ns = now_ns + int(STORAGE_POLL_S * 1e9)
            self._watch_storage()
            self._watch_battery()
            if self.state == State.SUSPENDED:
                self._next_storage_poll_ns = now_ns + int(STORAGE_POLL_SUSPENDED_S * 1e9)

    # --- checks and session start -----------------------------------------------------------

    def run_checks(self) -> CheckReport:
        report = run_checks(
            CheckInputs(
                cfg=self.cfg.checks,
                full_runtime_min=self.cfg.hardware.battery.full_runtime_min,
                battery=self.battery,
                storage=self.storage,
                capture=self.capture,
                key_path=self.cfg.key_path,
                spool_dir=self.spool.root,
                clock_state=self.clock_state,
                now=self.clock.utc_now,
                storage_reserve_bytes=self.cfg.recording.storage_stop_bytes,
            )
        )
        report = CheckReport(report.utc, [*report.results, check_encryption(self.cfg)])
        self.last_report = report
        clock_result = report.get("clock")
        self.clock_synced = clock_result is not None and clock_result.outcome == Outcome.PASS
        return report

    def start_session(self) -> bool:
        """Checks, then session-open, recording, preamble. False when refused."""
        self.spool.keep_reserve()  # before the storage check, which must not count it
        report = self.run_checks()
        now = self.clock.utc_now()
        session_id = self.session_ids(now)
        if report.outcome == Outcome.FAIL:
            self._refuse(session_id, report)
            return False
        assignment = load_assignment(self.spool.state_dir, self.cfg.assignment)
        texts = build_preamble(assignment, now, self.cfg.speech.languages)
        speeches = self._synthesize_all(texts)
        pre_event_us = int(min(self.cfg.capture.pre_event_s * 1e6, self.capture.media_time_us))
        state = SessionState(
            session=session_id,
            boot_id=self.clock.boot_id,
            opened_utc=format_utc(now),
            pre_event_us=pre_event_us,
        )
        # State first: a crash right after session-open must find the session to close it.
        self.spool.save_session(state)
        voices = {"zh": self.cfg.speech.voice_zh, "en": self.cfg.speech.voice_en}
        self.spool.append(
            RecordType.SESSION_OPEN,
            session_id,
            {
                "assignment": assignment.to_dict(),
                "checks": report.to_dict(),
                "preamble": {
                    "text": "\n".join(text for _, text in texts),
                    "lang": "+".join(lang for lang, _ in texts),
                    "voice": "+".join(voices[lang] for lang, _ in texts),
                },
                "pre_event_us": pre_event_us,
            },
        )
        self.session = SessionInfo(state=state, assignment=assignment, report=report)
        try:
            self._start_recording()
        except MediaError as exc:
            log.error("recording could not start: %s", exc)
            self.spool.append(
                RecordType.SESSION_CLOSE, session_id, state.close_body("capture-failed")
            )
            self.spool.clear_session()
            self.session = None
            self._signal(Signal.FAULT)
            return False
        self._set_state(State.RECORDING)
        self._signal(Signal.RECORDING)
        if report.outcome == Outcome.WARN:
            self._signal(Signal.WARNING)
        self._low_storage_warned = False
        self._low_battery_warned = False
        self._next_cue_ns = self.clock.monotonic_ns() + int(
            self.cfg.recording.cue_interval_min * 60e9
        )
        for speech in speeches:
            self.speaker.say(speech)
        log.info("session %s recording (checks %s)", session_id, report.outcome)
        return True

    def _refuse(self, session_id: str, report: CheckReport) -> None:
        failures = report.failures()
        log.warning("recording refused: %s", "; ".join(f.reason for f in failures))
        try:
            self.spool.append(
                RecordType.CHECK, session_id, {"checks": report.to_dict(), "refused": True}
            )
        except Exception:
            log.exception("cannot record the refused check report")
        self._signal(Signal.REFUSED)
        self.speaker.say(REFUSED_TONE)
        parts = {
            "zh": REFUSED_PROMPT["zh"] + "，".join(SPOKEN_ZH.get(f.name, f.name) for f in failures),
            "en": REFUSED_PROMPT["en"] + "; ".join(f.reason for f in failures),
        }
        for speech in self._synthesize_all(
            [(lang, parts[lang]) for lang in self.cfg.speech.languages]
        ):
            self.speaker.say(speech)
        self.refusals.append(report)

    def _synthesize_all(self, texts: list[tuple[str, str]]) -> list[Speech]:
        out: list[Speech] = []
        if self.synthesizer is None:
            return out
        voices = {"zh": self.cfg.speech.voice_zh, "en": self.cfg.speech.voice_en}
        for lang, text in texts:
            try:
                out.append(self.synthesizer.synthesize(text, voices[lang]))
            except SpeechError as exc:
                log.error("speech unavailable, continuing without it: %s", exc)
        return out

    def _start_recording(self) -> None:
        assert self.session is not None
        st = self.session.state
        st.recording_index0 = st.next_index
        inner = SessionSink(
            self.spool,
            st,
            on_sealed=lambda record, stats: self._events.put(SegmentSealed(record, stats)),
            on_error=lambda exc: self._events.put(SealFailed(str(exc))),
        )
        self.session.sink = RecordingSink(
            inner,
            self.spool,
            spoken_reason=self._resume_speech is not None,
            events=self._events.put,
        )
        self.session.recording_origin_utc = None
        self.capture.start_recording(self.session.sink)

    def _on_sealed(self, record: Record, stats: SegmentStats) -> None:
        session = self.session
        if session is None or session.state.session != record.session:
            return
        session.last_segment = record
        if stats.index == 0:
            session.recording_origin_utc = stats.utc_start

    def _take_open_gap(self, session: SessionInfo) -> OpenGap | None:
        """After stop_recording: the interruption left open by the recording or the suspension."""
        gap = session.sink.open_gap if session.sink is not None else None
        if session.sink is not None:
            session.sink.open_gap = None
        gap = gap or session.open_gap
        session.open_gap = None
        return gap

    # --- stop -----------------------------------------------------------------------------------

    def stop_session(self, reason: str) -> None:
        session = self.session
        if session is None:
            return
        if self.state == State.RECORDING:
            try:
                self.capture.stop_recording()
            except MediaError as exc:
                # The session must still be closed; whatever was written is sealed or a .part.
                log.error("stopping capture failed: %s", exc)
        now = self.clock.utc_now()
        # stop_recording has returned: the pipeline no longer writes; the loop owns the session.
        self._drain_sealed(session)
        self._seal_orphans(session)
        gap = self._take_open_gap(session)
        if gap is not None:
            self._append_gap(
                session,
                gap,
                now,
                spoken=False,
                note="; recording did not resume before the session ended",
            )
        self.spool.append(
            RecordType.SESSION_CLOSE, session.state.session, session.state.close_body(reason)
        )
        self.spool.clear_session()
        self.session = None
        self._next_cue_ns = None
        self._set_state(State.IDLE)
        self._signal(Signal.READY)
        log.info(
            "session %s closed (%s): %d segments, %d frames, %.1f s",
            session.state.session,
            reason,
            session.state.segments,
            session.state.frames,
            session.state.duration_us / 1e6,
        )

    # --- markers and cues -----------------------------------------------------------------------

    def _add_marker(self, kind: str | None, note: str) -> None:
        session = self.session
        if session is None:
            log.info("mark pressed while idle: ignored")
            self._signal(Signal.REFUSED)
            return
        if kind is None:
            made = [
                str(r.body.get("kind")) for r in self.markers if r.session == session.state.session
            ]
            kind = next_expected(session.assignment.stage, made).value
        now = self.clock.utc_now()
        origin = session.recording_origin_utc
        media_us = int((now - origin).total_seconds() * 1e6) if origin is not None else None
        record = self.spool.append(
            RecordType.MARKER,
            session.state.session,
            {
                "kind": kind,
                "utc": format_utc(now),
                "media_us": media_us,
                "note": note,
            },
        )
        self.markers.append(record)
        obstruction = kind == MarkerKind.OBSTRUCTION.value
        self._signal(Signal.OBSTRUCTION if obstruction else Signal.MARK)
        self._confirm_marker(kind)

    def _confirm_marker(self, kind: str) -> None:
        """Speak what was marked, so the officer knows which marker the press made."""
        try:
            info = MARKERS[MarkerKind(kind)]
        except ValueError:
            return  # a kind given by a script that the vocabulary does not know: tone only
        for speech in self._synthesize_all([("zh", f"已标记：{info.label_zh}")]):
            self.speaker.say(speech)

    # --- the officer's pause (Art. 13) -----------------------------------------------------

    def _say_zh(self, text: str) -> None:
        for speech in self._synthesize_all([("zh", text)]):
            self.speaker.say(speech)

    def _pause_press(self) -> None:
        """A record press while recording arms the pause; a second one within
        ``PAUSE_CONFIRM_S`` pauses, so a stray touch never interrupts a recording."""
        now_ns = self.clock.monotonic_ns()
        armed = self._pause_armed_ns
        if armed is None or now_ns - armed > int(PAUSE_CONFIRM_S * 1e9):
            self._pause_armed_ns = now_ns
            self._signal(Signal.WARNING)
            self._say_zh(PAUSE_ARM_ZH)
            return
        self._pause_armed_ns = None
        session = self.session
        assert session is not None
        try:
            self.capture.stop_recording()
        except MediaError as exc:
            log.error("stopping capture for a pause failed: %s", exc)
        self._drain_sealed(session)
        session.open_gap = self._take_open_gap(session) or OpenGap(
            GapCause.MANUAL_PAUSE.value, self.clock.utc_now(), "paused by the officer"
        )
        self._set_state(State.PAUSED)
        self._signal(Signal.WARNING)
        self._say_zh(PAUSED_ZH)
        log.warning("recording paused by the officer")

    def _choose_pause_cause(self, kind: str | None) -> None:
        """While paused, each mark press steps through the causes (spoken); a mark hold names
        obstruction at once."""
        session = self.session
        if session is None or session.open_gap is None:
            return
        gap = session.open_gap
        if kind == MarkerKind.OBSTRUCTION.value:
            cause = GapCause.OBSTRUCTION
        else:
            causes = list(PAUSE_CAUSES)
            current = GapCause(gap.cause) if gap.cause in causes else None
            cause = causes[(causes.index(current) + 1) % len(causes)] if current else causes[0]
        gap.cause = cause.value
        self._signal(Signal.MARK)
        self._say_zh(f"中断原因：{PAUSE_CAUSES[cause]}")

    def _resume_from_pause(self) -> None:
        session = self.session
        assert session is not None
        gap = self._take_open_gap(session)
        # the gap goes first: it must precede the first segment of the resumed recording
        if gap is not None:
            self._append_gap(
                session, gap, self.clock.utc_now(), spoken=self._resume_speech is not None
            )
        self._start_recording()
        self._set_state(State.RECORDING)
        self._signal(Signal.RECORDING)
        self._say_resume_prompt()
        log.warning("recording resumed after the officer's pause")

    def _remind_if_due(self, now_ns: int) -> None:
        """Missed-recording prevention: in the assignment's scheduled window, remind the
        officer (speech + vibration) every ``reminder_interval_s`` while not recording."""
        recording = self.state != State.IDLE
        window = None if recording else load_window(self.spool.state_dir)
        if self._reminders.due(window, self.clock.utc_now(), now_ns, recording):
            self.reminders.append(self.clock.utc_now())
            self._signal(Signal.REMINDER)
            for speech in self._synthesize_all([("zh", REMINDER_ZH)]):
                self.speaker.say(speech)
            log.info("reminder: scheduled window active and not recording")

    def _play_cue(self) -> None:
        self.cues.append(self.clock.utc_now())
        self._signal(Signal.CUE)
        self.speaker.say(CUE_TONE)
        log.info("still-recording cue")

    # --- interruptions --------------------------------------------------------------------------

    def _on_fault(self, kind: FaultKind, when: datetime, detail: str) -> None:
        # Pipeline thread: only enqueue (the RecordingSink already noted the gap).
        self._events.put(CaptureFaulted(kind, when, detail))

    def _on_resume(self, kind: FaultKind, when: datetime) -> None:
        # Pipeline thread: only enqueue (the RecordingSink already wrote the gap record).
        self._events.put(CaptureResumed(kind, when))

    def _drain_sealed(self, session: SessionInfo) -> None:
        """Take in the seals queued by the recording that just stopped (main loop)."""
        pending: list[RecorderEvent] = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if isinstance(event, SegmentSealed | GapRecorded):
                self._handle(event)
            else:
                pending.append(event)
        for event in pending:
            self._events.put(event)

    def _resume_prompt(self) -> Speech | None:
        texts = [(lang, RESUME_PROMPT[lang]) for lang in self.cfg.speech.languages]
        speeches = self._synthesize_all(texts)
        if not speeches:
            return None
        if len(speeches) == 1:
            return speeches[0]
        first = speeches[0]
        if all(
            s.sample_rate_hz == first.sample_rate_hz and s.channels == first.channels
            for s in speeches
        ):
            pcm = b"".join(s.pcm_s16le for s in speeches)
            return Speech(
                " / ".join(s.text for s in speeches),
                first.voice,
                pcm,
                first.sample_rate_hz,
                first.channels,
            )
        return first

    def _append_gap(
        self, session: SessionInfo, gap: OpenGap, end: datetime, *, spoken: bool, note: str = ""
    ) -> None:
        """Main loop, no recording running."""
        record = append_gap(self.spool, session.state, gap, end, spoken=spoken, note=note)
        self.gaps.append(record)

    def _watch_storage(self) -> None:
        try:
            free = self.storage.free_bytes()
        except Exception as exc:
            log.warning("free storage unknown: %s", exc)
            return
        session = self.session
        rec = self.cfg.recording
        if session is None:
            return
        if self.state == State.RECORDING:
            if free < rec.storage_stop_bytes:
                log.error("storage exhausted (%d bytes free): suspending recording", free)
                self.capture.stop_recording()
                self._drain_sealed(session)
                self._seal_orphans(session)
                session.open_gap = self._take_open_gap(session) or OpenGap(
                    "storage", self.clock.utc_now(), f"storage ran out ({free} bytes free)"
                )
                self._set_state(State.SUSPENDED)
                self._signal(Signal.FAULT)
                return
            minutes = recording_minutes(free, self.cfg.checks.estimated_bitrate_bits_per_s)
            if minutes < rec.low_storage_warn_min and not self._low_storage_warned:
                self._low_storage_warned = True
                log.warning("storage low: about %.0f min left (%d bytes)", minutes, free)
                self._signal(Signal.WARNING)
        elif self.state == State.SUSPENDED and free >= 2 * rec.storage_stop_bytes:
            if not self.spool.keep_reserve():
                return  # space went again: stay suspended
            log.warning("storage available again (%d bytes): resuming", free)
            self._seal_orphans(session)
            gap = self._take_open_gap(session)
            spoken = self._resume_speech is not None
            # The gap goes first: it must precede the first segment of the new recording.
            if gap is not None:
                self._append_gap(session, gap, self.clock.utc_now(), spoken=spoken)
            self._start_recording()
            self._set_state(State.RECORDING)
            self._signal(Signal.RECORDING)
            self._say_resume_prompt()

    def _seal_orphans(self, session: SessionInfo) -> None:
        """Seal what a full card left unsealed of this session (no recording running); the
        open gap then starts where that media ends, so it covers what could not be kept."""
        records = seal_orphan_parts(self.spool, session.state)
        for record in records:
            session.last_segment = record
            log.warning("sealed segment %s as far as it got", record.body.get("file"))
        gap = (session.sink.open_gap if session.sink is not None else None) or session.open_gap
        if not records or gap is None:
            return
        end = max(parse_utc(str(r.body["utc_end"])) for r in records)
        if end < gap.start:
            gap.detail += (
                f"; from the end of the media sealed as recovered, "
                f"{(gap.start - end).total_seconds():.1f} s before the fault was noticed"
            )
            gap.start = end

    def _watch_battery(self) -> None:
        # Recording goes on to the last drop of power (a cut is recovered on the next start);
        # the officer is warned once so the recording can be ended or the device swapped.
        if self._low_battery_warned or self.state != State.RECORDING:
            return
        try:
            reading = self.battery.read()
        except Exception as exc:
            log.warning("battery unreadable: %s", exc)
            return
        if reading is None or reading.on_external_power or reading.capacity_percent is None:
            return
        if reading.capacity_percent < self.cfg.checks.battery_fail_percent:
            self._low_battery_warned = True
            log.warning("battery nearly empty while recording: %.0f%%", reading.capacity_percent)
            self._signal(Signal.WARNING)
            for speech in self._synthesize_all(
                [(lang, BATTERY_PROMPT[lang]) for lang in self.cfg.speech.languages]
            ):
                self.speaker.say(speech)

    def _signal(self, signal: Signal) -> None:
        if self.controls is not None:
            self.controls.signal(signal)
