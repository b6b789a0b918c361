"""Streaming SHA-256 of media files, whole and per fixed-size chunk.

The per-chunk hashes let a receiver check each transferred chunk on arrival and let a verifier say
*where* a file was changed. Memory use is one chunk, whatever the file size.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evidence.errors import RecordFormatError

CHUNK_SIZE = 256 * 1024
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FileDigest:
    size: int
    sha256: str
    chunk_size: int
    chunks: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "sha256": self.sha256,
            "chunk_size": self.chunk_size,
            "chunks": list(self.chunks),
        }

    @classmethod
    def from_dict(cls, d: Any) -> FileDigest:
        if not isinstance(d, dict):
            raise RecordFormatError("file digest is not an object")
        size, sha, chunk_size, chunks = (
            d.get(k) for k in ("size", "sha256", "chunk_size", "chunks")
        )
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RecordFormatError("digest size is not a non-negative integer")
        if not isinstance(sha, str) or not _HEX64_RE.match(sha):
            raise RecordFormatError("digest sha256 is not 64 lowercase hex digits")
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size <= 0:
            raise RecordFormatError("digest chunk_size is not a positive integer")
        if not isinstance(chunks, list) or not all(
            isinstance(c, str) and _HEX64_RE.match(c) for c in chunks
        ):
            raise RecordFormatError("digest chunks is not a list of sha256 hex digests")
        if len(chunks) != expected_chunks(size, chunk_size):
            raise RecordFormatError(
                f"digest lists {len(chunks)} chunks; a {size}-byte file has "
                f"{expected_chunks(size, chunk_size)} of {chunk_size} bytes"
            )
        return cls(size, sha, chunk_size, tuple(chunks))


def expected_chunks(size_bytes: int, chunk_size_bytes: int) -> int:
    return -(-size_bytes // chunk_size_bytes)


class StreamingDigest:
    """Feed bytes in any pieces; :meth:`finish` returns the :class:`FileDigest`.

    The whole-file hash and the chunk hashes are separate SHA-256 computations over the same
    bytes (each chunk starts from a fresh state), except for the first chunk: the whole-file
    hash has then absorbed exactly that chunk, so a copy of its state finishes to the first
    chunk's hash. A file of at most one chunk is thus hashed once, a longer one once for the
    first chunk and twice for the rest.
    """

    def __init__(self, chunk_size_bytes: int = CHUNK_SIZE) -> None:
        if chunk_size_bytes <= 0:
            raise ValueError("chunk size must be positive")
        self.chunk_size = chunk_size_bytes
        self._whole = hashlib.sha256()
        self._chunk = hashlib.sha256()
        self._in_chunk = 0
        self._chunks: list[str] = []
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        if self.size < self.chunk_size:  # the first chunk: the whole-file hash alone
            take = min(len(view), self.chunk_size - self.size)
            self._whole.update(view[:take])
            self.size += take
            view = view[take:]
            if self.size < self.chunk_size:
                return
            self._chunks.append(self._whole.copy().hexdigest())
        self._whole.update(view)
        self.size += len(view)
        self._update_chunks(view)

    def _update_chunks(self, view: memoryview) -> None:
        size = self.chunk_size
        if self._in_chunk:  # finish the chunk a previous piece started
            take = min(len(view), size - self._in_chunk)
            self._chunk.update(view[:take])
            self._in_chunk += take
            view = view[take:]
            if self._in_chunk < size:
                return
            self._chunks.append(self._chunk.hexdigest())
            self._in_chunk = 0
        # whole chunks straight from the caller's buffer: one hash object each, no copies
        whole = len(view) - len(view) % size
        sha = hashlib.sha256
        self._chunks.extend(sha(view[i : i + size]).hexdigest() for i in range(0, whole, size))
        if whole < len(view):
            self._chunk = sha(view[whole:])
            self._in_chunk = len(view) - whole

    def finish(self) -> FileDigest:
        whole = self._whole.hexdigest()
        chunks = list(self._chunks)
        if 0 < self.size < self.chunk_size:  # a single short chunk: the whole file
            chunks.append(whole)
        elif self._in_chunk:
            chunks.append(self._chunk.hexdigest())
        return FileDigest(self.size, whole, self.chunk_size, tuple(chunks))


def digest_file(path: Path, chunk_size_bytes: int = CHUNK_SIZE) -> FileDigest:
    """Whole and per-chunk digests of a file, in one read pass into one reused buffer."""
    digest = StreamingDigest(chunk_size_bytes)
    block = max(1, (1 << 20) // chunk_size_bytes) * chunk_size_bytes
    buf = bytearray(block)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            digest.update(view[:n])
    return digest.finish()


def chunk_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
