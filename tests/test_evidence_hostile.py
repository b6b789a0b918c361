"""``bodycam-verify`` on hostile trees (a card copy an attacker prepared): it never crashes,
never hangs, never reads outside the tree, and its text output cannot be forged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evidence import layout
from evidence.canonical import canonical_bytes
from evidence.keys import generate_signing_key, save_public_key
from evidence.testing import build_chain

DEVICE = "BWC-0042"


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process, bounded in time: a hang fails the test instead of CI."""
    return subprocess.run(
        [sys.executable, "-m", "evidence.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    media = tmp_path / "m.ts"
    media.write_bytes(os.urandom(20_000))
    key = generate_signing_key()
    save_public_key(tmp_path / "dev.pub", key.public_key())
    build_chain(tmp_path / "tree", DEVICE, key, [media], sessions=2)
    return tmp_path / "tree"


def media_file(root: Path) -> Path:
    return sorted(layout.media_dir(root, DEVICE).iterdir())[0]


def kinds(result: subprocess.CompletedProcess[str]) -> set[str]:
    return {v["kind"] for v in json.loads(result.stdout)["violations"]}


def test_a_fifo_as_media_does_not_hang_and_is_unsafe(tree: Path) -> None:
    target = media_file(tree)
    target.unlink()
    os.mkfifo(target)  # nobody ever writes to it: opening it for reading would block forever
    result = run(tree, "--json")
    assert result.returncode == 1
    assert "unsafe-path" in kinds(result)


def test_a_media_symlink_out_of_the_tree_is_not_followed(tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"not evidence" * 1000)
    target = media_file(tree)
    target.unlink()
    target.symlink_to(outside)
    result = run(tree, "--json")
    assert result.returncode == 1
    assert kinds(result) == {"unsafe-path"}
    import hashlib

    assert hashlib.sha256(outside.read_bytes()).hexdigest() not in result.stdout


def test_a_device_directory_symlinked_to_etc_is_a_violation_not_ok(tree: Path) -> None:
    (tree / layout.DEVICES / "BWC-ETC").symlink_to("/etc")
    result = run(tree)
    assert result.returncode == 1, result.stdout
    assert "VIOLATION unsafe-path" in result.stdout
    assert "OK:" not in result.stdout


def test_symlinked_records_directory_and_record_file_are_violations(
    tree: Path, tmp_path: Path
) -> None:
    records = layout.records_dir(tree, DEVICE)
    first = sorted(records.iterdir())[0]
    copy = tmp_path / "copy.json"
    shutil.copyfile(first, copy)
    first.unlink()
    first.symlink_to(copy)  # the same bytes, but through a link
    result = run(tree, "--json")
    assert result.returncode == 1
    assert "unsafe-path" in kinds(result)
    moved = tmp_path / "records-elsewhere"
    records.rename(moved)
    records.symlink_to(moved)
    result = run(tree, "--json")
    assert result.returncode == 1
    assert "unsafe-path" in kinds(result)


def test_a_newline_in_a_file_name_cannot_forge_an_ok_line(tree: Path) -> None:
    evil = layout.media_dir(tree, DEVICE) / "x\nOK: the tree verifies: no violations"
    evil.write_bytes(b"\x47" * 188)
    result = run(tree)
    assert result.returncode == 1
    assert not any(line.startswith("OK") for line in result.stdout.splitlines())
    assert "\\x0a" in result.stdout


def test_escape_sequences_from_the_tree_never_reach_the_terminal(tree: Path) -> None:
    (tree / layout.DEVICES / "\x1b[2J\x1b]0;pwned\x07").mkdir()
    result = run(tree)
    assert result.returncode == 1
    assert "\x1b" not in result.stdout
    assert "\x07" not in result.stdout
    assert "\\x1b[2J" in result.stdout
    as_json = run(tree, "--json")
    assert "\x1b" not in as_json.stdout
    json.loads(as_json.stdout)  # still valid JSON


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("impossible date", None, "invalid-time"),
        ("5,000-digit integer", b'{"v":1,"seq":' + b"7" * 5000 + b"}", "unreadable-record"),
        ("nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000, "unreadable-record"),
        ("not UTF-8", b'{"v":1,"type":"\xff\xfe"}', "unreadable-record"),
        ("a lone surrogate", b'{"v":1,"type":"\\ud800"}', "unreadable-record"),
    ],
)
def test_each_broken_record_is_its_own_violation_and_the_rest_is_checked(
    tree: Path, name: str, content: bytes | None, kind: str
) -> None:
    path = layout.record_path(tree, DEVICE, 2)
    if content is None:  # a one-digit corruption of a date: month 13, day 45
        data = json.loads(path.read_bytes())
        data["time"]["utc"] = "2026-13-45" + data["time"]["utc"][10:]
        content = canonical_bytes(data)
    path.write_bytes(content)
    media_file(tree).write_bytes(b"changed")  # a second, unrelated problem
    result = run(tree, "--json")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    found = kinds(result)
    assert kind in found
    assert "missing-seq" in found
    assert "media-hash-mismatch" in found  # verification went on past the broken record


def test_a_huge_record_file_is_refused_without_reading_it_all(tree: Path) -> None:
    path = layout.record_path(tree, DEVICE, 2)
    with path.open("r+b") as f:
        f.truncate(8 << 30)  # 8 GiB, sparse: reading it whole would exhaust memory
    result = run(tree, "--json")
    assert result.returncode == 1
    assert "unreadable-record" in kinds(result)


def test_a_segment_naming_a_file_outside_the_tree_is_malformed(tree: Path) -> None:
    path = layout.record_path(tree, DEVICE, 1)
    data = json.loads(path.read_bytes())
    assert data["type"] == "segment"
    data["body"]["file"] = "../../../etc/passwd"
    path.write_bytes(canonical_bytes(data))
    result = run(tree, "--json")
    assert result.returncode == 1
    assert "malformed-body" in kinds(result)
    assert "root:" not in result.stdout


def test_errors_that_are_not_violations_exit_2_with_one_line(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    for args in ([not_a_dir], [tmp_path / "missing"], [tmp_path, "--key", not_a_dir]):
        result = run(*args)
        assert result.returncode == 2, result
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr


def test_path_based_helpers_the_receiver_import_uses_never_follow_or_block(
    tree: Path, tmp_path: Path
) -> None:
    from evidence.errors import RecordFormatError
    from evidence.records import Record

    (tree / layout.DEVICES / "BWC-ETC").symlink_to("/etc")
    assert list(layout.iter_devices(tree)) == [DEVICE]
    records = layout.records_dir(tree, DEVICE)
    fifo = records / "0000000099.json"
    os.mkfifo(fifo)
    link = records / "0000000098.json"
    link.symlink_to(sorted(records.iterdir())[0])
    listed = list(layout.iter_record_files(tree, DEVICE))
    assert fifo not in listed
    assert link not in listed
    for path, reason in ((fifo, "FIFO"), (link, "symbolic link")):
        with pytest.raises(RecordFormatError, match=reason):
            Record.load(path)
