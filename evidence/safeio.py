"""Reading an evidence tree without ever leaving it: regular files and directories only.

Every path is walked one component at a time from a descriptor of the tree's root with
``openat``-style calls (``dir_fd``) and ``O_NOFOLLOW``: a symbolic link anywhere below the root, a
``..`` or a name with a separator is refused; a FIFO, socket or device is refused by its type
(``lstat`` before opening, ``O_NONBLOCK`` so even a FIFO swapped in afterwards cannot block, and
``fstat`` after opening, compared with the ``lstat``). Reads are bounded.

Failure posture: a path that is not a regular file or directory inside the tree raises
:class:`~evidence.errors.UnsafePathError` (the verifier reports it as a violation); I/O errors
raise ``OSError`` as usual. Nothing here follows a link, blocks on a special file or reads more
than it was asked to.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from evidence.errors import UnsafePathError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _check_name(name: str, where: str) -> None:
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise UnsafePathError(where, f"path component {name!r} is not a plain name")


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISREG, "a regular file"),
    ):
        if test(mode):
            return name
    return "a special file"


@dataclass(frozen=True)
class Entry:
    """One directory entry, typed by ``lstat`` (links are not followed)."""

    name: str
    kind: str  # "file", "dir" or what else it is ("a symbolic link", "a FIFO", ...)
    size: int


class Tree:
    """An evidence tree opened by its root directory (the one path that may be a link)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Tree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- walking ---------------------------------------------------------------------------
    def _open_dir(self, parts: Sequence[str]) -> int:
        """A new descriptor of the directory ``parts`` below the root (caller closes it)."""
        fd = os.dup(self._fd)
        walked: list[str] = []
        try:
            for name in parts:
                walked.append(name)
                where = "/".join(walked)
                _check_name(name, where)
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    raise UnsafePathError(where, f"is {_kind(st.st_mode)}, not a directory")
                try:
                    sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise UnsafePathError(
                            where, "changed into a link while being opened"
                        ) from exc
                    raise
                os.close(fd)
                fd = sub
        except BaseException:
            os.close(fd)
            raise
        return fd

    def is_dir(self, parts: Sequence[str]) -> bool:
        """True for a real directory; False when absent; UnsafePathError for anything else."""
        try:
            fd = self._open_dir(parts)
        except FileNotFoundError:
            return False
        os.close(fd)
        return True

    def exists(self, parts: Sequence[str]) -> bool:
        """True when ``parts`` names anything (a link too, without following it)."""
        *dirs, name = parts
        try:
            fd = self._open_dir(dirs)
        except (FileNotFoundError, UnsafePathError):
            return False
        try:
            _check_name(name, "/".join(parts))
            os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        else:
            return True
        finally:
            os.close(fd)

    def list_dir(self, parts: Sequence[str]) -> list[Entry]:
        """Entries of directory ``parts``, sorted by name; [] when it does not exist."""
        try:
            fd = self._open_dir(parts)
        except FileNotFoundError:
            return []
        try:
            out = []
            for name in sorted(os.listdir(fd)):
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    kind = "file"
                elif stat.S_ISDIR(st.st_mode):
                    kind = "dir"
                else:
                    kind = _kind(st.st_mode)
                out.append(Entry(name, kind, st.st_size))
            return out
        finally:
            os.close(fd)

    def open_file(self, parts: Sequence[str]) -> BinaryIO:
        """A regular file below the root, opened for reading (never blocks, never follows)."""
        *dirs, name = parts
        where = "/".join(parts)
        _check_name(name, where)
        dfd = self._open_dir(dirs)
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePathError(where, f"is {_kind(st.st_mode)}, not a regular file")
            try:
                fd = os.open(name, _FILE_FLAGS, dir_fd=dfd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise UnsafePathError(where, "changed into a link while being opened") from exc
                raise
        finally:
            os.close(dfd)
        try:
            now = os.fstat(fd)
            if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                raise UnsafePathError(where, "was replaced by something else while being opened")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb", buffering=0)
        except BaseException:
            os.close(fd)
            raise

    def read_file(self, parts: Sequence[str], limit_bytes: int) -> bytes:
        """The whole file, or UnsafePathError when it is larger than ``limit_bytes``."""
        with self.open_file(parts) as f:
            data = f.read(limit_bytes + 1)
        if len(data) > limit_bytes:
            raise UnsafePathError("/".join(parts), f"larger than {limit_bytes} bytes")
        return data

    def iter_blocks(self, parts: Sequence[str], block_bytes: int = 1 << 20) -> Iterator[bytes]:
        with self.open_file(parts) as f:
            while block := f.read(block_bytes):
                yield block


def open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file that is not a symbolic link.

    For callers holding a plain path (``Record.load``, the receiver's import): the last
    component is opened with ``O_NOFOLLOW | O_NONBLOCK`` and checked with ``fstat``, so a link,
    FIFO or device raises :class:`UnsafePathError` instead of being followed or blocking.
    Directories above it are the caller's to trust; :class:`Tree` checks those too.
    """
    where = str(path)
    try:
        fd = os.open(path, _FILE_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePathError(where, "is a symbolic link, not a regular file") from exc
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafePathError(where, f"is {_kind(mode)}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise
