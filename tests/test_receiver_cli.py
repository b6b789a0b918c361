"""Clerk commands: cases, assignments, filing, listings; and the ingest core in-process."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from evidence import transfer as wire
from evidence.keys import generate_signing_key
from evidence.media import digest_file
from evidence.receipt import Receipt
from evidence.testing import segment_body
from receiver.cli import main
from receiver.config import load_config
from receiver.errors import ReceiverConfigError
from receiver.identity import load_receipt_key
from receiver.ingest import Ingest
from receiver.store import EvidenceStore, connect
from tests.support.spool import BuiltSpool, build_spool


def run(data: Path, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--data-dir", str(data), *args])
    return code, out.getvalue()


def run_json(data: Path, *args: str) -> Any:
    code, text = run(data, *args, "--json")
    assert code in (0, 1, 3), text  # 3: case show of a case without sessions
    return json.loads(text)


def feed(ingest: Ingest, spool: BuiltSpool) -> list[Receipt]:
    """Send a spool through the receiver's protocol handler exactly as the uplink does."""
    receipts = []
    for record in spool.records:
        dev = record.device
        out = ingest.handle(
            wire.up_topic(dev, "init"), wire.encode_json({"v": 1, "record": record.to_dict()})
        )
        if record.type == "segment":
            path = spool.media_path(record)
            d = record.body["media"]
            data = path.read_bytes()
            for i in range(len(d["chunks"])):
                off = i * d["chunk_size"]
                ingest.handle(
                    wire.up_topic(dev, "chunk"),
                    wire.pack_chunk(record.hash(), i, off, data[off : off + d["chunk_size"]]),
                )
            fin = {
                "v": 1,
                "record": record.hash(),
                "size": d["size"],
                "sha256": d["sha256"],
                "chunks": len(d["chunks"]),
            }
            out = ingest.handle(wire.up_topic(dev, "fin"), wire.encode_json(fin))
        receipts += [Receipt.parse(o.payload) for o in out if o.topic.endswith("/receipt")]
    return receipts


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "rdata"


def _ingest(data: Path) -> Ingest:
    store = EvidenceStore(data)
    return Ingest(store, connect(store.db_path), load_receipt_key(data / "receipt.key"))


def test_sessions_wait_in_inbox_until_case_exists_or_clerk_files_them(
    data: Path, tmp_path: Path, mpegts_clips: list[Path]
) -> None:
    spool = build_spool(tmp_path / "s1", mpegts_clips[:2], sessions=1, case="JY-LATER")
    other = build_spool(tmp_path / "s2", mpegts_clips[:1], device="BC-0002", case=None)
    assert run(data, "device", "add", "--id", spool.device, "--key", str(spool.pub_path))[0] == 0
    assert run(data, "device", "add", "--id", other.device, "--key", str(other.pub_path))[0] == 0
    ingest = _ingest(data)
    assert all(r.status == "stored" for r in feed(ingest, spool) + feed(ingest, other))

    inbox = run_json(data, "sessions", "--inbox")
    assert len(inbox) == 2
    assert {s["case"] for s in inbox} == {"UNFILED"}
    # the case named by the device's assignment appears later: its session is filed to it
    assert (
        run(data, "case", "create", "--number", "JY-LATER", "--type", "seizure", "--title", "扣押")[
            0
        ]
        == 0
    )
    case = run_json(data, "case", "show", "JY-LATER")
    assert case["av_level"] == "mandatory"
    assert len(case["sessions"]) == 1
    assert case["sessions"][0]["filed_by"] == "assignment"
    # the clerk files the other one by command
    (left,) = run_json(data, "sessions", "--inbox")
    assert (
        run(
            data,
            "case",
            "create",
            "--number",
            "JY-2",
            "--type",
            "licensing",
            "--title",
            "许可",
            "--sensitivity",
            "personal-privacy",
        )[0]
        == 0
    )
    assert run(data, "file", "--session", left["session"], "--case", "JY-2")[0] == 0
    assert run_json(data, "sessions", "--inbox") == []
    shown = run_json(data, "case", "show", "JY-2")
    assert shown["sessions"][0]["filed_by"] == "clerk"
    assert shown["sensitivity"] == "personal-privacy"
    cases = {c["number"]: c for c in run_json(data, "cases")}
    assert cases["JY-2"]["av_level"] == "none"
    assert cases["JY-LATER"]["sessions"] == 1
    code, table = run(data, "sessions")
    assert code == 0
    assert "JY-LATER" in table
    assert "JY-2" in table
    assert "SESSION" in table

    # sending everything again stores nothing twice and answers with the same receipts
    again = feed(ingest, spool)
    assert [r.record for r in again] == [r.hash() for r in spool.records]
    assert ingest.stats.duplicates >= len(spool.records)
    assert run_json(data, "devices")[0]["records"] == len(spool.records)


