"""The clock check asks the time service (timedatectl / chronyc), as it must inside the unit's
sandbox where ProtectClock= blocks adjtimex. The time sources here are real executables on a
private PATH that answer like systemd-timesyncd's and chrony's command-line tools."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.checks import Outcome, check_clock, read_clock_sync_state
from agent.config import ChecksConfig, config_from_dict
from agent.errors import AgentConfigError
from agent.timesync import ask_time_service

NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)

CHRONY_LOCKED = """Reference ID    : C0A80101 (192.168.1.1)
Stratum         : 3
System time     : 0.000012 seconds fast of NTP time
Leap status     : Normal
"""
CHRONY_UNLOCKED = """Reference ID    : 00000000 ()
Stratum         : 0
Leap status     : Not synchronised
"""


def _tool(bin_dir: Path, name: str, stdout: str, status: int = 0) -> None:
    """An executable ``name`` printing ``stdout`` and exiting ``status``, like the real tool."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / name
    body = stdout.replace("'", "'\\''")
    script.write_text(
        f"#!/bin/sh\nprintf '%s' '{body}'\n"
        f"[ {status} -eq 0 ] || echo 'Failed to connect to bus: No such file' >&2\nexit {status}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def _state(tmp_path: Path, source: str = "auto") -> object:
    return read_clock_sync_state(
        tmp_path, clock_source=source, command_path=str(tmp_path / "bin"), rtc_dir=tmp_path / "x"
    )


def test_timesyncd_synchronised_passes(tmp_path: Path) -> None:
    _tool(tmp_path / "bin", "timedatectl", "yes\n")
    state = _state(tmp_path)
    result = check_clock(state, NOW, ChecksConfig())  # type: ignore[arg-type]
    assert result.outcome == Outcome.PASS
    assert "NTPSynchronized=yes" in result.reason


def test_timesyncd_not_synchronised_warns_or_fails(tmp_path: Path) -> None:
    _tool(tmp_path / "bin", "timedatectl", "no\n")
    state = _state(tmp_path)
    warn = check_clock(state, NOW, ChecksConfig())  # type: ignore[arg-type]
    assert warn.outcome == Outcome.WARN
    assert "NTPSynchronized=no" in warn.reason
    strict = check_clock(state, NOW, ChecksConfig(clock_unsynced="fail"))  # type: ignore[arg-type]
    assert strict.outcome == Outcome.FAIL


def test_chrony_answers_when_timedated_is_unreachable(tmp_path: Path) -> None:
    _tool(tmp_path / "bin", "timedatectl", "", status=1)  # no D-Bus
    _tool(tmp_path / "bin", "chronyc", CHRONY_LOCKED)
    answer = ask_time_service("auto", path=str(tmp_path / "bin"))
    assert answer.synced is True
    assert answer.source == "chrony"
    assert "Normal" in answer.detail
    assert "C0A80101" in answer.detail
    _tool(tmp_path / "bin", "chronyc", CHRONY_UNLOCKED)
    state = _state(tmp_path)
    result = check_clock(state, NOW, ChecksConfig())  # type: ignore[arg-type]
    assert result.outcome == Outcome.WARN
    assert "Not synchronised" in result.reason


def test_no_time_service_is_never_a_pass(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    for source in ("timesyncd", "chrony"):
        answer = ask_time_service(source, path=str(tmp_path / "bin"))
        assert answer.synced is None
        assert "not found" in answer.detail
        result = check_clock(_state(tmp_path, source), NOW, ChecksConfig())  # type: ignore[arg-type]
        assert result.outcome == Outcome.WARN, result.reason


def test_garbage_answers_are_not_a_lock(tmp_path: Path) -> None:
    _tool(tmp_path / "bin", "timedatectl", "perhaps\x00\n" * 50)
    _tool(tmp_path / "bin", "chronyc", "Stratum: 3\n")
    answer = ask_time_service("auto", path=str(tmp_path / "bin") + ":/nonexistent")
    # neither tool gave a usable answer: the kernel (adjtimex, no sandbox here) decides, or None
    assert answer.source in ("adjtimex", "auto")
    for source in ("timesyncd", "chrony"):
        assert ask_time_service(source, path=str(tmp_path / "bin")).synced is None


def test_clock_source_is_validated() -> None:
    assert config_from_dict({"checks": {"clock_source": "chrony"}}).checks.clock_source == "chrony"
    with pytest.raises(AgentConfigError, match=r"checks\.clock_source"):
        config_from_dict({"checks": {"clock_source": "ntpdate"}})
    with pytest.raises(AgentConfigError, match=r"checks\.microphone_silent"):
        config_from_dict({"checks": {"microphone_silent": "ignore"}})
