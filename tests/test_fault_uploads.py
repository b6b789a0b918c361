"""A short run of bench/fault_uploads.py: SIGKILL the uplink, the receiver or the broker at random
moments during uploads: nothing receipted is lost or stored twice, all receipted at the end."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from fault_uploads import run


@pytest.mark.slow
@pytest.mark.parametrize("target", ["uplink", "receiver", "broker"])
def test_three_random_kills_during_uploads_lose_nothing(tmp_path: Path, target: str) -> None:
    args = argparse.Namespace(
        target=target, kills=3, segments=6, segment_mib=1, seed=5, min_s=0.3, max_s=1.0,
        timeout_s=120.0,
    )  # fmt: skip
    result = run(tmp_path, args)
    assert result["kills"] == 3
    assert result["receipted_lost"] == 0
    assert result["stored_twice"] == 0
    assert result["not_receipted"] == 0
    assert result["final_pending"] == 0
    assert result["reverify"]["ok"], result["reverify"]
