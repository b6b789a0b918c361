"""One read pass over a file for both its whole SHA-256 and its per-chunk SHA-256 list.

Used by the verifier on many files at once from a thread pool: ``hashlib`` releases the GIL while
it hashes, so files are hashed in parallel on every core. Memory is one read block per thread.

Failure posture: ``OSError`` from reading propagates; nothing else is raised.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import BinaryIO

from evidence.media import FileDigest, StreamingDigest

#: Read size: whole chunks, about 1 MiB, so a block stays in cache for both hashes.
TARGET_BLOCK_BYTES = 1 << 20


def block_bytes_for(chunk_size_bytes: int) -> int:
    """A read size that is a whole number of chunks, about :data:`TARGET_BLOCK_BYTES`."""
    return max(1, TARGET_BLOCK_BYTES // chunk_size_bytes) * chunk_size_bytes


def digest_stream(f: BinaryIO, chunk_size_bytes: int) -> FileDigest:
    """Digest an open file from its current position to its end, in one pass."""
    hasher = StreamingDigest(chunk_size_bytes)
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
    hasher = StreamingDigest(chunk_size_bytes)
    for block in blocks:
        hasher.update(block)
    return hasher.finish()
