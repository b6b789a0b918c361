"""Hashing media files for verification: one read pass, and only the SHA-256 work needed.

The whole-file SHA-256 and the per-chunk SHA-256 list are different hashes of every byte (each
chunk starts from a fresh state), so computing both costs two SHA-256 passes over the data.
A verifier needs the chunk list only to say *where* a file differs: when the whole-file digest
and size match the record, the file is intact and its chunks are not needed. So the verifier
first takes the whole-file digest alone (:func:`sha256_stream`, one pass) and computes the
chunk list (:func:`digest_stream`, whole and chunks in one read pass) only for a file that does
not match.

Used from a thread pool: ``hashlib`` releases the GIL while it hashes large buffers, so files
are hashed on every core. Memory is one read block per thread; :func:`ordered` keeps the number
of files in flight bounded and hands results back in submission order (deterministic reports).

Failure posture: ``OSError`` from reading propagates; nothing else is raised here.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO, TypeVar

from evidence.media import FileDigest, StreamingDigest

#: Read size: whole chunks, about 1 MiB, so a block stays in cache for both hashes.
TARGET_BLOCK_BYTES = 1 << 20

T = TypeVar("T")
R = TypeVar("R")


def block_bytes_for(chunk_size_bytes: int) -> int:
    """A read size that is a whole number of chunks, about :data:`TARGET_BLOCK_BYTES`."""
    return max(1, TARGET_BLOCK_BYTES // chunk_size_bytes) * chunk_size_bytes


def _blocks(f: BinaryIO, block_bytes: int) -> Iterator[memoryview]:
    """The file from its current position to its end, read into one reused buffer."""
    buf = bytearray(block_bytes)
    view = memoryview(buf)
    while True:
        n = f.readinto(view)  # type: ignore[attr-defined]
        if not n:
            return
        yield view[:n]


def sha256_stream(f: BinaryIO) -> tuple[str, int]:
    """The SHA-256 (hex) and size of an open file from its current position to its end."""
    h = hashlib.sha256()
    size = 0
    for block in _blocks(f, TARGET_BLOCK_BYTES):
        h.update(block)
        size += len(block)
    return h.hexdigest(), size


def sha256_blocks(blocks: Iterable[bytes]) -> tuple[str, int]:
    """The SHA-256 (hex) and size of a stream of byte blocks (e.g. decrypted plaintext)."""
    h = hashlib.sha256()
    size = 0
    for block in blocks:
        h.update(block)
        size += len(block)
    return h.hexdigest(), size


def digest_stream(f: BinaryIO, chunk_size_bytes: int) -> FileDigest:
    """Whole and per-chunk digests of an open file from its current position, in one pass."""
    hasher = StreamingDigest(chunk_size_bytes)
    for block in _blocks(f, block_bytes_for(chunk_size_bytes)):
        hasher.update(block)
    return hasher.finish()


def digest_blocks(blocks: Iterable[bytes], chunk_size_bytes: int) -> FileDigest:
    """Whole and per-chunk digests of a stream of byte blocks, in one pass."""
    hasher = StreamingDigest(chunk_size_bytes)
    for block in blocks:
        hasher.update(block)
    return hasher.finish()


def ordered(
    pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T], window: int
) -> Iterator[tuple[T, Future[R]]]:
    """Run ``fn`` over ``items`` in ``pool`` with at most ``window`` in flight; yield each item
    with its finished future in the order of ``items`` (the caller reads result or exception)."""
    pending: deque[tuple[T, Future[R]]] = deque()
    for item in items:
        pending.append((item, pool.submit(fn, item)))
        if len(pending) >= window:
            first = pending.popleft()
            first[1].exception()  # wait for it; the caller sees the outcome
            yield first
    while pending:
        first = pending.popleft()
        first[1].exception()
        yield first
