"""Is the system clock synchronised? Asked of the time service, not of the kernel.

Inside the agent's systemd sandbox ``ProtectClock=yes`` (and ``SystemCallFilter=@system-service``)
block even a read-only ``adjtimex(2)``, so the agent asks the service that keeps the clock:

- ``timesyncd``: ``timedatectl show --property=NTPSynchronized --value`` (systemd-timedated over
  D-Bus on the system bus; it reads the kernel's flag outside our sandbox, so it also reflects
  chrony or ntpd);
- ``chrony``: ``chronyc -n tracking`` (its ``Leap status`` is ``Not synchronised`` until locked);
- ``adjtimex``: the kernel directly (works outside the sandbox only; development machines).

``auto`` tries them in that order and takes the first that answers.

Failure posture: never raises. A missing command, a timeout, an unreadable answer or a denied
call is "could not ask" (``synced=None``) with the reason; the clock check turns that into a
warning (or a failure if so configured), never a pass.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass

log = logging.getLogger(__name__)

SOURCES = ("auto", "timesyncd", "chrony", "adjtimex")
TIME_ERROR = 5  # adjtimex(2): clock not synchronised
COMMAND_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class SyncAnswer:
    synced: bool | None
    """None: this source could not be asked."""
    source: str
    detail: str


def _run(argv: list[str], path: str | None) -> tuple[str | None, str]:
    exe = shutil.which(argv[0], path=path)
    if exe is None:
        return None, f"{argv[0]} not found"
    env = dict(os.environ, LC_ALL="C")
    if path is not None:
        env["PATH"] = path
    try:
        done = subprocess.run(
            [exe, *argv[1:]],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{argv[0]}: {exc}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"{argv[0]} exited {done.returncode}: {last[:200]}"
    return done.stdout, ""


def ask_timesyncd(path: str | None = None) -> SyncAnswer:
    out, err = _run(["timedatectl", "show", "--property=NTPSynchronized", "--value"], path)
    if out is None:
        return SyncAnswer(None, "timesyncd", err)
    value = out.strip()
    if value in ("yes", "no"):
        return SyncAnswer(value == "yes", "timesyncd", f"timedatectl: NTPSynchronized={value}")
    return SyncAnswer(None, "timesyncd", f"timedatectl: unexpected answer {value[:60]!r}")


def ask_chrony(path: str | None = None) -> SyncAnswer:
    out, err = _run(["chronyc", "-n", "tracking"], path)
    if out is None:
        return SyncAnswer(None, "chrony", err)
    fields = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    leap = fields.get("leap status")
    if leap is None:
        return SyncAnswer(None, "chrony", "chronyc tracking: no 'Leap status' line")
    synced = leap.lower() != "not synchronised"
    ref = fields.get("reference id", "?")
    return SyncAnswer(synced, "chrony", f"chronyc: leap status {leap}, reference {ref}")


def ask_kernel() -> SyncAnswer:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        # struct timex is ~208 bytes; a zeroed, larger buffer means modes=0, i.e. query only.
        state = libc.adjtimex(ctypes.create_string_buffer(512))
    except (OSError, AttributeError) as exc:
        return SyncAnswer(None, "adjtimex", f"adjtimex unavailable: {exc}")
    if state < 0:
        return SyncAnswer(None, "adjtimex", f"adjtimex denied (errno {ctypes.get_errno()})")
    return SyncAnswer(state != TIME_ERROR, "adjtimex", f"kernel clock state {state}")


def ask_time_service(source: str = "auto", *, path: str | None = None) -> SyncAnswer:
    """The first answer from ``source`` (``auto``: timesyncd, chrony, then the kernel).

    ``path`` replaces ``$PATH`` for finding the commands (tests put their fake sources there).
    """
    askers = {
        "timesyncd": lambda: ask_timesyncd(path),
        "chrony": lambda: ask_chrony(path),
        "adjtimex": ask_kernel,
    }
    order = list(askers) if source == "auto" else [source]
    reasons = []
    for name in order:
        asker = askers.get(name)
        if asker is None:
            return SyncAnswer(None, source, f"unknown clock source {source!r}")
        answer = asker()
        if answer.synced is not None:
            return answer
        reasons.append(answer.detail)
    detail = "; ".join(reasons)
    log.warning("cannot tell whether the clock is synchronised: %s", detail)
    return SyncAnswer(None, source, detail)
