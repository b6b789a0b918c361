"""systemd ``sd_notify``: READY, STATUS, STOPPING and the watchdog ping.

Implements the datagram protocol directly (``$NOTIFY_SOCKET``, abstract when it starts with
``@``) so no libsystemd binding is needed. The watchdog interval comes from ``$WATCHDOG_USEC``
(honouring ``$WATCHDOG_PID``); the daemon pings from its main loop, so a hung loop gets the
agent restarted by systemd.

Failure posture: without ``$NOTIFY_SOCKET`` every call is a no-op; a send error is logged once
and never raised, because a notification problem must not stop a recording.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        self.watchdog_interval_s: float | None = None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_interval_s = int(usec) / 1e6
        self._last_ping = 0.0
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, message: str) -> bool:
        if self.address is None:
            return False
        addr = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(addr)
                sock.sendall(message.encode("utf-8"))
        except OSError as exc:
            if not self._warned:
                log.warning("sd_notify to %s failed: %s", self.address, exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def watchdog_due(self, now_s: float | None = None) -> bool:
        if self.watchdog_interval_s is None:
            return False
        now = time.monotonic() if now_s is None else now_s
        # Ping at half the interval, as sd_watchdog_enabled(3) recommends.
        return now - self._last_ping >= self.watchdog_interval_s / 2

    def ping_watchdog(self) -> bool:
        self._last_ping = time.monotonic()
        return self.send("WATCHDOG=1")
