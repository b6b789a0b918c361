"""The recorder on simulated hardware, in process: faults, cues, refusals, storage, markers.

Everything is real: the simulated camera encodes H.264/AAC, records are signed into a real
spool, and the result is checked with the project's verifier. The capture is stepped: each
test is a script of actions at media times (:class:`agent.simulation.Simulation`), so it gives
the same records on every run, however loaded the machine is.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.clock import SimulatedClock
from agent.config import AgentConfig
from agent.hardware.battery import write_simulated_battery
from agent.hardware.controls import Signal
from agent.hardware.storage import SimulatedStorage
from agent.media.simulated import SimulatedCapture
from agent.recorder import State
from agent.simulation import Simulation
from evidence.records import RecordType, parse_utc
from evidence.verify import verify_tree
from tests.support.simulation import START, Simulations, records_of


def _base(cfg: AgentConfig) -> None:
    cfg.capture.pre_event_s = 2.0


@pytest.fixture
def make_sim(tmp_path: Path) -> Iterator[Callable[..., Simulation]]:
    with Simulations(tmp_path / "spool", _base) as sims:
        yield sims.make


def _media_s(sim: Simulation) -> float:
    return sim.media_us / 1e6


def _record_for(sim: Simulation, seconds: float) -> None:
    """Press, record ``seconds`` of media after the press (and until speech is done), hold."""
    sim.advance_to(round(sim.rt.cfg.capture.pre_event_s * 1e6))
    sim.press_record()
    assert sim.state == State.RECORDING
    sim.advance(seconds)
    assert sim.until_quiet()
    sim.hold_record()
    assert sim.state == State.IDLE


def _assert_verifies(sim: Simulation) -> None:
    report = verify_tree(sim.rt.spool.root)
    assert report.ok, [str(v) for v in report.violations]


@pytest.mark.parametrize("device", ["camera", "microphone"])
def test_capture_fault_mid_recording_gap_resume_and_spoken_prompt(
    make_sim: Callable[..., Simulation], device: str
) -> None:
    sim = make_sim()
    cap = sim.capture
    assert isinstance(cap, SimulatedCapture)
    sim.advance_to(2_000_000)
    sim.press_record()
    assert sim.state == State.RECORDING
    start = sim.media_us
    sim.advance_to(start + 14_000_000)
    if device == "camera":
        cap.inject_camera_fault(4.0)
    else:
        cap.inject_microphone_fault(4.0)
    assert sim.run_until(lambda: len(sim.recorder.gaps) == 1, 20.0)
    sim.advance_to(start + 30_000_000)
    assert sim.until_quiet()
    sim.hold_record()
    assert sim.state == State.IDLE
    records = records_of(sim)
    types = [r.type for r in records]
    assert types[0] == RecordType.SESSION_OPEN
    assert types[-1] == RecordType.SESSION_CLOSE
    [gap] = [r for r in records if r.type == RecordType.GAP]
    assert gap.body["cause"] == f"{device}-fault"
    assert gap.body["spoken_reason"] is True
    hole_s = (parse_utc(gap.body["end_utc"]) - parse_utc(gap.body["start_utc"])).total_seconds()
    assert 3.0 <= hole_s <= 7.0, hole_s
    # recording resumed by itself: the gap record comes before the segment after the hole
    after = types[types.index(RecordType.GAP) + 1 :]
    assert RecordType.SEGMENT in after
    gap_end = parse_utc(gap.body["end_utc"])
    later = [r for r in records if r.type == RecordType.SEGMENT and r.seq > gap.seq]
    earlier = [r for r in records if r.type == RecordType.SEGMENT and r.seq < gap.seq]
    assert all(parse_utc(r.body["utc_start"]) >= gap_end for r in later)
    assert all(parse_utc(r.body["utc_start"]) < gap_end for r in earlier)
    spoken = [s.text for s in sim.recorder.speaker.played]
    assert any("请说明中断原因" in t for t in spoken), spoken
    assert sim.rt.controls is not None
    assert Signal.FAULT in sim.rt.controls.history
    close = records[-1].body
    assert close["gaps"] == 1
    assert close["reason"] == "stopped"
    _assert_verifies(sim)


def test_the_recording_led_blinks_on_media_time(make_sim: Callable[..., Simulation]) -> None:
    def tweak(cfg: AgentConfig) -> None:
        cfg.speech.enabled = False

    sim = make_sim(tweak)
    sim.advance_to(2_000_000)
    sim.press_record()
    assert sim.state == State.RECORDING
    assert Signal.RECORDING in sim.controls.history  # (a WARNING after it leaves red alone)
    signalled_ns = sim.rt.clock.monotonic_ns()  # settle() takes no time: signalled just now
    red = sim.controls.mock_factory.pin(sim.controls.cfg.led_red_pin)

    def red_at(after_s: float) -> bool:
        """The red LED at the first frame end ``after_s`` after the signal."""
        behind_us = (signalled_ns + round(after_s * 1e9) - sim.rt.clock.monotonic_ns()) // 1000
        sim.advance_to(sim.media_us + behind_us)
        return bool(red.state)

    # 0.2 s on, 1.8 s off, again; each look is at a frame end (1/25 s) inside a phase
    seen = [red_at(s) for s in (0.05, 0.3, 1.9, 2.1, 2.5, 4.1, 4.3)]
    assert seen == [True, False, False, True, False, True, False]
    sim.hold_record()
    assert sim.state == State.IDLE


def test_periodic_still_recording_cue(make_sim: Callable[..., Simulation]) -> None:
    def tweak(cfg: AgentConfig) -> None:
        cfg.recording.cue_interval_min = 0.25  # every 15 s of device time
        cfg.speech.enabled = False

    sim = make_sim(tweak)
    _record_for(sim, 50.0)
    cues = sim.recorder.cues
    assert len(cues) == 3, cues
    spacing = [(b - a).total_seconds() for a, b in itertools.pairwise(cues)]
    assert all(s == pytest.approx(15.0, abs=0.07) for s in spacing), spacing  # to the frame
    assert [s.text for s in sim.recorder.speaker.played].count("tone 880/1320") == 3
    _assert_verifies(sim)


def test_low_battery_refuses_with_a_signed_check_record(
    make_sim: Callable[..., Simulation],
) -> None:
    sim = make_sim()
    battery_dir = sim.rt.cfg.spool_path / "state" / "sim-power-supply"
    write_simulated_battery(battery_dir, capacity_percent=2.0)
    sim.advance_to(2_000_000)
    sim.press_record()
    assert len(sim.recorder.refusals) == 1
    assert sim.until_quiet()
    assert sim.state == State.IDLE
    assert sim.rt.controls is not None
    assert sim.rt.controls.last_signal == Signal.REFUSED
    [record] = records_of(sim)
    assert record.type == RecordType.CHECK
    assert record.body["refused"] is True
    battery = next(c for c in record.body["checks"]["checks"] if c["name"] == "battery")
    assert battery["outcome"] == "fail"
    assert "2%" in battery["reason"]
    assert any("无法开始录像" in s.text for s in sim.recorder.speaker.played)
    _assert_verifies(sim)


def test_storage_running_out_suspends_and_resumes_with_a_gap(
    make_sim: Callable[..., Simulation],
) -> None:
    def tweak(cfg: AgentConfig) -> None:
        cfg.checks.min_recording_min = 0.1
        cfg.checks.warn_recording_min = 0.1
        cfg.checks.estimated_bitrate_bits_per_s = 100_000
        cfg.recording.storage_stop_bytes = 400_000
        cfg.speech.enabled = False

    sim = make_sim(tweak)
    storage = SimulatedStorage(sim.rt.spool.root, 0)
    storage.quota_bytes = storage.used_bytes() + 1_500_000
    sim.recorder.storage = storage
    sim.advance_to(2_000_000)
    sim.press_record()
    assert sim.state == State.RECORDING
    assert sim.run_until(lambda: sim.state == State.SUSPENDED, 60.0)
    nothing_lost = storage.used_bytes()
    sim.advance(10.0)  # suspended: nothing more is written
    assert storage.used_bytes() == nothing_lost
    storage.quota_bytes += 20_000_000  # the uplink freed space after receipts
    assert sim.run_until(lambda: sim.state == State.RECORDING, 60.0)
    sim.advance(12.0)
    sim.hold_record()
    assert sim.state == State.IDLE
    assert storage.used_bytes() > nothing_lost  # nothing was deleted to make room
    assert sim.rt.controls is not None
    signals = list(sim.rt.controls.history)
    # warned while space ran low, then the fault signal when it ran out
    assert Signal.WARNING in signals
    assert Signal.FAULT in signals
    assert signals.index(Signal.WARNING) < signals.index(Signal.FAULT)
    records = records_of(sim)
    [gap] = [r for r in records if r.type == RecordType.GAP]
    assert gap.body["cause"] == "storage"
    segments = [r for r in records if r.type == RecordType.SEGMENT]
    assert [s.body["index"] for s in segments] == list(range(len(segments)))
    assert any(s.seq > gap.seq for s in segments)
    _assert_verifies(sim)


def test_marker_lands_in_the_session_with_its_media_time(
    make_sim: Callable[..., Simulation],
) -> None:
    def tweak(cfg: AgentConfig) -> None:
        cfg.speech.enabled = False

    sim = make_sim(tweak)
    sim.advance_to(2_000_000)
    sim.recorder.mark()  # idle: refused, nothing written
    sim.settle()
    assert not sim.recorder.markers
    sim.press_record()
    assert sim.state == State.RECORDING
    press_us = sim.capture.press_media_us
    assert press_us is not None
    sim.advance_to(press_us + 15_000_000)
    sim.recorder.mark("evidence", "knife on the table")
    sim.settle()
    assert len(sim.recorder.markers) == 1
    sim.hold_record()
    assert sim.state == State.IDLE
    records = records_of(sim)
    [marker] = [r for r in records if r.type == RecordType.MARKER]
    assert marker.body["kind"] == "evidence"
    assert marker.body["note"] == "knife on the table"
    # on the recording timeline: the pre-event buffer (2 s back to a keyframe) + 15 s
    [first] = [r for r in records if r.type == RecordType.SEGMENT and r.body["index"] == 0]
    expected_us = first.body["pre_event_us"] + 15_000_000
    assert marker.body["media_us"] == pytest.approx(expected_us, abs=70_000)
    assert records[0].type == RecordType.SESSION_OPEN
    _assert_verifies(sim)


def test_battery_running_down_while_recording_warns_and_keeps_recording(
    make_sim: Callable[..., Simulation],
) -> None:
    sim = make_sim()
    sim.advance_to(2_000_000)
    sim.press_record()
    assert sim.state == State.RECORDING
    write_simulated_battery(
        sim.rt.cfg.spool_path / "state" / "sim-power-supply", capacity_percent=3.0
    )
    assert sim.run_until(
        lambda: any("电量即将耗尽" in s.text for s in sim.recorder.speaker.played), 30.0
    )
    assert sim.state == State.RECORDING
    assert sim.rt.controls is not None
    assert Signal.WARNING in sim.rt.controls.history
    sim.hold_record()
    assert sim.state == State.IDLE
    _assert_verifies(sim)


def _scripted_session(spool: Path) -> dict[str, bytes]:
    """One script on a fresh spool: every file it leaves, by path."""

    def tweak(cfg: AgentConfig) -> None:
        cfg.hardware.storage.simulated_quota_bytes = 2_000_000_000  # not the real disk's mood
        cfg.recording.cue_interval_min = 0.2

    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    clock = SimulatedClock(START, boot_id="11111111-2222-4333-8444-555555555555")
    counter = itertools.count(1)
    with Simulations(spool, _base) as sims:
        sim = sims.make(
            tweak,
            clock=clock,
            key=key,
            session_ids=lambda now: f"{now:%Y%m%dT%H%M%SZ}-{next(counter):06d}",
        )
        cap = sim.capture
        assert isinstance(cap, SimulatedCapture)
        sim.advance(2.5)
        sim.press_record()
        sim.advance(6.0)
        sim.press_mark()
        cap.inject_camera_fault(2.0)
        sim.advance(9.0)
        cap.inject_microphone_fault(1.5)
        assert sim.until_quiet()
        sim.advance(3.0)
        sim.hold_record()
        assert sim.state == State.IDLE
    return {
        str(p.relative_to(spool)): p.read_bytes()
        for p in sorted(spool.rglob("*"))
        if p.is_file() and p.name != "agent.lock"  # the running agent's lock, not evidence
    }


def test_the_same_script_gives_byte_identical_records_and_media(tmp_path: Path) -> None:
    # The same spool path both times: the check report names it.
    spool = tmp_path / "spool"
    first = _scripted_session(spool)
    spool.rename(tmp_path / "first")
    second = _scripted_session(spool)
    assert sorted(first) == sorted(second)
    differ = [name for name in first if first[name] != second[name]]
    assert not differ, differ
    records = [name for name in first if name.endswith(".json") and "/records/" in f"/{name}"]
    media = [name for name in first if name.endswith(".ts")]
    assert len(records) >= 8, sorted(first)
    assert len(media) >= 3, sorted(first)


def test_a_bouncy_release_after_the_stop_hold_does_not_start_a_new_session(
    make_sim: Callable[..., Simulation],
) -> None:
    def tweak(cfg: AgentConfig) -> None:
        cfg.speech.enabled = False

    sim = make_sim(tweak)
    sim.advance_to(2_000_000)
    sim.press_record()
    assert sim.state == State.RECORDING
    sim.advance(3.0)
    pin = sim.controls.cfg.record_pin
    # held past the hold time, then the contact bounces twice on release
    sim.controls.bounce(pin, [0.0, sim.controls.hold_duration_s, 0.004, 0.002, 0.003, 0.002])
    sim.settle()
    assert sim.state == State.IDLE
    sim.advance(2.0)
    assert sim.state == State.IDLE
    sessions = {r.session for r in records_of(sim)}
    assert len(sessions) == 1
    _assert_verifies(sim)
