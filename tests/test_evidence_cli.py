"""``bodycam-verify`` as a user runs it: exit codes, readable and JSON reports, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evidence.keys import generate_signing_key, save_public_key
from evidence.testing import build_chain


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evidence.cli", *map(str, args)], capture_output=True, text=True
    )


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    media = tmp_path / "m.ts"
    media.write_bytes(os.urandom(70_000))
    key = generate_signing_key()
    save_public_key(tmp_path / "dev.pub", key.public_key())
    build_chain(tmp_path / "tree", "BWC-0009", key, [media, media], sessions=2)
    return tmp_path / "tree", tmp_path / "dev.pub"


def test_clean_tree_exits_0_with_summary(tree: tuple[Path, Path]) -> None:
    root, pub = tree
    result = run(root, "--key", pub)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK:" in result.stdout
    assert "2 sessions, 4 segments" in result.stdout


def test_violations_exit_1_and_json_lists_each(tree: tuple[Path, Path]) -> None:
    root, pub = tree
    media = sorted((root / "devices/BWC-0009/media").iterdir())
    media[0].unlink()
    (root / "devices/BWC-0009/records/0000000003.json").unlink()
    result = run(root, "--key", pub, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    kinds = {(v["kind"], v["seq"]) for v in report["violations"]}
    assert ("missing-seq", 3) in kinds
    assert any(k == "missing-media" for k, _ in kinds)
    human = run(root, "--key", pub)
    assert human.returncode == 1
    assert "VIOLATION missing-media" in human.stdout
    assert "FAILED: " in human.stdout


def test_wrong_key_is_unknown_key(tree: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = tree
    other = tmp_path / "other.pub"
    save_public_key(other, generate_signing_key().public_key())
    result = run(root, "--key", other, "--json")
    assert result.returncode == 1
    assert {v["kind"] for v in json.loads(result.stdout)["violations"]} == {"unknown-key"}


def test_garbage_and_truncated_records_are_reported_not_raised(tree: tuple[Path, Path]) -> None:
    root, pub = tree
    records = root / "devices/BWC-0009/records"
    (records / "0000000002.json").write_bytes(b"\x00\x01garbage")
    data = (records / "0000000004.json").read_bytes()
    (records / "0000000004.json").write_bytes(data[: len(data) // 2])
    result = run(root, "--key", pub)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stdout.count("VIOLATION unreadable-record") == 2


@pytest.mark.parametrize("case", ["missing", "file", "empty"])
def test_unusable_paths_give_clear_messages(tmp_path: Path, case: str) -> None:
    target = tmp_path / "x"
    if case == "file":
        target.write_text("hello")
    elif case == "empty":
        target.mkdir()
    result = run(target)
    assert "Traceback" not in result.stderr
    if case == "empty":
        assert result.returncode == 1
        assert "nothing here to verify" in result.stdout
    else:
        assert result.returncode == 2
        assert ("no such file" in result.stderr) or ("not a directory" in result.stderr)


def _without_privileges() -> list[str]:
    """As root, drop every capability so file permissions apply (setpriv, util-linux)."""
    if os.geteuid() != 0:
        return []
    import shutil

    if shutil.which("setpriv") is None:
        pytest.skip("running as root and setpriv is not available to drop privileges")
    return ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"]


def test_unreadable_directory_exits_2(tmp_path: Path) -> None:
    target = tmp_path / "locked"
    target.mkdir()
    target.chmod(0)
    try:
        result = subprocess.run(
            [*_without_privileges(), sys.executable, "-m", "evidence.cli", str(target)],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2, result.stderr
        assert "not readable" in result.stderr, result.stderr
    finally:
        target.chmod(0o755)


def test_bad_key_file_is_a_usage_error(tree: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = tree
    (tmp_path / "junk.pub").write_text("junk")
    result = run(root, "--key", tmp_path / "junk.pub")
    assert result.returncode == 2
    assert "not a PEM" in result.stderr
