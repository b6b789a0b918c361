"""Case-file export (Art. 21): approval, offline verification, tampering named, hostile input."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from evidence.cli import main as verify_main
from tests.support.seeded import CASE, Seeded, seed


def verify(path: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = verify_main([str(path), *args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def exported(tmp_path: Path, mpegts_clips: list[Path]) -> tuple[Seeded, Path]:
    s = seed(tmp_path, mpegts_clips)
    s.approve("export")
    s.ok("export", CASE, "--out", str(tmp_path / "export"), user="clara")
    # copied elsewhere: nothing in it may depend on the receiver
    copy = tmp_path / "elsewhere" / "case"
    shutil.copytree(tmp_path / "export", copy)
    return s, copy


def test_export_without_approval_is_refused_and_the_refusal_logged(
    tmp_path: Path, mpegts_clips: list[Path]
) -> None:
    s = seed(tmp_path, mpegts_clips, sessions=1)
    code, _, err = s.run("export", CASE, "--out", str(tmp_path / "x"), user="clara")
    assert code == 2
    assert "no granted export approval" in err
    assert not (tmp_path / "x").exists()
    refused = [e for e in s.json("custody", "log", user="audrey") if e["kind"] == "access-refused"]
    assert refused[-1]["action"] == "export case"
    assert refused[-1]["case"] == CASE
    # a view approval is not an export approval
    s.approve("view")
    assert s.run("export", CASE, "--out", str(tmp_path / "x"), user="clara")[0] == 2


def test_export_copied_elsewhere_verifies_offline_with_a_pinned_key(
    exported: tuple[Seeded, Path],
) -> None:
    s, copy = exported
    pub = s.data / "receipt.pub"
    code, out, err = verify(copy, "--receiver-key", str(pub))
    assert code == 0, out + err
    assert "pinned with --receiver-key" in out
    assert "OK:" in out
    manifest = json.loads((copy / "manifest.json").read_text())
    assert set(manifest["devices"]) == {s.spool.device}
    page = (copy / "index.html").read_text()
    assert page.count("<h2>Session") == 2
    assert "marker arrival" in page
    assert ".ts</a>" in page
    assert any(p.startswith("play/") or "/media/" in p for p in manifest["files"])
    entries = json.loads((copy / "custody" / "entries.json").read_text())
    assert {"filing", "export", "approval-grant"} <= {e["entry"]["kind"] for e in entries}
    # without a pinned key it still verifies, and says it trusted the shipped key only
    code, out, _ = verify(copy)
    assert code == 0
    assert "integrity only" in out
    # another receiver's key is not trusted
    other = copy.parent / "other.pub"
    from evidence.keys import generate_signing_key, save_public_key

    save_public_key(other, generate_signing_key().public_key())
    code, out, _ = verify(copy, "--receiver-key", str(other))
    assert code == 1
    assert "untrusted-receiver" in out


def test_export_as_zip_verifies(tmp_path: Path, mpegts_clips: list[Path]) -> None:
    s = seed(tmp_path, mpegts_clips, sessions=1)
    s.approve("export")
    s.ok("export", CASE, "--out", str(tmp_path / "case.zip"), "--zip", user="clara")
    code, out, err = verify(tmp_path / "case.zip", "--receiver-key", str(s.data / "receipt.pub"))
    assert code == 0, out + err


@pytest.mark.parametrize("damage", ["alter", "remove", "cut-last-records", "add"])
def test_damaged_export_fails_and_names_what(exported: tuple[Seeded, Path], damage: str) -> None:
    s, copy = exported
    records = sorted((copy / "devices" / s.spool.device / "records").iterdir())
    media = sorted((copy / "devices" / s.spool.device / "media").iterdir())
    if damage == "alter":
        os.chmod(media[0], 0o644)
        with open(media[0], "r+b") as f:
            byte = f.read(101)[100]
            f.seek(100)
            f.write(bytes([byte ^ 0x55]))
        want = ["file-altered", media[0].name]
    elif damage == "remove":
        media[-1].unlink()
        want = ["file-missing", media[-1].name]
    elif damage == "cut-last-records":
        for r in records[-2:]:
            r.unlink()
        want = ["records-cut-off", records[-1].name]
    else:
        (copy / "devices" / "extra.txt").write_text("planted")
        want = ["file-unlisted", "extra.txt"]
    code, out, err = verify(copy, "--receiver-key", str(s.data / "receipt.pub"))
    assert code == 1, out + err
    assert "FAILED" in out, out
    assert all(w in out for w in want), out
    assert "Traceback" not in out + err


def test_a_re_signed_manifest_by_another_key_is_rejected(exported: tuple[Seeded, Path]) -> None:
    s, copy = exported
    from evidence.canonical import canonical_bytes
    from evidence.casefile import sign_manifest
    from evidence.keys import generate_signing_key

    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["devices"][s.spool.device]["ranges"][-1][1] -= 1
    unsigned = {k: v for k, v in manifest.items() if k not in ("sig", "receiver_key")}
    os.chmod(copy / "manifest.json", 0o644)
    (copy / "manifest.json").write_bytes(
        canonical_bytes(sign_manifest(unsigned, generate_signing_key()))
    )
    code, out, _ = verify(copy, "--receiver-key", str(s.data / "receipt.pub"))
    assert code == 1
    assert "untrusted-receiver" in out


def _bad(copy: Path, kind: str) -> None:
    manifest_path = copy / "manifest.json"
    os.chmod(manifest_path, 0o644)
    if kind == "outside":
        m = json.loads(manifest_path.read_text())
        m["files"]["../../etc/passwd"] = {"sha256": "0" * 64, "size": 1}
        manifest_path.write_text(json.dumps(m))
    elif kind == "symlink":
        target = copy / "devices"
        media = next((target).rglob("*.ts"))
        media.unlink()
        media.symlink_to("/etc/passwd")
    elif kind == "fifo":
        media = next(copy.rglob("*.ts"))
        media.unlink()
        os.mkfifo(media)
    elif kind == "deep":
        manifest_path.write_text('{"type":"case-file","x":' + "[" * 200_000 + "]" * 200_000 + "}")
    elif kind == "huge":
        with open(manifest_path, "wb") as f:
            f.write(b'{"type":"case-file","pad":"')
            f.truncate(65 << 20)
    elif kind == "garbage":
        manifest_path.write_bytes(b'{"type":"case-file", nope')


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["outside", "symlink", "fifo", "deep", "huge", "garbage"])
def test_hostile_exports_give_a_clear_message_and_read_nothing_outside(
    exported: tuple[Seeded, Path], kind: str
) -> None:
    s, copy = exported
    _bad(copy, kind)
    code, out, err = verify(copy, "--receiver-key", str(s.data / "receipt.pub"))
    assert code in (1, 2), out + err
    assert "Traceback" not in out + err
    assert "root:x:" not in out + err
    text = out + err
    expected = {
        "outside": "path-outside",
        "symlink": "unsafe-file",
        "fifo": "unsafe-file",
        "deep": "bad-manifest",
        "huge": "bad-manifest",
        "garbage": "bad-manifest",
    }[kind]
    assert expected in text, text


def test_hostile_zip_members_are_refused(tmp_path: Path) -> None:
    import zipfile

    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("manifest.json", '{"type":"case-file"}')
        f.writestr("../escape.txt", "x")
    code, _out, err = verify(z)
    assert code == 2
    assert "points outside" in err
    assert not (tmp_path.parent / "escape.txt").exists()


def test_export_refuses_an_empty_case_or_missing_media_and_leaves_nothing(
    tmp_path: Path, mpegts_clips: list[Path]
) -> None:
    s = seed(tmp_path, mpegts_clips, sessions=1)
    s.ok("case", "create", "--number", "JY-EMPTY", "--type", "dispute", "--title", "t")
    req = s.json(
        "approval",
        "request",
        "--case",
        "JY-EMPTY",
        "--kind",
        "export",
        "--reason",
        "r",
        user="clara",
    )
    s.ok("approval", "grant", str(req[0]["id"]), user="sven")
    code, _, err = s.run("export", "JY-EMPTY", "--out", str(tmp_path / "e"), user="clara")
    assert code == 2
    assert "nothing to export" in err
    s.approve("export")
    obj = next((s.data / "objects").rglob("*"))
    while obj.is_dir():
        obj = next(obj.iterdir())
    obj.unlink()
    code, _, err = s.run("export", CASE, "--out", str(tmp_path / "x"), user="clara")
    assert code == 2
    assert "missing" in err
    assert "audit" in err
    assert not any(p.name.startswith((".x", "x", ".e", "e")) for p in tmp_path.iterdir())
