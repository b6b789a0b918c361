"""The recorder on simulated hardware, in process: faults, cues, refusals, storage, markers.

Everything is real: the simulated camera encodes H.264/AAC, records are signed into a real
spool, and the result is checked with the project's verifier.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.clock import SimulatedClock
from agent.config import AgentConfig, simulated_config
from agent.hardware.battery import write_simulated_battery
from agent.hardware.controls import Signal, SimulatedControls
from agent.hardware.storage import SimulatedStorage
from agent.media.simulated import SimulatedCapture
from agent.recorder import State
from agent.runtime import Runtime, build_runtime
from agent.spool import ensure_dev_key
from evidence import layout
from evidence.records import Record, RecordType
from evidence.verify import verify_tree

DEVICE = "SIM-TEST-1"


def _wait(predicate: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def make_runtime(tmp_path: Path) -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(tweak: Callable[[AgentConfig], None] | None = None) -> Runtime:
        cfg = simulated_config(tmp_path / "spool")
        cfg.capture.pre_event_s = 2.0
        cfg.hardware.controls.hold_time_s = 0.2
        cfg.recording.loop_interval_s = 0.02
        if tweak is not None:
            tweak(cfg)
        key, _ = ensure_dev_key(cfg.key_path)
        rt = build_runtime(cfg, clock=SimulatedClock(), key=key, device_id=DEVICE)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.recorder.shutdown()
        if isinstance(rt.controls, SimulatedControls):
            rt.controls.mock_factory.reset()


class Loop:
    """Runs the recorder's main loop in a thread for the duration of a test."""

    def __init__(self, rt: Runtime) -> None:
        import threading

        self.rt = rt
        self.stop = threading.Event()
        self.thread = threading.Thread(target=rt.recorder.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> Runtime:
        self.rt.recorder.start()
        self.thread.start()
        return self.rt

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(10)


def _media_s(rt: Runtime) -> float:
    return rt.capture.media_time_us / 1e6


def _record_for(rt: Runtime, seconds: float) -> None:
    """Press, record ``seconds`` of media after the press (waiting for speech), hold."""
    cap = rt.capture
    _wait(lambda: cap.media_time_us >= rt.cfg.capture.pre_event_s * 1e6)
    rt.recorder.press_record()
    assert rt.recorder.wait_state(State.RECORDING, 30)
    start = _media_s(rt)
    _wait(lambda: _media_s(rt) >= start + seconds)
    rt.recorder.speaker.wait_idle(60)
    rt.recorder.hold_record()
    assert rt.recorder.wait_state(State.IDLE, 30)


def _records(rt: Runtime) -> list[Record]:
    return [Record.load(p) for p in layout.iter_record_files(rt.spool.root, DEVICE)]


def _assert_verifies(rt: Runtime) -> None:
    report = verify_tree(rt.spool.root)
    assert report.ok, [str(v) for v in report.violations]


@pytest.mark.parametrize("device", ["camera", "microphone"])
def test_capture_fault_mid_recording_gap_resume_and_spoken_prompt(
    make_runtime: Callable[..., Runtime], device: str
) -> None:
    rt = make_runtime()
    cap = rt.capture
    assert isinstance(cap, SimulatedCapture)
    with Loop(rt):
        _wait(lambda: cap.media_time_us >= 2e6)
        rt.recorder.press_record()
        assert rt.recorder.wait_state(State.RECORDING, 30)
        start = _media_s(rt)
        _wait(lambda: _media_s(rt) >= start + 14)
        if device == "camera":
            cap.inject_camera_fault(4.0)
        else:
            cap.inject_microphone_fault(4.0)
        _wait(lambda: len(rt.recorder.gaps) == 1)
        _wait(lambda: _media_s(rt) >= start + 30)
        rt.recorder.speaker.wait_idle(60)
        rt.recorder.hold_record()
        assert rt.recorder.wait_state(State.IDLE, 30)
    records = _records(rt)
    types = [r.type for r in records]
    assert types[0] == RecordType.SESSION_OPEN and types[-1] == RecordType.SESSION_CLOSE
    [gap] = [r for r in records if r.type == RecordType.GAP]
    assert gap.body["cause"] == f"{device}-fault"
    assert gap.body["spoken_reason"] is True
    from evidence.records import parse_utc

    hole_s = (parse_utc(gap.body["end_utc"]) - parse_utc(gap.body["start_utc"])).total_seconds()
    assert 3.0 <= hole_s <= 7.0, hole_s
    # recording resumed by itself: segments follow the gap record
    after = types[types.index(RecordType.GAP) + 1 :]
    assert RecordType.SEGMENT in after
    spoken = [s.text for s in rt.recorder.speaker.played]
    assert any("请说明中断原因" in t for t in spoken), spoken
    close = records[-1].body
    assert close["gaps"] == 1 and close["reason"] == "stopped"
    _assert_verifies(rt)


def test_periodic_still_recording_cue(make_runtime: Callable[..., Runtime]) -> None:
    def tweak(cfg: AgentConfig) -> None:
        cfg.recording.cue_interval_min = 0.25  # every 15 s of device time
        cfg.speech.enabled = False

    rt = make_runtime(tweak)
    with Loop(rt):
        _record_for(rt, 50.0)
    cues = rt.recorder.cues
    assert len(cues) == 3, cues
    spacing = [(b - a).total_seconds() for a, b in itertools.pairwise(cues)]
    assert all(13.0 <= s <= 17.0 for s in spacing), spacing
    assert [s.text for s in rt.recorder.speaker.played].count("tone 880/1320") == 3
    _assert_verifies(rt)


def test_low_battery_refuses_with_a_signed_check_record(
    make_runtime: Callable[..., Runtime],
) -> None:
    rt = make_runtime()
    write_simulated_battery(rt.cfg.spool_path / "state" / "sim-power-supply", capacity_percent=2.0)
    with Loop(rt):
        _wait(lambda: rt.capture.media_time_us >= 2e6)
        rt.recorder.press_record()
        _wait(lambda: len(rt.recorder.refusals) == 1)
        rt.recorder.speaker.wait_idle(60)
        assert rt.recorder.state == State.IDLE
        assert rt.controls is not None and rt.controls.last_signal == Signal.REFUSED
    [record] = _records(rt)
    assert record.type == RecordType.CHECK and record.body["refused"] is True
    battery = next(c for c in record.body["checks"]["checks"] if c["name"] == "battery")
    assert battery["outcome"] == "fail" and "2%" in battery["reason"]
    assert any("无法开始录像" in s.text for s in rt.recorder.speaker.played)
    _assert_verifies(rt)


def test_storage_running_out_suspends_and_resumes_with_a_gap(
    make_runtime: Callable[..., Runtime],
) -> None:
    def tweak(cfg: AgentConfig) -> None:
        cfg.checks.min_recording_min = 0.1
        cfg.checks.warn_recording_min = 0.1
        cfg.checks.estimated_bitrate_bits_per_s = 100_000
        cfg.recording.storage_stop_bytes = 400_000
        cfg.speech.enabled = False

    rt = make_runtime(tweak)
    storage = SimulatedStorage(rt.spool.root, 0)
    storage.quota_bytes = storage.used_bytes() + 1_500_000
    rt.recorder.storage = storage
    with Loop(rt):
        _wait(lambda: rt.capture.media_time_us >= 2e6)
        rt.recorder.press_record()
        assert rt.recorder.wait_state(State.RECORDING, 30)
        assert rt.recorder.wait_state(State.SUSPENDED, 60)
        nothing_lost = storage.used_bytes()
        storage.quota_bytes += 20_000_000  # the uplink freed space after receipts
        assert rt.recorder.wait_state(State.RECORDING, 60)
        start = _media_s(rt)
        _wait(lambda: _media_s(rt) >= start + 12)
        rt.recorder.hold_record()
        assert rt.recorder.wait_state(State.IDLE, 30)
    assert storage.used_bytes() > nothing_lost  # nothing was deleted to make room
    assert rt.controls is not None
    signals = list(rt.controls.history)
    # warned while space ran low, then the fault signal when it ran out
    assert Signal.WARNING in signals and Signal.FAULT in signals
    assert signals.index(Signal.WARNING) < signals.index(Signal.FAULT)
    records = _records(rt)
    [gap] = [r for r in records if r.type == RecordType.GAP]
    assert gap.body["cause"] == "storage"
    segments = [r for r in records if r.type == RecordType.SEGMENT]
    assert [s.body["index"] for s in segments] == list(range(len(segments)))
    assert any(s.seq > gap.seq for s in segments)
    _assert_verifies(rt)


def test_marker_lands_in_the_session_with_its_media_time(
    make_runtime: Callable[..., Runtime],
) -> None:
    def tweak(cfg: AgentConfig) -> None:
        cfg.speech.enabled = False

    rt = make_runtime(tweak)
    with Loop(rt):
        _wait(lambda: rt.capture.media_time_us >= 2e6)
        rt.recorder.mark()  # idle: refused, nothing written
        rt.recorder.press_record()
        assert rt.recorder.wait_state(State.RECORDING, 30)
        start = _media_s(rt)
        _wait(lambda: _media_s(rt) >= start + 15)
        rt.recorder.mark("evidence", "knife on the table")
        _wait(lambda: len(rt.recorder.markers) == 1)
        rt.recorder.hold_record()
        assert rt.recorder.wait_state(State.IDLE, 30)
    records = _records(rt)
    [marker] = [r for r in records if r.type == RecordType.MARKER]
    assert marker.body["kind"] == "evidence" and marker.body["note"] == "knife on the table"
    # the marker's media time is on the recording timeline (pre-event 2 s + ~15 s)
    assert marker.body["media_us"] is not None
    assert 15e6 <= marker.body["media_us"] <= 20e6, marker.body["media_us"]
    assert records[0].type == RecordType.SESSION_OPEN
    _assert_verifies(rt)


def test_battery_running_down_while_recording_warns_and_keeps_recording(
    make_runtime: Callable[..., Runtime],
) -> None:
    rt = make_runtime()
    with Loop(rt):
        _wait(lambda: rt.capture.media_time_us >= 2e6)
        rt.recorder.press_record()
        assert rt.recorder.wait_state(State.RECORDING, 30)
        write_simulated_battery(
            rt.cfg.spool_path / "state" / "sim-power-supply", capacity_percent=3.0
        )
        _wait(lambda: any("电量即将耗尽" in s.text for s in rt.recorder.speaker.played))
        assert rt.recorder.state == State.RECORDING
        assert rt.controls is not None and Signal.WARNING in rt.controls.history
        rt.recorder.hold_record()
        assert rt.recorder.wait_state(State.IDLE, 60)
    _assert_verifies(rt)