def test_user_errors_are_one_line_and_change_nothing(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_key = tmp_path / "bad.pub"
    bad_key.write_text("not a key")
    assert run(data, "device", "add", "--id", "BC-1", "--key", str(bad_key))[0] == 2
    assert "not a PEM public key" in capsys.readouterr().err
    assert run_json(data, "devices") == []
    assert (
        run(data, "case", "create", "--number", "C1", "--type", "dispute", "--title", "t")[0] == 0
    )
    assert (
        run(data, "case", "create", "--number", "C1", "--type", "dispute", "--title", "t")[0] == 2
    )
    assert "already exists" in capsys.readouterr().err
    code, _ = run(
        data,
        "assign",
        "--device",
        "BC-404",
        "--case",
        "C1",
        "--officer",
        "A",
        "--place",
        "p",
        "--reason",
        "r",
        "--target",
        "t",
        "--stage",
        "start",
    )
    assert code == 2
    assert "no device 'BC-404'" in capsys.readouterr().err
    assert run(data, "file", "--session", "nope", "--case", "C1")[0] == 2
    assert run(data, "case", "show", "C404")[0] == 2
    with pytest.raises(SystemExit):
        run(data, "case", "create", "--number", "C2", "--type", "bogus", "--title", "t")
    assert [c["number"] for c in run_json(data, "cases")] == ["C1"]


def test_config_file_is_strict(tmp_path: Path) -> None:
    cfg = tmp_path / "receiver.toml"
    cfg.write_text('data_dir = "d"\n[broker]\nport = 8883\nca_file = "ca.pem"\n')
    loaded = load_config(cfg)
    assert loaded.data_dir == tmp_path / "d"
    assert loaded.broker.port == 8883
    assert loaded.broker.ca_file == tmp_path / "ca.pem"
    cfg.write_text("[broker]\nprot = 1\n")
    with pytest.raises(ReceiverConfigError, match=r"broker\.prot: unknown key"):
        load_config(cfg)
    cfg.write_text('[broker]\nport = "x"\n')
    with pytest.raises(ReceiverConfigError, match=r"broker\.port: expected int"):
        load_config(cfg)


def test_reassembly_memory_does_not_grow_with_segment_size(tmp_path: Path) -> None:
    # a 24 MiB segment goes through the ingest in 256 KiB chunks; Python-level peak
    # allocation stays around one chunk, not the segment size
    size = 24 * 1024 * 1024
    root = tmp_path / "spool"
    media = tmp_path / "big.ts"
    with open(media, "wb") as f:
        for _ in range(size // (1 << 20)):
            f.write(os.urandom(1 << 20))
    from evidence.chain import DeviceChain
    from evidence.records import RecordType
    from evidence.testing import SteppingClock

    key = generate_signing_key()
    chain = DeviceChain(root, "BC-BIG", key)
    clock = SteppingClock()
    dst = root / "devices" / "BC-BIG" / "media" / "big.ts"
    dst.parent.mkdir(parents=True)
    media.rename(dst)
    digest = digest_file(dst)
    body = segment_body("big.ts", digest.to_dict())
    record = chain.append(RecordType.SEGMENT, "s1", body, clock.tick(1))
    data = tmp_path / "rdata"
    ingest = _ingest(data)
    ingest.registry.add_key("BC-BIG", key.public_key())
    topic = wire.up_topic("BC-BIG", "chunk")
    ingest.handle(
        wire.up_topic("BC-BIG", "init"), wire.encode_json({"v": 1, "record": record.to_dict()})
    )
    tracemalloc.start()
    try:
        with open(dst, "rb") as f:
            for i, off in enumerate(range(0, size, 256 * 1024)):
                ingest.handle(topic, wire.pack_chunk(record.hash(), i, off, f.read(256 * 1024)))
        fin = {
            "v": 1,
            "record": record.hash(),
            "size": size,
            "sha256": digest.sha256,
            "chunks": size // (256 * 1024),
        }
        (out,) = ingest.handle(wire.up_topic("BC-BIG", "fin"), wire.encode_json(fin))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert Receipt.parse(out.payload).status == "stored"
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes while reassembling {size} bytes"


def test_assignment_stages_are_the_ones_the_device_can_speak() -> None:
    from agent.preamble import STAGES_ZH
    from receiver.cases import STAGES

    assert set(STAGES) == set(STAGES_ZH)


def test_filed_session_moves_to_another_case_only_with_move_and_the_move_is_recorded(
    data: Path, tmp_path: Path, mpegts_clips: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    spool = build_spool(tmp_path / "s1", mpegts_clips[:1], case=None)
    assert run(data, "device", "add", "--id", spool.device, "--key", str(spool.pub_path))[0] == 0
    assert all(r.status == "stored" for r in feed(_ingest(data), spool))
    for number in ("JY-A", "JY-B"):
        assert (
            run(data, "case", "create", "--number", number, "--type", "dispute", "--title", "t")[0]
            == 0
        )
    session = spool.records[0].session
    assert run(data, "file", "--session", session, "--case", "JY-A")[0] == 0
    capsys.readouterr()

    code, _ = run(data, "file", "--session", session, "--case", "JY-B")

    err = capsys.readouterr().err
    assert code == 2
    assert "already filed to case JY-A" in err
    assert "--move" in err
    assert len(err.strip().splitlines()) == 1
    assert [s["session"] for s in run_json(data, "case", "show", "JY-A")["sessions"]] == [session]
    assert run_json(data, "case", "show", "JY-B")["sessions"] == []
    # filing again to the same case is a no-op, not an error
    assert run(data, "file", "--session", session, "--case", "JY-A")[0] == 0

    code, text = run(data, "file", "--session", session, "--case", "JY-B", "--move")

    assert code == 0
    assert "moved from case JY-A to case JY-B" in text
    assert run_json(data, "case", "show", "JY-A")["sessions"] == []
    assert [s["session"] for s in run_json(data, "case", "show", "JY-B")["sessions"]] == [session]
    conn = connect(data / "receiver.db")
    try:
        moves = [tuple(r)[1:4] for r in conn.execute("SELECT * FROM filing_moves")]
    finally:
        conn.close()
    assert moves == [(session, "JY-A", "JY-B")]


@pytest.mark.parametrize(
    "listing",
    [
        ["devices"],
        ["device", "list"],
        ["sessions"],
        ["cases"],
        ["case", "show", "C1"],
        ["quarantine"],
        ["reverify"],
    ],
)
def test_bad_data_dir_is_one_line_exit_2_and_listings_create_nothing(
    tmp_path: Path, listing: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "receiver.toml"
    a_file.write_text("not a directory\n")
    assert run(a_file, *listing)[0] == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "is not a directory" in err
    assert "Traceback" not in err

    typo = tmp_path / "reciever-data"
    assert run(typo, *listing)[0] == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "not a receiver data directory" in err
    assert not typo.exists(), "a read-only listing must not create a data directory"


def test_service_refuses_a_file_as_data_dir_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "data"
    a_file.write_text("")
    assert main(["--data-dir", str(a_file), "run", "--broker", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "is not a directory" in err
    assert "Traceback" not in err
