"""Encryption at rest of spooled media to the receiver's X25519 public key.

Construction (scheme ``x25519-chacha20poly1305-stream/2``), modelled on age's STREAM payload and
built only from primitives in ``cryptography`` so no new dependency is needed; ChaCha20-Poly1305
because a Pi 4 has no AES instructions:

- header (76 bytes): magic ``BCAMENC\\x02`` | largest plaintext chunk (u32, big endian) |
  ephemeral X25519 public key (32) | recipient id (16 = first half of SHA-256 of the recipient's
  raw public key) | random salt (16)
- key = HKDF-SHA256(X25519(ephemeral, recipient), salt, info = label | ephemeral | recipient)
- body: frames ``u32 sealed length | sealed chunk``. A chunk holds 1..``chunk_size`` plaintext
  bytes (the last one may be empty) and is sealed with ChaCha20-Poly1305 under nonce =
  11-byte big-endian chunk counter | last-chunk flag (1 byte), the header as associated data.
  Full chunks are written as data arrives; :meth:`EncryptingWriter.flush` also seals the bytes
  buffered so far as a short chunk, so whatever the writer flushed (and the caller fsynced)
  survives a crash as whole, authenticated chunks: the live recording is never in plaintext on
  the card and a crash loses at most what was written since the last flush.

So a chunk moved, swapped, dropped, altered or taken from another file fails authentication, a
file cut at any point lacks a chunk sealed as last, and bytes appended after the last chunk are
refused. A fresh ephemeral key per file means the device that wrote it cannot decrypt it.

A file cut by a crash (no last chunk) is refused by default. Only in the explicit
*recovered-prefix* mode (``recovered_prefix=True``), used for segments the device sealed as
recovered after a crash, does the reader accept a stream that ends on a whole non-last chunk,
and it reports that stream as truncated by the crash (:class:`StreamStatus`). Without the key
the device finds the crash-safe prefix of such a file with :func:`readable_prefix_bytes`.

Failure posture: decryption either produces the whole plaintext (or, in recovered-prefix mode,
the whole authenticated prefix) or raises :class:`DecryptionError` (with the chunk index and
what was wrong) and leaves no output file; nothing is ever decrypted "mostly".
:func:`iter_decrypted_chunks` hands out authenticated chunks as it goes: a consumer must not act
on them until the iterator has finished without error.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from evidence.errors import EvidenceError
from evidence.fsutil import fsync_dir
from evidence.keys import load_private_pem, load_public_pem, save_private_pem, save_public_pem
from evidence.media import CHUNK_SIZE, FileDigest, StreamingDigest

SCHEME = "x25519-chacha20poly1305-stream/2"
MAGIC = b"BCAMENC\x02"
RECIPIENT_ID_PREFIX = "x25519:"
DEFAULT_CHUNK_SIZE_BYTES = 64 * 1024
MIN_CHUNK_SIZE_BYTES = 1024
# Bounds what a hostile header can make a reader allocate.
MAX_CHUNK_SIZE_BYTES = 16 * 1024 * 1024
TAG_SIZE_BYTES = 16
_HKDF_INFO = b"bodycam encryption at rest v2"
_HEADER = struct.Struct(">8sI32s16s16s")
HEADER_SIZE_BYTES = _HEADER.size
_FRAME_PREFIX = struct.Struct(">I")
FRAME_PREFIX_BYTES = _FRAME_PREFIX.size
_MAX_COUNTER = 2**88 - 1


class EncryptionError(EvidenceError):
    """Base class of the errors of this module."""


class DecryptionError(EncryptionError):
    """An encrypted file cannot be decrypted: wrong key, corrupt, truncated or tampered with."""

    def __init__(self, reason: str, *, path: Path | None = None, chunk: int | None = None) -> None:
        self.reason = reason
        self.path = path
        self.chunk = chunk
        where = f"{path}: " if path is not None else ""
        at = f" (chunk {chunk})" if chunk is not None else ""
        super().__init__(f"{where}cannot decrypt{at}: {reason}")


# ------------------------------------------------------------------------------------ keys


def generate_encryption_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def _raw(public_key: X25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _recipient_digest(public_key: X25519PublicKey) -> bytes:
    return hashlib.sha256(_raw(public_key)).digest()[:16]


def recipient_id(public_key: X25519PublicKey) -> str:
    """``x25519:`` + 32 hex digits; what a segment record's ``encryption.recipient`` holds."""
    return RECIPIENT_ID_PREFIX + _recipient_digest(public_key).hex()


