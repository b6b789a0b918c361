"""Encryption at rest, receiver side: a spool copied off a device shows no media, yet the
receiver files and verifies it completely; media that do not decrypt, or whose plaintext is not
what was signed, are quarantined with the reason."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from evidence import layout
from evidence.chain import DeviceChain
from evidence.cli import main as verify_main
from evidence.encryption import (
    EncryptingWriter,
    encrypt_for_spool,
    generate_encryption_key,
    load_encryption_public_key,
)
from evidence.keys import generate_signing_key, save_signing_key
from evidence.media import digest_file
from evidence.records import RecordType, format_utc
from evidence.testing import SteppingClock, segment_body
from provisioning import broker as broker_config
from provisioning import device as provisioning_device
from provisioning.dock import Dock as ProvisioningDock
from receiver.cli import main as receiver_main
from tests.support.dock import CASE, Dock
from tests.support.spool import build_spool

TS_PACKET_BYTES = 188


def has_mpegts_sync(data: bytes, packets: int = 5) -> bool:
    """True if some offset starts a run of ``packets`` 0x47 sync bytes 188 bytes apart."""
    span = TS_PACKET_BYTES * packets
    for start in range(min(len(data) - span + 1, 64 * 1024)):
        if all(data[start + k * TS_PACKET_BYTES] == 0x47 for k in range(packets)):
            return True
    return False


def ffprobe_ok(path: Path) -> bool:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", str(path)], capture_output=True, timeout=30
    )
    return done.returncode == 0 and b"codec_name=h264" in done.stdout


def test_spool_copy_shows_no_media_yet_receiver_files_and_verifies_it(
    dock: Dock, mpegts_clips: list[Path], tmp_path: Path
) -> None:
    recipient = load_encryption_public_key(dock.pki.paths.encryption_pub)
    spool = build_spool(tmp_path / "spool", mpegts_clips, sessions=2, encrypt_to=recipient)
    dock.register(spool)
    dock.create_case()
    # a thief copies the card before the device docks
    card = tmp_path / "card"
    shutil.copytree(spool.root, card)
    media_files = [p for p in card.rglob("*") if p.is_file() and "/media/" in str(p)]
    assert len(media_files) == len(spool.segments())
    for path in media_files:
        assert not ffprobe_ok(path), f"{path.name} plays"
        assert not has_mpegts_sync(path.read_bytes()), f"{path.name} has MPEG-TS packets"
    assert all(ffprobe_ok(c) and has_mpegts_sync(c.read_bytes()) for c in mpegts_clips)

    result = dock.upload(spool)

    assert result.pending == 0
    assert result.quarantined == 0
    assert not result.errors
    assert result.receipted == len(spool.records)
    assert dock.cli_json("case", "show", CASE)["verification"] == "verified"
    report = dock.cli_json("reverify")  # with the configured key: the plaintext is checked too
    assert report["ok"] is True
    assert report["violations"] == []
    # every segment: ciphertext as signed in the evidence tree, checked plaintext as an object
    conn = sqlite3.connect(dock.data_dir / "receiver.db")
    try:
        rows = conn.execute(
            "SELECT seq, media_sha256, plain_sha256, plain_size FROM records WHERE type = ?",
            (RecordType.SEGMENT,),
        ).fetchall()
    finally:
        conn.close()
    by_seq = {s.seq: s for s in spool.segments()}
    assert len(rows) == len(by_seq)
    for seq, stored_sha, plain_sha, plain_size in rows:
        body = by_seq[seq].body
        assert stored_sha == body["stored"]["sha256"]
        assert (plain_sha, plain_size) == (body["media"]["sha256"], body["media"]["size"])
        plain = dock.data_dir / "objects" / plain_sha[:2] / plain_sha
        assert ffprobe_ok(plain)
        assert not ffprobe_ok(dock.data_dir / "objects" / stored_sha[:2] / stored_sha)
    # the evidence tree verifies independently, without any key
    assert verify_main([str(dock.data_dir / "evidence"), "--key", str(spool.pub_path)]) == 0


# -- import path: the same checks without a broker --------------------------------------------


@pytest.fixture
def receiver_cfg(tmp_path: Path) -> tuple[ProvisioningDock, Path]:
    """A provisioning dock and the receiver.toml its broker-config writes (no broker needed
    for ``bodycam-receiver import``)."""
    dock = ProvisioningDock.init(tmp_path / "dock", broker_hosts=["127.0.0.1"])
    files = broker_config.write_broker_config(
        dock,
        tmp_path / "gen",
        broker_config.BrokerSettings(listen_host="127.0.0.1"),
        receiver_data_dir=tmp_path / "rx",
    )
    return dock, files.receiver_config


def _import(config: Path, spool: Path) -> tuple[int, list[dict[str, Any]]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = receiver_main(["--config", str(config), "import", str(spool), "--json"])
    return code, json.loads(out.getvalue())


def _quarantine(config: Path) -> list[dict[str, Any]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        receiver_main(["--config", str(config), "quarantine", "--json"])
    return list(json.loads(out.getvalue()))


class Writer:
    """Signs segments of one device whose media files the test prepares itself."""

    def __init__(self, root: Path, pdock: ProvisioningDock, device: str = "cam-enc") -> None:
        self.root = root
        self.key = generate_signing_key()
        dev_dir = root.parent / f"{device}-keys"
        dev_dir.mkdir(parents=True)
        save_signing_key(dev_dir / "signing.key", self.key)
        pdock.enrol(provisioning_device.create_request(dev_dir, device, root.parent / "req"))
        self.chain = DeviceChain(root, device, self.key)
        self.clock = SteppingClock()
        self.session = uuid.uuid4().hex
        self.device = device

    def path(self, name: str) -> Path:
        p = layout.media_path(self.root, self.device, name)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def segment(self, name: str, media: dict[str, Any] | None, enc: Any, **extra: Any) -> None:
        start = self.clock.now or self.clock.start
        end = self.clock.tick(1)
        stored = digest_file(self.path(name)).to_dict()
        body = segment_body(
            name,
            media,
            stored=stored,
            encryption=enc,
            utc_start=format_utc(start),
            utc_end=end.utc,
            **extra,
        )
        self.chain.append(RecordType.SEGMENT, self.session, body, end)


def test_undecryptable_or_mismatching_media_are_quarantined_with_the_reason(
    receiver_cfg: tuple[ProvisioningDock, Path], mpegts_clips: list[Path], tmp_path: Path
) -> None:
    pdock, config = receiver_cfg
    mine = load_encryption_public_key(pdock.paths.encryption_pub)
    w = Writer(tmp_path / "spool", pdock)
    # 1. encrypted to another receiver's key
    other = encrypt_for_spool(
        mpegts_clips[0], w.path("a.ts"), generate_encryption_key().public_key()
    )
    w.segment("a.ts", other.media.to_dict(), other.encryption)
    # 2. the signed plaintext digest is of another clip
    good = encrypt_for_spool(mpegts_clips[0], w.path("b.ts"), mine)
    w.segment("b.ts", digest_file(mpegts_clips[1]).to_dict(), good.encryption)
    # 3. ciphertext damaged before the device hashed and signed it: hashes match, AEAD does not
    enc = encrypt_for_spool(mpegts_clips[1], w.path("c.ts"), mine)
    data = bytearray(w.path("c.ts").read_bytes())
    data[200] ^= 0x01
    w.path("c.ts").write_bytes(bytes(data))
    w.segment("c.ts", enc.media.to_dict(), enc.encryption)
    # 4. a good one
    ok = encrypt_for_spool(mpegts_clips[2], w.path("d.ts"), mine)
    w.segment("d.ts", ok.media.to_dict(), ok.encryption)

    code, results = _import(config, w.root)

    assert code == 1
    outcome = {r["seq"]: (r["outcome"], r["reason"] or "") for r in results}
    assert outcome[0][0] == "quarantined"
    assert "not to this receiver's key" in outcome[0][1]
    assert outcome[1] == (
        "quarantined",
        "decrypted media does not match its signed plaintext digest",
    )
    assert outcome[2][0] == "quarantined"
    assert outcome[2][1].startswith("cannot decrypt")
    assert "authentication failed" in outcome[2][1]
    assert outcome[3] == ("stored", "")
    reasons = {q["seq"]: q["reason"] for q in _quarantine(config)}
    assert reasons == {0: outcome[0][1], 1: outcome[1][1], 2: outcome[2][1]}
    # the refused ciphertext is kept in the quarantine for inspection; no plaintext is left
    rx = tmp_path / "rx"
    kept = list((rx / "quarantine").rglob("media"))
    assert len(kept) == 2  # b and c arrived complete; a was refused before its media
    assert not list((rx / "tmp").iterdir())


def test_recovered_segment_without_plaintext_digest_is_stored_in_recovered_prefix_mode(
    receiver_cfg: tuple[ProvisioningDock, Path], mpegts_clips: list[Path], tmp_path: Path
) -> None:
    pdock, config = receiver_cfg
    mine = load_encryption_public_key(pdock.paths.encryption_pub)
    w = Writer(tmp_path / "spool", pdock)
    clip = mpegts_clips[0].read_bytes()
    # the device crashed mid-segment: whole chunks flushed, no final chunk
    with open(w.path("r.ts"), "wb") as f:
        writer = EncryptingWriter(f, mine, chunk_size_bytes=4096)
        writer.write(clip[:20_000])
        writer.flush()
    w.segment("r.ts", None, {"scheme": writer.info()["scheme"], "recipient": writer.recipient},
              recovered=True)  # fmt: skip
    # the same cut-off stream claimed as a normal segment is refused (a hidden truncation)
    shutil.copyfile(w.path("r.ts"), w.path("s.ts"))
    w.segment("s.ts", digest_file(mpegts_clips[0]).to_dict(), {
        "scheme": writer.info()["scheme"], "recipient": writer.recipient})  # fmt: skip

    code, results = _import(config, w.root)

    assert code == 1
    assert [r["outcome"] for r in results] == ["stored", "quarantined"]
    assert "truncated" in results[1]["reason"]
    conn = sqlite3.connect(tmp_path / "rx" / "receiver.db")
    try:
        ((plain_sha, plain_size),) = conn.execute(
            "SELECT plain_sha256, plain_size FROM records WHERE seq = 0"
        ).fetchall()
    finally:
        conn.close()
    assert plain_size == 20_000
    plain = tmp_path / "rx" / "objects" / plain_sha[:2] / plain_sha
    assert plain.read_bytes() == clip[:20_000]


def test_encrypted_media_without_a_receiver_key_are_refused_not_stored_blind(
    receiver_cfg: tuple[ProvisioningDock, Path], mpegts_clips: list[Path], tmp_path: Path
) -> None:
    pdock, config = receiver_cfg
    mine = load_encryption_public_key(pdock.paths.encryption_pub)
    w = Writer(tmp_path / "spool", pdock)
    enc = encrypt_for_spool(mpegts_clips[0], w.path("a.ts"), mine)
    w.segment("a.ts", enc.media.to_dict(), enc.encryption)
    text = config.read_text()
    no_key = config.with_name("nokey.toml")
    no_key.write_text("\n".join(x for x in text.splitlines() if not x.startswith("encryption_key")))

    code, results = _import(no_key, w.root)
    assert code == 1
    assert "no encryption_key configured" in results[0]["reason"]
    # once the key is configured, re-importing the same spool copy files it
    code, results = _import(config, w.root)
    assert code == 0
    assert results[0]["outcome"] == "stored"


@pytest.mark.slow
def test_provisioned_agent_spool_is_unreadable_on_the_card_and_verified_at_the_receiver(
    dock: Dock, tmp_path: Path
) -> None:
    """The real agent with the agent.toml device-install wrote (encryption_key_file from the
    bundle), then the standalone uplink with the same file: the receiver decrypts and checks."""
    ident = dock.enrol("cam-sim")
    spool = tmp_path / "spool"
    text = ident.agent_toml.read_text()
    assert "\nencryption_key_file = " in text
    config = tmp_path / "agent.toml"
    config.write_text(
        text.replace('# spool_dir = "/var/lib/bodycam/spool"', f'spool_dir = "{spool}"')
        # small frames keep the simulated encoder quick
        + "\n[capture]\nwidth = 320\nheight = 240\nfps = 10\npre_event_s = 2.0\n"
    )
    sim = subprocess.run(
        [sys.executable, "-m", "agent.cli", "simulate", "--spool", str(spool), "--config",
         str(config), "--seconds", "1"],
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert sim.returncode == 0, sim.stderr.decode()[-2000:]
    media = sorted((spool / "devices" / "cam-sim" / "media").iterdir())
    assert media
    assert not any(ffprobe_ok(m) or has_mpegts_sync(m.read_bytes()[:65536]) for m in media)

    up = subprocess.run(
        [sys.executable, "-m", "agent.uplink", "--config", str(config), "--until-done",
         "--timeout-s", "60", "--json", "--quiet"],
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert up.returncode == 0, up.stderr.decode()[-2000:]
    result = json.loads(up.stdout)
    assert result["pending"] == 0
    assert result["quarantined"] == 0
    assert not list((spool / "devices" / "cam-sim" / "media").iterdir())  # freed on receipts
    assert [s["quarantined"] for s in dock.cli_json("sessions")] == [0]
    report = dock.cli_json("reverify")
    assert report["ok"] is True
    assert report["records"] == result["receipted"]
