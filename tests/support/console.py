"""A running review console for browser and HTTP tests: a receiver store filled the way a dock
fills it (real simulated recordings from ``bodycam-agent simulate``, imported with the clerk's
CLI), users of every role, a console certificate from a real provisioning dock, and
``bodycam-receiver web`` serving it over HTTPS on a free loopback port in its own process."""

from __future__ import annotations

import contextlib
import io
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from evidence.values import format_utc
from provisioning.dock import Dock
from provisioning.webcert import issue_web_certificate
from receiver.cli import main as receiver_main
from tests.support.broker import free_port
from tests.support.seeded import _env

PASSWORD = "correct horse battery"
CASE = "JY-2026-0001"
SENSITIVE_CASE = "JY-2026-0002"
USERS = {
    "admin": "administrator",
    "clara": "clerk",
    "sven": "supervisor",
    "hanna": "head",
    "audrey": "auditor",
    "tom": "technician",
}
DEVICE_DIR = "devices"


def rx(data: Path, *args: str, user: str | None = None) -> str:
    out, err = io.StringIO(), io.StringIO()
    argv = ["--data-dir", str(data), *(["--user", user] if user else []), *args]
    with (
        _env(BODYCAM_PASSWORD=PASSWORD, BODYCAM_NEW_PASSWORD=PASSWORD),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        code = receiver_main(argv)
    assert code == 0, (argv, code, out.getvalue(), err.getvalue())
    return out.getvalue()


def simulate(spool: Path, seconds: int, log: Path, *, start: str | None = None) -> None:
    """One recorded session on the simulated hardware (fast mode: media time is stepped)."""
    with log.open("a") as err:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "agent.cli",
                "simulate",
                "--spool",
                str(spool),
                "--seconds",
                str(seconds),
                *(["--start", start] if start else []),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=err,
            timeout=300,
        )


@dataclass
class Site:
    root: Path
    data: Path
    ca: Path
    cert: Path
    key: Path
    port: int
    sessions: list[str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> Site:
        log = (self.root / "web.log").open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "receiver.cli",
                "--data-dir",
                str(self.data),
                "web",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--cert",
                str(self.cert),
                "--key",
                str(self.key),
            ],
            stdout=log,
            stderr=log,
        )
        context = ssl.create_default_context(cafile=str(self.ca))
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"console exited: {self.log_text()[-2000:]}")
            try:
                with (
                    socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw,
                    context.wrap_socket(raw, server_hostname="127.0.0.1"),
                ):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"console not up: {self.log_text()[-2000:]}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_text(self) -> str:
        path = self.root / "web.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def custody(self, case: str) -> list[dict[str, object]]:
        import json

        return json.loads(rx(self.data, "custody", "log", "--case", case, "--json", user="audrey"))


def build_site(root: Path) -> Site:
    """Two recorded sessions (one filed by its clerk later, one in a sensitive case)."""
    root.mkdir(parents=True, exist_ok=True)
    spool, data = root / "spool", root / "rdata"
    day_ago = format_utc(datetime.now(UTC) - timedelta(days=1))
    for _ in range(2):  # dated a day back: the second run need not wait for real time
        simulate(spool, 40, root / "agent.log", start=day_ago)
    (device,) = [p.name for p in (spool / DEVICE_DIR).iterdir() if p.is_dir()]
    rx(
        data,
        "device",
        "add",
        "--id",
        device,
        "--key",
        str(spool / DEVICE_DIR / device / "device.pub"),
    )
    rx(
        data,
        "case",
        "create",
        "--number",
        CASE,
        "--type",
        "inspection",
        "--title",
        "校外培训机构专项检查",
        "--party",
        "某培训学校",
    )
    rx(
        data,
        "case",
        "create",
        "--number",
        SENSITIVE_CASE,
        "--type",
        "interview",
        "--title",
        "当事人询问",
        "--party",
        "张三",
        "--sensitivity",
        "personal-privacy",
    )
    rx(data, "import", str(spool))
    import json

    sessions = [s["session"] for s in json.loads(rx(data, "sessions", "--json"))]
    rx(data, "file", "--session", sessions[1], "--case", SENSITIVE_CASE)
    rx(data, "user", "add", "admin", "--role", "administrator")
    for name, role in USERS.items():
        if name != "admin":
            rx(data, "user", "add", name, "--role", role, user="admin")
    dock = Dock.init(root / "dock")
    issued = issue_web_certificate(dock)
    return Site(root, data, issued.ca, issued.cert, issued.key, free_port(), sessions)
