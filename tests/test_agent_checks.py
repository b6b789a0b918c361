"""Pre-capture checks (Art. 11) against real files, a real simulated camera and real keys."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.checks import (
    CheckInputs,
    ClockSyncState,
    Outcome,
    check_battery,
    check_clock,
    check_signing_key,
    check_spool,
    check_storage,
    read_clock_sync_state,
    record_safe,
    run_checks,
)
from agent.clock import SimulatedClock
from agent.config import ChecksConfig
from agent.hardware.battery import SysfsBatteryGauge, write_simulated_battery
from agent.hardware.storage import FilesystemStorage, SimulatedStorage
from agent.media.simulated import SimulatedCapture
from evidence.keys import generate_signing_key, save_signing_key

CFG = ChecksConfig()
NOW = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


def _battery(tmp_path: Path, **kw: object) -> SysfsBatteryGauge:
    write_simulated_battery(tmp_path / "ps", **kw)  # type: ignore[arg-type]
    return SysfsBatteryGauge(tmp_path / "ps")


@pytest.mark.parametrize(
    ("percent", "expected"),
    [(90.0, Outcome.PASS), (15.0, Outcome.WARN), (3.0, Outcome.FAIL)],
)
def test_battery_thresholds(tmp_path: Path, percent: float, expected: Outcome) -> None:
    result = check_battery(_battery(tmp_path, capacity_percent=percent), CFG, 480.0)
    assert result.outcome == expected, result.reason
    assert f"{percent:.0f}%" in result.reason


def test_battery_time_to_empty_below_minimum_refuses(tmp_path: Path) -> None:
    # 60 % charge but the gauge says 20 min left: less than min_recording_min (30)
    gauge = _battery(tmp_path, capacity_percent=60.0, time_to_empty_s=20 * 60)
    result = check_battery(gauge, CFG, 480.0)
    assert result.outcome == Outcome.FAIL
    assert "about 20 min" in result.reason


def test_battery_charging_passes_and_missing_gauge_warns(tmp_path: Path) -> None:
    gauge = _battery(tmp_path, capacity_percent=2.0, status="Charging")
    assert check_battery(gauge, CFG, 480.0).outcome == Outcome.PASS
    empty = SysfsBatteryGauge(tmp_path / "nothing-here")
    result = check_battery(empty, CFG, 480.0)
    assert result.outcome == Outcome.WARN
    assert "no battery" in result.reason


def test_storage_short_refuses_low_warns(tmp_path: Path) -> None:
    per_min = CFG.estimated_bitrate_bits_per_s // 8 * 60
    (tmp_path / "already.bin").write_bytes(b"\0" * 1000)
    short = check_storage(SimulatedStorage(tmp_path, 10 * per_min), CFG)
    assert short.outcome == Outcome.FAIL
    assert "storage short" in short.reason
    low = check_storage(SimulatedStorage(tmp_path, 60 * per_min), CFG)
    assert low.outcome == Outcome.WARN
    plenty = check_storage(SimulatedStorage(tmp_path, 600 * per_min), CFG)
    assert plenty.outcome == Outcome.PASS
    assert plenty.data["free_bytes"] == 600 * per_min - 1000


def test_storage_of_a_missing_filesystem_fails(tmp_path: Path) -> None:
    result = check_storage(FilesystemStorage(tmp_path / "absent"), CFG)
    assert result.outcome == Outcome.FAIL


def test_clock_decision_order(tmp_path: Path) -> None:
    ntp = ClockSyncState(True, None, None, False)
    assert check_clock(ntp, NOW, CFG).outcome == Outcome.PASS
    unsynced = ClockSyncState(False, None, None, False)
    result = check_clock(unsynced, NOW, CFG)
    assert result.outcome == Outcome.WARN
    assert "never synchronised at a dock" in result.reason
    assert "no RTC" in result.reason
    strict = ChecksConfig(clock_unsynced="fail")
    assert check_clock(unsynced, NOW, strict).outcome == Outcome.FAIL
    docked = ClockSyncState(False, NOW - timedelta(hours=3), 0.2, True)
    assert check_clock(docked, NOW, CFG).outcome == Outcome.PASS
    stale = ClockSyncState(False, NOW - timedelta(hours=30), 0.2, True)
    result = check_clock(stale, NOW, CFG)
    assert result.outcome == Outcome.WARN
    assert "30.0 h ago" in result.reason
    # a recent dock sync that found the clock an hour off does not make it synchronised
    off = ClockSyncState(False, NOW - timedelta(hours=1), -3600.0, True)
    result = check_clock(off, NOW, CFG)
    assert result.outcome == Outcome.WARN
    assert "3600.0 s off" in result.reason


def test_clock_state_read_from_the_dock_file(tmp_path: Path) -> None:
    (tmp_path / "clock.json").write_text(
        json.dumps({"synced_utc": "2026-11-29T07:00:00.000000Z", "offset_s": -0.4})
    )
    state = read_clock_sync_state(tmp_path, kernel_probe=lambda: False, rtc_dir=tmp_path / "no")
    assert state.dock_synced_utc == NOW - timedelta(hours=1)
    assert check_clock(state, NOW, CFG).outcome == Outcome.PASS
    (tmp_path / "clock.json").write_text("{not json")
    broken = read_clock_sync_state(tmp_path, kernel_probe=lambda: False, rtc_dir=tmp_path)
    assert broken.dock_synced_utc is None


def test_signing_key_and_spool(tmp_path: Path) -> None:
    key_path = tmp_path / "device.key"
    assert check_signing_key(key_path).outcome == Outcome.FAIL
    key_path.write_text("not a key")
    assert "unreadable" in check_signing_key(key_path).reason
    save_signing_key(key_path, generate_signing_key())
    assert check_signing_key(key_path).outcome == Outcome.PASS
    assert check_spool(tmp_path / "spool").outcome == Outcome.PASS
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    assert check_spool(blocker).outcome == Outcome.FAIL


def test_record_safe_has_no_floats() -> None:
    assert record_safe({"a": 1.0, "b": [2.5, {"c": 3}]}) == {"a": 1, "b": ["2.50", {"c": 3}]}


@pytest.fixture
def camera() -> Iterator[SimulatedCapture]:
    cap = SimulatedCapture(SimulatedClock(realtime=False), realtime=False, pre_event_s=2.0)
    cap.start()
    try:
        yield cap
    finally:
        cap.stop()


def _inputs(tmp_path: Path, capture: SimulatedCapture) -> CheckInputs:
    key_path = tmp_path / "device.key"
    save_signing_key(key_path, generate_signing_key())
    return CheckInputs(
        cfg=CFG,
        full_runtime_min=480.0,
        battery=_battery(tmp_path, capacity_percent=90.0),
        storage=SimulatedStorage(tmp_path, 10**12),
        capture=capture,
        key_path=key_path,
        spool_dir=tmp_path / "spool",
        clock_state=lambda: ClockSyncState(True, None, None, False),
        now=lambda: NOW,
    )


def test_all_checks_pass_on_a_healthy_simulated_device(
    tmp_path: Path, camera: SimulatedCapture
) -> None:
    report = run_checks(_inputs(tmp_path, camera))
    assert report.outcome == Outcome.PASS, report.format()
    names = [r.name for r in report.results]
    assert names == ["battery", "storage", "camera", "microphone", "clock", "signing-key", "spool"]


def test_dead_camera_refuses(tmp_path: Path, camera: SimulatedCapture) -> None:
    camera.inject_camera_fault(30.0)
    report = run_checks(_inputs(tmp_path, camera))
    assert report.outcome == Outcome.FAIL
    camera_result = report.get("camera")
    assert camera_result is not None
    assert camera_result.outcome == Outcome.FAIL
    assert "no frames" in camera_result.reason
    assert "camera" in report.format()


def test_check_command_prints_the_report_and_fails_without_a_key(tmp_path: Path) -> None:
    import subprocess
    import sys

    spool = tmp_path / "spool"
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[device]\nid = "SIM-CHECK"\nspool_dir = "{spool}"\n'
        '[hardware]\nbackend = "simulated"\n'
        '[capture]\nbackend = "simulated"\nwidth = 320\nheight = 180\nfps = 10\n',
        encoding="utf-8",
    )

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agent.cli", "check", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    refused = check()
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert "FAIL  signing-key" in refused.stdout
    for name in ("battery", "storage", "camera", "microphone", "clock", "spool"):
        assert name in refused.stdout
    save_signing_key(spool / "state" / "device.key", generate_signing_key())
    ok = check()
    assert ok.returncode == 0, ok.stdout + ok.stderr[-2000:]
    assert "PASS  camera" in ok.stdout
    assert "FAIL" not in ok.stdout
