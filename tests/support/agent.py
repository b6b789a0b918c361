"""Running ``bodycam-agent simulate`` as a separate process, for crash tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path


def start_simulate(spool: Path, config: Path, seconds: int, log: Path) -> subprocess.Popen[str]:
    """A real-time simulated session in its own process (stdout piped, stderr to ``log``)."""
    return subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "simulate", "--spool", str(spool),
         "--seconds", str(seconds), "--config", str(config), "--realtime"],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )  # fmt: skip


def kill_mid_segment(spool: Path, config: Path, logs: Path, *, after_s: float = 6.5) -> datetime:
    """Start recording, SIGKILL the agent ``after_s`` into the recording; the kill time (UTC)."""
    proc = start_simulate(spool, config, 60, logs / "first.log")
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        line = ""
        while "recording:" not in line:
            assert time.monotonic() < deadline and proc.poll() is None, "never started recording"
            line = proc.stdout.readline()
        time.sleep(after_s)
        killed_at = datetime.now(UTC)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return killed_at


def restart(spool: Path, config: Path, logs: Path) -> str:
    """Start the agent again on the same spool (it recovers first); its stdout."""
    second = start_simulate(spool, config, 1, logs / "second.log")
    try:
        out, _ = second.communicate(timeout=120)
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(10)
    assert second.returncode == 0, (logs / "second.log").read_text()[-3000:]
    return out
