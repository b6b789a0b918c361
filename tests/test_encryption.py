"""Encryption at rest of spooled media (evidence.encryption) on real MPEG-TS files."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tracemalloc
from pathlib import Path

import av
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from evidence.encryption import (
    FRAME_PREFIX_BYTES,
    HEADER_SIZE_BYTES,
    SCHEME,
    TAG_SIZE_BYTES,
    DecryptionError,
    EncryptingWriter,
    decrypt_file,
    encrypt_file,
    generate_encryption_key,
    is_encrypted_file,
    load_encryption_key,
    load_encryption_public_key,
    read_header,
    recipient_id,
    save_encryption_key,
    save_encryption_public_key,
)
from evidence.errors import KeyFileError
from evidence.keys import generate_signing_key, save_signing_key

CHUNK = 4096  # small chunks so a few MiB make many of them
SEALED = FRAME_PREFIX_BYTES + CHUNK + TAG_SIZE_BYTES  # one full chunk's frame
TS_PACKET = 188


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real H.264/AAC MPEG-TS file of a few MiB (noise keeps the encoder from compressing)."""
    path = tmp_path_factory.mktemp("media") / "segment.ts"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440",
            "-t",
            "2",
            "-vf",
            "noise=alls=60:allf=t",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            "12",
            "-c:a",
            "aac",
            "-f",
            "mpegts",
            str(path),
        ],
        check=True,
        timeout=60,
    )
    assert path.stat().st_size > 3 * 1024 * 1024
    return path


@pytest.fixture(scope="module")
def key() -> X25519PrivateKey:
    return generate_encryption_key()


def ffprobe_ok(path: Path) -> bool:
    proc = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return proc.returncode == 0 and "h264" in proc.stdout


