"""``bodycam-agent run`` as systemd runs it: READY and watchdog over $NOTIFY_SOCKET, buttons
(through the simulated-button FIFO), and a clean SIGTERM that seals the open segment."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from evidence import layout
from evidence.records import Record, RecordType
from evidence.verify import verify_tree
from tests.support.agent import largest_unsealed_part, written_records


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
[device]
id = "SIM-RUN-1"
spool_dir = "{tmp_path / "spool"}"
[hardware]
backend = "simulated"
[hardware.controls]
hold_time_s = 0.3
[capture]
backend = "simulated"
pre_event_s = 2.0
realtime = true
fps = 15
width = 640
height = 360
[speech]
enabled = false
""",
        encoding="utf-8",
    )
    return path


class NotifyListener:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def wait_for(self, text: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(text in m for m in self.messages):
                return True
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
        return any(text in m for m in self.messages)

    def wait_count(self, text: str, count: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while sum(text in m for m in self.messages) < count:
            if time.monotonic() > deadline:
                return False
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
        return True

    def drain(self) -> None:
        self.sock.setblocking(False)
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return

    def close(self) -> None:
        self.sock.close()


def _start_agent(config: Path, listener: NotifyListener, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, NOTIFY_SOCKET=str(listener.path), WATCHDOG_USEC="2000000")
    return subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("a"),
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def _wait_until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def _has_marker(spool: Path) -> bool:
    return any(r.type == RecordType.MARKER for r in written_records(spool))


def _part_with_data(spool: Path) -> bool:
    """The segment being recorded has reached the card (the pipeline syncs about every second)."""
    return largest_unsealed_part(spool) > 0


def _send(fifo: Path, command: str) -> None:
    deadline = time.monotonic() + 10
    while not fifo.exists():
        assert time.monotonic() < deadline, "no sim-control FIFO"
        time.sleep(0.05)
    with fifo.open("w") as f:
        f.write(command + "\n")


@pytest.mark.slow
def test_run_crash_restart_resumes_and_sigterm_closes_cleanly(tmp_path: Path) -> None:
    """systemd's life of the daemon: READY + watchdog, a press records, SIGKILL (a crash),
    restart: recovery, then recording again by itself; SIGTERM seals and closes cleanly."""
    config = _config(tmp_path)
    spool = tmp_path / "spool"
    from evidence.keys import generate_signing_key, save_signing_key

    save_signing_key(spool / "state" / "device.key", generate_signing_key())
    fifo = spool / "state" / "sim-control"
    log = tmp_path / "agent.log"

    first_notify = NotifyListener(tmp_path / "n1.sock")
    first = _start_agent(config, first_notify, log)
    try:
        assert first_notify.wait_for("READY=1", 30), log.read_text()
        _send(fifo, "press")
        assert first_notify.wait_for("STATUS=recording", 30), log.read_text()[-2000:]
        _send(fifo, "mark")
        _wait_until(lambda: _has_marker(spool))
        assert first_notify.wait_count("WATCHDOG=1", 2, 30), first_notify.messages
        _wait_until(lambda: _part_with_data(spool))  # something for recovery to seal
        first.kill()  # SIGKILL: no chance to seal
        first.wait(10)
        first_notify.drain()
    finally:
        _stop(first)
        first_notify.close()

    second_notify = NotifyListener(tmp_path / "n2.sock")
    second = _start_agent(config, second_notify, log)
    try:
        assert second_notify.wait_for("READY=1", 30), log.read_text()[-3000:]
        # no button press: it resumes recording by itself after the crash
        assert second_notify.wait_for("STATUS=recording", 30), log.read_text()[-3000:]
        _wait_until(lambda: _part_with_data(spool))
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0, log.read_text()[-3000:]
        second_notify.drain()
    finally:
        _stop(second)
        second_notify.close()
    assert any("STOPPING=1" in m for m in second_notify.messages)

    records = [Record.load(p) for p in layout.iter_record_files(spool, "SIM-RUN-1")]
    sessions = list(dict.fromkeys(r.session for r in records))
    assert len(sessions) == 2
    crashed = [r for r in records if r.session == sessions[0]]
    resumed = [r for r in records if r.session == sessions[1]]
    assert [r.type for r in crashed][-2:] == [RecordType.GAP, RecordType.SESSION_CLOSE]
    assert crashed[-2].body["cause"] == "crash"
    assert crashed[-1].body["reason"] == "crash-recovery"
    assert any(r.type == RecordType.MARKER for r in crashed)
    assert any(r.type == RecordType.SEGMENT and r.body["recovered"] for r in crashed)
    assert resumed[0].type == RecordType.SESSION_OPEN
    assert resumed[-1].type == RecordType.SESSION_CLOSE
    assert resumed[-1].body["reason"] == "shutdown"
    # the open segment was sealed on SIGTERM, not left for recovery
    sealed = [r for r in resumed if r.type == RecordType.SEGMENT]
    assert sealed
    assert all(r.body["frames"] > 0 for r in sealed)
    assert resumed[-1].body["duration_us"] > 0
    assert not any(r.body.get("recovered") for r in sealed)
    assert not list((spool / "state" / "parts").glob("*.part"))
    assert not (spool / "state" / "session.json").exists()
    report = verify_tree(spool)
    assert report.ok, [str(v) for v in report.violations]
