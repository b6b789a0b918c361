"""A really full disk for fault tests, without touching the machine's own mounts.

:func:`method` finds a way to mount a small ``tmpfs`` that only this run sees, in this order:

* ``userns``: ``unshare --user --map-root-user --mount`` (an unprivileged user namespace with
  its own mount table; works without root where the kernel allows user namespaces);
* ``mountns``: ``unshare --mount`` as root (a private mount table, no user namespace).

:func:`run_inside` re-runs a command in such a namespace; there the command calls
:func:`mount_tmpfs` on a directory of its own and everything it starts (the agent, the
receiver, the broker) inherits that mount table, so their writes really end in ``ENOSPC``.
The machine's mounts are never changed; the namespace and its tmpfs go when the command ends.

:func:`fill` fills such a filesystem to the last byte (a file of its own, removed by
:func:`release`), as another writer on the card or the dock's disk would.

Failure posture: :func:`method` returns None (with the reason in :data:`UNAVAILABLE`) when no
way works, so callers can skip with that reason; everything else raises ``OSError``/
``subprocess.CalledProcessError`` with the command's message.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

PREFIXES = {
    "userns": ["unshare", "--user", "--map-root-user", "--mount"],
    "mountns": ["unshare", "--mount"],
}
UNAVAILABLE: list[str] = []
"""Why each method failed, for a skip message."""


def method() -> str | None:
    """The first way to mount a private tmpfs that works here, or None."""
    UNAVAILABLE.clear()
    if shutil.which("unshare") is None:
        UNAVAILABLE.append("no unshare(1) on this machine")
        return None
    probe = "d=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs $d && umount $d && rmdir $d"
    for name, prefix in PREFIXES.items():
        if name == "mountns" and os.geteuid() != 0:
            UNAVAILABLE.append("mountns: needs root")
            continue
        done = subprocess.run(
            [*prefix, "sh", "-c", probe], capture_output=True, text=True, timeout=30, check=False
        )
        if done.returncode == 0:
            return name
        UNAVAILABLE.append(f"{name}: {done.stderr.strip() or done.returncode}")
    return None


def run_inside(how: str, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in a private mount namespace made the ``how`` way."""
    return subprocess.run([*PREFIXES[how], *argv], text=True, check=False, **kwargs)  # type: ignore[call-overload,no-any-return]


def mount_tmpfs(path: Path, size_bytes: int) -> None:
    """Mount a tmpfs of ``size_bytes`` at ``path`` (inside the namespace only)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path) -> int:
    """Write ``path`` until the filesystem has no byte left; returns the bytes written."""
    written = 0
    block = b"\0" * (1 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            chunk = block[:size]
            while True:
                try:
                    written += os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return written


def release(path: Path) -> None:
    path.unlink(missing_ok=True)
