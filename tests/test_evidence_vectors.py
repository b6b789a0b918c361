"""The published test vectors (tests/vectors/): rebuilt byte-for-byte by their generator, and
``bodycam-verify`` gives each its expected exit status and exact set of violation kinds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evidence.cli import main as verify_main
from tests.vectors.generate import generate

VECTORS = Path(__file__).parent / "vectors"
EXPECTED = json.loads((VECTORS / "expected.json").read_text(encoding="utf-8"))["vectors"]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts
    }


def test_generator_rebuilds_the_checked_in_vectors_exactly(tmp_path: Path) -> None:
    generate(tmp_path)
    assert _files(tmp_path) == _files(VECTORS)


@pytest.mark.parametrize("vector", EXPECTED, ids=[v["name"] for v in EXPECTED])
def test_bodycam_verify_gives_each_vector_its_verdict(
    vector: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [str(VECTORS / a) if a.startswith("keys/") else a for a in vector["args"]]
    code = verify_main([str(VECTORS / vector["name"]), *args, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == vector["exit"], report["violations"]
    assert sorted({v["kind"] for v in report["violations"]}) == vector["kinds"]


def test_the_command_line_tool_agrees_on_a_tampered_vector() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "evidence.cli", "pretty-printed", "--key", "keys/device.pub"],
        cwd=VECTORS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "VIOLATION non-canonical-record" in result.stdout
