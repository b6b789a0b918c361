"""Typed bodies, receipts and wire messages: parsed once, with bounds, in evidence/."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from evidence import layout
from evidence import transfer as wire
from evidence.bodies import GapBody, SegmentBody, SessionCloseBody, SessionOpenBody, parse_body
from evidence.errors import BodyError, InvalidTimeError, RecordFormatError
from evidence.keys import generate_signing_key
from evidence.receipt import Receipt, ReceiptError
from evidence.records import Record, parse_utc
from evidence.testing import build_chain
from evidence.values import DEVICE_ID_RE, SAFE_NAME_RE

HASH = "ab" * 32


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    root = tmp_path_factory.mktemp("typed")
    media = root / "m.ts"
    media.write_bytes(os.urandom(5000))
    build_chain(root / "tree", "BWC-T", generate_signing_key(), [media, media], sessions=1)
    return [Record.load(p) for p in layout.iter_record_files(root / "tree", "BWC-T")]


def test_every_body_of_a_built_chain_parses_and_round_trips(records: list[Record]) -> None:
    kinds = set()
    for record in records:
        body = record.typed_body()
        kinds.add(type(body))
        assert body.to_dict() == record.body
    assert {SessionOpenBody, SegmentBody, SessionCloseBody} <= kinds


def test_an_impossible_date_is_its_own_error_kind(records: list[Record]) -> None:
    segment = next(r for r in records if r.type == "segment")
    body = dict(segment.body, utc_start="2026-13-45T09:00:00.000000Z")
    with pytest.raises(InvalidTimeError, match="not a real date"):
        parse_body("segment", body)
    with pytest.raises(InvalidTimeError):
        parse_utc("2026-02-30T00:00:00.000000Z")
    with pytest.raises(InvalidTimeError):
        parse_utc("2026-01-01T00:00:00.000000Z\n")  # a trailing newline is not a time


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"video": None}, "video is not an object"),
        ({"frames": -1}, "frames is not an integer"),
        ({"frames": 2**60}, "frames is not an integer"),
        ({"file": "a.ts\n"}, "safe file name"),
        ({"file": "../x.ts"}, "safe file name"),
        ({"media": None}, "not recovered and encrypted"),
        ({"encryption": {"scheme": "x", "recipient": "x25519:zz"}}, "recipient"),
        ({"utc_end": "2026-01-01T00:00:00.000000Z"}, "before utc_start"),
        (
            {"media": {"size": 1, "sha256": HASH, "chunk_size": 2**53 - 1, "chunks": [HASH]}},
            "chunk_size exceeds",
        ),
    ],
)
def test_segment_body_rules(records: list[Record], change: dict, message: str) -> None:
    segment = next(r for r in records if r.type == "segment")
    with pytest.raises(BodyError, match=message):
        parse_body("segment", {**segment.body, **change})
    missing = {k: v for k, v in segment.body.items() if k != "recovered"}
    with pytest.raises(BodyError, match="lacks required member 'recovered'"):
        parse_body("segment", missing)


def test_gap_must_not_end_before_it_starts() -> None:
    gap = {
        "cause": "crash",
        "start_utc": "2026-01-01T00:00:10.000000Z",
        "end_utc": "2026-01-01T00:00:09.000000Z",
        "spoken_reason": False,
        "detail": "",
    }
    with pytest.raises(BodyError, match="before start_utc"):
        GapBody.parse(gap)
    assert GapBody.parse({**gap, "end_utc": gap["start_utc"]}).to_dict()["cause"] == "crash"


def test_names_are_matched_in_full_even_by_match() -> None:
    for pattern in (DEVICE_ID_RE, SAFE_NAME_RE):
        assert pattern.match("BWC-1")
        assert not pattern.match("BWC-1\n")
        assert not pattern.match("BWC-1/../x")
    with pytest.raises(wire.WireError):
        wire.parse_topic("bodycam/v1/BWC-1\n/up/init")


def test_record_time_members_are_exact(records: list[Record]) -> None:
    data = json.loads(records[0].canonical())
    data["time"]["tz"] = "+08:00"
    with pytest.raises(RecordFormatError, match="unknown: tz"):
        Record.from_dict(data)


def test_typed_wire_messages_round_trip_and_refuse_bad_values() -> None:
    hello = wire.Hello(parse_utc("2026-11-02T09:00:00.000000Z"), 3, None, 41)
    assert wire.Hello.parse(hello.encode()) == hello
    fin = wire.Fin(HASH, 10, HASH, 1)
    assert wire.Fin.parse(fin.encode()) == fin
    need = wire.Need(HASH, wire.NEED_CHUNKS, (1, 2), "chunk 1 hash mismatch")
    assert wire.Need.parse(need.encode()) == need
    query = wire.Query((HASH,))
    assert wire.Query.parse(query.encode()) == query
    bad_hello = json.loads(hello.encode())
    for change, message in [
        ({"device_utc": "2026-13-45T09:00:00.000000Z"}, "not a real date"),
        ({"pending_segments": -4}, "pending_segments"),
    ]:
        with pytest.raises(wire.WireError, match=message):
            wire.Hello.parse(wire.encode_json({**bad_hello, **change}))
    with pytest.raises(wire.WireError, match="at most"):
        wire.Query.parse(wire.encode_json({"v": 1, "records": [HASH] * 1025}))
    for hostile in (b'{"v":' + b"9" * 5000 + b"}", b"[" * 100_000 + b"]" * 100_000):
        with pytest.raises(wire.WireError, match="not JSON"):
            wire.parse_json(hostile, wire.HELLO)


def test_receipts_refuse_impossible_times(tmp_path: Path) -> None:
    key = generate_signing_key()
    receipt = Receipt.create(
        device="BWC-T",
        record=HASH,
        seq=1,
        record_type="segment",
        status="stored",
        receiver_key=key,
    )
    data = json.loads(receipt.canonical())
    data["utc"] = "2026-13-45T00:00:00.000000Z"
    with pytest.raises(ReceiptError, match="not a real date"):
        Receipt.from_dict(data)


def test_a_receipt_that_cannot_be_canonicalised_is_invalid_not_a_crash() -> None:
    key = generate_signing_key()
    receipt = Receipt.create(
        device="BWC-T", record=HASH, seq=1, record_type="segment", status="stored", receiver_key=key
    )
    raw = json.dumps(json.loads(receipt.canonical())).replace(
        '"reason": null', '"reason": "\\ud800"'
    )
    hostile = Receipt.parse(raw.encode())
    assert hostile.verify(key.public_key()) == "receipt signature does not verify"