def save_encryption_key(path: Path, key: X25519PrivateKey) -> None:
    save_private_pem(path, key)


def save_encryption_public_key(path: Path, public_key: X25519PublicKey) -> None:
    save_public_pem(path, public_key)


def load_encryption_key(path: Path) -> X25519PrivateKey:
    key: X25519PrivateKey = load_private_pem(path, X25519PrivateKey, "an X25519 key")
    return key


def load_encryption_public_key(path: Path) -> X25519PublicKey:
    key: X25519PublicKey = load_public_pem(path, X25519PublicKey, "an X25519 public key")
    return key


# ------------------------------------------------------------------------------ primitives


def _derive_key(shared: bytes, salt: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=salt,
        info=_HKDF_INFO + ephemeral + recipient,
    ).derive(shared)


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _check_chunk_size(chunk_size_bytes: int) -> None:
    if not MIN_CHUNK_SIZE_BYTES <= chunk_size_bytes <= MAX_CHUNK_SIZE_BYTES:
        raise ValueError(
            f"chunk size {chunk_size_bytes} outside {MIN_CHUNK_SIZE_BYTES}..{MAX_CHUNK_SIZE_BYTES}"
        )


class Sink(Protocol):
    """Where an EncryptingWriter puts the ciphertext: a binary file or anything alike.

    ``fileno`` is optional: :meth:`EncryptingWriter.fileno` passes it through so a caller can
    fsync the file underneath.
    """

    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


class EncryptingWriter:
    """A write-only binary stream that encrypts what is written into ``sink``.

    Usable as a file object for writers that never seek (e.g. PyAV's MPEG-TS muxer). Memory is
    bounded by one chunk. :meth:`flush` seals what is buffered as a (short) chunk and flushes
    ``sink``, so after ``flush()`` + ``os.fsync(writer.fileno())`` every byte written so far is
    on disk in whole chunks. :meth:`close` seals the last chunk and must be called, otherwise
    the output is (detectably) truncated; it does not close ``sink``.
    """

    def __init__(
        self,
        sink: Sink,
        recipient: X25519PublicKey,
        *,
        chunk_size_bytes: int = DEFAULT_CHUNK_SIZE_BYTES,
    ) -> None:
        _check_chunk_size(chunk_size_bytes)
        self._sink = sink
        self._chunk_size = chunk_size_bytes
        ephemeral = X25519PrivateKey.generate()
        eph_raw = _raw(ephemeral.public_key())
        rec_raw = _raw(recipient)
        salt = os.urandom(16)
        self.header = _HEADER.pack(
            MAGIC, chunk_size_bytes, eph_raw, _recipient_digest(recipient), salt
        )
        key = _derive_key(ephemeral.exchange(recipient), salt, eph_raw, rec_raw)
        self._aead = ChaCha20Poly1305(key)
        self._buffer = bytearray()
        self._counter = 0
        self._closed = False
        self.recipient = recipient_id(recipient)
        self.plaintext_bytes = 0
        self.stored_bytes = 0
        self._emit(self.header)

    def _emit(self, data: bytes) -> None:
        self._sink.write(data)
        self.stored_bytes += len(data)

    def _seal(self, chunk: bytes | bytearray | memoryview, last: bool) -> None:
        if self._counter > _MAX_COUNTER:
            raise EncryptionError("too many chunks for one file")
        sealed = self._aead.encrypt(_nonce(self._counter, last), chunk, self.header)
        # One write per frame: a crash leaves whole frames and at most one cut-off frame.
        self._emit(_FRAME_PREFIX.pack(len(sealed)) + sealed)
        self._counter += 1

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._closed:
            raise ValueError("write to a closed EncryptingWriter")
        view = memoryview(data).cast("B")
        size = len(view)
        self.plaintext_bytes += size
        chunk = self._chunk_size
        # A full chunk is sealed only once more data follows it: until then it may be the last.
        # Whole chunks are sealed straight from the caller's buffer (no copy); only the tail
        # that does not fill a chunk is kept.
        if self._buffer:
            room = chunk - len(self._buffer)
            if size <= room:
                self._buffer += view
                return size
            self._buffer += view[:room]
            view = view[room:]
            self._seal(self._buffer, last=False)
            self._buffer.clear()
        while len(view) > chunk:
            self._seal(view[:chunk], last=False)
            view = view[chunk:]
        self._buffer += view
        return size

    def flush(self) -> None:
        """Seal the buffered bytes as a chunk of their own and flush the sink."""
        if self._closed:
            return
        if self._buffer:
            self._seal(self._buffer, last=False)
            self._buffer.clear()
        self._sink.flush()

    def fileno(self) -> int:
        """The sink's descriptor (for fsync); ``io.UnsupportedOperation`` if it has none."""
        fileno = getattr(self._sink, "fileno", None)
        if fileno is None:
            raise io.UnsupportedOperation("the sink has no file descriptor")
        return int(fileno())

    def tell(self) -> int:
        """Plaintext bytes written so far (what a muxer writing into us expects)."""
        return self.plaintext_bytes

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._seal(self._buffer, last=True)
        self._buffer.clear()
        self._closed = True
        self._sink.flush()

    def info(self) -> dict[str, Any]:
        return {
            "scheme": SCHEME,
            "recipient": self.recipient,
            "chunk_size": self._chunk_size,
            "plaintext_bytes": self.plaintext_bytes,
            "stored_bytes": self.stored_bytes,
        }

    def __enter__(self) -> EncryptingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_exactly(src: BinaryIO, size: int) -> bytes:
    parts: list[bytes] = []
    remaining = size
    while remaining:
        part = src.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def _parse_header(header: bytes, *, path: Path | None) -> dict[str, Any]:
    if len(header) < HEADER_SIZE_BYTES or not header.startswith(MAGIC):
        raise DecryptionError("not an encrypted media file (missing or unknown header)", path=path)
    _magic, chunk_size, eph_raw, rec_digest, salt = _HEADER.unpack(header)
    if not MIN_CHUNK_SIZE_BYTES <= chunk_size <= MAX_CHUNK_SIZE_BYTES:
        raise DecryptionError(f"header names an impossible chunk size {chunk_size}", path=path)
    return {
        "scheme": SCHEME,
        "recipient": RECIPIENT_ID_PREFIX + rec_digest.hex(),
        "chunk_size": chunk_size,
        "_header": header,
        "_ephemeral": eph_raw,
        "_salt": salt,
    }


