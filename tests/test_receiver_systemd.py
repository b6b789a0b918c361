"""The receiver under systemd: the unit file verifies, READY and WATCHDOG notifications arrive."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.dock import Dock, running_dock

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "bodycam-receiver.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify a copy whose ExecStart points at this machine's installed console script
    script = shutil.which("bodycam-receiver") or str(
        Path(sys.executable).parent / "bodycam-receiver"
    )
    assert Path(script).exists()
    text = UNIT.read_text().replace("/usr/bin/bodycam-receiver", script)
    unit = tmp_path / "bodycam-receiver.service"
    unit.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "Type=notify" in text
    assert "WatchdogSec=" in text


def test_service_notifies_ready_and_pets_watchdog(tmp_path: Path) -> None:
    with running_dock(tmp_path / "dock", receiver=False) as dock:
        _notify_check(tmp_path, dock)


def _notify_check(tmp_path: Path, dock: Dock) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    env = {**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "receiver",
            "--config",
            str(dock.receiver_config),
            "--data-dir",
            str(tmp_path / "data"),
            "run",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    got: list[str] = []
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and got.count("WATCHDOG=1") < 2:
            try:
                got += sock.recv(4096).decode().splitlines()
            except TimeoutError:
                continue
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        try:
            while True:
                got += sock.recv(4096).decode().splitlines()
        except TimeoutError:
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    assert "READY=1" in got
    assert got.count("WATCHDOG=1") >= 2
    assert "STOPPING=1" in got
