"""Canonical encoding, signatures checked by OpenSSL, record round trips, the chain writer."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from evidence.canonical import MAX_DEPTH, canonical_bytes, parse_json
from evidence.chain import DeviceChain
from evidence.errors import ChainError, KeyFileError, RecordFormatError
from evidence.keys import (
    KeyRing,
    generate_signing_key,
    key_id,
    load_public_key,
    load_signing_key,
    private_key_mode_ok,
    save_public_key,
    save_signing_key,
)
from evidence.media import CHUNK_SIZE, FileDigest, StreamingDigest, digest_file
from evidence.records import GENESIS_PREV, Record, RecordTime, RecordType
from evidence.testing import SteppingClock

KEY = generate_signing_key()

json_scalars = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_canonical_bytes_are_stable_and_parse_back(value: object) -> None:
    data = canonical_bytes(value)
    assert parse_json(data) == value
    assert canonical_bytes(parse_json(data)) == data


@given(st.dictionaries(st.text(), json_scalars, min_size=2, max_size=6))
def test_canonical_bytes_ignore_key_order(d: dict[str, object]) -> None:
    reversed_d = dict(reversed(list(d.items())))
    assert canonical_bytes(reversed_d) == canonical_bytes(d)


def test_canonical_known_vector() -> None:
    # RFC 8785 sorts keys by UTF-16 code units and emits no whitespace.
    assert canonical_bytes({"b": [1, True, None], "a": "é", "€": 1, "\U0001f600": 2}) == (
        '{"a":"é","b":[1,true,null],"€":1,"\U0001f600":2}'.encode()
    )


@settings(max_examples=300)
@given(json_values)
def test_canonical_bytes_agree_with_the_rfc8785_library(value: object) -> None:
    # the standard library's encoder does the common case; the library is the reference
    assert canonical_bytes(value) == rfc8785.dumps(value)


def test_keys_beyond_the_basic_plane_sort_by_utf16_code_units() -> None:
    # U+FF5E sorts before U+1F600 by code point but after it in UTF-16 (0xFF5E > 0xD83D)
    value = {"\uff5e": 1, "\U0001f600": 2, "a": {"\U0001f600": 3, "\uffff": 4}}
    assert canonical_bytes(value) == rfc8785.dumps(value)
    assert canonical_bytes(value).decode().index("\U0001f600") < canonical_bytes(
        value
    ).decode().index("\uff5e")


@pytest.mark.parametrize(
    "value",
    [
        {"a": "x\ud800"},
        {"x\ud800": 1},
        {"\U0001f600": "x\ud800"},  # keys beyond the plane: the library's path
        {"\U0001f600": 1, "\ud800": 2},
    ],
)
def test_a_lone_surrogate_cannot_be_canonicalized(value: dict[str, object]) -> None:
    with pytest.raises(RecordFormatError, match="cannot be canonicalized"):
        canonical_bytes(value)


def test_nesting_is_limited_to_max_depth_levels() -> None:
    value: object = {}
    for _ in range(MAX_DEPTH - 1):
        value = [value]
    assert canonical_bytes(value).count(b"[") == MAX_DEPTH - 1  # 32 levels: accepted
    with pytest.raises(RecordFormatError, match="nested deeper than"):
        canonical_bytes({"x": value})


def test_floats_and_duplicate_keys_are_refused() -> None:
    with pytest.raises(RecordFormatError, match="floats"):
        canonical_bytes({"x": 1.5})
    with pytest.raises(RecordFormatError, match="duplicate key"):
        parse_json(b'{"a": 1, "a": 2}')


record_bodies = st.dictionaries(st.text(min_size=1), json_values, max_size=5)


@settings(max_examples=50)
@given(
    body=record_bodies,
    seq=st.integers(0, 2**40),
    session=st.text(st.characters(categories=("L", "N", "P", "S", "Zs")), min_size=1, max_size=40),
    synced=st.booleans(),
)
def test_record_round_trip_and_signature(body: dict, seq: int, session: str, synced: bool) -> None:
    record = Record.create(
        type=RecordType.MARKER,
        device="BWC-7",
        session=session,
        seq=seq,
        prev=GENESIS_PREV,
        time=RecordTime("2026-11-29T08:00:00.000001Z", 5, "boot", synced),
        public_key=KEY.public_key(),
        body=body,
    ).sign(KEY)
    again = Record.parse(record.canonical())
    assert again == record
    assert again.hash() == record.hash()
    assert again.signature_valid(KEY.public_key())
    assert not again.signature_valid(generate_signing_key().public_key())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"v": 1', "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"v": 1}', "missing field"),
    ],
)
def test_malformed_records_give_clear_errors(data: bytes, message: str) -> None:
    with pytest.raises(RecordFormatError, match=message):
        Record.parse(data)


def test_signature_verifies_with_openssl(tmp_path: Path) -> None:
    """The signature is plain Ed25519 over the canonical bytes: a tool we did not write agrees."""
    chain = DeviceChain(tmp_path, "BWC-0001", KEY)
    record = chain.append(RecordType.MARKER, "s1", {"kind": "arrival"}, SteppingClock().tick(1))
    pub = tmp_path / "device.pub"
    save_public_key(pub, KEY.public_key())
    (tmp_path / "msg").write_bytes(record.signed_bytes())
    import base64

    (tmp_path / "sig").write_bytes(base64.b64decode(record.sig))
    cmd = [
        "openssl",
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        str(pub),
        "-rawin",
        "-in",
        str(tmp_path / "msg"),
        "-sigfile",
        str(tmp_path / "sig"),
    ]
    ok = subprocess.run(cmd, capture_output=True, text=True)
    assert ok.returncode == 0
    assert "Signature Verified Successfully" in ok.stdout
    # and the record hash is the SHA-256 of the canonical file content, as sha256sum sees it
    out = subprocess.run(
        ["sha256sum", str(tmp_path / "devices/BWC-0001/records/0000000000.json")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.split()[0] == record.hash()
    # a single changed byte is rejected by OpenSSL too
    (tmp_path / "msg").write_bytes(record.signed_bytes().replace(b"arrival", b"arrivaL"))
    bad = subprocess.run(cmd, capture_output=True, text=True)
    assert bad.returncode != 0


def test_chain_continues_across_instances(tmp_path: Path) -> None:
    clock = SteppingClock()
    first = DeviceChain(tmp_path, "BWC-0001", KEY)
    a = first.append(RecordType.SESSION_OPEN, "s1", {}, clock.tick(1))
    second = DeviceChain(tmp_path, "BWC-0001", KEY)  # e.g. after a restart
    b = second.append(RecordType.SESSION_CLOSE, "s1", {}, clock.tick(1))
    assert (a.seq, b.seq) == (0, 1)
    assert a.prev == GENESIS_PREV
    assert b.prev == a.hash()


def test_chain_refuses_to_fork_over_an_unreadable_head(tmp_path: Path) -> None:
    chain = DeviceChain(tmp_path, "BWC-0001", KEY)
    chain.append(RecordType.MARKER, "s1", {}, SteppingClock().tick(1))
    (tmp_path / "devices/BWC-0001/records/0000000000.json").write_bytes(b"garbage")
    with pytest.raises(ChainError, match="newest record is unreadable"):
        DeviceChain(tmp_path, "BWC-0001", KEY)


def test_key_files_round_trip_and_private_key_is_private(tmp_path: Path) -> None:
    save_signing_key(tmp_path / "k.pem", KEY)
    assert private_key_mode_ok(tmp_path / "k.pem")
    loaded = load_signing_key(tmp_path / "k.pem")
    assert key_id(loaded.public_key()) == key_id(KEY.public_key())
    assert key_id(load_public_key(tmp_path / "k.pem")) == key_id(KEY.public_key())
    ring = KeyRing([KEY.public_key()])
    assert key_id(KEY.public_key()) in ring
    assert key_id(KEY.public_key()).startswith("ed25519:")
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(KeyFileError, match="not a PEM"):
        load_public_key(tmp_path / "bad.pem")
    with pytest.raises(KeyFileError, match="cannot read"):
        load_signing_key(tmp_path / "missing.pem")


@given(st.lists(st.binary(max_size=3000), max_size=8), st.sampled_from([1, 7, 1024, 4096]))
def test_streaming_digest_matches_one_shot(pieces: list[bytes], chunk: int) -> None:
    import hashlib

    d = StreamingDigest(chunk)
    for piece in pieces:
        d.update(piece)
    result = d.finish()
    whole = b"".join(pieces)
    assert result.sha256 == hashlib.sha256(whole).hexdigest()
    assert result.size == len(whole)
    assert list(result.chunks) == [
        hashlib.sha256(whole[i : i + chunk]).hexdigest() for i in range(0, len(whole), chunk)
    ]
    assert FileDigest.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_digest_file_agrees_with_sha256sum(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * 3000)
    digest = digest_file(path)
    out = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True)
    assert digest.sha256 == out.stdout.split()[0]
    assert len(digest.chunks) == -(-path.stat().st_size // CHUNK_SIZE)