def read_header(src: BinaryIO, *, path: Path | None = None) -> dict[str, Any]:
    """Parse an encrypted file's header (no key needed): scheme, recipient id, chunk size."""
    return _parse_header(_read_exactly(src, HEADER_SIZE_BYTES), path=path)


def _sealed_size_ok(sealed_size: int, chunk_size: int) -> bool:
    return TAG_SIZE_BYTES <= sealed_size <= chunk_size + TAG_SIZE_BYTES


def readable_prefix_bytes(path: Path) -> int:
    """Bytes of ``path`` that form a valid header plus whole frames (no key needed).

    What a crash left of an encrypted file: the device keeps exactly this prefix (a cut-off
    frame at the end cannot be authenticated by anyone). 0 when not even the header is whole.
    """
    with open(path, "rb") as f:
        try:
            head = _parse_header(_read_exactly(f, HEADER_SIZE_BYTES), path=Path(path))
        except DecryptionError:
            return 0
        good = HEADER_SIZE_BYTES
        while True:
            prefix = _read_exactly(f, FRAME_PREFIX_BYTES)
            if len(prefix) < FRAME_PREFIX_BYTES:
                return good
            (sealed_size,) = _FRAME_PREFIX.unpack(prefix)
            if not _sealed_size_ok(sealed_size, head["chunk_size"]):
                return good
            if len(_read_exactly(f, sealed_size)) < sealed_size:
                return good
            good += FRAME_PREFIX_BYTES + sealed_size


@dataclass
class StreamStatus:
    """Filled in by :func:`iter_decrypted_chunks` as it goes."""

    chunks: int = 0
    plaintext_bytes: int = 0
    terminated: bool = False
    """True once a chunk sealed as last was read; False at the end of a recovered prefix."""

    @property
    def truncated_by_crash(self) -> bool:
        return not self.terminated


def _read_frame(src: BinaryIO, chunk_size: int, counter: int, *, path: Path | None) -> bytes | None:
    """The next sealed chunk, or None at the clean end of the file."""
    prefix = _read_exactly(src, FRAME_PREFIX_BYTES)
    if not prefix:
        return None
    if len(prefix) < FRAME_PREFIX_BYTES:
        raise DecryptionError("truncated inside a chunk's length", path=path, chunk=counter)
    (sealed_size,) = _FRAME_PREFIX.unpack(prefix)
    if not _sealed_size_ok(sealed_size, chunk_size):
        raise DecryptionError(
            f"corrupt chunk length {sealed_size} (at most {chunk_size + TAG_SIZE_BYTES})",
            path=path,
            chunk=counter,
        )
    sealed = _read_exactly(src, sealed_size)
    if len(sealed) < sealed_size:
        raise DecryptionError(
            f"truncated: chunk cut off after {len(sealed)} of {sealed_size} bytes",
            path=path,
            chunk=counter,
        )
    return sealed


