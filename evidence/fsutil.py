"""Durable file writes: temp file → fsync → atomic rename (or link) → fsync of the directory."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _durable_put(
    path: Path, data: bytes, mode: int, put: Callable[[Path, Path], None], tag: str
) -> None:
    """Write ``data`` to a synced temp file beside ``path``, ``put`` it in place, sync the dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{tag}{os.getpid()}-{threading.get_native_id()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        put(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path``: after a crash the file is either old or new, never torn."""
    _durable_put(path, data, mode, os.replace, "tmp")


def exclusive_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Durably create ``path`` with ``data``; raise :class:`FileExistsError` if it exists.

    The bytes reach the disk under a temporary name first and are then hard-linked into place,
    which fails rather than replaces: an existing record is never overwritten.
    """
    _durable_put(path, data, mode, os.link, "new")
