"""The MQTT wire schema and the signed receipt, as both sides use them."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evidence import transfer as wire
from evidence.canonical import canonical_bytes
from evidence.keys import generate_signing_key, key_id, save_public_key
from evidence.receipt import STATUS_QUARANTINED, STATUS_STORED, Receipt, ReceiptError

HASH = hashlib.sha256(b"record").hexdigest()


@given(
    index=st.integers(0, 2**32 - 1), offset=st.integers(0, 2**63 - 1), data=st.binary(max_size=4096)
)
def test_chunk_frame_round_trips(index: int, offset: int, data: bytes) -> None:
    chunk = wire.unpack_chunk(wire.pack_chunk(HASH, index, offset, data))
    assert (chunk.record, chunk.index, chunk.offset, chunk.data) == (HASH, index, offset, data)
    assert chunk.sha256 == chunk.claimed == hashlib.sha256(data).hexdigest()
    assert chunk.intact


def test_a_sender_that_has_the_signed_hash_puts_it_in_the_header_unchecked() -> None:
    signed = hashlib.sha256(b"what was sealed").hexdigest()
    chunk = wire.unpack_chunk(wire.pack_chunk(HASH, 0, 0, b"what the card holds now", signed))
    assert chunk.claimed == signed  # the receiver judges the data against its signed record
    assert chunk.sha256 == hashlib.sha256(b"what the card holds now").hexdigest()
    assert not chunk.intact


def test_chunk_frame_tells_corruption_and_rejects_bad_magic_and_oversize() -> None:
    frame = bytearray(wire.pack_chunk(HASH, 3, 3 * 1024, b"a" * 1024))
    frame[-1] ^= 1
    chunk = wire.unpack_chunk(bytes(frame))
    assert not chunk.intact
    assert chunk.claimed == hashlib.sha256(b"a" * 1024).hexdigest()
    assert chunk.sha256 == hashlib.sha256(bytes(frame[-1024:])).hexdigest()
    with pytest.raises(wire.WireError, match="bad magic"):
        wire.unpack_chunk(b"XXXX" + bytes(frame[4:]))
    big = wire.pack_chunk(HASH, 0, 0, b"\0" * (wire.MAX_CHUNK_SIZE_BYTES + 1))
    with pytest.raises(wire.WireError, match="exceeds the limit"):
        wire.unpack_chunk(big)


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("bodycam/v1/BC-1/up/chunk", wire.Topic("BC-1", "up", "chunk")),
        ("bodycam/v1/BC-1/down/receipt", wire.Topic("BC-1", "down", "receipt")),
        ("bodycam/v1/BC-1/status", wire.Topic("BC-1", "status", "status")),
    ],
)
def test_topics_parse(topic: str, expected: wire.Topic) -> None:
    assert wire.parse_topic(topic) == expected


@pytest.mark.parametrize(
    "topic",
    [
        "bodycam/v2/BC-1/up/init",
        "bodycam/v1/BC-1/up/other",
        "bodycam/v1/+/up/init",
        "bodycam/v1/BC-1/up/init/extra",
        "x",
        "bodycam/v1/../up/init",
    ],
)
def test_bad_topics_are_refused(topic: str) -> None:
    with pytest.raises(wire.WireError):
        wire.parse_topic(topic)


def test_json_messages_are_checked_against_the_schema() -> None:
    fin = {"v": 1, "record": HASH, "size": 10, "sha256": HASH, "chunks": 1}
    assert wire.parse_json(wire.encode_json(fin), wire.FIN) == fin
    for bad, reason in [
        ({**fin, "size": "10"}, "wrong type"),
        ({**fin, "size": True}, "wrong type"),
        ({k: v for k, v in fin.items() if k != "chunks"}, "missing field"),
        ({**fin, "v": 2}, "unsupported protocol version"),
        ({**fin, "record": "ABC"}, "not a SHA-256"),
    ]:
        with pytest.raises(wire.WireError, match=reason):
            wire.parse_json(wire.encode_json(bad), wire.FIN)
    with pytest.raises(wire.WireError, match="not JSON"):
        wire.parse_json(b"\xff", wire.FIN)


def test_receipt_verifies_only_for_its_key_record_and_device() -> None:
    key = generate_signing_key()
    receipt = Receipt.create(
        device="BC-1",
        record=HASH,
        seq=4,
        record_type="segment",
        status=STATUS_STORED,
        receiver_key=key,
        media_sha256=HASH,
        media_size=10,
    )
    parsed = Receipt.parse(receipt.canonical())
    assert parsed == receipt
    assert parsed.verify(key.public_key(), record_hash=HASH, device="BC-1") is None
    assert "not the receiver key" in (parsed.verify(generate_signing_key().public_key()) or "")
    assert "for record" in (parsed.verify(key.public_key(), record_hash="0" * 64) or "")
    assert "for device" in (parsed.verify(key.public_key(), device="BC-2") or "")
    forged = Receipt.from_dict({**receipt.to_dict(), "status": STATUS_QUARANTINED})
    assert forged.verify(key.public_key()) == "receipt signature does not verify"
    with pytest.raises(ReceiptError):
        Receipt.parse(b'{"v": 1, "type": "receipt"}')
    with pytest.raises(ValueError, match="status"):
        Receipt.create(
            device="BC-1", record=HASH, seq=0, record_type="gap", status="ok", receiver_key=key
        )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_receipt_signature_verifies_with_openssl(tmp_path: Path) -> None:
    key = generate_signing_key()
    receipt = Receipt.create(
        device="BC-1",
        record=HASH,
        seq=1,
        record_type="marker",
        status=STATUS_STORED,
        receiver_key=key,
    )
    pub = tmp_path / "receiver.pub"
    save_public_key(pub, key.public_key())
    (tmp_path / "data").write_bytes(canonical_bytes(receipt.unsigned_dict()))
    import base64

    (tmp_path / "sig").write_bytes(base64.b64decode(receipt.sig))
    done = subprocess.run(
        [
            "openssl",
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            str(pub),
            "-rawin",
            "-in",
            str(tmp_path / "data"),
            "-sigfile",
            str(tmp_path / "sig"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert receipt.key == key_id(key.public_key())
