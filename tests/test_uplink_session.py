"""The uplink session without a broker: events in, publishes out, time stepped by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.uplink.config import UplinkConfig
from agent.uplink.session import (
    WAIT_HELLO_S,
    Connected,
    ManualClock,
    Message,
    Publish,
    PublishFailed,
    UplinkSession,
)
from agent.uplink.spool import Item, UploadSpool
from evidence import transfer as wire
from evidence.keys import generate_signing_key
from evidence.receipt import STATUS_QUARANTINED, STATUS_STORED, Receipt
from tests.support.spool import BuiltSpool, build_spool

DEVICE = "BC-0001"


@pytest.fixture
def built(tmp_path: Path, mpegts_clips: list[Path]) -> BuiltSpool:
    return build_spool(tmp_path / "spool", mpegts_clips, device=DEVICE, chunk_size_bytes=4096)


@pytest.fixture
def receiver_key() -> Ed25519PrivateKey:
    return generate_signing_key()


def make_session(
    built: BuiltSpool, receiver_key: Ed25519PrivateKey, **cfg: object
) -> tuple[UplinkSession, ManualClock]:
    settings = {"allow_insecure": True, "probe_timeout_s": 1.0, **cfg}
    config = UplinkConfig(**settings)  # type: ignore[arg-type]
    clock = ManualClock()
    session = UplinkSession(
        UploadSpool(built.root, DEVICE), config, receiver_key.public_key(), clock
    )
    session.start()
    return session, clock


def kinds(actions: list[Publish]) -> list[str]:
    return [a.topic.rsplit("/", 1)[-1] for a in actions]


def connect(session: UplinkSession, clock: ManualClock) -> list[Publish]:
    """Connect, answer the start-up probe as a receiver that has nothing does, and return the
    first window."""
    first = session.handle(Connected(session_present=False))
    assert "query" in kinds(first)  # asks before sending anything
    assert [k for k in kinds(session.tick()) if k in ("init", "chunk")] == []
    for record in list(session.probing):
        assert session.handle(need(record, wire.NEED_ALL)) == []  # answers, not resend requests
    return session.tick()


def receipt_for(
    item: Item, key: Ed25519PrivateKey, status: str = STATUS_STORED, device: str = DEVICE
) -> Message:
    d = item.digest
    receipt = Receipt.create(
        device=device,
        record=item.hash,
        seq=item.record.seq,
        record_type=item.record.type,
        status=status,
        receiver_key=key,
        reason=None if status == STATUS_STORED else "test refusal",
        media_sha256=d.sha256 if d else None,
        media_size=d.size if d else None,
    )
    return Message(wire.down_topic(device, wire.DOWN_RECEIPT), receipt.canonical())


def need(record: str, what: str, chunks: list[object] | None = None) -> Message:
    msg = {"v": 1, "record": record, "what": what, "chunks": chunks or [], "reason": "test"}
    return Message(wire.down_topic(DEVICE, wire.DOWN_NEED), wire.encode_json(msg))


def sent_records(actions: list[Publish]) -> list[str]:
    out: list[str] = []
    for a in actions:
        if a.owner is not None and a.owner not in out:
            out.append(a.owner)
    return out


def test_first_window_sends_records_in_order_within_the_window(
    built: BuiltSpool, receiver_key: Ed25519PrivateKey
) -> None:
    segment = max(s.body["media"]["size"] for s in built.segments())
    session, clock = make_session(built, receiver_key, window_bytes=segment + 4096)
    actions = connect(session, clock)
    pending = session.spool.pending()
    sent = sent_records(actions)
    assert sent == [i.hash for i in pending[: len(sent)]]  # upload order, nothing skipped
    assert 0 < len(sent) < len(pending)  # the window stopped it
    assert session.inflight_bytes <= session.window_bytes
    assert session.result.window_stalls >= 1
    # a segment goes as init, every chunk in order, fin
    seg = next(i for i in pending if i.hash in sent and i.digest is not None)
    mine = [a for a in actions if a.owner == seg.hash]
    assert kinds(mine) == ["init", *["chunk"] * len(seg.digest.chunks), "fin"]  # type: ignore[union-attr]
    frames = [wire.unpack_chunk(a.payload) for a in mine[1:-1]]
    assert [f.index for f in frames] == list(range(len(frames)))
    assert [f.sha256 for f in frames] == list(seg.digest.chunks)  # type: ignore[union-attr]
    assert all(f.intact for f in frames)
    assert session.tick() == [] or "chunk" not in kinds(session.tick())  # window still full


def test_chunks_go_out_with_their_signed_hashes_even_from_a_corrupted_card(
    built: BuiltSpool, receiver_key: Ed25519PrivateKey
) -> None:
    # The device does not hash its media again to send them: each frame's header carries the
    # chunk's hash from the signed record, so bytes changed on the card since sealing arrive
    # as not matching it (and are quarantined by the receiver, see test_receiver_quarantine).
    victim = built.segments()[0]
    media = built.media_path(victim)
    data = bytearray(media.read_bytes())
    data[5000] ^= 0xFF  # in chunk 1 (4 KiB chunks)
    media.write_bytes(bytes(data))
    session, clock = make_session(built, receiver_key, window_bytes=1 << 30)
    actions = connect(session, clock)
    mine = [a for a in actions if a.owner == victim.hash() and kinds([a]) == ["chunk"]]
    frames = [wire.unpack_chunk(a.payload) for a in mine]
    signed = victim.body["media"]["chunks"]
    assert [f.claimed for f in frames] == signed
    assert [f.intact for f in frames] == [i != 1 for i in range(len(signed))]


def test_receipts_free_media_and_reopen_the_window(
    built: BuiltSpool, receiver_key: Ed25519PrivateKey
) -> None:
    session, clock = make_session(built, receiver_key, window_bytes=1)
    actions = connect(session, clock)
    total = len(session.spool.pending())
    done = 0
    while actions:
        (record,) = sent_records(actions)  # a window of 1 byte: one record at a time
        item = session.spool.find(record)
        assert item is not None
        assert session.handle(receipt_for(item, receiver_key)) == []
        if item.media_path is not None:
            assert not item.media_path.exists()  # freed on the signed receipt
        done += 1
        actions = session.tick()
    assert done == total
    assert not session.done()  # docking not over: the receiver's clock has not come yet
    clock.advance(session.config.receipt_timeout_s + 1)
    assert session.done()
    result = session.finish()
    assert (result.receipted, result.pending, result.errors) == (total, 0, [])


def test_receipts_that_do_not_verify_free_nothing(
    built: BuiltSpool, receiver_key: Ed25519PrivateKey
) -> None:
    session, clock = make_session(built, receiver_key, window_bytes=1)
    (record,) = sent_records(connect(session, clock))
    item = session.spool.find(record)
    assert item is not None
    forged = receipt_for(item, generate_signing_key())
    other_device = receipt_for(item, receiver_key, device="BC-9999")
    for message in (forged, other_device, Message(forged.topic, b"{not json")):
        session.handle(message)
    assert record in session.inflight
    assert session.result.receipted == 0
    assert not (session.spool.receipts / f"{record}.json").exists()


def test_need_resends_exactly_what_is_missing(
    built: BuiltSpool, receiver_key: Ed25519PrivateKey
) -> None:
    session, clock = make_session(built, receiver_key)
    connect(session, clock)
    seg = next(e.item for e in session.inflight.values() if e.item.digest is not None)
    assert seg.digest is not None
    assert len(seg.digest.chunks) >= 3
    again = session.handle(need(seg.hash, wire.NEED_CHUNKS, [2, 0, 10**6, True, "x"]))
    assert kinds(again) == ["chunk", "chunk", "fin"]
    assert [wire.unpack_chunk(a.payload).index for a in again[:2]] == [2, 0]
    everything = session.handle(need(seg.hash, wire.NEED_ALL))
    assert kinds(everything) == ["init", *["chunk"] * len(seg.digest.chunks), "fin"]
    assert session.result.resends == 2
    # a need for something not in flight (already receipted, an old run) sends nothing
    assert session.handle(need("ab" * 32, wire.NEED_ALL)) == []


def test_refused_publish_is_an_error_and_the_record_is_retried_after_the_backoff(
    built: BuiltSpool, receiver_key: Ed25519PrivateKey
) -> None:
    session, clock = make_session(built, receiver_key, window_bytes=1, retry_backoff_s=10.0)
    (record,) = sent_records(connect(session, clock))
    session.handle(PublishFailed(record, "Not authorized"))
    assert session.result.refused_publishes == 1
    assert any("refused a publish" in e for e in session.result.errors)
    assert record not in session.inflight
    assert session.inflight_bytes == 0
    clock.advance(session.config.rescan_interval_s)
    # not before the back-off (the next record takes the window meanwhile)
    assert record not in sent_records(session.tick())
    clock.advance(10.0)
    for _ in range(len(session.spool.pending())):
        for entry in list(session.inflight.values()):
            session.handle(receipt_for(entry.item, receiver_key))
        clock.advance(session.config.rescan_interval_s)
        if record in sent_records(session.tick()):
            break
    else:
        raise AssertionError("the refused record was never sent again")
    # not queued by the client (no connection): retried too, but not counted as refused
    session.handle(PublishFailed(record, "rc 4", refused=False))
    assert session.result.refused_publishes == 1
    assert record not in session.inflight


def test_later_holds_sending_with_a_doubling_backoff(
    built: BuiltSpool, receiver_key: Ed25519PrivateKey
) -> None:
    session, clock = make_session(
        built, receiver_key, window_bytes=1, retry_backoff_s=5.0, retry_backoff_max_s=15.0
    )
    pauses = []
    (record,) = sent_records(connect(session, clock))
    for _ in range(3):
        session.handle(need(record, wire.NEED_LATER))
        pauses.append(session.hold_until - clock.monotonic())
        assert session.tick() == []  # nothing new goes while the receiver says "later"
        clock.advance(pauses[-1] + 0.01)
        resent = sent_records(session.tick())
        assert resent
        assert resent[0] == record
    assert pauses == pytest.approx([5.0, 10.0, 15.0])
    assert session.result.deferred == 3
    assert session.finish().pending > 0


def test_receipt_timeout_follows_the_backlog(
    built: BuiltSpool, receiver_key: Ed25519PrivateKey
) -> None:
    session, clock = make_session(built, receiver_key, receipt_timeout_s=5.0)
    connect(session, clock)
    assert session.inflight_bytes > 0
    expected = 5.0 + session.inflight_bytes / session.rate_bps
    assert session.receipt_timeout_s() == pytest.approx(expected)
    clock.advance(expected - 0.1)
    assert "query" not in kinds(session.tick())
    clock.advance(0.2)
    assert "query" in kinds(session.tick())
    # a slow receiver (one record receipted after a long wait) lowers the rate estimate
    rate = session.rate_bps
    item = next(iter(session.inflight.values())).item
    clock.advance(60.0)
    session.handle(receipt_for(item, receiver_key))
    assert session.rate_bps < rate


def test_a_window_granted_by_the_receiver_is_honoured(
    built: BuiltSpool, receiver_key: Ed25519PrivateKey
) -> None:
    session, clock = make_session(built, receiver_key, window_bytes=1 << 30)
    hello = next(a for a in session.handle(Connected(False)) if a.topic.endswith("/hello"))
    reply = {
        "v": 1,
        "receiver_utc": "2026-01-01T00:00:00.000000Z",
        "echo_device_utc": json.loads(hello.payload)["device_utc"],
        "receiver": "test",
        "window_bytes": 1,
    }
    session.handle(Message(wire.down_topic(DEVICE, wire.DOWN_CLOCK), wire.encode_json(reply)))
    assert session.window_bytes == 1
    assert session.result.clock_offset_s is not None
    clock.advance(session.config.probe_timeout_s + 0.1)
    assert len(sent_records(session.tick())) == 1  # one record at a time, as granted


def _window(grant: wire.Grant) -> Message:
    return Message(wire.down_topic(DEVICE, wire.DOWN_WINDOW), grant.encode())


def _clock_reply(hello: Publish, window_bytes: int, window_messages: int) -> Message:
    reply = wire.ClockSync(
        datetime(2026, 1, 1, tzinfo=UTC),
        json.loads(hello.payload)["device_utc"],
        "test",
        wire.Grant(window_bytes, window_messages),
    )
    return Message(wire.down_topic(DEVICE, wire.DOWN_CLOCK), reply.encode())


def test_a_device_told_to_wait_sends_nothing_until_granted_and_a_shrink_strands_nothing(
    built: BuiltSpool, receiver_key: Ed25519PrivateKey
) -> None:
    """Issue 14.3: the receiver hands windows out in turns. Waiting (window 0) sends nothing and
    repeats the hello; a grant (down/window) opens a window in bytes *and* messages; taking it
    back (0 again) stops new records while those in flight stay in flight until receipted."""
    session, clock = make_session(built, receiver_key, window_bytes=1 << 30)
    hello = next(a for a in session.handle(Connected(False)) if a.topic.endswith("/hello"))
    session.handle(_clock_reply(hello, 0, 0))
    assert session.waiting
    for record in list(session.probing):
        session.handle(need(record, wire.NEED_ALL))
    for _ in range(3):  # waiting: no record goes out, the hello is repeated to keep the turn
        actions = session.tick()
        assert sent_records(actions) == []
        clock.advance(WAIT_HELLO_S)
        assert "hello" in kinds(session.tick())
    segments = [i for i in session.queue if i.digest is not None]
    per_segment = len(segments[0].digest.chunks) + 2 if segments[0].digest else 1
    session.handle(_window(wire.Grant(1 << 30, per_segment + 1)))  # room for ~one segment
    first = sent_records(session.tick())
    assert 1 <= len(first) <= 2
    assert session.inflight_messages <= per_segment + 1
    session.handle(_window(wire.Grant(0, 0)))  # the turn passes to another device
    clock.advance(1.0)
    assert sent_records(session.tick()) == []
    assert set(session.inflight) == set(first)  # nothing in flight is dropped or resent
    for h in first:
        session.handle(receipt_for(session.inflight[h].item, receiver_key))
    assert session.inflight == {}
    assert session.inflight_messages == 0
    assert sent_records(session.tick()) == []  # still waiting
    assert session.result.resends == 0
    session.handle(_window(wire.Grant(1 << 30, 1 << 20)))
    actions = session.tick()
    assert sent_records(actions)  # its turn again: all the rest goes out ...
    hellos = [json.loads(a.payload) for a in actions if a.topic.endswith("/hello")]
    assert hellos[-1]["idle"] is True  # ... and the window goes back for another device
    assert session.waiting


def test_a_window_queued_before_this_connection_does_not_stop_the_device(
    built: BuiltSpool, receiver_key: Ed25519PrivateKey
) -> None:
    """A "wait" the receiver sent while the device was away (its persistent session keeps it)
    arrives right after the connection, before the reply to the new hello: it is stale and
    ignored; the reply decides, and windows after it count again."""
    session, _clock = make_session(built, receiver_key, window_bytes=1 << 30)
    hello = next(a for a in session.handle(Connected(False)) if a.topic.endswith("/hello"))
    session.handle(_window(wire.Grant(0, 0)))  # queued while the device was offline
    assert session.grant is None
    assert not session.waiting
    session.handle(_clock_reply(hello, 1 << 20, 1 << 10))
    assert session.grant == wire.Grant(1 << 20, 1 << 10)
    session.handle(_window(wire.Grant(0, 0)))  # now a real "wait": another device's turn
    assert session.waiting
    session.handle(Connected(True))  # a new connection: stale again until its reply
    session.handle(_window(wire.Grant(1 << 20, 1 << 10)))
    assert session.waiting


def test_quarantined_receipt_stops_resending_but_keeps_the_media(
    built: BuiltSpool, receiver_key: Ed25519PrivateKey
) -> None:
    session, clock = make_session(built, receiver_key)
    connect(session, clock)
    seg = next(e.item for e in session.inflight.values() if e.item.digest is not None)
    session.handle(receipt_for(seg, receiver_key, STATUS_QUARANTINED))
    assert seg.media_path is not None
    assert seg.media_path.exists()
    assert session.result.quarantined == 1
    assert seg.hash not in [i.hash for i in session.spool.pending()]


def test_probe_answers_resume_a_half_sent_segment(
    built: BuiltSpool, receiver_key: Ed25519PrivateKey
) -> None:
    session, _clock = make_session(built, receiver_key)
    session.handle(Connected(False))
    seg = next(i for i in session.spool.pending() if i.digest is not None)
    others = [i for i in session.spool.pending() if i.hash != seg.hash]
    session.handle(need(seg.hash, wire.NEED_CHUNKS, [1]))
    for item in others:  # the receiver has everything else already
        session.handle(receipt_for(item, receiver_key))
    actions = session.tick()  # every probe answered: no need to wait for the deadline
    assert kinds([a for a in actions if a.owner == seg.hash]) == ["chunk", "fin"]


def test_late_answers_to_the_start_up_probe_do_not_cause_resends(
    built: BuiltSpool, receiver_key: Ed25519PrivateKey
) -> None:
    """A busy receiver answers the probe after its deadline: "unknown, send all" then describes
    the time before anything was sent (MQTT keeps order), so it is not a resend request."""
    session, clock = make_session(built, receiver_key)
    session.handle(Connected(session_present=False))
    clock.advance(session.config.probe_timeout_s + 0.1)
    first = sent_records(session.tick())  # probe unanswered: sending started
    assert first
    for record in first:
        assert session.handle(need(record, wire.NEED_ALL)) == []
    assert session.result.resends == 0
    # a need after that is a real one (e.g. the answer to a time-out query)
    assert "init" in kinds(session.handle(need(first[0], wire.NEED_ALL)))
    assert session.result.resends == 1


def receiver_status(state: str, instance: str) -> Message:
    msg = {"v": 1, "state": state, "instance": instance}
    return Message(wire.RECEIVER_STATUS_TOPIC, wire.encode_json(msg))


def test_a_restarted_receiver_is_asked_and_an_offline_one_is_not(
    built: BuiltSpool, receiver_key: Ed25519PrivateKey
) -> None:
    session, clock = make_session(built, receiver_key, receipt_timeout_s=1.0)
    assert session.handle(receiver_status("online", "rx-1")) == []  # first sight: nothing to ask
    inflight = sent_records(connect(session, clock))
    assert inflight
    queries_before = session.result.queries
    session.handle(receiver_status("offline", "rx-1"))
    clock.advance(3600)  # far past any receipt time-out
    assert "query" not in kinds(session.tick())  # its session would only pile them up
    again = session.handle(receiver_status("online", "rx-2"))
    asked = [
        h for a in again if a.topic.endswith("/query") for h in json.loads(a.payload)["records"]
    ]
    assert sorted(asked) == sorted(session.inflight)
    assert session.result.queries > queries_before
