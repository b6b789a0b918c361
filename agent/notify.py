"""systemd ``sd_notify``: READY, STATUS, STOPPING and the watchdog ping.

Implements the datagram protocol directly (``$NOTIFY_SOCKET``, abstract when it starts with
``@``) so no libsystemd binding is needed. The receiver has its own client of the same protocol
(``receiver/sdnotify.py``; the receiver must not import the agent); ``tests/test_sdnotify.py``
holds both to one table. The watchdog is pinged every half of ``$WATCHDOG_USEC`` (as
sd_watchdog_enabled(3) recommends) when ``$WATCHDOG_PID`` is unset or names this process; the
daemon pings from its main loop, so a hung loop gets the agent restarted by systemd.

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


def watchdog_ping_interval_s(environ: Mapping[str, str]) -> float | None:
    """Half the watchdog timeout systemd asked for, or None when no watchdog is set for us."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        self.ping_interval_s = watchdog_ping_interval_s(env)
        self._last_ping: float | None = None
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
        if self.ping_interval_s is None:
            return False
        if self._last_ping is None:
            return True
        now = time.monotonic() if now_s is None else now_s
        return now - self._last_ping >= self.ping_interval_s

    def ping_watchdog(self, now_s: float | None = None) -> bool:
        self._last_ping = time.monotonic() if now_s is None else now_s
        return self.send("WATCHDOG=1")
