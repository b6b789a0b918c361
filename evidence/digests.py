"""One read pass over a file for both its whole SHA-256 and its per-chunk SHA-256 list.

Used by the verifier on many files at once from a thread pool: ``hashlib`` releases the GIL while
it hashes, so files are hashed in parallel on every core. Memory is one read block per thread.

Failure posture: ``OSError`` from reading propagates; nothing else is raised.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import BinaryIO

from evidence.media import FileDigest

#: Read size: whole chunks, about 1 MiB, so a block stays in cache for both hashes.
TARGET_BLOCK_BYTES = 1 << 20


class ChunkedHasher:
    """Feed bytes in any pieces; whole and per-chunk digests in the same pass."""

    def __init__(self, chunk_size_bytes: int) -> None:
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
        self._whole.update(view)
        self.size += len(view)
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
        whole = len(view) - len(view) % size
        sha = hashlib.sha256
        self._chunks.extend(sha(view[i : i + size]).hexdigest() for i in range(0, whole, size))
        if whole < len(view):
            self._chunk = sha(view[whole:])
            self._in_chunk = len(view) - whole

    def finish(self) -> FileDigest:
        chunks = list(self._chunks)
        if self._in_chunk:
            chunks.append(self._chunk.hexdigest())
        return FileDigest(self.size, self._whole.hexdigest(), self.chunk_size, tuple(chunks))


def block_bytes_for(chunk_size_bytes: int) -> int:
    """A read size that is a whole number of chunks, about :data:`TARGET_BLOCK_BYTES`."""
    return max(1, TARGET_BLOCK_BYTES // chunk_size_bytes) * chunk_size_bytes


def digest_stream(f: BinaryIO, chunk_size_bytes: int) -> FileDigest:
    """Digest an open file from its current position to its end, in one pass."""
    hasher = ChunkedHasher(chunk_size_bytes)
    buf = bytearray(block_bytes_for(chunk_size_bytes))
    view = memoryview(buf)
    while True:
        n = f.readinto(view)  # type: ignore[attr-defined]
        if not n:
            break
        hasher.update(view[:n])
    return hasher.finish()


def digest_blocks(blocks: Iterable[bytes], chunk_size_bytes: int) -> FileDigest:
    """Digest a stream of byte blocks (e.g. decrypted plaintext), in one pass."""
    hasher = ChunkedHasher(chunk_size_bytes)
    for block in blocks:
        hasher.update(block)
    return hasher.finish()
