"""The agent's systemd unit: notify + watchdog + restart + own user + hardening, and it passes
``systemd-analyze verify``."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "bodycam-agent.service"
UPLINK_UNIT = UNIT.with_name("bodycam-uplink.service")


def _service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT, encoding="utf-8")
    return parser["Service"]


def test_unit_declares_the_required_behaviour() -> None:
    service = _service()
    assert service["Type"] == "notify"
    assert service["WatchdogSec"]
    assert service["Restart"] == "always"
    assert service["User"] == "bodycam"
    assert service["User"] != "root"
    for directive in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp"):
        assert directive in service, directive
    assert "run" in service["ExecStart"].split()


def test_unit_matches_the_debian_package_and_the_pi() -> None:
    service = _service()
    # the package's update-alternatives link (packaging/postinst.in)
    assert service["ExecStart"].split()[0] == "/usr/bin/bodycam-agent"
    # lgpio creates its notification FIFO in the working directory: never the read-only "/"
    assert service["WorkingDirectory"] == "/var/lib/bodycam/lgpio"
    assert service["Environment"] == "LG_WD=/var/lib/bodycam/lgpio"
    assert "bodycam/lgpio" in service["StateDirectory"].split()
    # camera, microphone/speaker, GPIO
    assert {"video", "audio", "gpio"} <= set(service["SupplementaryGroups"].split())
    text = UNIT.read_text(encoding="utf-8")
    for device in ("char-video4linux", "char-media", "char-gpiochip", "char-alsa", "dma_heap"):
        assert device in text, device
    # a syscall outside @system-service (e.g. adjtimex under ProtectClock=) must not SIGSYS
    assert service["SystemCallErrorNumber"] == "EPERM"
    assert service["ProtectClock"] == "yes"
    # key/config ownership re-applied as root before the sandboxed start
    assert service["ExecStartPre"].startswith("+")
    assert "tmpfiles" in service["ExecStartPre"]


def test_uplink_unit_runs_the_upload_apart_from_the_recorder() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(UPLINK_UNIT, encoding="utf-8")
    service = parser["Service"]
    assert service["ExecStart"].split()[:3] == ["/usr/bin/bodycam-agent", "upload", "--config"]
    assert service["Restart"] == "always"
    assert service["User"] == "bodycam"
    assert int(service["Nice"]) > 0  # recording wins over upload


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("unit_file", [UNIT, UPLINK_UNIT], ids=lambda p: p.name)
def test_unit_passes_systemd_analyze_verify(tmp_path: Path, unit_file: Path) -> None:
    # verify checks that ExecStart exists: point it at this environment's console script
    agent = Path(sys.executable).parent / "bodycam-agent"
    if not agent.exists():
        pytest.skip("bodycam-agent console script not installed in this environment")
    text = unit_file.read_text(encoding="utf-8")
    text = text.replace("/usr/bin/bodycam-agent", str(agent))
    unit = tmp_path / unit_file.name
    unit.write_text(text, encoding="utf-8")
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert unit_file.name not in result.stderr, result.stderr
