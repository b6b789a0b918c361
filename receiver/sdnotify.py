"""Minimal sd_notify(3) client (READY, STATUS, WATCHDOG, STOPPING) using only the stdlib.

The receiver must not import the agent, so this module and ``agent/notify.py`` are two thin
clients of the same protocol that agree on every detail (``tests/test_sdnotify.py`` holds both
to one table): the datagram goes to ``$NOTIFY_SOCKET`` (abstract when it starts with ``@``), and
the watchdog is pinged every half of ``$WATCHDOG_USEC`` (as sd_watchdog_enabled(3) recommends)
when ``$WATCHDOG_PID`` is unset or names this process.

Failure posture: outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op; send errors are
logged at debug level and ignored, because the service must not stop over a missing notifier.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except OSError as exc:
        log.debug("sd_notify failed: %s", exc)
        return False
    return True


def watchdog_ping_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """Half the watchdog timeout systemd asked for, or None when no watchdog is set for us."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6
