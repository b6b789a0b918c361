"""scripts/build-debs builds bodycam-agent and bodycam-receiver .debs whose contents match the
units, the user and directories the units expect, and the install locations (runs in CI)."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="no dpkg-deb")


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [str(ROOT / "scripts" / "build-debs"), str(out)], check=True, timeout=600, cwd=ROOT
    )
    return {p.name.split("_")[0]: p for p in out.glob("*.deb")}


def _field(deb: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "--field", str(deb), name], capture_output=True, text=True, check=True
    ).stdout.strip()


def _extract(deb: Path, dest: Path) -> Path:
    subprocess.run(["dpkg-deb", "-R", str(deb), str(dest)], check=True)
    return dest


def test_both_packages_are_built(debs: dict[str, Path]) -> None:
    assert set(debs) == {"bodycam-agent", "bodycam-receiver"}
    for name, deb in debs.items():
        assert _field(deb, "Package") == name
        assert _field(deb, "Architecture") == "all"
        assert "python3-venv" in _field(deb, "Depends")


def test_agent_package_contents(debs: dict[str, Path], tmp_path: Path) -> None:
    deb = debs["bodycam-agent"]
    # Raspberry Pi OS's own picamera2 (with libcamera) and lgpio; a Recommends, so the same
    # package installs on plain Debian (no python3-picamera2 there) for the installation test
    recommends = _field(deb, "Recommends")
    for pkg in ("python3-picamera2 (>= 0.3.26)", "python3-lgpio", "python3-av", "espeak-ng"):
        assert pkg in recommends
    assert "picamera2" not in _field(deb, "Depends")
    root = _extract(deb, tmp_path / "agent")
    units = {p.name for p in (root / "lib/systemd/system").iterdir()}
    assert units == {"bodycam-agent.service", "bodycam-uplink.service"}
    for unit in units:
        assert (root / "lib/systemd/system" / unit).read_bytes() == (
            ROOT / "systemd" / unit
        ).read_bytes()
    sysusers = (root / "usr/lib/sysusers.d/bodycam-agent.conf").read_text()
    assert "u bodycam " in sysusers
    for group in ("video", "audio", "gpio"):
        assert f"m bodycam {group}" in sysusers
    tmpfiles = (root / "usr/lib/tmpfiles.d/bodycam-agent.conf").read_text()
    assert "d /etc/bodycam 0750 root bodycam" in tmpfiles
    assert "z /etc/bodycam/signing.key 0640 root bodycam" in tmpfiles
    assert "d /var/lib/bodycam/lgpio 0700 bodycam bodycam" in tmpfiles
    # the unit's ExecStartPre applies exactly this tmpfiles.d file
    unit_text = (root / "lib/systemd/system/bodycam-agent.service").read_text()
    assert "systemd-tmpfiles --create bodycam-agent.conf" in unit_text
    postinst = (root / "DEBIAN/postinst").read_text()
    assert "VENV=/opt/bodycam-agent/venv\n" in postinst
    assert 'python3 -m venv --system-site-packages "$VENV"' in postinst
    assert "systemd-sysusers bodycam-agent.conf" in postinst
    assert 'update-alternatives --install "/usr/bin/$tool"' in postinst
    assert "bodycam-agent bodycam-provision bodycam-verify" in postinst
    assert (root / "usr/lib/bodycam-agent/sandbox-run").stat().st_mode & 0o111
    assert (root / "usr/lib/bodycam-agent/hardware-test").stat().st_mode & 0o111
    shipped = {p.name for p in (root / "usr/share/bodycam-agent/hardware_tests").iterdir()}
    assert {"conftest.py", "test_camera_audio.py", "test_device_checks.py"} <= shipped
    for script in ("postinst", "prerm", "postrm"):
        subprocess.run(["sh", "-n", str(root / "DEBIAN" / script)], check=True)
        assert (root / "DEBIAN" / script).stat().st_mode & 0o111
    (wheel,) = (root / "usr/share/bodycam-agent/wheels").glob("bodycam_recorder-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"agent/media/pi.py", "agent/cli.py", "evidence/records.py"} <= names
    assert not any(n.startswith("tests/") for n in names)


def test_receiver_package_contents(debs: dict[str, Path], tmp_path: Path) -> None:
    root = _extract(debs["bodycam-receiver"], tmp_path / "receiver")
    unit = (root / "lib/systemd/system/bodycam-receiver.service").read_text()
    assert "ExecStart=/usr/bin/bodycam-receiver " in unit
    assert "u bodycam-receiver " in (root / "usr/lib/sysusers.d/bodycam-receiver.conf").read_text()
    postinst = (root / "DEBIAN/postinst").read_text()
    assert "VENV=/opt/bodycam-receiver/venv" in postinst
    assert 'systemctl start "$unit"' in postinst
    assert "bodycam-receiver.service" in postinst
