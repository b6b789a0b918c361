"""The insider audit on a seeded receiver: each edit behind the receiver's back is named."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.seeded import CASE, Seeded, seed


def _db(s: Seeded) -> sqlite3.Connection:
    conn = sqlite3.connect(s.data / "receiver.db", isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def _audit(s: Seeded) -> tuple[int, dict]:  # type: ignore[type-arg]
    code, out, err = s.run("audit", "--json", user="audrey")
    assert code in (0, 1), err
    return code, json.loads(out)


def _kinds(result: dict) -> set[str]:  # type: ignore[type-arg]
    return {f["kind"] for f in result["findings"]}


def _object(s: Seeded, sha: str) -> Path:
    return s.data / "objects" / sha[:2] / sha


def _segment(conn: sqlite3.Connection, which: str = "MIN") -> sqlite3.Row:
    row: sqlite3.Row = conn.execute(
        f"SELECT * FROM records WHERE type = 'segment' AND seq = "
        f"(SELECT {which}(seq) FROM records WHERE type = 'segment')"
    ).fetchone()
    return row


def change_media_hash(s: Seeded, conn: sqlite3.Connection) -> str:
    seg = _segment(conn)
    other = _segment(conn, "MAX")
    conn.execute(
        "UPDATE records SET media_sha256 = ? WHERE hash = ?", (other["media_sha256"], seg["hash"])
    )
    return "media-hash-altered"


def change_marker_body(s: Seeded, conn: sqlite3.Connection) -> str:
    row = conn.execute("SELECT * FROM records WHERE type = 'marker' LIMIT 1").fetchone()
    body = json.loads(row["body"])
    body["kind"] = "evidence"
    conn.execute("UPDATE records SET body = ? WHERE hash = ?", (json.dumps(body), row["hash"]))
    return "record-body-altered"


def change_time(s: Seeded, conn: sqlite3.Connection) -> str:
    conn.execute("UPDATE records SET utc = '2026-11-01T00:00:00.000000Z' WHERE type = 'marker'")
    return "record-time-altered"


def delete_marker_row(s: Seeded, conn: sqlite3.Connection) -> str:
    conn.execute("DELETE FROM records WHERE type = 'marker'")
    return "record-row-deleted"


def move_filing(s: Seeded, conn: sqlite3.Connection) -> str:
    conn.execute(
        "INSERT INTO cases SELECT 'JY-OTHER', enforcement_type, av_level, title, parties, "
        "sensitivity, created_utc FROM cases WHERE number = ?",
        (CASE,),
    )
    conn.execute("UPDATE filings SET case_number = 'JY-OTHER' WHERE rowid = 1")
    return "filing-moved-unlogged"


def delete_filing(s: Seeded, conn: sqlite3.Connection) -> str:
    conn.execute("DELETE FROM filings WHERE rowid = 1")
    return "filing-deleted"


def replace_object(s: Seeded, conn: sqlite3.Connection) -> str:
    path = _object(s, _segment(conn)["media_sha256"])
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes()[:-188])
    return "object-replaced"


def delete_object(s: Seeded, conn: sqlite3.Connection) -> str:
    _object(s, _segment(conn)["media_sha256"]).unlink()
    return "object-deleted"


def erase_last_session(s: Seeded, conn: sqlite3.Connection) -> str:
    last = conn.execute("SELECT session FROM records ORDER BY seq DESC LIMIT 1").fetchone()[0]
    rows = conn.execute("SELECT device, seq FROM records WHERE session = ?", (last,)).fetchall()
    for r in rows:
        path = s.data / "evidence" / "devices" / r["device"] / "records" / f"{r['seq']:010d}.json"
        path.unlink()
    conn.execute("DELETE FROM records WHERE session = ?", (last,))
    conn.execute("DELETE FROM filings WHERE session = ?", (last,))
    return "record-erased"


def truncate_custody_log(s: Seeded, conn: sqlite3.Connection) -> str:
    conn.execute("DELETE FROM custody_log WHERE idx >= (SELECT MAX(idx) - 3 FROM custody_log)")
    return "custody-log-truncated"


def rewrite_custody_entry(s: Seeded, conn: sqlite3.Connection) -> str:
    conn.execute(
        "UPDATE custody_log SET entry = replace(entry, 'filing', 'filinx') WHERE kind = 'filing'"
    )
    return "custody-entry-altered"


def swap_device_key(s: Seeded, conn: sqlite3.Connection) -> str:
    conn.execute("UPDATE devices SET key_id = 'ed25519:00000000000000000000000000000000'")
    return "device-key-altered"


TAMPERING: list[Callable[[Seeded, sqlite3.Connection], str]] = [
    change_media_hash,
    change_marker_body,
    change_time,
    delete_marker_row,
    move_filing,
    delete_filing,
    replace_object,
    delete_object,
    erase_last_session,
    truncate_custody_log,
    rewrite_custody_entry,
    swap_device_key,
]


@pytest.fixture(scope="module")
def seeded_template(tmp_path_factory: pytest.TempPathFactory, mpegts_clips: list[Path]) -> Seeded:
    s = seed(tmp_path_factory.mktemp("audit"), mpegts_clips)
    code, result = _audit(s)  # a clean store audits clean, and signs a head
    assert code == 0, result
    assert result["ok"], result
    assert not result["findings"], result
    assert result["checked"]["record files"] > 0
    assert result["checked"]["objects"] > 0
    return s


def _copy(template: Seeded, tmp_path: Path) -> Seeded:
    import shutil

    data = tmp_path / "rdata"
    shutil.copytree(template.data, data)
    return Seeded(data, template.spool)


def test_clean_store_audits_clean_twice(seeded_template: Seeded, tmp_path: Path) -> None:
    s = _copy(seeded_template, tmp_path)
    code, result = _audit(s)
    assert code == 0, result
    assert result["ok"], result


@pytest.mark.parametrize("tamper", TAMPERING, ids=lambda f: f.__name__)
def test_each_insider_edit_is_detected_and_named(
    seeded_template: Seeded, tmp_path: Path, tamper: Callable[[Seeded, sqlite3.Connection], str]
) -> None:
    s = _copy(seeded_template, tmp_path)
    conn = _db(s)
    want = tamper(s, conn)
    conn.close()
    code, result = _audit(s)
    assert code == 1
    assert not result["ok"]
    assert want in _kinds(result), result["findings"]
    code, out, _ = s.run("audit", user="audrey")
    assert code == 1
    assert want in out
    assert "DIFFERENCES" in out


def test_wiped_quarantine_is_named(tmp_path: Path, mpegts_clips: list[Path]) -> None:
    from evidence import layout

    s = seed(tmp_path, mpegts_clips, sessions=1)
    # a second copy of the spool whose last record was altered after signing: quarantined
    import shutil

    bad_root = tmp_path / "bad"
    shutil.copytree(s.spool.root, bad_root)
    last = sorted(layout.iter_record_files(bad_root, s.spool.device))[-1]
    os.chmod(last, 0o644)
    record = json.loads(last.read_bytes())
    record["body"]["note"] = "forged"
    last.write_text(json.dumps(record))
    code, _, _ = s.run("import", str(bad_root))
    assert code == 1
    conn = _db(s)
    assert conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0] == 1
    assert _audit(s)[0] == 0
    conn.execute("DELETE FROM quarantine")
    conn.close()
    shutil.rmtree(s.data / "quarantine")
    code, result = _audit(s)
    assert code == 1
    assert "quarantine-wiped" in _kinds(result)


def test_consistency_proof_between_heads_verifies_and_a_forged_head_is_rejected(
    seeded_template: Seeded, tmp_path: Path
) -> None:
    s = _copy(seeded_template, tmp_path)
    old = s.json("custody", "head", "--fresh", user="audrey")
    old_file = tmp_path / "old.json"
    old_file.write_text(json.dumps(old))
    s.ok("case", "show", CASE, user="clara")  # more entries
    s.approve("view")
    code, out, _ = s.run("custody", "consistency", str(old_file), user="audrey")
    assert code == 0
    assert "OK:" in out
    assert "is a prefix" in out
    proof = s.json("custody", "consistency", str(old_file), user="audrey")
    from evidence.merkle import TreeHead, verify_consistency

    new = TreeHead.from_dict(proof["tree_head"])
    assert new.tree_size > old["tree_size"]
    assert verify_consistency(
        old["tree_size"],
        new.tree_size,
        bytes.fromhex(old["root"]),
        new.root_bytes(),
        [bytes.fromhex(p) for p in proof["proof"]],
    )
    # forged: another root with the same size (signature breaks) ...
    forged = {**old, "root": "ab" * 32}
    old_file.write_text(json.dumps(forged))
    code, out, _ = s.run("custody", "consistency", str(old_file), user="audrey")
    assert code == 1
    assert "FAILED" in out
    # ... or re-signed by another key
    from evidence.keys import generate_signing_key

    other = TreeHead.create(generate_signing_key(), old["tree_size"], bytes(32), old["utc"])
    old_file.write_text(json.dumps(other.to_dict()))
    code, out, _ = s.run("custody", "consistency", str(old_file), user="audrey")
    assert code == 1
    assert "signature" in out
    # malformed input is one line, exit 2
    old_file.write_text("[" * 100_000)
    code, out, err = s.run("custody", "consistency", str(old_file), user="audrey")
    assert code == 2
    assert "Traceback" not in err


def test_inclusion_proof_of_an_entry_verifies(seeded_template: Seeded, tmp_path: Path) -> None:
    s = _copy(seeded_template, tmp_path)
    from evidence.canonical import canonical_bytes
    from evidence.merkle import leaf_hash, verify_inclusion

    proof = s.json("custody", "prove", "3", user="audrey")
    leaf = leaf_hash(canonical_bytes(proof["entry"]))
    assert leaf.hex() == proof["leaf_hash"]
    assert verify_inclusion(
        leaf,
        3,
        proof["tree_size"],
        [bytes.fromhex(p) for p in proof["proof"]],
        bytes.fromhex(proof["tree_head"]["root"]),
    )
    code, _, err = s.run("custody", "prove", "100000", user="audrey")
    assert code == 2
    assert "no custody entry" in err


def test_case_show_is_not_verified_after_an_object_is_replaced_or_a_marker_forged(
    seeded_template: Seeded, tmp_path: Path
) -> None:
    s = _copy(seeded_template, tmp_path)
    code, out, _ = s.run("case", "show", CASE)
    assert code == 0
    assert "verification: verified" in out
    conn = _db(s)
    replace_object(s, conn)
    code, out, _ = s.run("case", "show", CASE)
    assert code == 1
    assert "replaced" in out
    s2 = _copy(seeded_template, tmp_path / "second")
    conn = _db(s2)
    change_marker_body(s2, conn)
    code, out, _ = s2.run("case", "show", CASE)
    assert code == 1
    assert "differs from the signed record" in out


def test_quarantine_flag_clears_after_a_good_re_import(
    tmp_path: Path, mpegts_clips: list[Path]
) -> None:
    import shutil

    from evidence import layout

    s = seed(tmp_path, mpegts_clips, sessions=1)
    # the same spool with one segment's media damaged, imported into a fresh receiver first
    fresh = Seeded(tmp_path / "fresh", s.spool)
    fresh.ok("device", "add", "--id", s.spool.device, "--key", str(s.spool.pub_path))
    fresh.ok("case", "create", "--number", CASE, "--type", "seizure", "--title", "t")
    bad = tmp_path / "bad"
    shutil.copytree(s.spool.root, bad)
    media = sorted(layout.media_dir(bad, s.spool.device).iterdir())[0]
    os.chmod(media, 0o644)
    media.write_bytes(media.read_bytes()[:-1000])
    assert fresh.run("import", str(bad))[0] == 1
    code, out, _ = fresh.run("case", "show", CASE)
    assert code == 1
    assert "PROBLEM" in out
    assert "quarantined" in out
    assert fresh.run("import", str(s.spool.root))[0] == 0
    code, out, _ = fresh.run("case", "show", CASE)
    assert code == 0, out
    assert "quarantined" not in out, out


def test_moves_made_through_the_receiver_audit_clean(
    seeded_template: Seeded, tmp_path: Path
) -> None:
    s = _copy(seeded_template, tmp_path)
    s.ok("case", "create", "--number", "JY-B", "--type", "dispute", "--title", "t")
    session = s.json("sessions")[0]["session"]
    s.ok("file", "--session", session, "--case", "JY-B", "--move")
    code, result = _audit(s)
    assert code == 0, result["findings"]
    assert result["ok"], result["findings"]
    moves = [e for e in s.json("custody", "log", user="audrey") if e["kind"] == "move"]
    assert moves[-1]["session"] == session
    assert moves[-1]["from_case"] == CASE


def test_encrypted_media_deleted_ciphertext_and_redirected_plaintext_are_named(
    tmp_path: Path, mpegts_clips: list[Path]
) -> None:
    s = seed(tmp_path, mpegts_clips, encrypted=True)
    assert _audit(s)[0] == 0
    conn = _db(s)
    segs = conn.execute("SELECT * FROM records WHERE type = 'segment' ORDER BY seq").fetchall()
    assert all(r["plain_sha256"] and r["plain_sha256"] != r["media_sha256"] for r in segs)
    # the insider points the first segment's playable plaintext at another segment's video
    conn.execute(
        "UPDATE records SET plain_sha256 = ? WHERE hash = ?",
        (segs[-1]["plain_sha256"], segs[0]["hash"]),
    )
    # and deletes the stored ciphertext of the second
    _object(s, segs[1]["media_sha256"]).unlink()
    conn.close()
    code, result = _audit(s)
    kinds = _kinds(result)
    assert code == 1, result
    assert {"plaintext-redirected", "object-deleted"} <= kinds, result
    assert any("stored media" in f["where"] for f in result["findings"])


def test_encrypted_case_exports_playable_plaintext_that_verifies(
    tmp_path: Path, mpegts_clips: list[Path]
) -> None:
    s = seed(tmp_path, mpegts_clips, encrypted=True, sessions=1)
    s.approve("export")
    s.ok("export", CASE, "--out", str(tmp_path / "case"), user="clara")
    play = sorted((tmp_path / "case" / "play" / s.spool.device).iterdir())
    stored = sorted((tmp_path / "case" / "devices" / s.spool.device / "media").iterdir())
    assert len(play) == len(stored) == 2
    assert play[0].read_bytes()[0] == 0x47  # an MPEG-TS sync byte: playable
    assert stored[0].read_bytes()[:7] == b"BCAMENC"
    from tests.test_custody_export import verify

    code, out, err = verify(tmp_path / "case", "--receiver-key", str(s.data / "receipt.pub"))
    assert code == 0, out + err