def iter_decrypted_chunks(
    src: BinaryIO,
    private_key: X25519PrivateKey,
    *,
    path: Path | None = None,
    recovered_prefix: bool = False,
    status: StreamStatus | None = None,
) -> Iterator[bytes]:
    """Yield the plaintext chunk by chunk; raises DecryptionError at the first problem.

    ``recovered_prefix``: accept a stream that ends on a whole chunk not sealed as last (a
    segment cut by a crash and sealed as recovered); ``status.terminated`` then says False.
    Never use it for a segment that was sealed normally: it would hide a truncation.
    """
    status = status if status is not None else StreamStatus()
    head = read_header(src, path=path)
    rec_pub = private_key.public_key()
    if head["recipient"] != recipient_id(rec_pub):
        raise DecryptionError(
            f"encrypted to {head['recipient']}, not to this key ({recipient_id(rec_pub)})",
            path=path,
        )
    eph_raw: bytes = head["_ephemeral"]
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(eph_raw))
    except ValueError as exc:
        raise DecryptionError(f"invalid ephemeral key in header ({exc})", path=path) from exc
    header: bytes = head["_header"]
    chunk_size: int = head["chunk_size"]
    aead = ChaCha20Poly1305(_derive_key(shared, head["_salt"], eph_raw, _raw(rec_pub)))
    counter = 0
    current = _read_frame(src, chunk_size, counter, path=path)
    if current is None:
        raise DecryptionError("truncated: the file has a header but no chunks", path=path)
    while True:
        following = _read_frame(src, chunk_size, counter + 1, path=path)
        last = following is None
        plain = _try_decrypt(aead, counter, current, header, last=last)
        status.terminated = last
        if plain is None and last and recovered_prefix:
            plain = _try_decrypt(aead, counter, current, header, last=False)
            status.terminated = False
        if plain is None:
            raise DecryptionError(
                _diagnose(aead, counter, current, header, last), path=path, chunk=counter
            )
        status.chunks += 1
        status.plaintext_bytes += len(plain)
        yield plain
        if following is None:
            return
        counter += 1
        current = following


def _try_decrypt(
    aead: ChaCha20Poly1305, counter: int, sealed: bytes, header: bytes, *, last: bool
) -> bytes | None:
    try:
        return aead.decrypt(_nonce(counter, last), sealed, header)
    except InvalidTag:
        return None


def _diagnose(
    aead: ChaCha20Poly1305, counter: int, sealed: bytes, header: bytes, last: bool
) -> str:
    """Tell truncation and appended data apart from plain tampering, for the error message."""
    if _try_decrypt(aead, counter, sealed, header, last=not last) is None:
        return (
            "authentication failed: the chunk was altered, moved, swapped or comes from another"
            " file"
        )
    if last:
        return (
            "truncated: the file ends before its final chunk (a segment cut by a crash can be"
            " read only in recovered-prefix mode)"
        )
    return "unexpected data after the final chunk"


@dataclass(frozen=True)
class EncryptedFile:
    """What a segment record needs after encrypting its media (see :func:`encrypt_for_spool`)."""

    media: FileDigest
    """Digest of the plaintext (the record's ``media``)."""
    stored: FileDigest
    """Digest of the encrypted file as stored (the record's ``stored``)."""
    encryption: dict[str, str]
    """``{"scheme", "recipient"}`` (the record's ``encryption``)."""
    info: dict[str, Any]


class _HashingSink:
    """Writes to a file while digesting exactly the bytes written."""

    def __init__(self, f: BinaryIO, digest: StreamingDigest | None) -> None:
        self._f = f
        self._digest = digest

    def write(self, data: bytes) -> int:
        if self._digest is not None:
            self._digest.update(data)
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()


