"""Run the real receiver service as a child process (``python -m receiver ... run``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from receiver.cli import main as receiver_cli


class ReceiverProcess:
    def __init__(
        self, data_dir: Path, broker_host: str, broker_port: int, *, config: Path | None = None
    ) -> None:
        self.data_dir = data_dir
        self.broker = f"{broker_host}:{broker_port}"
        self.config = config
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def cli(self, *args: str) -> int:
        """Run a ``bodycam-receiver`` command in-process against this data dir."""
        config = ["--config", str(self.config)] if self.config is not None else []
        return receiver_cli([*config, "--data-dir", str(self.data_dir), *args])

    def start(self, timeout_s: float = 15.0) -> ReceiverProcess:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("the receiver is already running (stop or kill it first)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        marker = "connected to broker"
        before = self._log().count(marker)
        with self.log_path.open("ab") as log:
            config = ["--config", str(self.config)] if self.config is not None else []
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "receiver",
                    *config,
                    "--data-dir",
                    str(self.data_dir),
                    "-v",
                    "run",
                    "--broker",
                    self.broker,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"receiver exited at start:\n{self._log()[-3000:]}")
            if self._log().count(marker) > before:
                return self
            time.sleep(0.05)
        raise RuntimeError(f"receiver did not connect:\n{self._log()[-3000:]}")

    def _log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_text(self) -> str:
        return self._log()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
