"""A hung capture thread withholds the systemd watchdog ping (so systemd restarts the agent),
exactly like a hung main loop; also the liveness bookkeeping on real threads.

The agent runs as systemd runs it (``bodycam-agent run`` with $NOTIFY_SOCKET and
$WATCHDOG_USEC); the hang is injected through the sim-control FIFO (``hang-capture``). The
restart itself is systemd's job: scripts/install-test shows it under a booted systemd."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from agent.media.liveness import CaptureLiveness
from tests.test_agent_run import NotifyListener, _config, _send, _start_agent, _stop


class _Clock:
    """An injected time source for the liveness (seconds)."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_liveness_on_real_threads() -> None:
    clock = _Clock()
    live = CaptureLiveness(stall_s=5.0, now=clock)
    assert not live.stalled()  # never beaten: capture not started
    turned = threading.Event()
    stop = threading.Event()

    def capture_loop() -> None:
        while not stop.is_set():
            live.beat()
            turned.set()
            stop.wait(0.01)

    thread = threading.Thread(target=capture_loop, name="capture")
    thread.start()
    try:
        assert turned.wait(10)
        clock.t += 4.0
        turned.clear()
        assert turned.wait(10)
        assert not live.stalled()
        live.inject_hang()
        turned.clear()
        # the next beat blocks: after this, no more turns
        deadline = time.monotonic() + 10
        while turned.wait(0.05):
            turned.clear()
            assert time.monotonic() < deadline
        clock.t += 5.5
        assert live.stalled()
        assert live.silent_for_s() >= 5.5
        live.release()
        assert turned.wait(10)
        assert not live.stalled()
    finally:
        stop.set()
        live.release()
        thread.join(10)
    clock.t += 60.0
    assert not live.stalled()  # the thread exited: capture stopped on purpose, not hung


@pytest.mark.slow
def test_hung_capture_thread_withholds_the_watchdog(tmp_path: Path) -> None:
    config = _config(tmp_path)
    text = config.read_text(encoding="utf-8")
    config.write_text(text + "[recording]\ncapture_stall_s = 2.0\n", encoding="utf-8")
    spool = tmp_path / "spool"
    from evidence.keys import generate_signing_key, save_signing_key

    save_signing_key(spool / "state" / "device.key", generate_signing_key())
    log = tmp_path / "agent.log"
    notify = NotifyListener(tmp_path / "n.sock")
    proc = _start_agent(config, notify, log)  # WATCHDOG_USEC = 2 s: a ping every ~1 s
    try:
        assert notify.wait_for("READY=1", 60), log.read_text()
        assert notify.wait_for("WATCHDOG=1", 30), log.read_text()
        _send(spool / "state" / "sim-control", "hang-capture")
        deadline = time.monotonic() + 60
        while "withholding the watchdog ping" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            assert proc.poll() is None
            notify.wait_for("never", 0.2)
        notify.drain()
        withheld_at = len(notify.messages)
        # three watchdog intervals/2 of silence (a live agent pings every ~1 s)
        notify.wait_for("WATCHDOG=1", 3.0)
        assert proc.poll() is None, "the agent must stay up; systemd decides the restart"
        late = [m for m in notify.messages[withheld_at:] if "WATCHDOG=1" in m]
        assert late == [], late
    finally:
        _stop(proc)
        notify.close()
