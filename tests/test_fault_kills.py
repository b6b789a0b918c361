"""A short run of the fault-count harness (bench/fault_kills.py): SIGKILL the recording agent at
random moments; no sealed segment is lost, the chain verifies, one crash gap per kill."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from fault_kills import analyse, run_kills


@pytest.mark.slow
@pytest.mark.parametrize("encrypted", [False, True], ids=["plaintext", "encrypted"])
def test_five_random_sigkills_lose_no_sealed_segment(tmp_path: Path, encrypted: bool) -> None:
    report = run_kills(tmp_path, 5, encrypted=encrypted, seed=7, min_s=2.5, max_s=5.0)
    assert report.start_failures == []
    result = analyse(tmp_path / "spool", report)
    assert result["kills"] == 5
    assert result["sealed_segments_seen"] > 0  # kills came after segments were sealed
    assert result["sealed_segments_lost"] == 0
    assert result["chain_verifies"], result["violations"]
    assert result["crash_gaps"] == 5
    assert result["killed_sessions_closed_by_recovery"] == 5
    assert len(result["media_lost_s_each"]) == 5
