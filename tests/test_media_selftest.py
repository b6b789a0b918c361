"""The technician's self-test on the simulated backend: passes when all is well, fails loudly."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.clock import SimulatedClock
from agent.media.selftest import main, run_selftest
from agent.media.simulated import SimulatedCapture

START = datetime(2026, 11, 30, 8, 0, 0, tzinfo=UTC)
pytestmark = pytest.mark.timeout(120)


def _capture(**options: object) -> SimulatedCapture:
    opts: dict[str, object] = {
        "realtime": False,
        "width": 320,
        "height": 180,
        "segment_duration_s": 4.0,
        "pre_event_s": 2.0,
    }
    opts.update(options)
    return SimulatedCapture(SimulatedClock(START), **opts)  # type: ignore[arg-type]


def test_selftest_passes_on_working_hardware(tmp_path: Path) -> None:
    report = run_selftest(_capture(), tmp_path, record_s=9.0)
    assert report.ok, report.lines()
    names = [c.name for c in report.checks]
    assert names == [
        "camera",
        "microphone",
        "segments",
        "container",
        "codecs",
        "keyframes",
        "continuity",
        "speaker->microphone",
    ]
    assert len(report.segments) == 3
    assert all(p.exists() for p in report.segments)


def test_selftest_fails_when_the_speaker_is_not_heard(tmp_path: Path) -> None:
    report = run_selftest(_capture(speaker_gain=0.0), tmp_path, record_s=6.0)
    assert not report.ok
    failed = [c for c in report.checks if not c.ok]
    assert [c.name for c in failed] == ["speaker->microphone"]
    assert "over room" in failed[0].detail


def test_selftest_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--backend", "simulated", "--fast", "--seconds", "5", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.count("PASS") == 8
    assert "FAIL" not in out
    if importlib.util.find_spec("picamera2") is None:
        # Without a Pi the Pi backend is a clear failure, not a traceback.
        rc = main(["--backend", "pi", str(tmp_path / "pi")])
        assert rc == 1
        assert "FAIL  start" in capsys.readouterr().out