def _encrypt(
    src: Path,
    dst: Path,
    recipient_public: X25519PublicKey,
    chunk_size_bytes: int,
    digest_chunk_size_bytes: int | None,
) -> tuple[dict[str, Any], FileDigest | None, FileDigest | None]:
    """Encrypt atomically; with ``digest_chunk_size_bytes`` also digest plaintext and output."""
    tmp = dst.with_name(f".{dst.name}.enc-tmp{os.getpid()}")
    plain = stored = None
    if digest_chunk_size_bytes is not None:
        plain = StreamingDigest(digest_chunk_size_bytes)
        stored = StreamingDigest(digest_chunk_size_bytes)
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            sink = _HashingSink(fout, stored)
            writer = EncryptingWriter(sink, recipient_public, chunk_size_bytes=chunk_size_bytes)
            while block := fin.read(chunk_size_bytes * 4):
                if plain is not None:
                    plain.update(block)
                writer.write(block)
            writer.close()
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(dst.parent)
    return (
        writer.info(),
        plain.finish() if plain is not None else None,
        stored.finish() if stored is not None else None,
    )


def encrypt_file(
    src: Path,
    dst: Path,
    recipient_public: X25519PublicKey,
    *,
    chunk_size_bytes: int = DEFAULT_CHUNK_SIZE_BYTES,
) -> dict[str, Any]:
    """Encrypt ``src`` into ``dst`` (written atomically and fsynced); return the header info.

    The result has ``scheme`` and ``recipient`` (what a segment record's ``encryption`` holds),
    plus ``chunk_size``, ``plaintext_bytes`` and ``stored_bytes``.
    """
    return _encrypt(Path(src), Path(dst), recipient_public, chunk_size_bytes, None)[0]


def encrypt_for_spool(
    src: Path,
    dst: Path,
    recipient_public: X25519PublicKey,
    *,
    chunk_size_bytes: int = DEFAULT_CHUNK_SIZE_BYTES,
    digest_chunk_size_bytes: int = CHUNK_SIZE,
) -> EncryptedFile:
    """Encrypt a sealed segment and digest plaintext and ciphertext in the same single pass.

    The caller then removes ``src`` (the plaintext) and signs a segment record with
    ``media``, ``stored`` and ``encryption`` from the result.
    """
    info, media, stored = _encrypt(
        Path(src), Path(dst), recipient_public, chunk_size_bytes, digest_chunk_size_bytes
    )
    assert media is not None
    assert stored is not None
    return EncryptedFile(
        media=media,
        stored=stored,
        encryption={"scheme": info["scheme"], "recipient": info["recipient"]},
        info=info,
    )


def decrypt_file(
    src: Path, dst: Path, private_key: X25519PrivateKey, *, recovered_prefix: bool = False
) -> dict[str, Any]:
    """Decrypt ``src`` into ``dst``; on any error raise DecryptionError and leave no ``dst``.

    The result has ``scheme``, ``recipient``, ``chunk_size``, ``plaintext_bytes`` and
    ``truncated_by_crash`` (True only in ``recovered_prefix`` mode, for a stream without its
    last chunk; see :func:`iter_decrypted_chunks`).
    """
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.dec-tmp{os.getpid()}")
    status = StreamStatus()
    try:
        with open(src, "rb") as fin:
            head = read_header(fin, path=src)
            fin.seek(0)
            with open(tmp, "wb") as fout:
                for chunk in iter_decrypted_chunks(
                    fin, private_key, path=src, recovered_prefix=recovered_prefix, status=status
                ):
                    fout.write(chunk)
                fout.flush()
                os.fsync(fout.fileno())
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(dst.parent)
    return {
        "scheme": head["scheme"],
        "recipient": head["recipient"],
        "chunk_size": head["chunk_size"],
        "plaintext_bytes": status.plaintext_bytes,
        "truncated_by_crash": status.truncated_by_crash,
    }


def decrypt_blocks(
    path: Path,
    private_key: X25519PrivateKey,
    *,
    recovered_prefix: bool = False,
    status: StreamStatus | None = None,
) -> Iterator[bytes]:
    """Plaintext blocks of an encrypted file, for digesting without writing plaintext to disk.

    Raises DecryptionError (possibly after some blocks were yielded) if anything is wrong.
    """
    path = Path(path)
    with open(path, "rb") as f:
        yield from iter_decrypted_chunks(
            f, private_key, path=path, recovered_prefix=recovered_prefix, status=status
        )


# The names evidence.decrypt (the verifier's adapter) looks up.
load_private_key = load_encryption_key


def is_encrypted_file(path: Path) -> bool:
    """True when ``path`` starts with this scheme's magic (no key needed)."""
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC
