"""Fuzzing the receiver's message handling: Ingest.handle with arbitrary topics and payloads.

Bounded for CI (``RECEIVER_FUZZ_EXAMPLES``, default 300 per property). A longer run::

    RECEIVER_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -q tests/test_receiver_fuzz.py

Properties: ``handle`` never raises, never logs a traceback, answers only on the sending
device's own ``down/`` topics, and every answer is bounded in size and count.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evidence import transfer as wire
from evidence.chain import DeviceChain
from evidence.keys import generate_signing_key
from evidence.media import digest_file
from evidence.records import RecordType
from evidence.testing import SteppingClock
from receiver.identity import load_receipt_key
from receiver.ingest import Ingest, Outgoing
from receiver.store import EvidenceStore, connect

EXAMPLES = int(os.environ.get("RECEIVER_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
DEV = "BC-F"


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ingest, list[bytes]]]:
    """An ingest with one registered device and a few valid messages to mutate."""
    tmp = tmp_path_factory.mktemp("fuzz")
    store = EvidenceStore(tmp / "rdata")
    ingest = Ingest(store, connect(store.db_path), load_receipt_key(tmp / "r.key"))
    key = generate_signing_key()
    ingest.registry.add_key(DEV, key.public_key())
    chain = DeviceChain(tmp / "spool", DEV, key)
    clock = SteppingClock()
    opening = chain.append(RecordType.SESSION_OPEN, "s", {"assignment": None}, clock.tick(1))
    media = tmp / "m.ts"
    media.write_bytes(os.urandom(3000))
    digest = digest_file(media, 1024)
    seg = chain.append(
        RecordType.SEGMENT,
        "s",
        {"file": "m.ts", "media": digest.to_dict(), "stored": None},
        clock.tick(1),
    )
    seeds = [
        wire.encode_json({"v": 1, "record": opening.to_dict()}),
        wire.encode_json({"v": 1, "record": seg.to_dict()}),
        wire.pack_chunk(seg.hash(), 0, 0, media.read_bytes()[:1024]),
        wire.encode_json(
            {"v": 1, "record": seg.hash(), "size": 3000, "sha256": digest.sha256, "chunks": 3}
        ),
        wire.encode_json({"v": 1, "records": [seg.hash(), "0" * 64]}),
        wire.encode_json(
            {
                "v": 1,
                "device_utc": clock.tick(0).utc,
                "pending_segments": 1,
                "oldest_pending_utc": None,
                "head_seq": 1,
            }
        ),
    ]
    yield ingest, seeds
    ingest.close()


def _check(out: list[Outgoing], topic: str) -> None:
    assert isinstance(out, list)
    assert len(out) <= wire.MAX_QUERY_RECORDS + 16
    parts = topic.split("/")
    for o in out:
        assert o.topic.startswith(f"{wire.PREFIX}/{parts[2]}/down/"), (topic, o.topic)
        assert len(o.payload) < 64 * 1024


def _no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    tracebacks = [r for r in caplog.records if r.exc_info]
    caplog.clear()
    assert not tracebacks, tracebacks[0].getMessage()


kinds = st.sampled_from(sorted(wire.UP_KINDS | wire.DOWN_KINDS | {"status", "x", ""}))
devices = st.one_of(st.just(DEV), st.just("BC-OTHER"), st.text(max_size=12), st.just(DEV + "\n"))
topics = st.one_of(
    st.builds(lambda d, k: f"{wire.PREFIX}/{d}/up/{k}", devices, kinds),
    st.builds(lambda d, k: f"{wire.PREFIX}/{d}/{k}", devices, kinds),
    st.text(max_size=60),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


@FUZZ
@given(topic=topics, payload=st.binary(max_size=2048))
def test_arbitrary_bytes_on_arbitrary_topics(
    rig: tuple[Ingest, list[bytes]], caplog: pytest.LogCaptureFixture, topic: str, payload: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    ingest, _ = rig
    _check(ingest.handle(topic, payload), topic)
    _no_traceback(caplog)


@FUZZ
@given(kind=st.sampled_from(sorted(wire.UP_KINDS)), value=json_values)
def test_arbitrary_json_on_upload_topics(
    rig: tuple[Ingest, list[bytes]], caplog: pytest.LogCaptureFixture, kind: str, value: object
) -> None:
    caplog.set_level(logging.DEBUG)
    ingest, _ = rig
    topic = wire.up_topic(DEV, kind)
    payload = json.dumps({"v": 1, "record": value, "records": value, "device_utc": value})
    _check(ingest.handle(topic, payload.encode()), topic)
    _no_traceback(caplog)


@FUZZ
@given(
    seed=st.integers(0, 5),
    kind=st.sampled_from(sorted(wire.UP_KINDS)),
    edits=st.lists(st.tuples(st.integers(0, 4096), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 4096),
)
def test_mutated_valid_messages(
    rig: tuple[Ingest, list[bytes]],
    caplog: pytest.LogCaptureFixture,
    seed: int,
    kind: str,
    edits: list[tuple[int, int]],
    cut: int,
) -> None:
    caplog.set_level(logging.DEBUG)
    ingest, seeds = rig
    data = bytearray(seeds[seed])
    for pos, byte in edits:
        if data:
            data[pos % len(data)] = byte
    payload = bytes(data[: max(cut, len(data) // 2)])
    topic = wire.up_topic(DEV, kind)
    _check(ingest.handle(topic, payload), topic)
    _no_traceback(caplog)


def test_fuzz_rig_accepts_its_own_seeds(rig: tuple[Ingest, list[bytes]]) -> None:
    """The seeds are valid messages (so mutations start from something the ingest takes)."""
    ingest, seeds = rig
    kinds_ = [wire.UP_INIT, wire.UP_INIT, wire.UP_CHUNK, wire.UP_FIN, wire.UP_QUERY, wire.UP_HELLO]
    answered = [ingest.handle(wire.up_topic(DEV, k), p) for k, p in zip(kinds_, seeds, strict=True)]
    assert any(o.topic.endswith("/clock") for o in answered[-1])
    assert Path(ingest.store.data_dir).is_dir()