def has_ts_sync(data: bytes, packets: int = 8) -> bool:
    """True if some offset has 0x47 at every 188-byte step for ``packets`` packets in a row."""
    limit = len(data) - TS_PACKET * packets
    for start in range(0, max(limit, 0)):
        if all(data[start + i * TS_PACKET] == 0x47 for i in range(packets)):
            return True
    return False


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_roundtrip_of_a_multi_mib_segment(
    media: Path, key: X25519PrivateKey, tmp_path: Path
) -> None:
    enc, dec = tmp_path / "seg.ts.enc", tmp_path / "seg.ts"
    info = encrypt_file(media, enc, key.public_key(), chunk_size_bytes=CHUNK)
    assert info["scheme"] == SCHEME
    assert info["recipient"] == recipient_id(key.public_key())
    assert info["plaintext_bytes"] == media.stat().st_size
    assert info["stored_bytes"] == enc.stat().st_size
    chunks = -(-media.stat().st_size // CHUNK)
    overhead = chunks * (FRAME_PREFIX_BYTES + TAG_SIZE_BYTES)
    assert enc.stat().st_size == HEADER_SIZE_BYTES + media.stat().st_size + overhead
    out = decrypt_file(enc, dec, key)
    assert out["plaintext_bytes"] == media.stat().st_size
    assert sha(dec) == sha(media)
    assert ffprobe_ok(dec)


def test_ciphertext_shows_no_media(media: Path, key: X25519PrivateKey, tmp_path: Path) -> None:
    enc = tmp_path / "seg.enc"
    encrypt_file(media, enc, key.public_key())
    plain, cipher = media.read_bytes()[: 256 * 1024], enc.read_bytes()[: 256 * 1024]
    assert has_ts_sync(plain), "control: the plaintext must show the MPEG-TS sync pattern"
    assert not has_ts_sync(cipher)
    assert ffprobe_ok(media)
    assert not ffprobe_ok(enc)
    assert is_encrypted_file(enc)
    assert not is_encrypted_file(media)


def test_header_is_readable_without_the_key(
    media: Path, key: X25519PrivateKey, tmp_path: Path
) -> None:
    enc = tmp_path / "seg.enc"
    encrypt_file(media, enc, key.public_key(), chunk_size_bytes=CHUNK)
    with open(enc, "rb") as f:
        head = read_header(f)
    assert head["recipient"] == recipient_id(key.public_key())
    assert head["chunk_size"] == CHUNK


def test_two_encryptions_of_one_file_differ(
    media: Path, key: X25519PrivateKey, tmp_path: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    encrypt_file(media, a, key.public_key())
    encrypt_file(media, b, key.public_key())
    assert sha(a) != sha(b)


@pytest.fixture
def sealed(media: Path, key: X25519PrivateKey, tmp_path: Path) -> bytes:
    enc = tmp_path / "sealed.enc"
    encrypt_file(media, enc, key.public_key(), chunk_size_bytes=CHUNK)
    return enc.read_bytes()


def _refused(data: bytes, key: X25519PrivateKey, tmp_path: Path) -> DecryptionError:
    src, dst = tmp_path / "bad.enc", tmp_path / "out.ts"
    src.write_bytes(data)
    with pytest.raises(DecryptionError) as exc:
        decrypt_file(src, dst, key)
    assert not dst.exists(), "a failed decryption must leave no output"
    assert not [p for p in tmp_path.iterdir() if ".dec-tmp" in p.name]
    return exc.value


def chunk_at(i: int) -> slice:
    start = HEADER_SIZE_BYTES + i * SEALED
    return slice(start, start + SEALED)


def test_altered_byte_is_detected(sealed: bytes, key: X25519PrivateKey, tmp_path: Path) -> None:
    data = bytearray(sealed)
    data[chunk_at(100).start + 17] ^= 0x01
    err = _refused(bytes(data), key, tmp_path)
    assert err.chunk == 100
    assert "authentication failed" in str(err)


def test_altered_header_is_detected(sealed: bytes, key: X25519PrivateKey, tmp_path: Path) -> None:
    data = bytearray(sealed)
    data[HEADER_SIZE_BYTES - 1] ^= 0x01  # salt: changes the key and the associated data
    err = _refused(bytes(data), key, tmp_path)
    assert err.chunk == 0


def test_swapped_chunks_are_detected(sealed: bytes, key: X25519PrivateKey, tmp_path: Path) -> None:
    data = bytearray(sealed)
    c3, c4 = bytes(data[chunk_at(3)]), bytes(data[chunk_at(4)])
    data[chunk_at(3)], data[chunk_at(4)] = c4, c3
    err = _refused(bytes(data), key, tmp_path)
    assert err.chunk == 3
    assert "moved, swapped" in str(err)


def test_dropped_middle_chunk_is_detected(
    sealed: bytes, key: X25519PrivateKey, tmp_path: Path
) -> None:
    data = sealed[: chunk_at(5).start] + sealed[chunk_at(5).stop :]
    assert _refused(data, key, tmp_path).chunk == 5


def test_truncation_at_a_chunk_boundary_is_detected(
    sealed: bytes, key: X25519PrivateKey, tmp_path: Path
) -> None:
    err = _refused(sealed[: chunk_at(20).start], key, tmp_path)
    assert "truncated" in str(err)
    assert err.chunk == 19


def test_truncation_inside_a_chunk_is_detected(
    sealed: bytes, key: X25519PrivateKey, tmp_path: Path
) -> None:
    err = _refused(sealed[: chunk_at(20).start + 100], key, tmp_path)
    assert err.chunk == 20


def test_header_only_and_garbage_are_refused(
    sealed: bytes, key: X25519PrivateKey, tmp_path: Path
) -> None:
    assert "no chunks" in str(_refused(sealed[:HEADER_SIZE_BYTES], key, tmp_path))
    assert "not an encrypted media file" in str(_refused(b"\x47" * 1000, key, tmp_path))
    assert "not an encrypted media file" in str(_refused(b"", key, tmp_path))


def test_appended_data_is_detected(sealed: bytes, key: X25519PrivateKey, tmp_path: Path) -> None:
    _refused(sealed + sealed[chunk_at(0)], key, tmp_path)
    _refused(sealed + b"\x00", key, tmp_path)
    # When the file ends on a chunk boundary the error can say exactly what happened.
    src, enc = tmp_path / "aligned", tmp_path / "aligned.enc"
    src.write_bytes(os.urandom(4 * CHUNK))
    encrypt_file(src, enc, key.public_key(), chunk_size_bytes=CHUNK)
    data = enc.read_bytes()
    err = _refused(data + data[chunk_at(1)], key, tmp_path)
    assert "after the final chunk" in str(err)
    assert err.chunk == 3


def test_chunk_from_another_file_is_detected(
    media: Path, sealed: bytes, key: X25519PrivateKey, tmp_path: Path
) -> None:
    other = tmp_path / "other.enc"
    encrypt_file(media, other, key.public_key(), chunk_size_bytes=CHUNK)
    foreign = other.read_bytes()
    data = bytearray(sealed)
    data[chunk_at(7)] = foreign[chunk_at(7)]
    assert _refused(bytes(data), key, tmp_path).chunk == 7


def test_wrong_key_is_refused_clearly(sealed: bytes, tmp_path: Path) -> None:
    err = _refused(sealed, generate_encryption_key(), tmp_path)
    assert "not to this key" in str(err)


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 3 * 1024])
def test_edge_sizes_roundtrip(size: int, key: X25519PrivateKey, tmp_path: Path) -> None:
    src, enc, dec = tmp_path / "p", tmp_path / "e", tmp_path / "d"
    src.write_bytes(os.urandom(size))
    encrypt_file(src, enc, key.public_key(), chunk_size_bytes=1024)
    decrypt_file(enc, dec, key)
    assert dec.read_bytes() == src.read_bytes()
    if size:
        # Dropping the final chunk of a multi-chunk file is truncation, never a valid shorter file.
        data = enc.read_bytes()
        frame = FRAME_PREFIX_BYTES + 1024 + TAG_SIZE_BYTES
        last_start = HEADER_SIZE_BYTES + ((size - 1) // 1024) * frame
        if last_start > HEADER_SIZE_BYTES:
            _refused(data[:last_start], key, tmp_path)


def test_pyav_can_mux_straight_into_the_encrypting_writer(
    key: X25519PrivateKey, tmp_path: Path
) -> None:
    enc, dec = tmp_path / "live.enc", tmp_path / "live.ts"
    with open(enc, "wb") as sink:
        writer = EncryptingWriter(sink, key.public_key())
        container = av.open(writer, "w", format="mpegts")
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for _ in range(25):
            frame = av.VideoFrame(160, 120, "yuv420p")
            for plane in frame.planes:
                plane.update(os.urandom(plane.buffer_size))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        container.close()
        writer.close()
    assert not ffprobe_ok(enc)
    decrypt_file(enc, dec, key)
    with av.open(str(dec)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 25


def test_memory_stays_flat_for_large_files(key: X25519PrivateKey, tmp_path: Path) -> None:
    src, enc, dec = tmp_path / "big", tmp_path / "big.enc", tmp_path / "big.dec"
    size = 48 * 1024 * 1024
    with open(src, "wb") as f:
        block = os.urandom(1024 * 1024)
        for _ in range(size // len(block)):
            f.write(block)
    tracemalloc.start()
    try:
        encrypt_file(src, enc, key.public_key())
        _, enc_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        decrypt_file(enc, dec, key)
        _, dec_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert enc_peak < 2 * 1024 * 1024, enc_peak
    assert dec_peak < 2 * 1024 * 1024, dec_peak
    assert dec.stat().st_size == size


def test_key_files_roundtrip_and_wrong_kinds_are_refused(tmp_path: Path) -> None:
    k = generate_encryption_key()
    save_encryption_key(tmp_path / "enc.key", k)
    save_encryption_public_key(tmp_path / "enc.pub", k.public_key())
    assert (tmp_path / "enc.key").stat().st_mode & 0o077 == 0
    loaded = load_encryption_key(tmp_path / "enc.key")
    assert recipient_id(loaded.public_key()) == recipient_id(k.public_key())
    assert recipient_id(load_encryption_public_key(tmp_path / "enc.pub")) == recipient_id(
        k.public_key()
    )
    save_signing_key(tmp_path / "ed.key", generate_signing_key())
    with pytest.raises(KeyFileError, match="not an X25519 key"):
        load_encryption_key(tmp_path / "ed.key")
    with pytest.raises(KeyFileError, match="cannot read"):
        load_encryption_key(tmp_path / "missing.key")


def _encrypted_spool(root: Path, media: Path, recipient: X25519PrivateKey) -> Path:
    """A device chain whose one segment is stored encrypted, as the agent's spool will hold it."""
    from evidence import layout
    from evidence.chain import DeviceChain
    from evidence.keys import generate_signing_key
    from evidence.media import digest_file
    from evidence.records import RecordType
    from evidence.testing import SteppingClock, default_assignment

    chain = DeviceChain(root, "cam-enc", generate_signing_key())
    clock = SteppingClock()
    start = clock.tick(1)
    chain.append(
        RecordType.SESSION_OPEN,
        "s1",
        {
            "assignment": default_assignment(),
            "checks": {"outcome": "pass", "checks": []},
            "preamble": {"text": "x", "lang": "zh", "voice": "cmn-latn-pinyin"},
            "pre_event_us": 0,
        },
        start,
    )
    stored_path = layout.media_path(root, "cam-enc", "s1-00000.ts.enc")
    stored_path.parent.mkdir(parents=True, exist_ok=True)
    info = encrypt_file(media, stored_path, recipient.public_key())
    end = clock.tick(10)
    chain.append(
        RecordType.SEGMENT,
        "s1",
        {
            "index": 0,
            "file": stored_path.name,
            "media": digest_file(media).to_dict(),
            "stored": digest_file(stored_path).to_dict(),
            "encryption": {"scheme": info["scheme"], "recipient": info["recipient"]},
            "utc_start": start.utc,
            "utc_end": end.utc,
            "media_start_us": 0,
            "media_end_us": 10_000_000,
            "frames": 50,
            "dropped_frames": 0,
            "video": {"codec": "h264", "width": 320, "height": 240, "fps": 25},
            "audio": {"codec": "aac", "sample_rate": 44100, "channels": 1},
            "pre_event_us": 0,
            "recovered": False,
        },
        end,
    )
    chain.append(
        RecordType.SESSION_CLOSE,
        "s1",
        {
            "reason": "stopped",
            "duration_us": 10_000_000,
            "segments": 1,
            "frames": 50,
            "dropped_frames": 0,
            "gaps": 0,
        },
        clock.tick(1),
    )
    return stored_path


def test_verifier_checks_an_encrypted_spool_with_and_without_the_key(
    media: Path, key: X25519PrivateKey, tmp_path: Path
) -> None:
    from evidence.decrypt import media_decryptor
    from evidence.verify import verify_tree
    from evidence.violations import ViolationKind

    key_path = tmp_path / "receiver-encryption.key"
    save_encryption_key(key_path, key)
    root = tmp_path / "spool"
    stored = _encrypted_spool(root, media, key)
    assert not ffprobe_ok(stored)
    assert verify_tree(root).ok
    assert verify_tree(root, decryptor=media_decryptor(key_path)).ok
    # The wrong receiver key cannot check content and says so.
    wrong = tmp_path / "wrong.key"
    save_encryption_key(wrong, generate_encryption_key())
    kinds = {v.kind for v in verify_tree(root, decryptor=media_decryptor(wrong)).violations}
    assert kinds == {ViolationKind.MEDIA_UNREADABLE}
    # Any change to the stored file is caught without a key, and with one.
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    assert not verify_tree(root).ok
    kinds = {v.kind for v in verify_tree(root, decryptor=media_decryptor(key_path)).violations}
    assert ViolationKind.MEDIA_UNREADABLE in kinds


def test_encrypt_for_spool_gives_the_record_digests_in_one_pass(
    media: Path, key: X25519PrivateKey, tmp_path: Path
) -> None:
    from evidence.encryption import encrypt_for_spool
    from evidence.media import digest_file

    enc = tmp_path / "seg.ts.enc"
    result = encrypt_for_spool(media, enc, key.public_key())
    assert result.media == digest_file(media)
    assert result.stored == digest_file(enc)
    assert result.encryption == {"scheme": SCHEME, "recipient": recipient_id(key.public_key())}


def test_any_split_of_writes_gives_the_same_chunking_as_one_write(
    key: X25519PrivateKey, tmp_path: Path
) -> None:
    """Whole chunks sealed straight from the caller's buffer frame exactly like buffered ones:
    the same plaintext in any pieces decrypts the same, with the same frame layout."""
    import random

    rng = random.Random(14)
    data = os.urandom(20_000)
    layouts = []
    for trial in range(6):
        out = tmp_path / f"e{trial}"
        with out.open("wb") as f:
            writer = EncryptingWriter(f, key.public_key(), chunk_size_bytes=1024)
            off = 0
            while off < len(data):
                step = rng.choice([1, 187, 1023, 1024, 1025, 3000, 5000])
                piece = data[off : off + step]
                writer.write(memoryview(bytearray(piece)) if trial % 2 else piece)
                off += step
            writer.close()
        dec = tmp_path / f"d{trial}"
        decrypt_file(out, dec, key)
        assert dec.read_bytes() == data
        layouts.append(out.stat().st_size)
    assert len(set(layouts)) == 1  # no split changes where chunks end
